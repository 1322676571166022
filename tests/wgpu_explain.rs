//! The wgpu explainer against the CPU `Explainer`: gradient, guided backprop, SmoothGrad,
//! SmoothGrad², VarGrad (Philox and given noise) on small conv models, within 1e-4 relative L2.
//!
//! Needs `--features wgpu` (this test target requires it). With no adapter each test prints
//! `skipped: no wgpu adapter (<reason>)` and passes, unless `SMOOTHGRAD_REQUIRE_GPU` is `wgpu` or
//! `all`. Run on Mesa lavapipe with `XDG_RUNTIME_DIR=/tmp WGPU_BACKEND=vulkan
//! SMOOTHGRAD_REQUIRE_GPU=wgpu cargo test -p smoothgrad-tests --features wgpu --test wgpu_explain`.

use smoothgrad_autodiff::backend::wgpu::WgpuContext;
use smoothgrad_autodiff::{Conv2dParams, Pool2dParams, Tensor};
use smoothgrad_layers::{Layer, Model, Node};
use smoothgrad_saliency::{
    Aggregate, Explainer, Method, NoiseLevel, Output, SaliencyError, Smoothing, WgpuExplainer,
};

fn context() -> Option<WgpuContext> {
    match WgpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(reason) => {
            let required = std::env::var("SMOOTHGRAD_REQUIRE_GPU").unwrap_or_default();
            if required
                .split(',')
                .any(|v| matches!(v.trim(), "wgpu" | "all"))
            {
                panic!("SMOOTHGRAD_REQUIRE_GPU={required} but there is no wgpu adapter: {reason}");
            }
            println!("skipped: no wgpu adapter ({reason})");
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

/// Every supported recipe on `model`, GPU vs CPU; returns the worst relative error.
fn compare(ctx: WgpuContext, model: &Model<f32>, budget: usize, output: Output) -> f64 {
    let dims = model.input_dims().to_vec();
    let image = Tensor::<f32>::uniform(&dims, -1.0, 1.0, 5).unwrap();
    let n = 6;
    let given = Tensor::<f32>::randn(&[&[n], &dims[..]].concat(), 99).unwrap();
    let cpu = Explainer::new(model).output(output);
    let gpu = WgpuExplainer::with_context(model, ctx)
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
            assert!(logit_err < 1e-5, "{name}: logits differ by {logit_err:e}");
            let err = rel_l2(g.attribution.as_slice(), c.attribution.as_slice());
            println!(
                "{} {name} target {:?}: rel L2 {err:.2e} (chunk {})",
                model_name(model),
                target,
                g.chunk
            );
            assert!(err <= 1e-4, "{name} target {target:?}: rel L2 {err:e}");
            worst = worst.max(err);
        }
    }
    worst
}

fn model_name(m: &Model<f32>) -> &'static str {
    if m.nodes().len() == 8 {
        "plain"
    } else {
        "residual"
    }
}

#[test]
fn plain_cnn_maps_match_the_cpu() {
    let Some(ctx) = context() else { return };
    // A tiny budget: one copy per chunk, so chunks accumulate.
    let worst = compare(ctx, &plain_cnn(), 1, Output::Logit);
    println!("plain worst {worst:.2e}");
}

#[test]
fn plain_cnn_in_one_chunk_and_probability_output_match_the_cpu() {
    let Some(ctx) = context() else { return };
    let worst = compare(ctx, &plain_cnn(), 64 << 20, Output::Probability);
    println!("plain (probability) worst {worst:.2e}");
}

#[test]
fn residual_batch_norm_maps_match_the_cpu() {
    let Some(ctx) = context() else { return };
    // Chunks of 4 copies: 6 copies run as 4 + 2.
    let worst = compare(ctx, &residual_cnn(), 80_000, Output::Logit);
    println!("residual worst {worst:.2e}");
}

#[test]
fn unsupported_methods_and_layers_are_clear_errors() {
    let Some(ctx) = context() else { return };
    let model = plain_cnn();
    let gpu = WgpuExplainer::with_context(&model, ctx).unwrap();
    let image = Tensor::<f32>::uniform(&[3, 8, 8], -1.0, 1.0, 5).unwrap();
    let err = gpu
        .explain(&image, None, &Method::GradXInput, None)
        .unwrap_err();
    assert!(
        matches!(err, SaliencyError::Option { .. })
            && err.to_string().contains("not supported on wgpu yet"),
        "{err}"
    );
    drop(gpu);
    let nodes = vec![
        node("a", conv(2, 1, 1, false), &[0]),
        node("b", conv(2, 1, 2, false), &[0]),
        node("cat", Layer::Concat { axis: 1 }, &[1, 2]),
        node("gap", Layer::GlobalAvgPool, &[3]),
        node("flat", Layer::Flatten { start_dim: 1 }, &[4]),
    ];
    let model = Model::new("concat", &[1, 4, 4], nodes, 5).unwrap();
    let Some(ctx) = context() else { return };
    let err = WgpuExplainer::with_context(&model, ctx)
        .err()
        .expect("concat is refused");
    let text = err.to_string();
    assert!(text.contains("`cat`") && text.contains("concat"), "{text}");
}
