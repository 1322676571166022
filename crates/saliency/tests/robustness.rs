//! The explainer refuses requests over its limits before running anything, and never returns a
//! map holding NaN or ±Inf: a fault is an error naming the stage and the copy where it appeared.

use smoothgrad_autodiff::{NoiseSource, NoiseSpec, Tape, Tensor, Var};
use smoothgrad_layers::{Layer, Model, Node};
use smoothgrad_saliency::{
    Aggregate, Explainer, IgConfig, IgRule, Limit, Limits, Method, NoiseLevel, SaliencyError,
    Smoothing,
};

fn linear(name: &str, weight: Vec<f32>, rows: usize, cols: usize, input: usize) -> Node<f32> {
    Node {
        name: name.into(),
        layer: Layer::Linear {
            weight: Tensor::from_vec(weight, &[rows, cols]).unwrap(),
            bias: None,
        },
        inputs: vec![input],
    }
}

/// Input [1, 1, 2] → flatten → fc1 (diag(1e20, 1)) → ReLU → fc2 (diag(`w2`, 1)).
fn relu_model(name: &str, w2: f32) -> Model<f32> {
    let nodes = vec![
        Node {
            name: "flat".into(),
            layer: Layer::Flatten { start_dim: 1 },
            inputs: vec![0],
        },
        linear("fc1", vec![1e20, 0.0, 0.0, 1.0], 2, 2, 1),
        Node {
            name: "relu".into(),
            layer: Layer::Relu,
            inputs: vec![2],
        },
        linear("fc2", vec![w2, 0.0, 0.0, 1.0], 2, 2, 3),
    ];
    Model::new(name, &[1, 1, 2], nodes, 4).unwrap()
}

/// [`relu_model`] with `w2` = 1e20.
///
/// For inputs near 1e-30 every value of the forward is finite (at most ~1e9), but the gradient
/// of logit 0 with respect to x₀ is 1e20 · 1e20 = 1e40 > f32::MAX wherever x₀ > 0 (ReLU open):
/// the fault appears only in the backward, and only for some noisy copies.
fn backward_overflow_model() -> Model<f32> {
    relu_model("backward-overflow", 1e20)
}

fn tiny_input() -> Tensor<f32> {
    Tensor::from_vec(vec![0.0, 1e-30], &[1, 1, 2]).unwrap()
}

fn smoothing(samples: usize, aggregate: Aggregate) -> Smoothing<f32> {
    Smoothing {
        samples,
        noise: NoiseLevel::Relative(0.15),
        seed: 11,
        given_noise: None,
        aggregate,
    }
}

fn limit_of(r: smoothgrad_saliency::Result<impl std::fmt::Debug>) -> (Limit, String) {
    match r {
        Err(SaliencyError::LimitExceeded { limit, message }) => (limit, message),
        other => panic!("expected a limit error, got {other:?}"),
    }
}

fn non_finite(r: smoothgrad_saliency::Result<impl std::fmt::Debug>) -> (String, usize, f64) {
    match r {
        Err(SaliencyError::NonFinite { what, index, value }) => (what, index, value),
        other => panic!("expected a non-finite error, got {other:?}"),
    }
}

#[test]
fn a_gradient_that_overflows_only_in_the_backward_is_an_error_naming_the_copy() {
    let model = backward_overflow_model();
    let x = tiny_input();
    // The clean input has x₀ = 0: the ReLU is closed, the gradient is finite.
    let explainer = Explainer::new(&model);
    let map = explainer
        .explain(&x, Some(0), &Method::Gradient, None)
        .unwrap();
    assert!(map.attribution.as_slice().iter().all(|v| v.is_finite()));
    assert!(map.logits.iter().all(|v| v.is_finite()));

    // With noise, the first copy whose x₀ is positive overflows: find it from the noise itself.
    let n = 16;
    let s = smoothing(n, Aggregate::Mean);
    let sigma = 0.15 * 1e-30;
    let mut tape = Tape::<f32>::new();
    let copies = tape
        .noisy_copies(
            &Var::constant(x.reshape(&[1, 1, 1, 2]).unwrap()),
            &NoiseSpec {
                sigma,
                first: 0,
                count: n,
                source: NoiseSource::Philox { seed: 11 },
            },
        )
        .unwrap()
        .into_value();
    let first_open = copies
        .as_slice()
        .chunks(2)
        .position(|c| c[0] > 0.0)
        .expect("some copy has x₀ > 0");
    for explainer in [
        Explainer::new(&model),
        Explainer::new(&model).memory_budget(1),
    ] {
        let (what, index, value) =
            non_finite(explainer.explain(&x, Some(0), &Method::Gradient, Some(&s)));
        assert_eq!(what, format!("input gradient of copy {first_open}"));
        assert_eq!(index, 0);
        assert!(value.is_infinite(), "{value}");
    }
    // Guided backprop goes through the same check.
    let (what, _, _) =
        non_finite(Explainer::new(&model).explain(&x, Some(0), &Method::GuidedBackprop, Some(&s)));
    assert_eq!(what, format!("input gradient of copy {first_open}"));
    // Grad × Input materialises each copy's gradient: the same copy is named.
    let (what, _, _) =
        non_finite(Explainer::new(&model).explain(&x, Some(0), &Method::GradXInput, Some(&s)));
    assert_eq!(what, format!("input gradient of copy {first_open}"));
    // Integrated Gradients from 0 to x₀ = 0 never opens the ReLU without noise; with it, the
    // first path point past zero of the first open copy overflows.
    let ig = Method::IntegratedGradients(IgConfig {
        steps: 4,
        rule: IgRule::RiemannRight,
        baseline: None,
    });
    let (what, _, _) = non_finite(Explainer::new(&model).explain(&x, Some(0), &ig, Some(&s)));
    assert_eq!(
        what,
        format!("input gradient of point 0 (α = 0.2500) of the path of copy {first_open}")
    );
}

#[test]
fn squares_that_overflow_matter_only_to_the_aggregates_that_read_them() {
    // fc2 scaled down so the gradient is 1e20 · 1e-1 = 1e19: finite, but its square (1e38 · n)
    // overflows the sum of squares. SmoothGrad (the mean) is fine; SmoothGrad² is not.
    let model = relu_model("square-overflow", 1e-1);
    let x = tiny_input();
    let explainer = Explainer::new(&model);
    let mean = explainer
        .explain(
            &x,
            Some(0),
            &Method::Gradient,
            Some(&smoothing(16, Aggregate::Mean)),
        )
        .unwrap();
    assert!(
        mean.attribution.as_slice()[0] > 1e17,
        "{:?}",
        mean.attribution
    );
    let (what, _, _) = non_finite(explainer.explain(
        &x,
        Some(0),
        &Method::Gradient,
        Some(&smoothing(16, Aggregate::MeanOfSquares)),
    ));
    assert!(what.contains("squared"), "{what}");
}

#[test]
fn a_forward_that_overflows_is_an_error_not_a_map() {
    // Three 1e20 layers: the forward overflows for an input of 1.
    let nodes = vec![
        Node {
            name: "flat".into(),
            layer: Layer::Flatten { start_dim: 1 },
            inputs: vec![0],
        },
        linear("fc1", vec![1e20, 0.0, 0.0, 1e20], 2, 2, 1),
        linear("fc2", vec![1e20, 0.0, 0.0, 1e20], 2, 2, 2),
    ];
    let model = Model::new("forward-overflow", &[1, 1, 2], nodes, 3).unwrap();
    let x = Tensor::from_vec(vec![1.0, 1.0], &[1, 1, 2]).unwrap();
    let r = Explainer::new(&model).explain(&x, None, &Method::Gradient, None);
    // The layers crate may catch it per layer first; either way no map comes back, and the
    // error says a value was not finite.
    let e = r.expect_err("an overflowing forward gives no map");
    let text = e.to_string();
    assert!(text.contains("non-finite"), "{text}");
}

#[test]
fn requests_over_the_limits_are_refused_before_running() {
    let model = backward_overflow_model();
    let x = tiny_input();
    let explainer = Explainer::new(&model);
    // The absurd n is refused by the check, before any buffer of n copies is allocated.
    let (limit, message) = limit_of(explainer.explain(
        &x,
        None,
        &Method::Gradient,
        Some(&smoothing(usize::MAX, Aggregate::Mean)),
    ));
    assert_eq!(limit, Limit::Copies);
    assert!(
        message.starts_with(&format!("{} noisy copies", usize::MAX)),
        "{message}"
    );
    let ig = |steps| {
        Method::IntegratedGradients(IgConfig {
            steps,
            ..IgConfig::default()
        })
    };
    let (limit, _) = limit_of(explainer.explain(&x, None, &ig(1 << 40), None));
    assert_eq!(limit, Limit::IgSteps);
    // Work: 4 passes × (fc1 and fc2: 2·2·2 FLOP each way, relu 2 each way) + one clean forward.
    let tight = Explainer::new(&model).limits(Limits {
        max_work_flops: 10,
        ..Limits::default()
    });
    let (limit, message) = limit_of(tight.explain(
        &x,
        None,
        &Method::Gradient,
        Some(&smoothing(4, Aggregate::Mean)),
    ));
    assert_eq!(limit, Limit::Work);
    assert_eq!(
        message,
        "the explanation needs 162 FLOP (4 copies × 36 FLOP per forward and backward), more than \
         the limit of 10 FLOP"
    );
    let e = tight.explain(
        &x,
        None,
        &Method::Gradient,
        Some(&smoothing(4, Aggregate::Mean)),
    );
    assert!(
        e.unwrap_err()
            .to_string()
            .ends_with("(Limits::max_work_flops)")
    );
    // Memory: one copy holds 2 + 2 + 2 + 2 + 2 values, three times, in f32: 120 bytes.
    let small = Explainer::new(&model).limits(Limits {
        max_memory_bytes: 100,
        ..Limits::default()
    });
    let (limit, message) = limit_of(small.logits(&x));
    assert_eq!(limit, Limit::Memory);
    assert!(message.contains("120 bytes"), "{message}");
    // The memory limit also caps the copies in flight: 240 bytes fit two copies whatever the
    // budget says (one chunk of two, or two chunks of one side by side).
    let capped = Explainer::new(&model).limits(Limits {
        max_memory_bytes: 240,
        ..Limits::default()
    });
    let x_open = Tensor::from_vec(vec![-1.0, 1.0], &[1, 1, 2]).unwrap();
    let map = capped
        .explain(
            &x_open,
            Some(1),
            &Method::Gradient,
            Some(&smoothing(6, Aggregate::Mean)),
        )
        .unwrap();
    assert_eq!(map.chunk * map.lanes, 2, "{map:?}");
}
