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
use smoothgrad_autodiff::{Error, Tensor};
use smoothgrad_layers::{Layer, Model};
use smoothgrad_saliency::{
    Aggregate, CudaExplainer, Explainer, Method, Output, SaliencyError, Smoothing,
};
use smoothgrad_tests::gpu_models::*;

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
