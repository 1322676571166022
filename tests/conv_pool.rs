//! The fused convolution + 2×2 max pool (`Tape::conv2d_max_pool2d`): the same bits as the two
//! separate ops, values and input gradients, on every path that fuses; the separate ops where
//! it does not; and the fused reduction over noisy copies.

use smoothgrad_autodiff::backend::cpu::conv::conv2d_max_pool2d_fuses;
use smoothgrad_autodiff::{
    BackwardOptions, Conv2dGeometry, Conv2dParams, Float, NoiseSource, NoiseSpec, Pool2dGeometry,
    Pool2dParams, Tape, Tensor, Var,
};
use smoothgrad_tests::{Wrt, gradcheck, max_rel_diff, uniform};

/// (name, x dims, w dims, params, fuses in f32, fuses in f64)
type Case = (
    &'static str,
    [usize; 4],
    [usize; 4],
    Conv2dParams,
    bool,
    bool,
);

fn cases() -> Vec<Case> {
    let same = Conv2dParams::new().padding(1);
    vec![
        // One input channel per group: fused in both types.
        ("tiny conv1", [3, 1, 28, 28], [8, 1, 3, 3], same, true, true),
        (
            "depthwise ×2",
            [2, 3, 10, 10],
            [6, 1, 3, 3],
            same.groups(3),
            true,
            true,
        ),
        (
            "odd height and width",
            [2, 1, 9, 11],
            [4, 1, 3, 3],
            same,
            true,
            true,
        ),
        // A few input channels: the direct loops are f32-only, so f64 takes the separate ops.
        (
            "tiny conv2",
            [3, 8, 14, 14],
            [16, 8, 3, 3],
            same,
            true,
            false,
        ),
        (
            "5×5, odd channels",
            [2, 2, 12, 10],
            [5, 2, 5, 5],
            Conv2dParams::new().padding(2),
            true,
            false,
        ),
        // Winograd F(2×2) (f32 only, ≥ 16 channels): every tile one pool window, any padding.
        (
            "winograd, same",
            [4, 16, 8, 8],
            [16, 16, 3, 3],
            same,
            true,
            false,
        ),
        (
            "winograd, valid",
            [4, 16, 10, 10],
            [24, 16, 3, 3],
            Conv2dParams::new(),
            true,
            false,
        ),
        // Never fused: an odd Winograd output, the output narrower than the input on the
        // direct loops, or stride 2.
        (
            "winograd, odd output",
            [4, 16, 9, 9],
            [16, 16, 3, 3],
            same,
            false,
            false,
        ),
        (
            "valid",
            [2, 1, 10, 10],
            [4, 1, 3, 3],
            Conv2dParams::new(),
            false,
            false,
        ),
        (
            "stride 2",
            [2, 1, 16, 16],
            [4, 1, 3, 3],
            same.stride(2),
            false,
            false,
        ),
    ]
}

/// Values on a grid of quarters (many ties inside the pool's windows), one NaN when `nan`.
fn quarters<T: Float>(dims: &[usize], seed: u64, nan: bool) -> Tensor<T> {
    let mut t = uniform(dims, seed).map(|v| (v * 4.0).round() / 4.0);
    if nan {
        let at = t.numel() / 3;
        t.data_mut()[at] = f64::NAN;
    }
    t.cast()
}

/// The pooled values, the input gradient (as bits) and the backward kernels that ran.
fn run<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: &Tensor<T>,
    conv: &Conv2dParams,
    fused: bool,
) -> (Vec<u64>, Vec<u64>, Vec<&'static str>) {
    let pool = Pool2dParams::new(2);
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let (wv, bv) = (Var::constant(w.clone()), Var::constant(b.clone()));
    let y = if fused {
        tape.conv2d_max_pool2d(&xv, &wv, Some(&bv), conv, &pool)
            .unwrap()
    } else {
        let c = tape.conv2d(&xv, &wv, Some(&bv), conv).unwrap();
        tape.max_pool2d(&c, &pool).unwrap()
    };
    let seed: Tensor<T> = uniform(y.dims(), 99).cast();
    let grads = tape.backward_from(&y, &seed).unwrap();
    let bits = |t: &Tensor<T>| t.as_slice().iter().map(|v| v.as_f64().to_bits()).collect();
    (
        bits(y.value()),
        bits(grads.get(&xv).unwrap()),
        grads.kernels().to_vec(),
    )
}

fn check<T: Float>(fuses: impl Fn(bool, bool) -> bool, nan: bool) {
    for (k, (name, xd, wd, conv, f32_fuses, f64_fuses)) in cases().into_iter().enumerate() {
        let seed = 10 * k as u64;
        let x = quarters::<T>(&xd, seed, nan);
        let w = quarters::<T>(&wd, seed + 1, false);
        let b = quarters::<T>(&[wd[0]], seed + 2, false);
        let g = Conv2dGeometry::new(&xd, &wd, &conv).unwrap();
        let pg = Pool2dGeometry::new("max_pool2d", &g.out_dims(), &Pool2dParams::new(2)).unwrap();
        let expect = fuses(f32_fuses, f64_fuses);
        assert_eq!(conv2d_max_pool2d_fuses::<T>(&g, &pg), expect, "{name}");
        let (value, grad, kernels) = run(&x, &w, &b, &conv, true);
        let (want_value, want_grad, _) = run(&x, &w, &b, &conv, false);
        assert_eq!(value, want_value, "{name}: pooled values");
        assert_eq!(grad, want_grad, "{name}: input gradient");
        let ran_fused = kernels.contains(&"conv2d_max_pool2d_bwd_input");
        assert_eq!(ran_fused, expect, "{name}: {kernels:?}");
        assert_eq!(
            kernels.contains(&"maxpool2d_bwd"),
            !expect,
            "{name}: {kernels:?}"
        );
        // Not degenerate: most of the input gets a gradient (NaN windows aside).
        let nonzero = grad.iter().filter(|&&v| f64::from_bits(v) != 0.0).count();
        assert!(
            nonzero > grad.len() / 4,
            "{name}: {nonzero} of {}",
            grad.len()
        );
    }
}

#[test]
fn fused_conv_pool_matches_the_separate_ops_bit_for_bit() {
    check::<f32>(|f32_fuses, _| f32_fuses, false);
    check::<f64>(|_, f64_fuses| f64_fuses, false);
}

#[test]
fn fused_conv_pool_keeps_the_pool_rule_for_nan() {
    check::<f32>(|f32_fuses, _| f32_fuses, true);
    check::<f64>(|_, f64_fuses| f64_fuses, true);
}

#[test]
fn fused_conv_pool_gradient_matches_finite_differences() {
    let w = Var::constant(uniform(&[3, 1, 3, 3], 21));
    let b = Var::constant(uniform(&[3], 22));
    let p = Conv2dParams::new().padding(1);
    gradcheck(
        "conv2d_max_pool2d",
        &[(uniform(&[2, 1, 8, 6], 20), Wrt::Grad)],
        |t, v| t.conv2d_max_pool2d(&v[0], &w, Some(&b), &p, &Pool2dParams::new(2)),
    );
}

#[test]
fn trainable_weights_take_the_separate_ops() {
    let (x, w) = (uniform(&[2, 1, 8, 8], 30), uniform(&[4, 1, 3, 3], 31));
    let p = Conv2dParams::new().padding(1);
    let mut tape = Tape::new();
    let (xv, wv) = (tape.var(x), tape.var(w));
    let y = tape
        .conv2d_max_pool2d(&xv, &wv, None, &p, &Pool2dParams::new(2))
        .unwrap();
    let seed = uniform(y.dims(), 32);
    let grads = tape.backward_from(&y, &seed).unwrap();
    assert!(grads.kernels().contains(&"conv2d_bwd_weight"));
    assert!(grads.kernels().contains(&"maxpool2d_bwd"));
    assert!(grads.get(&wv).is_some() && grads.get(&xv).is_some());
}

#[test]
fn bad_shapes_are_errors() {
    let mut tape = Tape::<f32>::new();
    let x = tape.var(Tensor::zeros(&[1, 2, 8, 8]).unwrap());
    let w = Var::constant(Tensor::zeros(&[4, 3, 3, 3]).unwrap());
    let p = Conv2dParams::new().padding(1);
    assert!(
        tape.conv2d_max_pool2d(&x, &w, None, &p, &Pool2dParams::new(2))
            .is_err()
    );
    let w = Var::constant(Tensor::zeros(&[4, 2, 3, 3]).unwrap());
    let b = Var::constant(Tensor::zeros(&[3]).unwrap());
    assert!(
        tape.conv2d_max_pool2d(&x, &w, Some(&b), &p, &Pool2dParams::new(2))
            .is_err()
    );
    // A window larger than the convolution's output.
    assert!(
        tape.conv2d_max_pool2d(&x, &w, None, &p, &Pool2dParams::new(9))
            .is_err()
    );
}

/// Σ and Σ² over noisy copies from the fused op's backward equal those of the separate ops
/// (where the convolution reduces the copies itself), bit for bit.
#[test]
fn fused_reduction_over_copies_matches_the_separate_ops() {
    let x = uniform(&[1, 1, 28, 28], 40).cast::<f32>();
    let w = Var::constant(uniform(&[8, 1, 3, 3], 41).cast::<f32>());
    let b = Var::constant(uniform(&[8], 42).cast::<f32>());
    let p = Conv2dParams::new().padding(1);
    let pool = Pool2dParams::new(2);
    let spec = NoiseSpec {
        sigma: 0.2,
        first: 0,
        count: 6,
        source: NoiseSource::Philox { seed: 5 },
    };
    let sums = |fused: bool| {
        let mut tape = Tape::new();
        let xv = tape.var(x.clone());
        let batch = tape.noisy_copies(&xv, &spec).unwrap();
        let y = if fused {
            tape.conv2d_max_pool2d(&batch, &w, Some(&b), &p, &pool)
                .unwrap()
        } else {
            let c = tape.conv2d(&batch, &w, Some(&b), &p).unwrap();
            tape.max_pool2d(&c, &pool).unwrap()
        };
        let y = tape.relu(&y).unwrap();
        let seed = uniform(y.dims(), 43).cast::<f32>();
        let g = tape.backward_from(&y, &seed).unwrap();
        let bits = |t: &Tensor<f32>| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        (
            bits(g.get(&xv).unwrap()),
            bits(g.sum_of_squares(&xv).unwrap()),
            g.kernels().to_vec(),
        )
    };
    let (sum, sumsq, kernels) = sums(true);
    let (want_sum, want_sumsq, separate) = sums(false);
    assert!(
        kernels.contains(&"conv2d_max_pool2d_bwd_input_reduce_copies"),
        "{kernels:?}"
    );
    assert!(
        separate.contains(&"conv2d_bwd_input_reduce_copies"),
        "{separate:?}"
    );
    assert_eq!(sum, want_sum);
    assert_eq!(sumsq, want_sumsq);
    assert!(sum.iter().filter(|&&v| f32::from_bits(v) != 0.0).count() > 700);
}

/// With `sums_only`, the fused op scatters every copy's pooled gradient into one set of dY
/// planes and runs the convolution's input gradient once: Σ over copies as the per-copy
/// reduction gives it (up to rounding), without Σ², for one input channel per group (f32 and
/// f64, depthwise too), a few channels (f32: the direct loops over channels are f32-only) and
/// Winograd F(2×2) (f32).
#[test]
fn sums_only_over_copies_matches_the_reduction() {
    fn case<T: Float>(xd: [usize; 4], wd: [usize; 4], seed: u64, tolerance: f64) {
        let x = uniform(&xd, seed).cast::<T>();
        let w = Var::constant(uniform(&wd, seed + 1).cast::<T>());
        let b = Var::constant(uniform(&[wd[0]], seed + 2).cast::<T>());
        let groups = xd[1] / wd[1];
        let p = Conv2dParams::new().padding(1).groups(groups);
        let pool = Pool2dParams::new(2);
        let spec = NoiseSpec {
            sigma: 0.2,
            first: 0,
            count: 7,
            source: NoiseSource::Philox { seed: 9 },
        };
        let run = |sums_only: bool| {
            let mut tape = Tape::new();
            let xv = tape.var(x.clone());
            let batch = tape.noisy_copies(&xv, &spec).unwrap();
            let y = tape
                .conv2d_max_pool2d(&batch, &w, Some(&b), &p, &pool)
                .unwrap();
            let y = tape.relu(&y).unwrap();
            let seed = uniform(y.dims(), seed + 3).cast::<T>();
            let options = BackwardOptions {
                sums_only,
                ..BackwardOptions::default()
            };
            let g = tape.backward_with(&y, &seed, options).unwrap();
            let sum: Vec<f64> = g
                .get(&xv)
                .unwrap()
                .as_slice()
                .iter()
                .map(|v| v.as_f64())
                .collect();
            (sum, g.sum_of_squares(&xv).is_some(), g.kernels().to_vec())
        };
        let (want, squares, kernels) = run(false);
        assert!(squares);
        assert!(kernels.contains(&"conv2d_max_pool2d_bwd_input_reduce_copies"));
        let (sum, squares, kernels) = run(true);
        assert!(!squares);
        assert!(
            kernels.contains(&"conv2d_max_pool2d_bwd_input_sum"),
            "{kernels:?}"
        );
        let nonzero = want.iter().filter(|&&v| v != 0.0).count();
        assert!(nonzero > want.len() / 2, "{nonzero} of {}", want.len());
        let diff = max_rel_diff(&sum, &want);
        assert!(diff < tolerance, "{xd:?} {wd:?}: {diff:e}");
    }
    case::<f32>([1, 1, 28, 28], [8, 1, 3, 3], 50, 1e-5);
    case::<f64>([1, 1, 28, 28], [8, 1, 3, 3], 50, 1e-12);
    case::<f64>([1, 3, 10, 10], [6, 1, 3, 3], 55, 1e-12);
    case::<f32>([1, 2, 10, 12], [6, 2, 3, 3], 60, 1e-5);
    case::<f32>([1, 8, 14, 14], [16, 8, 3, 3], 70, 1e-5);
    case::<f32>([1, 16, 8, 8], [16, 16, 3, 3], 80, 1e-5);
}
