//! The noisy-copies op: its gradient, its fused reduction in the first convolution's backward,
//! and its noise's independence from how copies are split.

use smoothgrad_autodiff::{
    BackwardOptions, Conv2dParams, NoiseSource, NoiseSpec, Tape, Tensor, Var,
};
use smoothgrad_tests::{Wrt, gradcheck, max_rel_diff, uniform};

fn spec(first: usize, count: usize, sigma: f64) -> NoiseSpec<f64> {
    NoiseSpec {
        sigma,
        first,
        count,
        source: NoiseSource::Philox { seed: 11 },
    }
}

#[test]
fn noisy_copies_gradient_is_the_sum_over_copies() {
    gradcheck(
        "noisy_copies",
        &[(uniform(&[1, 2, 3, 3], 1), Wrt::Grad)],
        |t, v| t.noisy_copies(&v[0], &spec(0, 4, 0.3)),
    );
}

/// Σ and Σ² over copies: the fused conv kernel, the unfused reduction, and a loop over copies
/// with per-copy gradients all agree.
#[test]
fn fused_reduction_matches_per_copy_gradients() {
    let x = uniform(&[1, 3, 9, 8], 2);
    let w = Var::constant(uniform(&[5, 3, 3, 3], 3));
    let p = Conv2dParams::new().stride(2).padding(1);
    let n = 7;

    // Fused: the conv is the copies' only reader.
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let batch = tape.noisy_copies(&xv, &spec(0, n, 0.2)).unwrap();
    let y = tape.conv2d(&batch, &w, None, &p).unwrap();
    let y = tape.relu(&y).unwrap();
    let seed = uniform(y.dims(), 4);
    let fused = tape.backward_from(&y, &seed).unwrap();
    assert!(fused.kernels().contains(&"conv2d_bwd_input_reduce_copies"));
    assert!(!fused.kernels().contains(&"conv2d_bwd_input"));

    // Per copy: gradient of each copy alone, then reduced here.
    let copies = {
        let mut t = Tape::new();
        t.noisy_copies(&Var::constant(x.clone()), &spec(0, n, 0.2))
            .unwrap()
            .into_value()
    };
    let e = x.numel();
    let (mut sum, mut sumsq) = (vec![0.0; e], vec![0.0; e]);
    let per_seed = seed.numel() / n;
    for i in 0..n {
        let mut t = Tape::new();
        let xi =
            Tensor::from_vec(copies.as_slice()[i * e..(i + 1) * e].to_vec(), x.dims()).unwrap();
        let xv = t.var(xi);
        let y = t.conv2d(&xv, &w, None, &p).unwrap();
        let y = t.relu(&y).unwrap();
        let mut sd = y.dims().to_vec();
        sd[0] = 1;
        let s = Tensor::from_vec(
            seed.as_slice()[i * per_seed..(i + 1) * per_seed].to_vec(),
            &sd,
        )
        .unwrap();
        let g = t.backward_from(&y, &s).unwrap();
        for (k, v) in g.get(&xv).unwrap().as_slice().iter().enumerate() {
            sum[k] += v;
            sumsq[k] += v * v;
        }
    }
    assert!(max_rel_diff(fused.get(&xv).unwrap().as_slice(), &sum) < 1e-12);
    assert!(max_rel_diff(fused.sum_of_squares(&xv).unwrap().as_slice(), &sumsq) < 1e-12);

    // Unfused: the batch has a second reader, so the copies op reduces a materialised gradient.
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let batch = tape.noisy_copies(&xv, &spec(0, n, 0.2)).unwrap();
    let y = tape.conv2d(&batch, &w, None, &p).unwrap();
    let y = tape.relu(&y).unwrap();
    let zero = tape.mul_scalar(&batch, 0.0).unwrap();
    let zero = tape.sum(&zero, &[0, 1, 2, 3], false).unwrap();
    let y = tape.add(&y, &zero).unwrap();
    let unfused = tape.backward_from(&y, &seed).unwrap();
    assert!(unfused.kernels().contains(&"reduce_copies"));
    assert!(max_rel_diff(unfused.get(&xv).unwrap().as_slice(), &sum) < 1e-12);
    assert!(max_rel_diff(unfused.sum_of_squares(&xv).unwrap().as_slice(), &sumsq) < 1e-12);
}

/// With `sums_only`, the convolution reading the copies sums its output gradient over them and
/// runs its input gradient once: the same Σ as the per-copy reduction (up to rounding), no Σ²,
/// on the direct path (one input channel) and the general one (three channels, stride 2); the
/// unfused copies op likewise skips the squares.
#[test]
fn sums_only_runs_the_first_convolution_once() {
    let sums_only = BackwardOptions {
        sums_only: true,
        ..BackwardOptions::default()
    };
    let cases = [
        ([1, 1, 12, 12], [4, 1, 3, 3], Conv2dParams::new().padding(1)),
        (
            [1, 3, 9, 8],
            [5, 3, 3, 3],
            Conv2dParams::new().stride(2).padding(1),
        ),
    ];
    for (k, (xd, wd, p)) in cases.into_iter().enumerate() {
        let seed = 20 + 5 * k as u64;
        let x = uniform(&xd, seed);
        let w = Var::constant(uniform(&wd, seed + 1));
        let n = 6;
        let run = |options: BackwardOptions, second_reader: bool| {
            let mut tape = Tape::new();
            let xv = tape.var(x.clone());
            let batch = tape.noisy_copies(&xv, &spec(0, n, 0.3)).unwrap();
            let y = tape.conv2d(&batch, &w, None, &p).unwrap();
            let mut y = tape.relu(&y).unwrap();
            if second_reader {
                let zero = tape.mul_scalar(&batch, 0.0).unwrap();
                let zero = tape.sum(&zero, &[0, 1, 2, 3], false).unwrap();
                y = tape.add(&y, &zero).unwrap();
            }
            let seed = uniform(y.dims(), seed + 2);
            let g = tape.backward_with(&y, &seed, options).unwrap();
            let sum = g.get(&xv).unwrap().as_slice().to_vec();
            let has_squares = g.sum_of_squares(&xv).is_some();
            (sum, has_squares, g.kernels().to_vec())
        };
        let (want, squares, _) = run(BackwardOptions::default(), false);
        assert!(squares);
        assert!(want.iter().filter(|&&v| v != 0.0).count() > want.len() / 2);

        let (sum, squares, kernels) = run(sums_only, false);
        assert!(!squares, "case {k}");
        assert!(
            kernels.contains(&"conv2d_bwd_input_sum_copies"),
            "{kernels:?}"
        );
        assert!(!kernels.contains(&"conv2d_bwd_input_reduce_copies"));
        assert!(max_rel_diff(&sum, &want) < 1e-12, "case {k}");

        let (sum, squares, kernels) = run(sums_only, true);
        assert!(!squares, "case {k}");
        assert!(kernels.contains(&"sum_copies"), "{kernels:?}");
        assert!(max_rel_diff(&sum, &want) < 1e-12, "case {k}");
    }
}

#[test]
fn noise_does_not_depend_on_the_split() {
    let x = Var::constant(uniform(&[1, 2, 5, 5], 5));
    let mut t = Tape::new();
    let all = t.noisy_copies(&x, &spec(0, 10, 0.5)).unwrap().into_value();
    let a = t.noisy_copies(&x, &spec(0, 3, 0.5)).unwrap().into_value();
    let b = t.noisy_copies(&x, &spec(3, 7, 0.5)).unwrap().into_value();
    let joined: Vec<f64> = a.as_slice().iter().chain(b.as_slice()).copied().collect();
    assert_eq!(all.as_slice(), joined.as_slice());
    // Different copies get different noise; sigma 0 gives exact copies.
    assert_ne!(all.as_slice()[..50], all.as_slice()[50..100]);
    let exact = t.noisy_copies(&x, &spec(0, 2, 0.0)).unwrap().into_value();
    assert_eq!(&exact.as_slice()[50..], x.value().as_slice());
}

#[test]
fn given_noise_is_replayed_and_checked() {
    let x = Var::constant(uniform(&[1, 2, 2, 2], 6));
    let z = uniform(&[3, 2, 2, 2], 7);
    let mut t = Tape::new();
    let s = NoiseSpec {
        sigma: 0.5,
        first: 1,
        count: 2,
        source: NoiseSource::Given(z.clone()),
    };
    let out = t.noisy_copies(&x, &s).unwrap().into_value();
    for i in 0..2 {
        for e in 0..8 {
            let want = x.value().as_slice()[e] + 0.5 * z.as_slice()[(i + 1) * 8 + e];
            assert_eq!(out.as_slice()[i * 8 + e], want);
        }
    }
    let too_few = NoiseSpec {
        count: 3,
        ..s.clone()
    };
    assert!(t.noisy_copies(&x, &too_few).is_err());
    let zero = NoiseSpec { count: 0, ..s };
    assert!(t.noisy_copies(&x, &zero).is_err());
}
