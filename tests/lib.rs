//! Shared helpers of the integration tests: finite-difference gradient checks in f64 and
//! inputs kept away from kinks.

use smoothgrad_autodiff::{Result, Tape, Tensor, Var};

/// Uniform values in [-1, 1), seeded.
pub fn uniform(dims: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::uniform(dims, -1.0, 1.0, seed).expect("valid test shape")
}

/// Values in ±[0.1, 1.1): never within 0.1 of ReLU's kink at 0.
pub fn away_from_zero(dims: &[usize], seed: u64) -> Tensor<f64> {
    uniform(dims, seed).map(|v| v.signum() * (0.1 + v.abs()))
}

/// Positive values in [0.5, 1.5) (for log, pow, division).
pub fn positive(dims: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::uniform(dims, 0.5, 1.5, seed).expect("valid test shape")
}

/// A seeded permutation of 0.01·(0..n), centred: all values at least 0.01 apart, so max-pool
/// argmaxes cannot flip under a finite-difference step.
pub fn distinct(dims: &[usize], seed: u64) -> Tensor<f64> {
    let n: usize = dims.iter().product();
    let keys = uniform(&[n], seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys.as_slice()[a].total_cmp(&keys.as_slice()[b]));
    let mut v = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        v[i] = 0.01 * rank as f64 - 0.005 * n as f64;
    }
    Tensor::from_vec(v, dims).expect("valid test shape")
}

/// Which of a function's inputs are differentiated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wrt {
    /// The input requires a gradient and is checked.
    Grad,
    /// The input is a constant.
    Const,
}

/// Checks the tape's gradients of `<u, f(inputs)>` (u a seeded random upstream gradient, never
/// all ones) against central finite differences with step 1e-6, for every input marked
/// [`Wrt::Grad`]. Panics with the op, the input and the element on a mismatch.
pub fn gradcheck(
    name: &str,
    inputs: &[(Tensor<f64>, Wrt)],
    f: impl Fn(&mut Tape<f64>, &[Var<f64>]) -> Result<Var<f64>>,
) {
    let mut tape = Tape::new();
    let vars: Vec<Var<f64>> = inputs
        .iter()
        .map(|(t, w)| match w {
            Wrt::Grad => tape.var(t.clone()),
            Wrt::Const => Var::constant(t.clone()),
        })
        .collect();
    let y = f(&mut tape, &vars).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let upstream = uniform(y.dims(), 0xC0FFEE ^ y.value().numel() as u64);
    let grads = tape
        .backward_from(&y, &upstream)
        .unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));

    // The objective with every input constant: nothing is recorded.
    let objective = |values: &[Tensor<f64>]| -> f64 {
        let mut t = Tape::new();
        let vs: Vec<Var<f64>> = values.iter().cloned().map(Var::constant).collect();
        let y = f(&mut t, &vs).expect("forward");
        assert!(
            t.is_empty(),
            "{name}: a forward on constants recorded nodes"
        );
        y.value()
            .as_slice()
            .iter()
            .zip(upstream.as_slice())
            .map(|(a, b)| a * b)
            .sum()
    };

    let h = 1e-6;
    let mut checked = 0;
    for (k, (t, wrt)) in inputs.iter().enumerate() {
        if *wrt == Wrt::Const {
            assert!(grads.get(&vars[k]).is_none());
            continue;
        }
        let analytic = grads
            .get(&vars[k])
            .unwrap_or_else(|| panic!("{name}: no gradient for input {k}"));
        assert_eq!(
            analytic.dims(),
            t.dims(),
            "{name}: gradient shape of input {k}"
        );
        let mut values: Vec<Tensor<f64>> = inputs.iter().map(|(t, _)| t.clone()).collect();
        for j in 0..t.numel() {
            let orig = t.as_slice()[j];
            values[k].data_mut()[j] = orig + h;
            let plus = objective(&values);
            values[k].data_mut()[j] = orig - h;
            let minus = objective(&values);
            values[k].data_mut()[j] = orig;
            let numeric = (plus - minus) / (2.0 * h);
            let a = analytic.as_slice()[j];
            let tol = 1e-6 * (1.0 + numeric.abs());
            assert!(
                (a - numeric).abs() <= tol,
                "{name}: input {k} element {j}: analytic {a:.12e} vs numeric {numeric:.12e}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{name}: nothing was checked");
}

/// Largest |a - b| / (1 + |b|) over two equally long slices.
pub fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f64::max)
}

/// Small conv models and helpers shared by the GPU explainer tests (wgpu and CUDA against the
/// CPU `Explainer`).
pub mod gpu_models {
    use smoothgrad_autodiff::{Conv2dParams, Pool2dParams, Tensor};
    use smoothgrad_layers::{Layer, Model, Node};
    use smoothgrad_saliency::{Aggregate, NoiseLevel, Smoothing};

    pub fn node(name: &str, layer: Layer<f32>, inputs: &[usize]) -> Node<f32> {
        Node {
            name: name.into(),
            layer,
            inputs: inputs.to_vec(),
        }
    }

    pub fn conv(o: usize, c: usize, seed: u64, bias: bool) -> Layer<f32> {
        let scale = (2.0 / (c * 9) as f64).sqrt();
        Layer::Conv2d {
            weight: Tensor::uniform(&[o, c, 3, 3], -scale, scale, seed).unwrap(),
            bias: bias.then(|| Tensor::uniform(&[o], -0.1, 0.1, seed + 100).unwrap()),
            params: Conv2dParams::new().padding(1),
        }
    }

    pub fn linear(o: usize, i: usize, seed: u64) -> Layer<f32> {
        Layer::Linear {
            weight: Tensor::uniform(&[o, i], -1.0, 1.0, seed).unwrap(),
            bias: Some(Tensor::uniform(&[o], -0.1, 0.1, seed + 100).unwrap()),
        }
    }

    pub fn batch_norm(c: usize, seed: u64) -> Layer<f32> {
        Layer::BatchNorm {
            gamma: Tensor::uniform(&[c], 0.5, 1.5, seed).unwrap(),
            beta: Tensor::uniform(&[c], -0.2, 0.2, seed + 1).unwrap(),
            mean: Tensor::uniform(&[c], -0.2, 0.2, seed + 2).unwrap(),
            var: Tensor::uniform(&[c], 0.5, 2.0, seed + 3).unwrap(),
            eps: 1e-5,
        }
    }

    /// conv + relu + maxpool + conv + relu + global-avg-pool + linear.
    pub fn plain_cnn() -> Model<f32> {
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
    pub fn residual_cnn() -> Model<f32> {
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

    pub fn rel_l2(gpu: &[f32], cpu: &[f32]) -> f64 {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (&g, &c) in gpu.iter().zip(cpu) {
            num += (g as f64 - c as f64).powi(2);
            den += (c as f64).powi(2);
        }
        num.sqrt() / den.sqrt().max(1e-30)
    }

    pub fn smoothing(aggregate: Aggregate, n: usize, noise: Option<Tensor<f32>>) -> Smoothing<f32> {
        Smoothing {
            samples: n,
            noise: NoiseLevel::Relative(0.15),
            seed: 7,
            given_noise: noise,
            aggregate,
        }
    }
}
