//! SmoothGrad and its family against analytic ground truths, batching and seeding properties.

use smoothgrad_autodiff::{Conv2dParams, NoiseSource, NoiseSpec, Tape, Tensor, Var};
use smoothgrad_layers::{Layer, Model, Node};
use smoothgrad_saliency::{
    Aggregate, Explainer, IgConfig, IgRule, Method, NoiseLevel, Output, SaliencyError, Smoothing,
};
use smoothgrad_tests::{max_rel_diff, uniform};

fn node(name: &str, layer: Layer<f64>, input: usize) -> Node<f64> {
    Node {
        name: name.into(),
        layer,
        inputs: vec![input],
    }
}

/// f(x) = w·x + b on vectors of length d.
fn linear_model(w: &Tensor<f64>, b: Option<f64>, relu: bool) -> Model<f64> {
    let d = w.numel();
    let mut nodes = vec![node(
        "fc",
        Layer::Linear {
            weight: w.reshape(&[1, d]).unwrap(),
            bias: b.map(|b| Tensor::from_vec(vec![b], &[1]).unwrap()),
        },
        0,
    )];
    if relu {
        nodes.push(node("relu", Layer::Relu, 1));
    }
    let out = nodes.len();
    Model::new("linear", &[d], nodes, out).unwrap()
}

/// conv → ReLU → max-pool → flatten → linear (10 classes) on 2×10×10 images.
fn conv_model() -> Model<f64> {
    let nodes = vec![
        node(
            "conv",
            Layer::Conv2d {
                weight: uniform(&[4, 2, 3, 3], 1),
                bias: Some(uniform(&[4], 2)),
                params: Conv2dParams::new().padding(1),
            },
            0,
        ),
        node("relu", Layer::Relu, 1),
        node(
            "pool",
            Layer::MaxPool2d(smoothgrad_autodiff::Pool2dParams::new(2)),
            2,
        ),
        node("flat", Layer::Flatten { start_dim: 1 }, 3),
        node(
            "fc",
            Layer::Linear {
                weight: uniform(&[10, 100], 3),
                bias: Some(uniform(&[10], 4)),
            },
            4,
        ),
    ];
    Model::new("conv", &[2, 10, 10], nodes, 5).unwrap()
}

fn smoothing(n: usize, sigma: f64, seed: u64, aggregate: Aggregate) -> Smoothing<f64> {
    Smoothing {
        samples: n,
        noise: NoiseLevel::Absolute(sigma),
        seed,
        given_noise: None,
        aggregate,
    }
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 on erf, |error| < 1.5e-7).
fn phi(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

#[test]
fn smoothgrad_of_a_linear_function_is_its_weight() {
    let w = uniform(&[6], 10);
    let model = linear_model(&w, Some(0.3), false);
    let x = uniform(&[6], 11);
    let map = Explainer::new(&model)
        .explain(
            &x,
            Some(0),
            &Method::Gradient,
            Some(&smoothing(32, 0.7, 1, Aggregate::Mean)),
        )
        .unwrap();
    assert!(max_rel_diff(map.attribution.as_slice(), w.as_slice()) < 1e-14);
    // VarGrad of a linear function is zero: every copy has the same gradient.
    let var = Explainer::new(&model)
        .explain(
            &x,
            Some(0),
            &Method::Gradient,
            Some(&smoothing(32, 0.7, 1, Aggregate::Variance)),
        )
        .unwrap();
    assert!(var.attribution.as_slice().iter().all(|v| v.abs() < 1e-14));
}

/// f = relu(w·x + b): SmoothGrad = w·Φ((w·x + b)/(σ‖w‖)), with Monte-Carlo error ∝ 1/√n.
#[test]
fn smoothgrad_of_a_relu_unit_matches_the_normal_cdf() {
    let w = uniform(&[5], 20);
    let b = 0.1;
    let x = uniform(&[5], 21);
    let sigma = 0.8;
    let model = linear_model(&w, Some(b), true);
    let norm_w = w.as_slice().iter().map(|v| v * v).sum::<f64>().sqrt();
    let z: f64 = w
        .as_slice()
        .iter()
        .zip(x.as_slice())
        .map(|(a, b)| a * b)
        .sum::<f64>()
        + b;
    let p = phi(z / (sigma * norm_w));
    assert!(
        p > 0.2 && p < 0.8,
        "test point should be near the kink: p = {p}"
    );
    let expected: Vec<f64> = w.as_slice().iter().map(|v| v * p).collect();
    let explainer = Explainer::new(&model);
    // Mean absolute error over seeds of the first coordinate, normalised by |w_0|.
    let mean_error = |n: usize| -> f64 {
        let seeds = 24;
        (0..seeds)
            .map(|seed| {
                let map = explainer
                    .explain(
                        &x,
                        Some(0),
                        &Method::Gradient,
                        Some(&smoothing(n, sigma, seed, Aggregate::Mean)),
                    )
                    .unwrap();
                let a = map.attribution.as_slice();
                // SmoothGrad is w times the fraction of active copies: every coordinate agrees.
                for j in 1..5 {
                    assert!((a[j] / w.as_slice()[j] - a[0] / w.as_slice()[0]).abs() < 1e-12);
                }
                (a[0] - expected[0]).abs() / w.as_slice()[0].abs()
            })
            .sum::<f64>()
            / seeds as f64
    };
    let (e100, e10000) = (mean_error(100), mean_error(10_000));
    // E|p̂ − p| = sqrt(2 p (1 − p) / (π n)) for a binomial proportion.
    let theory = |n: f64| (2.0 * p * (1.0 - p) / (std::f64::consts::PI * n)).sqrt();
    eprintln!(
        "relu unit: p = {p:.4}, mean |error| n=100: {e100:.5} (theory {:.5}), n=10000: {e10000:.6} (theory {:.6})",
        theory(100.0),
        theory(10_000.0)
    );
    assert!(e100 < 2.0 * theory(100.0) && e100 > 0.4 * theory(100.0));
    assert!(e10000 < 2.0 * theory(10_000.0) && e10000 > 0.4 * theory(10_000.0));
    let ratio = e100 / e10000;
    assert!(
        (4.0..25.0).contains(&ratio),
        "error ratio {ratio}, expected about 10"
    );
}

/// f = ½xᵀAx (A symmetric): SmoothGrad = Ax, VarGrad = σ²·diag(AAᵀ), through the copies op.
#[test]
fn quadratic_form_smoothgrad_and_vargrad() {
    let d = 4;
    let m = uniform(&[d, d], 30);
    let a: Vec<f64> = (0..d * d)
        .map(|k| 0.5 * (m.as_slice()[k] + m.as_slice()[(k % d) * d + k / d]))
        .collect();
    let a = Tensor::from_vec(a, &[d, d]).unwrap();
    let x = uniform(&[1, d], 31);
    let (sigma, n) = (0.5, 40_000);
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let spec = NoiseSpec {
        sigma,
        first: 0,
        count: n,
        source: NoiseSource::Philox { seed: 3 },
    };
    let batch = tape.noisy_copies(&xv, &spec).unwrap();
    let ax = tape
        .linear(&batch, &Var::constant(a.clone()), None)
        .unwrap();
    let xax = tape.mul(&batch, &ax).unwrap();
    let f = tape.sum(&xax, &[1], false).unwrap();
    let f = tape.mul_scalar(&f, 0.5).unwrap();
    let g = tape
        .backward_from(&f, &Tensor::ones(&[n]).unwrap())
        .unwrap();
    let sum = g.get(&xv).unwrap().as_slice();
    let sumsq = g.sum_of_squares(&xv).unwrap().as_slice();
    let av = a.as_slice();
    for i in 0..d {
        let row = &av[i * d..(i + 1) * d];
        let ax_i: f64 = row.iter().zip(x.as_slice()).map(|(p, q)| p * q).sum();
        let aat_ii: f64 = row.iter().map(|v| v * v).sum();
        let mean = sum[i] / n as f64;
        let var = sumsq[i] / n as f64 - mean * mean;
        let se_mean = sigma * aat_ii.sqrt() / (n as f64).sqrt();
        assert!(
            (mean - ax_i).abs() < 5.0 * se_mean,
            "SG[{i}] {mean} vs {ax_i}"
        );
        let want_var = sigma * sigma * aat_ii;
        assert!(
            (var - want_var).abs() < 5.0 * want_var * (2.0 / n as f64).sqrt(),
            "VarGrad[{i}] {var} vs {want_var}"
        );
    }
}

#[test]
fn chunking_does_not_change_the_map() {
    let model = conv_model();
    let x = uniform(&[2, 10, 10], 40);
    let s = smoothing(13, 0.3, 5, Aggregate::Variance);
    for method in [
        Method::Gradient,
        Method::GuidedBackprop,
        Method::GradXInput,
        Method::IntegratedGradients(IgConfig {
            steps: 6,
            rule: IgRule::GaussLegendre,
            baseline: None,
        }),
    ] {
        let whole = Explainer::new(&model)
            .explain(&x, None, &method, Some(&s))
            .unwrap();
        let single = Explainer::new(&model)
            .memory_budget(1)
            .explain(&x, None, &method, Some(&s))
            .unwrap();
        assert_eq!(single.chunk, 1);
        assert!(whole.chunk > 1);
        let e = max_rel_diff(whole.attribution.as_slice(), single.attribution.as_slice());
        assert!(
            e < 1e-12,
            "{}: batched vs one copy at a time differ by {e}",
            method.name()
        );
    }
}

/// Chunks run side by side (one per thread, kernels serial) give the map of one chunk at a time
/// over all threads, whatever the number of threads, and they do run side by side.
#[test]
fn lanes_do_not_change_the_map() {
    let model = conv_model();
    let x = uniform(&[2, 10, 10], 42);
    let s = smoothing(13, 0.3, 5, Aggregate::Variance);
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let explain = |threads: usize, budget: Option<usize>, method: &Method| {
        pool(threads).install(|| {
            let e = Explainer::new(&model);
            let e = match budget {
                Some(b) => e.memory_budget(b),
                None => e,
            };
            e.explain(&x, None, method, Some(&s)).unwrap()
        })
    };
    for method in [
        Method::Gradient,
        Method::GuidedBackprop,
        Method::GradXInput,
        Method::IntegratedGradients(IgConfig {
            steps: 6,
            rule: IgRule::RiemannTrapezoid,
            baseline: None,
        }),
    ] {
        let passes = match &method {
            Method::IntegratedGradients(c) => 13 * c.steps,
            _ => 13,
        };
        let one = explain(1, None, &method);
        assert_eq!((one.chunk, one.lanes), (passes, 1));
        for threads in [2, 3] {
            let lanes = explain(threads, None, &method);
            assert_eq!(lanes.lanes, threads, "{}", method.name());
            assert!(lanes.chunk < passes);
            let e = max_rel_diff(one.attribution.as_slice(), lanes.attribution.as_slice());
            assert!(
                e < 1e-12,
                "{}: {threads} lanes differ by {e}",
                method.name()
            );
            // Run twice: the sums are added in chunk order, so the map is reproducible exactly.
            let again = explain(threads, None, &method);
            assert_eq!(lanes.attribution, again.attribution);
        }
        // A budget with room for one copy only: one chunk at a time over the pool.
        let narrow = explain(2, Some(1), &method);
        assert_eq!((narrow.chunk, narrow.lanes), (1, 1));
    }
}

/// The batched SmoothGrad equals a loop of single-image gradients on the same noisy copies.
#[test]
fn batched_smoothgrad_equals_a_loop_of_gradients() {
    let model = conv_model();
    let x = uniform(&[2, 10, 10], 41);
    let (n, sigma) = (9, 0.25);
    let explainer = Explainer::new(&model);
    let map = explainer
        .explain(
            &x,
            Some(3),
            &Method::Gradient,
            Some(&smoothing(n, sigma, 8, Aggregate::Mean)),
        )
        .unwrap();
    let mut tape = Tape::new();
    let copies = tape
        .noisy_copies(
            &Var::constant(x.reshape(&[1, 2, 10, 10]).unwrap()),
            &NoiseSpec {
                sigma,
                first: 0,
                count: n,
                source: NoiseSource::Philox { seed: 8 },
            },
        )
        .unwrap()
        .into_value();
    let mut mean = vec![0.0; 200];
    for i in 0..n {
        let xi = Tensor::from_vec(
            copies.as_slice()[i * 200..(i + 1) * 200].to_vec(),
            &[2, 10, 10],
        )
        .unwrap();
        let g = explainer
            .explain(&xi, Some(3), &Method::Gradient, None)
            .unwrap();
        for (m, v) in mean.iter_mut().zip(g.attribution.as_slice()) {
            *m += v / n as f64;
        }
    }
    assert!(max_rel_diff(map.attribution.as_slice(), &mean) < 1e-12);
}

#[test]
fn same_seed_same_bits_other_seed_other_map() {
    let model = conv_model().cast::<f32>();
    let x = uniform(&[2, 10, 10], 42).cast::<f32>();
    let explainer = Explainer::new(&model);
    let s = Smoothing {
        seed: 9,
        ..Smoothing::default()
    };
    let a = explainer
        .explain(&x, None, &Method::Gradient, Some(&s))
        .unwrap();
    let b = explainer
        .explain(&x, None, &Method::Gradient, Some(&s))
        .unwrap();
    let bits = |m: &smoothgrad_saliency::SaliencyMap| -> Vec<u32> {
        m.attribution
            .as_slice()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
    let c = explainer
        .explain(
            &x,
            None,
            &Method::Gradient,
            Some(&Smoothing { seed: 10, ..s }),
        )
        .unwrap();
    assert_ne!(bits(&a), bits(&c));
}

/// Guided backprop on fc → ReLU → fc: the ReLU passes only positive incoming gradients.
#[test]
fn guided_backprop_passes_positive_gradients_only() {
    let (d, h) = (5, 16);
    let w1 = uniform(&[h, d], 50);
    let w2 = uniform(&[1, h], 51);
    let nodes = vec![
        node(
            "fc1",
            Layer::Linear {
                weight: w1.clone(),
                bias: None,
            },
            0,
        ),
        node("relu", Layer::Relu, 1),
        node(
            "fc2",
            Layer::Linear {
                weight: w2.clone(),
                bias: None,
            },
            2,
        ),
    ];
    let model = Model::new("mlp", &[d], nodes, 3).unwrap();
    let x = uniform(&[d], 52);
    let pre: Vec<f64> = (0..h)
        .map(|j| {
            (0..d)
                .map(|i| w1.as_slice()[j * d + i] * x.as_slice()[i])
                .sum()
        })
        .collect();
    let expect = |guided: bool| -> Vec<f64> {
        (0..d)
            .map(|i| {
                (0..h)
                    .filter(|&j| pre[j] > 0.0 && (!guided || w2.as_slice()[j] > 0.0))
                    .map(|j| w2.as_slice()[j] * w1.as_slice()[j * d + i])
                    .sum()
            })
            .collect()
    };
    let e = Explainer::new(&model);
    let g = e.explain(&x, Some(0), &Method::Gradient, None).unwrap();
    let gb = e
        .explain(&x, Some(0), &Method::GuidedBackprop, None)
        .unwrap();
    assert!(max_rel_diff(g.attribution.as_slice(), &expect(false)) < 1e-14);
    assert!(max_rel_diff(gb.attribution.as_slice(), &expect(true)) < 1e-14);
    assert_ne!(
        expect(false),
        expect(true),
        "the test weights must exercise the guided rule"
    );
}

/// IG satisfies completeness: Σ attributions = f(x) − f(baseline) (to quadrature error).
#[test]
fn integrated_gradients_completeness() {
    let model = conv_model();
    let x = uniform(&[2, 10, 10], 60);
    let e = Explainer::new(&model);
    let target = 7;
    let fx = e.logits(&x).unwrap()[target];
    let f0 = e.logits(&Tensor::zeros(&[2, 10, 10]).unwrap()).unwrap()[target];
    for (rule, steps, tol) in [
        (IgRule::GaussLegendre, 64, 2e-2),
        (IgRule::RiemannMiddle, 200, 2e-2),
        (IgRule::RiemannTrapezoid, 200, 2e-2),
    ] {
        let ig = e
            .explain(
                &x,
                Some(target),
                &Method::IntegratedGradients(IgConfig {
                    steps,
                    rule,
                    baseline: None,
                }),
                None,
            )
            .unwrap();
        let total: f64 = ig.attribution.as_slice().iter().sum();
        let rel = (total - (fx - f0)).abs() / (fx - f0).abs();
        assert!(
            rel < tol,
            "{}: Σ IG = {total}, f(x) − f(0) = {}, rel {rel}",
            rule.name(),
            fx - f0
        );
    }
}

/// The gradient of a softmax probability of linear logits: p_t (W_t − Σ_k p_k W_k).
#[test]
fn probability_output_differentiates_the_softmax() {
    let (d, k) = (4, 3);
    let w = uniform(&[k, d], 70);
    let model = Model::new(
        "softmax-linear",
        &[d],
        vec![node(
            "fc",
            Layer::Linear {
                weight: w.clone(),
                bias: None,
            },
            0,
        )],
        1,
    )
    .unwrap();
    let x = uniform(&[d], 71);
    let logits: Vec<f64> = (0..k)
        .map(|c| {
            (0..d)
                .map(|i| w.as_slice()[c * d + i] * x.as_slice()[i])
                .sum()
        })
        .collect();
    let z: f64 = logits.iter().map(|l| l.exp()).sum();
    let p: Vec<f64> = logits.iter().map(|l| l.exp() / z).collect();
    let t = 1;
    let want: Vec<f64> = (0..d)
        .map(|i| {
            p[t] * (w.as_slice()[t * d + i]
                - (0..k).map(|c| p[c] * w.as_slice()[c * d + i]).sum::<f64>())
        })
        .collect();
    let got = Explainer::new(&model)
        .output(Output::Probability)
        .explain(&x, Some(t), &Method::Gradient, None)
        .unwrap();
    assert!(max_rel_diff(got.attribution.as_slice(), &want) < 1e-14);
}

#[test]
fn grad_x_input_is_input_times_gradient() {
    let model = conv_model();
    let x = uniform(&[2, 10, 10], 80);
    let e = Explainer::new(&model);
    let g = e.explain(&x, Some(2), &Method::Gradient, None).unwrap();
    let gx = e.explain(&x, Some(2), &Method::GradXInput, None).unwrap();
    let want: Vec<f64> = g
        .attribution
        .as_slice()
        .iter()
        .zip(x.as_slice())
        .map(|(a, b)| a * b)
        .collect();
    assert!(max_rel_diff(gx.attribution.as_slice(), &want) < 1e-14);
}

#[test]
fn bad_requests_are_typed_errors() {
    let model = conv_model();
    let e = Explainer::new(&model);
    let x = uniform(&[2, 10, 10], 90);
    let err = e
        .explain(
            &x,
            None,
            &Method::Gradient,
            Some(&smoothing(0, 0.1, 0, Aggregate::Mean)),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SaliencyError::Option {
                option: "samples",
                ..
            }
        ),
        "{err}"
    );
    let err = e
        .explain(&x, Some(10), &Method::Gradient, None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            SaliencyError::Option {
                option: "target",
                ..
            }
        ),
        "{err}"
    );
    let err = e
        .explain(&uniform(&[3, 10, 10], 1), None, &Method::Gradient, None)
        .unwrap_err();
    assert!(matches!(err, SaliencyError::Input(_)), "{err}");
    let mut nan = x.clone();
    nan.data_mut()[17] = f64::NAN;
    let err = e.explain(&nan, None, &Method::Gradient, None).unwrap_err();
    assert!(err.to_string().contains("element 17"), "{err}");
    let err = e
        .explain(
            &x,
            None,
            &Method::Gradient,
            Some(&smoothing(4, -1.0, 0, Aggregate::Mean)),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SaliencyError::Option {
                option: "noise",
                ..
            }
        ),
        "{err}"
    );
    let ig0 = Method::IntegratedGradients(IgConfig {
        steps: 0,
        ..IgConfig::default()
    });
    assert!(matches!(
        e.explain(&x, None, &ig0, None),
        Err(SaliencyError::Option { .. })
    ));
}
