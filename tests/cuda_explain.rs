//! The CUDA explainer against the CPU `Explainer`: gradient, guided backprop, SmoothGrad,
//! SmoothGrad², VarGrad (Philox and given noise) on small conv models, within 1e-4 relative L2
//! in FP32 and 5e-3 with TF32 tensor cores; and, on any machine, a typed error (no panic) where
//! there is no CUDA driver or device.
//!
//! Needs `--features cuda` (this test target requires it). With no device each GPU test prints
//! `skipped: no CUDA device (<reason>)` and passes, unless `SMOOTHGRAD_REQUIRE_GPU` is `cuda` or
//! `all`: `SMOOTHGRAD_REQUIRE_GPU=cuda cargo test -p smoothgrad-tests --features cuda --test
//! cuda_explain`.

use smoothgrad_autodiff::backend::cuda::{CudaContext, Math};
use smoothgrad_autodiff::{Conv2dParams, Error, Pool2dParams, Tensor};
use smoothgrad_layers::{Layer, Model, Node};
use smoothgrad_saliency::{
    Aggregate, CudaExplainer, Explainer, Method, NoiseLevel, Output, SaliencyError, Smoothing,
};

fn required() -> bool {
    std::env::var("SMOOTHGRAD_REQUIRE_GPU")
        .unwrap_or_default()
        .split(',')
        .any(|v| matches!(v.trim(), "cuda" | "all"))
}

fn context() -> Option<CudaContext> {
    match CudaContext::new(0) {
        Ok(ctx) => Some(ctx),
        Err(reason) => {
            if required() {
                panic!(
                    "SMOOTHGRAD_REQUIRE_GPU requires CUDA but there is no CUDA device: {reason}"
                );
            }
            println!("skipped: no CUDA device ({reason})");
            None
        }
    }
}

fn node(name: &str, layer: Layer<f32>, inputs: &[usize]) -> Node<f32> {
    Node {
        name: name.into(),
        layer,
        inputs: inputs.to_vec(),
    }
}

fn conv(o: usize, c: usize, seed: u64, bias: bool) -> Layer<f32> {
    let scale = (2.0 / (c * 9) as f64).sqrt();
    Layer::Conv2d {
        weight: Tensor::uniform(&[o, c, 3, 3], -scale, scale, seed).unwrap(),
        bias: bias.then(|| Tensor::uniform(&[o], -0.1, 0.1, seed + 100).unwrap()),
        params: Conv2dParams::new().padding(1),
    }
}

fn linear(o: usize, i: usize, seed: u64) -> Layer<f32> {
    Layer::Linear {
        weight: Tensor::uniform(&[o, i], -1.0, 1.0, seed).unwrap(),
        bias: Some(Tensor::uniform(&[o], -0.1, 0.1, seed + 100).unwrap()),
    }
}

fn batch_norm(c: usize, seed: u64) -> Layer<f32> {
    Layer::BatchNorm {
        gamma: Tensor::uniform(&[c], 0.5, 1.5, seed).unwrap(),
        beta: Tensor::uniform(&[c], -0.2, 0.2, seed + 1).unwrap(),
        mean: Tensor::uniform(&[c], -0.2, 0.2, seed + 2).unwrap(),
        var: Tensor::uniform(&[c], 0.5, 2.0, seed + 3).unwrap(),
        eps: 1e-5,
    }
}

/// conv + relu + maxpool + conv + relu + global-avg-pool + linear.
fn plain_cnn() -> Model<f32> {
    let nodes = vec![
        node("conv1", conv(4, 3, 1, true), &[0]),
        node("relu1", Layer::Relu, &[1]),
        node("pool", Layer::MaxPool2d(Pool2dParams::new(2)), &[2]),
        node("conv2", conv(6, 4, 2, true), &[3]),
        node("relu2", Layer::Relu, &[4]),
        node("gap", Layer::GlobalAvgPool, &[5]),
        node("flat", Layer::Flatten { start_dim: 1 }, &[6]),
        node("fc", linear(5, 6, 3), &[7]),
    ];
    Model::new("plain", &[3, 8, 8], nodes, 8).unwrap()
}

/// Batch norm on the input (so the last reduction is `reduce_copies`), a residual block with a
/// batch norm, an average pool, a clamp and a linear head.
fn residual_cnn() -> Model<f32> {
    let nodes = vec![
        node("bn0", batch_norm(2, 10), &[0]),
        node("conv1", conv(4, 2, 11, false), &[1]),
        node("bn1", batch_norm(4, 12), &[2]),
        node("relu1", Layer::Relu, &[3]),
        node("conv2", conv(4, 4, 13, true), &[4]),
        node("relu2", Layer::Relu, &[5]),
        node("conv3", conv(4, 4, 14, true), &[6]),
        node("add", Layer::Add, &[4, 7]),
        node(
            "relu3",
            Layer::Clamp {
                low: 0.0,
                high: 6.0,
            },
            &[8],
        ),
        node("avg", Layer::AvgPool2d(Pool2dParams::new(2)), &[9]),
        node("flat", Layer::Flatten { start_dim: 1 }, &[10]),
        node("fc", linear(3, 4 * 3 * 3, 15), &[11]),
    ];
    Model::new("residual", &[2, 6, 6], nodes, 12).unwrap()
}

fn rel_l2(gpu: &[f32], cpu: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &c) in gpu.iter().zip(cpu) {
        num += (g as f64 - c as f64).powi(2);
        den += (c as f64).powi(2);
    }
    num.sqrt() / den.sqrt().max(1e-30)
}

fn smoothing(aggregate: Aggregate, n: usize, noise: Option<Tensor<f32>>) -> Smoothing<f32> {
    Smoothing {
        samples: n,
        noise: NoiseLevel::Relative(0.15),
        seed: 7,
        given_noise: noise,
        aggregate,
    }
}

/// Every supported recipe on `model`, GPU vs CPU, each within `tol` relative L2; returns the
/// worst relative error.
fn compare(ctx: CudaContext, model: &Model<f32>, budget: usize, output: Output, tol: f64) -> f64 {
    let dims = model.input_dims().to_vec();
    let image = Tensor::<f32>::uniform(&dims, -1.0, 1.0, 5).unwrap();
    let n = 6;
    let given = Tensor::<f32>::randn(&[&[n], &dims[..]].concat(), 99).unwrap();
    let cpu = Explainer::new(model).output(output);
    let math = ctx.math();
    let gpu = CudaExplainer::with_context(model, ctx)
        .unwrap()
        .memory_budget(budget)
        .output(output);
    let cases: Vec<(&str, Method, Option<Smoothing<f32>>)> = vec![
        ("gradient", Method::Gradient, None),
        ("guided", Method::GuidedBackprop, None),
        (
            "smoothgrad",
            Method::Gradient,
            Some(smoothing(Aggregate::Mean, n, None)),
        ),
        (
            "smoothgrad-sq",
            Method::Gradient,
            Some(smoothing(Aggregate::MeanOfSquares, n, None)),
        ),
        (
            "vargrad",
            Method::Gradient,
            Some(smoothing(Aggregate::Variance, n, None)),
        ),
        (
            "guided+smooth",
            Method::GuidedBackprop,
            Some(smoothing(Aggregate::Mean, n, None)),
        ),
        (
            "smoothgrad (given noise)",
            Method::Gradient,
            Some(smoothing(Aggregate::Mean, n, Some(given.clone()))),
        ),
        (
            "vargrad (given noise)",
            Method::Gradient,
            Some(smoothing(Aggregate::Variance, n, Some(given.clone()))),
        ),
    ];
    let mut worst = 0.0f64;
    for target in [None, Some(2)] {
        for (name, method, s) in &cases {
            let c = cpu.explain(&image, target, method, s.as_ref()).unwrap();
            let g = gpu.explain(&image, target, method, s.as_ref()).unwrap();
            assert_eq!(g.target, c.target, "{name}");
            assert_eq!(g.attribution.dims(), c.attribution.dims(), "{name}");
            assert_eq!(g.sigma, c.sigma, "{name}");
            let logit_err = rel_l2(&g.logits, &c.logits);
            assert!(logit_err < tol, "{name}: logits differ by {logit_err:e}");
            let err = rel_l2(g.attribution.as_slice(), c.attribution.as_slice());
            println!(
                "{} {math:?} {name} target {target:?}: rel L2 {err:.2e} (chunk {})",
                if model.nodes().len() == 8 {
                    "plain"
                } else {
                    "residual"
                },
                g.chunk
            );
            assert!(err <= tol, "{name} target {target:?}: rel L2 {err:e}");
            worst = worst.max(err);
        }
    }
    worst
}

#[test]
fn plain_cnn_maps_match_the_cpu() {
    let Some(ctx) = context() else { return };
    // A tiny budget: one copy per chunk, so chunks accumulate.
    let worst = compare(ctx, &plain_cnn(), 1, Output::Logit, 1e-4);
    println!("plain worst {worst:.2e}");
}

#[test]
fn plain_cnn_in_one_chunk_and_probability_output_match_the_cpu() {
    let Some(ctx) = context() else { return };
    let worst = compare(ctx, &plain_cnn(), 64 << 20, Output::Probability, 1e-4);
    println!("plain (probability) worst {worst:.2e}");
}

#[test]
fn residual_batch_norm_maps_match_the_cpu() {
    let Some(ctx) = context() else { return };
    // Chunks of 4 copies: 6 copies run as 4 + 2.
    let worst = compare(ctx, &residual_cnn(), 80_000, Output::Logit, 1e-4);
    println!("residual worst {worst:.2e}");
}

#[test]
fn tensor_core_maps_match_the_cpu_to_tf32_accuracy() {
    let Some(ctx) = context() else { return };
    // TF32 operands carry 10 mantissa bits (rounding ≤ 2^-11 relative): a few such roundings
    // per layer stay well inside 5e-3 on these small models.
    let worst = compare(
        ctx.clone().with_math(Math::Tf32),
        &plain_cnn(),
        64 << 20,
        Output::Logit,
        5e-3,
    );
    let worst_res = compare(
        ctx.with_math(Math::Tf32),
        &residual_cnn(),
        80_000,
        Output::Logit,
        5e-3,
    );
    println!("tf32 worst {worst:.2e} (plain), {worst_res:.2e} (residual)");
}

#[test]
fn unsupported_methods_and_layers_are_clear_errors() {
    let Some(ctx) = context() else { return };
    let model = plain_cnn();
    let gpu = CudaExplainer::with_context(&model, ctx.clone()).unwrap();
    let image = Tensor::<f32>::uniform(&[3, 8, 8], -1.0, 1.0, 5).unwrap();
    let err = gpu
        .explain(&image, None, &Method::GradXInput, None)
        .unwrap_err();
    assert!(
        matches!(err, SaliencyError::Option { .. })
            && err.to_string().contains("not supported on CUDA yet"),
        "{err}"
    );
    let nodes = vec![
        node("a", conv(2, 1, 1, false), &[0]),
        node("b", conv(2, 1, 2, false), &[0]),
        node("cat", Layer::Concat { axis: 1 }, &[1, 2]),
        node("gap", Layer::GlobalAvgPool, &[3]),
        node("flat", Layer::Flatten { start_dim: 1 }, &[4]),
    ];
    let model = Model::new("concat", &[1, 4, 4], nodes, 5).unwrap();
    let err = CudaExplainer::with_context(&model, ctx)
        .err()
        .expect("concat is refused");
    let text = err.to_string();
    assert!(text.contains("`cat`") && text.contains("concat"), "{text}");
}

/// Runs everywhere: where CUDA cannot be opened, the explainer is a typed device error naming
/// CUDA, not a panic; where it can, it opens.
#[test]
fn no_device_is_a_typed_error_not_a_panic() {
    let model = plain_cnn();
    let opened = CudaContext::new(0);
    match CudaExplainer::new(&model, 0) {
        Ok(_) => assert!(
            opened.is_ok(),
            "the explainer opened a device the backend did not"
        ),
        Err(SaliencyError::Autodiff(Error::Device { device, reason })) => {
            assert_eq!(device, "cuda");
            assert!(
                opened.is_err(),
                "the backend opened device 0 but the explainer failed: {reason}"
            );
            assert!(!reason.is_empty());
            println!("no CUDA device: {reason}");
        }
        Err(other) => panic!("expected a CUDA device error, got {other}"),
    }
}
