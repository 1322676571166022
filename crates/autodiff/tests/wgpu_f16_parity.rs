//! The f16-storage variants of the WGSL kernels against the CPU (feature `wgpu`).
//!
//! Inputs are uploaded as f16 (rounded to nearest) and the CPU reference runs in f32 on the same
//! rounded values, so the only differences left are the kernel's f32 arithmetic (as in the f32
//! parity tests) and the rounding of its result to f16 when stored. The tolerance says exactly
//! that: `|gpu − cpu| <= 2^-10·|cpu| + 1e-4·max(|cpu|, 1)` (one f16 ulp of the result — WGSL
//! lets f32 → f16 conversion round either way — plus the f32 tolerance of sums of products).
//! Accumulators over copies stay f32. Copies and mask bits are checked exactly where exact.
//!
//! With no adapter (or one without `SHADER_F16`) each test prints why it is skipped and passes,
//! unless `SMOOTHGRAD_REQUIRE_GPU` is `wgpu` or `all`. Run on Mesa lavapipe with
//! `XDG_RUNTIME_DIR=/tmp WGPU_BACKEND=vulkan SMOOTHGRAD_REQUIRE_GPU=wgpu cargo test -p
//! smoothgrad-autodiff --features wgpu --test wgpu_f16_parity`.

#![cfg(feature = "wgpu")]

use smoothgrad_autodiff::backend::cpu::{conv, copies};
use smoothgrad_autodiff::backend::wgpu::{GpuTensor, Precision, WgpuContext};
use smoothgrad_autodiff::{
    Conv2dGeometry, Conv2dParams, Error, NoiseSource, NoiseSpec, Pool2dParams, Tape, Tensor,
};
use std::sync::OnceLock;

const F16: Precision = Precision::F16Storage;

fn required() -> bool {
    std::env::var("SMOOTHGRAD_REQUIRE_GPU")
        .unwrap_or_default()
        .split(',')
        .any(|v| matches!(v.trim(), "wgpu" | "all"))
}

/// The shared device when it stores f16, or `None` after printing why not.
fn gpu() -> Option<&'static WgpuContext> {
    static CTX: OnceLock<Result<WgpuContext, String>> = OnceLock::new();
    match CTX.get_or_init(|| WgpuContext::new().map_err(|e| e.to_string())) {
        Ok(ctx) if ctx.supports_f16() => Some(ctx),
        Ok(ctx) => {
            // A missing feature is the adapter's limit, not a failure: the typed error is checked.
            let err = ctx.upload_as(&Tensor::<f32>::zeros(&[2]).unwrap(), F16);
            assert!(
                matches!(&err, Err(Error::Device { reason, .. }) if reason.contains("SHADER_F16"))
            );
            println!("skipped: the wgpu adapter lacks SHADER_F16");
            None
        }
        Err(reason) => {
            assert!(
                !required(),
                "SMOOTHGRAD_REQUIRE_GPU set but no wgpu adapter: {reason}"
            );
            println!("skipped: no wgpu adapter ({reason})");
            None
        }
    }
}

macro_rules! gpu_or_skip {
    () => {
        match gpu() {
            Some(ctx) => ctx,
            None => return,
        }
    };
}

/// `t` on the device as f16, and its rounded values on the host.
fn half(ctx: &WgpuContext, t: &Tensor<f32>) -> (GpuTensor, Tensor<f32>) {
    let g = ctx.upload_as(t, F16).unwrap();
    assert_eq!(g.precision(), F16);
    let rounded = ctx.download(&g).unwrap();
    (g, rounded)
}

fn uniform(dims: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::<f32>::uniform(dims, -1.0, 1.0, seed).unwrap()
}

fn down(ctx: &WgpuContext, t: &GpuTensor) -> Vec<f32> {
    ctx.download(t).unwrap().into_vec()
}

/// Asserts the f16 tolerance elementwise; returns the largest difference relative to
/// `max(|cpu|, 1)`.
fn assert_f16_close(got: &[f32], want: &[f32], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f32;
    for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
        let diff = (a - b).abs();
        let tol = b.abs() / 1024.0 + 1e-4 * b.abs().max(1.0);
        assert!(
            diff <= tol,
            "{what}: element {k}: gpu {a}, cpu {b} (tolerance {tol})"
        );
        worst = worst.max(diff / b.abs().max(1.0));
    }
    worst
}

#[test]
fn f16_uploads_round_to_nearest_and_download_exactly() {
    let ctx = gpu_or_skip!();
    // Odd length: the last f16 shares a 4-byte word with padding.
    let values = [
        1.0f32,
        1.0 + 1.0 / 4096.0,
        65504.0,
        -3.0e-8,
        0.1,
        1.0e5,
        f32::NAN,
    ];
    let (g, back) = half(ctx, &Tensor::from_vec(values.to_vec(), &[7]).unwrap());
    let back = back.into_vec();
    assert_eq!(&back[..3], &[1.0, 1.0, 65504.0]);
    assert_eq!(
        back[3],
        -(2.0f32.powi(-24)),
        "rounded to the nearest subnormal"
    );
    assert!((back[4] - 0.1).abs() < 0.1 / 2048.0);
    assert!(back[5].is_infinite() && back[6].is_nan());
    let copy = ctx.duplicate(&g).unwrap();
    assert_eq!(copy.precision(), F16);
    assert_eq!(down(ctx, &copy)[..3], back[..3]);
}

#[test]
fn f16_convolutions_match_the_cpu() {
    let ctx = gpu_or_skip!();
    let p = Conv2dParams::new;
    let cases = [
        ([2, 3, 7, 5], [4, 3, 3, 3], p().padding(1), "3x3 pad 1"),
        (
            [3, 4, 7, 5],
            [6, 2, 3, 3],
            p().stride(2).padding(1).groups(2),
            "groups 2, stride 2",
        ),
        (
            [2, 3, 6, 5],
            [6, 1, 3, 3],
            p().padding(1).groups(3),
            "depthwise x2",
        ),
        (
            [1, 70, 9, 9],
            [66, 70, 3, 3],
            p().padding(1),
            "past one 64-tile",
        ),
    ];
    for (k, (xd, wd, p, name)) in cases.into_iter().enumerate() {
        let g = Conv2dGeometry::new(&xd, &wd, &p).unwrap();
        let s = 500 + 10 * k as u64;
        let (x, xr) = half(ctx, &uniform(&xd, s));
        let (w, wr) = half(ctx, &uniform(&wd, s + 1));
        let (b, br) = half(ctx, &uniform(&[wd[0]], s + 2));
        let (dy, dyr) = half(ctx, &uniform(&g.out_dims(), s + 3));
        let mut want = vec![0f32; dyr.numel()];
        conv::conv2d_fwd(
            &g,
            xr.as_slice(),
            wr.as_slice(),
            Some(br.as_slice()),
            &mut want,
        );
        let y = ctx.conv2d_fwd(&g, &x, &w, Some(&b)).unwrap();
        assert_eq!(y.precision(), F16);
        assert_f16_close(&down(ctx, &y), &want, &format!("conv2d_fwd f16 {name}"));
        let (y, mask) = ctx.conv2d_fwd_relu(&g, &x, &w, Some(&b)).unwrap();
        let relu: Vec<f32> = want.iter().map(|&v| v.max(0.0)).collect();
        assert_f16_close(
            &down(ctx, &y),
            &relu,
            &format!("conv2d_fwd_relu f16 {name}"),
        );
        let words = ctx.download_mask(&mask).unwrap();
        for (i, &v) in want.iter().enumerate() {
            if v.abs() > 1e-3 {
                assert_eq!(
                    (words[i / 32] >> (i % 32)) & 1 == 1,
                    v > 0.0,
                    "{name}: bit {i}"
                );
            }
        }
        let mut want = vec![0f32; xr.numel()];
        conv::conv2d_bwd_input(&g, dyr.as_slice(), wr.as_slice(), &mut want);
        let dx = ctx.conv2d_bwd_input(&g, &dy, &w).unwrap();
        assert_f16_close(
            &down(ctx, &dx),
            &want,
            &format!("conv2d_bwd_input f16 {name}"),
        );
        let mut want = vec![0f32; wr.numel()];
        conv::conv2d_bwd_weight(&g, dyr.as_slice(), xr.as_slice(), &mut want);
        let dw = ctx.conv2d_bwd_weight(&g, &dy, &x).unwrap();
        assert_f16_close(
            &down(ctx, &dw),
            &want,
            &format!("conv2d_bwd_weight f16 {name}"),
        );
        let mut want = vec![0f32; wd[0]];
        conv::conv2d_bwd_bias(&g, dyr.as_slice(), &mut want);
        let db = ctx.conv2d_bwd_bias(&g, &dy).unwrap();
        assert_f16_close(
            &down(ctx, &db),
            &want,
            &format!("conv2d_bwd_bias f16 {name}"),
        );
        // The fused reduction over copies reads f16 and adds into f32 sums.
        let one = [1, xd[1], xd[2], xd[3]];
        let (mut sum, mut sumsq) = (
            vec![0f32; xr.numel() / xd[0]],
            vec![0f32; xr.numel() / xd[0]],
        );
        copies::conv2d_bwd_input_reduce_copies(
            &g,
            dyr.as_slice(),
            wr.as_slice(),
            &mut sum,
            &mut sumsq,
        );
        let (mut gs, mut gq) = (ctx.zeros(&one).unwrap(), ctx.zeros(&one).unwrap());
        ctx.conv2d_bwd_input_reduce_copies(&g, &dy, &w, &mut gs, &mut gq)
            .unwrap();
        // f32 results: the f32 tolerance.
        for (got, want) in [(down(ctx, &gs), sum), (down(ctx, &gq), sumsq)] {
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "fused f16 {name}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn f16_linear_pools_and_elementwise_kernels_match_the_tape() {
    let ctx = gpu_or_skip!();
    // linear
    let (x, xr) = half(ctx, &uniform(&[3, 70], 1));
    let (w, wr) = half(ctx, &uniform(&[65, 70], 2));
    let (b, br) = half(ctx, &uniform(&[65], 3));
    let (dy, dyr) = half(ctx, &uniform(&[3, 65], 4));
    let mut tape = Tape::<f32>::new();
    let (vx, vw, vb) = (tape.var(xr.clone()), tape.var(wr), tape.var(br));
    let y = tape.linear(&vx, &vw, Some(&vb)).unwrap();
    let grads = tape.backward_from(&y, &dyr).unwrap();
    let gy = ctx.linear_fwd(&x, &w, Some(&b)).unwrap();
    assert_f16_close(&down(ctx, &gy), y.value().as_slice(), "linear_fwd f16");
    let dx = ctx.linear_bwd_input(&dy, &w).unwrap();
    assert_f16_close(
        &down(ctx, &dx),
        grads.get(&vx).unwrap().as_slice(),
        "linear_bwd_input f16",
    );

    // relu (guided too), clamp, max/avg/global pools, batch norm, softmax, add, sum over batch
    let dims = [2usize, 3, 6, 5];
    let (x, xr) = half(ctx, &uniform(&dims, 10));
    let mut tape = Tape::<f32>::new();
    let vx = tape.var(xr.clone());
    let outs = [
        ("relu", tape.relu(&vx).unwrap()),
        ("clamp", tape.clamp(&vx, -0.5, 0.25).unwrap()),
        (
            "max_pool2d",
            tape.max_pool2d(&vx, &Pool2dParams::new(2)).unwrap(),
        ),
        (
            "avg_pool2d",
            tape.avg_pool2d(&vx, &Pool2dParams::new(3).stride(2).padding(1))
                .unwrap(),
        ),
        ("global_avg_pool2d", tape.global_avg_pool2d(&vx).unwrap()),
    ];
    for (k, (name, y)) in outs.iter().enumerate() {
        let (dy, dyr) = half(ctx, &uniform(y.dims(), 20 + k as u64));
        let mut t2 = Tape::<f32>::new();
        let v2 = t2.var(xr.clone());
        let y2 = match *name {
            "relu" => t2.relu(&v2),
            "clamp" => t2.clamp(&v2, -0.5, 0.25),
            "max_pool2d" => t2.max_pool2d(&v2, &Pool2dParams::new(2)),
            "avg_pool2d" => t2.avg_pool2d(&v2, &Pool2dParams::new(3).stride(2).padding(1)),
            _ => t2.global_avg_pool2d(&v2),
        }
        .unwrap();
        let want_dx = t2
            .backward_from(&y2, &dyr)
            .unwrap()
            .get(&v2)
            .unwrap()
            .clone();
        let (gy, gdx) = match *name {
            "relu" | "clamp" => {
                let (gy, mask) = if *name == "relu" {
                    ctx.relu_fwd(&x).unwrap()
                } else {
                    ctx.clamp_fwd(&x, -0.5, 0.25).unwrap()
                };
                let dx = ctx.relu_bwd(&dy, &mask, false).unwrap();
                // Guided: also 0 where dy <= 0.
                let guided = down(ctx, &ctx.relu_bwd(&dy, &mask, true).unwrap());
                let want: Vec<f32> = want_dx
                    .as_slice()
                    .iter()
                    .zip(dyr.as_slice())
                    .map(|(&g, &d)| if d > 0.0 { g } else { 0.0 })
                    .collect();
                assert_eq!(guided, want, "{name} guided f16");
                (gy, dx)
            }
            "max_pool2d" => {
                let g = smoothgrad_autodiff::Pool2dGeometry::new(
                    "max_pool2d",
                    &dims,
                    &Pool2dParams::new(2),
                )
                .unwrap();
                let (gy, arg) = ctx.maxpool2d_fwd(&g, &x).unwrap();
                let dx = ctx.maxpool2d_bwd(&g, &dy, &arg).unwrap();
                (gy, dx)
            }
            "avg_pool2d" => {
                let p = Pool2dParams::new(3).stride(2).padding(1);
                let g = smoothgrad_autodiff::Pool2dGeometry::new("avg_pool2d", &dims, &p).unwrap();
                (
                    ctx.avgpool2d_fwd(&g, &x).unwrap(),
                    ctx.avgpool2d_bwd(&g, &dy).unwrap(),
                )
            }
            _ => (
                ctx.global_avgpool2d_fwd(&x).unwrap(),
                ctx.global_avgpool2d_bwd(&dy, &dims).unwrap(),
            ),
        };
        assert_f16_close(
            &down(ctx, &gy),
            y.value().as_slice(),
            &format!("{name} fwd f16"),
        );
        assert_f16_close(
            &down(ctx, &gdx),
            want_dx.as_slice(),
            &format!("{name} bwd f16"),
        );
    }

    let c = dims[1];
    let (gamma, gr) = half(ctx, &Tensor::uniform(&[c], 0.5, 1.5, 30).unwrap());
    let (beta, betar) = half(ctx, &uniform(&[c], 31));
    let (mean, mr) = half(ctx, &uniform(&[c], 32));
    let (var, vr) = half(ctx, &Tensor::uniform(&[c], 0.5, 2.0, 33).unwrap());
    let (dy, dyr) = half(ctx, &uniform(&dims, 34));
    let mut tape = Tape::<f32>::new();
    let vx = tape.var(xr.clone());
    let (vg, vb) = (tape.var(gr), tape.var(betar));
    let y = tape.batch_norm(&vx, &vg, &vb, &mr, &vr, 1e-5).unwrap();
    let grads = tape.backward_from(&y, &dyr).unwrap();
    let gy = ctx
        .batch_norm_fwd(&x, &gamma, &beta, &mean, &var, 1e-5)
        .unwrap();
    assert_f16_close(&down(ctx, &gy), y.value().as_slice(), "batch_norm_fwd f16");
    let dx = ctx.batch_norm_bwd(&dy, &gamma, &var, 1e-5).unwrap();
    assert_f16_close(
        &down(ctx, &dx),
        grads.get(&vx).unwrap().as_slice(),
        "batch_norm_bwd f16",
    );

    let (s, sr) = half(ctx, &Tensor::uniform(&[3, 300], -4.0, 4.0, 40).unwrap());
    let (dy, dyr) = half(ctx, &uniform(&[3, 300], 41));
    let mut tape = Tape::<f32>::new();
    let vs = tape.var(sr);
    let y = tape.softmax(&vs, 1).unwrap();
    let gy = ctx.softmax_fwd(&s).unwrap();
    assert_f16_close(&down(ctx, &gy), y.value().as_slice(), "softmax_fwd f16");
    // The backward reads the f16-stored forward output (as the explainer does):
    // dx = y·(dy − Σ dy·y) on those rounded values.
    let yr = ctx.download(&gy).unwrap();
    let want: Vec<f32> = yr
        .as_slice()
        .chunks(300)
        .zip(dyr.as_slice().chunks(300))
        .flat_map(|(yr, dr)| {
            let d: f32 = yr.iter().zip(dr).map(|(a, b)| a * b).sum();
            yr.iter().zip(dr).map(move |(&y, &g)| y * (g - d))
        })
        .collect();
    let dx = ctx.softmax_bwd(&gy, &dy).unwrap();
    assert_f16_close(&down(ctx, &dx), &want, "softmax_bwd f16");

    let (a, ar) = half(ctx, &uniform(&[4, 77], 50));
    let (b, br) = half(ctx, &uniform(&[4, 77], 51));
    let sum: Vec<f32> = ar
        .as_slice()
        .iter()
        .zip(br.as_slice())
        .map(|(x, y)| x + y)
        .collect();
    assert_f16_close(&down(ctx, &ctx.add(&a, &b).unwrap()), &sum, "add f16");
    let cols: Vec<f32> = (0..77)
        .map(|j| (0..4).map(|i| ar.as_slice()[i * 77 + j]).sum())
        .collect();
    assert_f16_close(
        &down(ctx, &ctx.sum_batch(&a).unwrap()),
        &cols,
        "sum_batch f16",
    );
}

#[test]
fn f16_copies_concat_and_attribution_kernels_match_the_cpu() {
    let ctx = gpu_or_skip!();
    let (x, xr) = half(ctx, &uniform(&[1, 3, 7, 5], 60));
    let e = xr.numel();
    let spec = NoiseSpec {
        sigma: 0.15,
        first: 2,
        count: 4,
        source: NoiseSource::Philox { seed: 9 },
    };
    let mut want = vec![0f32; 4 * e];
    copies::noisy_copies_fwd(xr.as_slice(), &spec.source, 0.15f32, 2, &mut want);
    let c = ctx.noisy_copies(&x, &spec).unwrap();
    assert_eq!(c.precision(), F16);
    let copies_host = down(ctx, &c);
    assert_f16_close(&copies_host, &want, "noisy_copies f16");

    // Σ, Σ² over f16 gradients, into f32 sums; Grad×Input of f16 copies.
    let (g, gr) = half(ctx, &uniform(&[4, 3, 7, 5], 61));
    let (mut sum, mut sumsq) = (vec![0f32; e], vec![0f32; e]);
    copies::reduce_copies(gr.as_slice(), &mut sum, &mut sumsq);
    let (mut gs, mut gq) = (
        ctx.zeros(&[1, 3, 7, 5]).unwrap(),
        ctx.zeros(&[1, 3, 7, 5]).unwrap(),
    );
    ctx.reduce_copies(&g, &mut gs, &mut gq).unwrap();
    for (got, want) in [(down(ctx, &gs), &sum), (down(ctx, &gq), &sumsq)] {
        for (a, b) in got.iter().zip(want) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "reduce_copies f16: {a} vs {b}"
            );
        }
    }
    let (mut sum, mut sumsq) = (vec![0f32; e], vec![0f32; e]);
    for i in 0..4 {
        for j in 0..e {
            let a = copies_host[i * e + j] * gr.as_slice()[i * e + j];
            sum[j] += a;
            sumsq[j] += a * a;
        }
    }
    let (mut gs, mut gq) = (
        ctx.zeros(&[1, 3, 7, 5]).unwrap(),
        ctx.zeros(&[1, 3, 7, 5]).unwrap(),
    );
    ctx.grad_x_input_reduce_copies(&c, &g, &mut gs, &mut gq)
        .unwrap();
    for (got, want) in [(down(ctx, &gs), &sum), (down(ctx, &gq), &sumsq)] {
        for (a, b) in got.iter().zip(want) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "grad_x_input f16: {a} vs {b}"
            );
        }
    }

    // Concat of f16 parts is an exact copy.
    let (p1, p1r) = half(ctx, &uniform(&[2, 3, 4, 5], 70));
    let (p2, p2r) = half(ctx, &uniform(&[2, 1, 4, 5], 71));
    let cat = ctx.concat_fwd(&[&p1, &p2], 1).unwrap();
    let mut tape = Tape::<f32>::new();
    let (v1, v2) = (tape.var(p1r), tape.var(p2r));
    let y = tape.concat(&[&v1, &v2], 1).unwrap();
    assert_eq!(down(ctx, &cat), y.value().as_slice());
    let parts = ctx.concat_bwd(&cat, 1, &[3, 1]).unwrap();
    assert_eq!(down(ctx, &parts[1]), v2.value().as_slice());

    // Operands stored differently, and f16 accumulators, are typed errors.
    let x32 = ctx.upload(&xr).unwrap();
    assert!(matches!(
        ctx.add(&x, &x32),
        Err(Error::InvalidArgument { .. })
    ));
    let mut s16 = ctx.zeros_as(&[1, 3, 7, 5], F16).unwrap();
    let mut q32 = ctx.zeros(&[1, 3, 7, 5]).unwrap();
    let err = ctx.reduce_copies(&g, &mut s16, &mut q32).unwrap_err();
    assert!(
        err.to_string()
            .contains("accumulators must be stored as f32"),
        "{err}"
    );
}
