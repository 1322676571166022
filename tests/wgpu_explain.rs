//! The wgpu explainer against the CPU `Explainer`: every method (gradient, guided backprop,
//! Grad×Input, Integrated Gradients with each rule and a baseline), each alone and smoothed
//! (SmoothGrad, SmoothGrad², VarGrad; Philox and given noise), on small conv models and on every
//! fixture model of tests/fixtures/models, within 1e-4 relative L2; and the f16-storage maps
//! against the f32 CPU maps within the accuracy stated in docs/wgpu.md.
//!
//! Needs `--features wgpu` (this test target requires it). With no adapter each test prints
//! `skipped: no wgpu adapter (<reason>)` and passes, unless `SMOOTHGRAD_REQUIRE_GPU` is `wgpu` or
//! `all`. Run on Mesa lavapipe with `XDG_RUNTIME_DIR=/tmp WGPU_BACKEND=vulkan
//! SMOOTHGRAD_REQUIRE_GPU=wgpu cargo test -p smoothgrad-tests --features wgpu --test wgpu_explain`.

use smoothgrad_autodiff::backend::wgpu::WgpuContext;
use smoothgrad_autodiff::{Pool2dParams, Tensor};
use smoothgrad_layers::{Layer, Model};
use smoothgrad_saliency::wgpu_explain::Precision;
use smoothgrad_saliency::{
    Aggregate, Explainer, IgConfig, IgRule, Method, Output, SaliencyError, Smoothing, WgpuExplainer,
};
use smoothgrad_tests::gpu_models::*;
use std::path::PathBuf;

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

/// Every supported recipe on `model`, GPU vs CPU; returns the worst relative error.
fn compare(
    ctx: WgpuContext,
    (label, model): (&str, &Model<f32>),
    budget: usize,
    output: Output,
) -> f64 {
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
        ("grad-x-input", Method::GradXInput, None),
        (
            "grad-x-input+smooth",
            Method::GradXInput,
            Some(smoothing(Aggregate::Mean, n, None)),
        ),
        (
            "grad-x-input vargrad (given noise)",
            Method::GradXInput,
            Some(smoothing(Aggregate::Variance, n, Some(given.clone()))),
        ),
    ];
    let mut cases = cases;
    for rule in RULES {
        cases.push(("ig", ig(rule, 4, None), None));
    }
    let baseline = Tensor::<f32>::uniform(&dims, -0.5, 0.5, 17).unwrap();
    cases.push((
        "ig (baseline)",
        ig(IgRule::RiemannMiddle, 3, Some(baseline)),
        None,
    ));
    // 3 copies × 5 steps: chunks of points straddle copies.
    cases.push((
        "ig+smoothgrad-sq",
        ig(IgRule::GaussLegendre, 5, None),
        Some(smoothing(Aggregate::MeanOfSquares, 3, None)),
    ));
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
                "{label} {name} {:?} target {:?}: rel L2 {err:.2e} (chunk {})",
                method_rule(method),
                target,
                g.chunk
            );
            assert!(err <= 1e-4, "{name} target {target:?}: rel L2 {err:e}");
            worst = worst.max(err);
        }
    }
    worst
}

const RULES: [IgRule; 5] = [
    IgRule::RiemannLeft,
    IgRule::RiemannRight,
    IgRule::RiemannMiddle,
    IgRule::RiemannTrapezoid,
    IgRule::GaussLegendre,
];

fn ig(rule: IgRule, steps: usize, baseline: Option<Tensor<f32>>) -> Method {
    Method::IntegratedGradients(IgConfig {
        steps,
        rule,
        baseline,
    })
}

fn method_rule(m: &Method) -> Option<&'static str> {
    match m {
        Method::IntegratedGradients(c) => Some(c.rule.name()),
        _ => None,
    }
}

#[test]
fn plain_cnn_maps_match_the_cpu() {
    let Some(ctx) = context() else { return };
    // A tiny budget: one copy per chunk, so chunks accumulate.
    let worst = compare(ctx, ("plain", &plain_cnn()), 1, Output::Logit);
    println!("plain worst {worst:.2e}");
}

#[test]
fn plain_cnn_in_one_chunk_and_probability_output_match_the_cpu() {
    let Some(ctx) = context() else { return };
    let worst = compare(ctx, ("plain", &plain_cnn()), 64 << 20, Output::Probability);
    println!("plain (probability) worst {worst:.2e}");
}

#[test]
fn residual_batch_norm_maps_match_the_cpu() {
    let Some(ctx) = context() else { return };
    // Chunks of 4 copies: 6 copies run as 4 + 2.
    let worst = compare(ctx, ("residual", &residual_cnn()), 80_000, Output::Logit);
    println!("residual worst {worst:.2e}");
}

/// Two branches joined by a concat (as SqueezeNet's fire modules), then a second concat of
/// three parts along the width.
fn concat_cnn() -> Model<f32> {
    let nodes = vec![
        node("squeeze", conv(2, 3, 21, true), &[0]),
        node("squeeze_relu", Layer::Relu, &[1]),
        node("expand1", conv(3, 2, 22, true), &[2]),
        node("expand1_relu", Layer::Relu, &[3]),
        node("expand3", conv(2, 2, 23, true), &[2]),
        node("expand3_relu", Layer::Relu, &[5]),
        node("fire", Layer::Concat { axis: 1 }, &[4, 6]),
        node("wide", Layer::Concat { axis: 3 }, &[7, 2, 7]),
        node("avg", Layer::AvgPool2d(Pool2dParams::new(2)), &[8]),
        node("flat", Layer::Flatten { start_dim: 1 }, &[9]),
        node("fc", linear(4, 5 * 3 * 9, 24), &[10]),
    ];
    // The second concat joins [5, 6, 6], [2, 6, 6] (squeezed) and [5, 6, 6]: channels differ,
    // so it is built on a squeeze widened to 5 channels.
    let mut nodes = nodes;
    nodes[0] = node("squeeze", conv(5, 3, 21, true), &[0]);
    nodes[2] = node("expand1", conv(3, 5, 22, true), &[2]);
    nodes[4] = node("expand3", conv(2, 5, 23, true), &[2]);
    Model::new("concat", &[3, 6, 6], nodes, 11).unwrap()
}

#[test]
fn concat_maps_match_the_cpu() {
    let Some(ctx) = context() else { return };
    let worst = compare(ctx, ("concat", &concat_cnn()), 20_000, Output::Logit);
    println!("concat worst {worst:.2e}");
}

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(file)
}

/// Every method on every fixture model (LeNet, VGG, ResNet, SqueezeNet, MobileNet: all their
/// layers), with 2 copies and 3 IG steps to stay fast on lavapipe.
#[test]
fn every_method_on_every_fixture_model_matches_the_cpu() {
    for name in ["lenet", "vgg", "resnet", "squeezenet", "mobilenet"] {
        let Some(ctx) = context() else { return };
        let model = smoothgrad_layers::load_safetensors_model(
            &fixture(&format!("{name}.safetensors")),
            &fixture(&format!("{name}.arch.json")),
        )
        .unwrap();
        let image = Tensor::<f32>::uniform(model.input_dims(), -1.0, 1.0, 3).unwrap();
        let cpu = Explainer::new(&model);
        let gpu = WgpuExplainer::with_context(&model, ctx).unwrap();
        let smooth = smoothing(Aggregate::Mean, 2, None);
        let cases = [
            (Method::Gradient, Some(&smooth)),
            (Method::GuidedBackprop, None),
            (Method::GradXInput, Some(&smooth)),
            (ig(IgRule::GaussLegendre, 3, None), None),
        ];
        for (method, s) in &cases {
            let c = cpu.explain(&image, None, method, *s).unwrap();
            let g = gpu.explain(&image, None, method, *s).unwrap();
            assert_eq!(g.target, c.target, "{name} {}", method.name());
            let err = rel_l2(g.attribution.as_slice(), c.attribution.as_slice());
            println!("{name} {}: rel L2 {err:.2e}", method.name());
            assert!(err <= 1e-4, "{name} {}: rel L2 {err:e}", method.name());
        }
    }
}

/// (relative L2, max |error| / max |cpu|) of the f16-storage SmoothGrad map against the f32
/// CPU map, and the relative L2 between two f32 CPU maps that differ only in the noise seed.
fn f16_error(ctx: WgpuContext, model: &Model<f32>, image: &Tensor<f32>) -> Option<(f64, f64, f64)> {
    if !ctx.supports_f16() {
        println!("skipped: the wgpu adapter lacks SHADER_F16");
        return None;
    }
    let s = smoothing(Aggregate::Mean, 16, None);
    let cpu = Explainer::new(model);
    let c = cpu
        .explain(image, None, &Method::Gradient, Some(&s))
        .unwrap();
    let other_seed = Smoothing {
        seed: 8,
        ..s.clone()
    };
    let c8 = cpu
        .explain(image, Some(c.target), &Method::Gradient, Some(&other_seed))
        .unwrap();
    let gpu = WgpuExplainer::with_context(model, ctx)
        .unwrap()
        .precision(Precision::F16Storage)
        .unwrap();
    assert_eq!(gpu.storage_precision(), Precision::F16Storage);
    let g = gpu
        .explain(image, Some(c.target), &Method::Gradient, Some(&s))
        .unwrap();
    let (gv, cv) = (g.attribution.as_slice(), c.attribution.as_slice());
    let scale = cv.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let max = gv
        .iter()
        .zip(cv)
        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    Some((
        rel_l2(gv, cv),
        max / scale,
        rel_l2(c8.attribution.as_slice(), cv),
    ))
}

/// f16 storage on the bundled digits model and a random conv net: SmoothGrad (16 copies) within
/// 3e-2 relative L2 and 5e-2 of the map's largest magnitude (about twice the measured errors,
/// docs/wgpu.md), and at least ten times closer to the f32 map than a change of noise seed.
#[test]
fn f16_storage_smoothgrad_agrees_with_the_f32_cpu_map() {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets");
    let digits = smoothgrad_layers::load_safetensors_model(
        &assets.join("digits-cnn.safetensors"),
        &assets.join("digits-cnn.arch.json"),
    )
    .unwrap();
    let d = digits.input_dims();
    let options = smoothgrad_saliency::ImageOptions {
        channels: d[0],
        resize: Some([d[1], d[2]]),
    };
    let digit =
        smoothgrad_saliency::load_image(&assets.join("images/digit-3.png"), &options).unwrap();
    let random = plain_cnn();
    let image = Tensor::<f32>::uniform(random.input_dims(), -1.0, 1.0, 5).unwrap();
    for (name, model, x) in [
        ("digits", &digits, &digit),
        ("random conv", &random, &image),
    ] {
        let Some(ctx) = context() else { return };
        let Some((rel, max, seeds)) = f16_error(ctx, model, x) else {
            return;
        };
        println!(
            "f16 storage, {name}: rel L2 {rel:.2e}, max error / max |map| {max:.2e}; \
             seed 7 vs 8 in f32: rel L2 {seeds:.2e}"
        );
        assert!(rel <= 3e-2 && max <= 5e-2, "{name}: {rel:e}, {max:e}");
        assert!(
            rel * 10.0 <= seeds,
            "{name}: {rel:e} vs seed change {seeds:e}"
        );
    }
}

#[test]
fn unsupported_layers_and_precisions_are_clear_errors() {
    let Some(ctx) = context() else { return };
    let nodes = vec![
        node("conv", conv(2, 1, 1, false), &[0]),
        node("sm", Layer::Softmax { axis: 1 }, &[1]),
        node("gap", Layer::GlobalAvgPool, &[2]),
        node("flat", Layer::Flatten { start_dim: 1 }, &[3]),
    ];
    let model = Model::new("softmax", &[1, 4, 4], nodes, 4).unwrap();
    let err = WgpuExplainer::with_context(&model, ctx)
        .err()
        .expect("a softmax over the channels is refused");
    assert!(
        matches!(
            err,
            SaliencyError::Option {
                option: "device",
                ..
            }
        ) && err.to_string().contains("`sm` (softmax over axis 1)"),
        "{err}"
    );
    let model = plain_cnn();
    let Some(ctx) = context() else { return };
    let gpu = WgpuExplainer::with_context(&model, ctx).unwrap();
    let image = Tensor::<f32>::uniform(&[3, 8, 8], -1.0, 1.0, 5).unwrap();
    let err = gpu
        .explain(&image, None, &ig(IgRule::GaussLegendre, 0, None), None)
        .unwrap_err();
    assert!(err.to_string().contains("ig-steps"), "{err}");
    if !gpu.context().supports_f16() {
        let err = gpu.precision(Precision::F16Storage).err().expect("no f16");
        assert!(
            matches!(
                err,
                SaliencyError::Option {
                    option: "precision",
                    ..
                }
            ) && err.to_string().contains("SHADER_F16"),
            "{err}"
        );
    }
}
