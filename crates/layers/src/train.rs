//! Training a [`Model`] on the same tape that explains it: the weights become variables that
//! require a gradient, the mean cross-entropy is differentiated, and an optimizer (Adam or SGD
//! with momentum, PyTorch's update rules) changes them. Also He initialisation, a small CNN
//! builder, accuracy, and saving as safetensors plus the JSON architecture of [`arch`](crate::arch).
//!
//! ```
//! use smoothgrad_autodiff::Tensor;
//! use smoothgrad_layers::train::{GlobalPool, Optimizer, Trainer, accuracy, small_cnn};
//!
//! // Two classes of 1×8×8 images: bright (class 1) or dark (class 0).
//! let labels: Vec<usize> = (0..16).map(|i| i % 2).collect();
//! let pixels: Vec<f32> = labels.iter().flat_map(|&l| vec![l as f32; 64]).collect();
//! let images = Tensor::from_vec(pixels, &[16, 1, 8, 8])?;
//! let model = small_cnn::<f32>(&[1, 8, 8], &[4, 8], GlobalPool::Average, 2, 3)?;
//! let mut trainer = Trainer::new(model, Optimizer::adam(0.05));
//! for _ in 0..30 {
//!     trainer.step(&images, &labels)?;
//! }
//! assert_eq!(accuracy(trainer.model(), &images, &labels, 8)?, 1.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod export;

pub use export::{arch_json, safetensors_bytes, save_model};

use crate::error::{LayersError, Result};
use crate::model::{Layer, Model, Node};
use smoothgrad_autodiff::{Conv2dParams, Float, Pool2dParams, Tape, Tensor, Var};

/// How the weights follow their gradients (PyTorch's `SGD` and `AdamW` update rules).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// `buf = momentum·buf + (g + weight_decay·p)` (`buf = g` on the first step), `p -= lr·buf`.
    Sgd {
        learning_rate: f64,
        momentum: f64,
        weight_decay: f64,
    },
    /// Adam with bias correction and decoupled weight decay (AdamW):
    /// `p -= lr·wd·p`, then `p -= lr·m̂ / (√v̂ + eps)`.
    Adam {
        learning_rate: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl Optimizer {
    /// Adam with PyTorch's defaults (β = (0.9, 0.999), eps = 1e-8) and no weight decay.
    pub fn adam(learning_rate: f64) -> Self {
        Optimizer::Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// SGD with momentum and no weight decay.
    pub fn sgd(learning_rate: f64, momentum: f64) -> Self {
        Optimizer::Sgd {
            learning_rate,
            momentum,
            weight_decay: 0.0,
        }
    }

    /// The base learning rate.
    pub fn learning_rate(&self) -> f64 {
        match *self {
            Optimizer::Sgd { learning_rate, .. } | Optimizer::Adam { learning_rate, .. } => {
                learning_rate
            }
        }
    }
}

/// What one optimisation step saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy of the batch, before the update.
    pub loss: f64,
    /// Samples of the batch whose top logit was the label, before the update.
    pub correct: usize,
    /// Samples in the batch.
    pub batch: usize,
}

/// A model being trained: its weights, the optimizer's state and the step count.
pub struct Trainer<T: Float = f32> {
    model: Model<T>,
    params: Vec<Tensor<T>>,
    optimizer: Optimizer,
    learning_rate: f64,
    /// Momentum buffers (SGD) or first moments (Adam), one per parameter.
    first: Vec<Vec<T>>,
    /// Second moments (Adam).
    second: Vec<Vec<T>>,
    steps: u64,
}

impl<T: Float> Trainer<T> {
    /// Starts training `model` from its current weights.
    pub fn new(model: Model<T>, optimizer: Optimizer) -> Self {
        let params: Vec<Tensor<T>> = model.parameters().into_iter().map(|(_, t)| t).collect();
        let zeros = || params.iter().map(|p| vec![T::zero(); p.numel()]).collect();
        Trainer {
            first: zeros(),
            second: zeros(),
            params,
            learning_rate: optimizer.learning_rate(),
            optimizer,
            model,
            steps: 0,
        }
    }

    /// Sets the learning rate of the next steps (for schedules).
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.learning_rate = learning_rate;
    }

    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The model with the current weights.
    pub fn model(&self) -> &Model<T> {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> Model<T> {
        self.model
    }

    /// The mean cross-entropy of `images[N, ...]` against `labels`, its gradient with respect to
    /// every parameter (in [`Model::parameters`] order) and the number of correct predictions.
    pub fn gradients(
        &self,
        images: &Tensor<T>,
        labels: &[usize],
    ) -> Result<(f64, Vec<Tensor<T>>, usize)> {
        let mut tape = Tape::new();
        let vars: Vec<Var<T>> = self.params.iter().map(|p| tape.var(p.clone())).collect();
        let x = Var::constant(images.clone());
        let logits = self.model.forward_with_params(&mut tape, &x, &vars)?;
        let correct = argmax_rows(logits.value())
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        let loss = tape.cross_entropy(&logits, labels)?;
        let value = loss.value().as_slice()[0].as_f64();
        if !value.is_finite() {
            return Err(LayersError::Arch {
                source_name: "training".into(),
                layer: "<loss>".into(),
                reason: format!("the loss became {value} at step {}", self.steps),
            });
        }
        let mut grads = tape.backward(&loss)?;
        let g = vars
            .iter()
            .zip(&self.params)
            .map(|(v, p)| match grads.take(v) {
                Some(g) => Ok(g),
                None => Tensor::zeros(p.dims()),
            })
            .collect::<smoothgrad_autodiff::Result<Vec<_>>>()?;
        Ok((value, g, correct))
    }

    /// One optimisation step on a batch: forward, cross-entropy, backward, update.
    pub fn step(&mut self, images: &Tensor<T>, labels: &[usize]) -> Result<StepStats> {
        let (loss, grads, correct) = self.gradients(images, labels)?;
        self.apply(&grads)?;
        Ok(StepStats {
            loss,
            correct,
            batch: labels.len(),
        })
    }

    /// Updates the weights with the given gradients (in [`Model::parameters`] order).
    pub fn apply(&mut self, grads: &[Tensor<T>]) -> Result<()> {
        self.steps += 1;
        let lr = self.learning_rate;
        let t = self.steps as i32;
        for (k, (p, g)) in self.params.iter_mut().zip(grads).enumerate() {
            let (p, g) = (p.data_mut(), g.as_slice());
            match self.optimizer {
                Optimizer::Sgd {
                    momentum,
                    weight_decay,
                    ..
                } => {
                    let (mu, wd, lr) = (
                        T::from_f64(momentum),
                        T::from_f64(weight_decay),
                        T::from_f64(lr),
                    );
                    let buf = &mut self.first[k];
                    for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                        let d = g + wd * *p;
                        *b = if t == 1 { d } else { mu * *b + d };
                        *p -= lr * *b;
                    }
                }
                Optimizer::Adam {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    ..
                } => {
                    let c1 = 1.0 - beta1.powi(t);
                    let c2 = 1.0 - beta2.powi(t);
                    let (b1, b2, eps) = (T::from_f64(beta1), T::from_f64(beta2), T::from_f64(eps));
                    let decay = T::from_f64(1.0 - lr * weight_decay);
                    let (step, c2_sqrt) = (T::from_f64(lr / c1), T::from_f64(c2.sqrt()));
                    let (m, v) = (&mut self.first[k], &mut self.second[k]);
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v) {
                        *p *= decay;
                        *m = b1 * *m + (T::one() - b1) * g;
                        *v = b2 * *v + (T::one() - b2) * g * g;
                        *p -= step * *m / (v.sqrt() / c2_sqrt + eps);
                    }
                }
            }
        }
        self.model.set_parameters(&self.params)
    }
}

/// The learning rate at `step` of `total` under linear warm-up for `warmup` steps, then cosine
/// decay to zero.
pub fn cosine_learning_rate(base: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    0.5 * base * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Re-initialises every weight with He's normal initialisation (std √(2 / fan_in); fan_in =
/// C/groups·kH·kW for convolutions, the input features for linear layers), biases to zero and
/// batch norms to the identity. A pure function of `seed`.
pub fn he_init<T: Float>(model: &mut Model<T>, seed: u64) -> Result<()> {
    let values = model
        .parameters()
        .into_iter()
        .enumerate()
        .map(|(k, (name, t))| {
            let dims = t.dims();
            if name.ends_with(".bias") {
                Tensor::zeros(dims)
            } else if dims.len() == 1 {
                Tensor::ones(dims)
            } else {
                let fan_in: usize = dims[1..].iter().product();
                let std = (2.0 / fan_in.max(1) as f64).sqrt();
                let key = seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(k as u64);
                Ok(Tensor::randn(dims, key)?.map(|v| v * T::from_f64(std)))
            }
        })
        .collect::<smoothgrad_autodiff::Result<Vec<_>>>()?;
    model.set_parameters(&values)
}

/// How the last feature map becomes one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalPool {
    /// Mean over positions (`global_avg_pool2d`, node `gap`).
    Average,
    /// Maximum over positions (a `max_pool2d` as large as the map, node `gmp`): detects an
    /// object wherever it is, without diluting it by the background's area.
    Max,
}

/// A small CNN, He-initialised from `seed`: for each width w of `widths`, a 3×3 convolution
/// (padding 1) to w channels and a ReLU, with a 2×2 max-pool after every block but the last;
/// then global pooling and a linear layer to `classes` logits.
///
/// Nodes are named `conv1`, `relu1`, `pool1`, …, `gap` or `gmp`, `flatten`, `fc`.
pub fn small_cnn<T: Float>(
    input_dims: &[usize; 3],
    widths: &[usize],
    pool: GlobalPool,
    classes: usize,
    seed: u64,
) -> Result<Model<T>> {
    let mut nodes: Vec<Node<T>> = Vec::new();
    let mut push = |name: String, layer: Layer<T>| {
        let input = nodes.len();
        nodes.push(Node {
            name,
            layer,
            inputs: vec![input],
        });
    };
    let mut channels = input_dims[0];
    let (mut height, mut width) = (input_dims[1], input_dims[2]);
    for (i, &w) in widths.iter().enumerate() {
        let b = i + 1;
        push(
            format!("conv{b}"),
            Layer::Conv2d {
                weight: Tensor::zeros(&[w, channels, 3, 3])?,
                bias: Some(Tensor::zeros(&[w])?),
                params: Conv2dParams::new().padding(1),
            },
        );
        push(format!("relu{b}"), Layer::Relu);
        if b < widths.len() {
            push(format!("pool{b}"), Layer::MaxPool2d(Pool2dParams::new(2)));
            (height, width) = (height / 2, width / 2);
        }
        channels = w;
    }
    match pool {
        GlobalPool::Average => push("gap".into(), Layer::GlobalAvgPool),
        GlobalPool::Max => {
            let mut p = Pool2dParams::new(1);
            (p.kernel, p.stride) = ([height, width], [height, width]);
            push("gmp".into(), Layer::MaxPool2d(p));
        }
    }
    push("flatten".into(), Layer::Flatten { start_dim: 1 });
    push(
        "fc".into(),
        Layer::Linear {
            weight: Tensor::zeros(&[classes, channels])?,
            bias: Some(Tensor::zeros(&[classes])?),
        },
    );
    let output = nodes.len();
    let mut model = Model::new("small_cnn", input_dims, nodes, output)?;
    he_init(&mut model, seed)?;
    Ok(model)
}

/// The index of the largest value of each row of `[N, C]` (the first on ties).
pub fn argmax_rows<T: Float>(logits: &Tensor<T>) -> Vec<usize> {
    let c = logits.dims().last().copied().unwrap_or(1).max(1);
    logits
        .as_slice()
        .chunks(c)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}

/// The predicted class of each image of `images[N, ...]`, in batches of `batch_size`.
pub fn predict<T: Float>(
    model: &Model<T>,
    images: &Tensor<T>,
    batch_size: usize,
) -> Result<Vec<usize>> {
    let n = images.dims().first().copied().unwrap_or(0);
    let per = images.numel() / n.max(1);
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch_size.max(1)) {
        let count = batch_size.max(1).min(n - start);
        let dims = [&[count], &images.dims()[1..]].concat();
        let chunk = images.as_slice()[start * per..(start + count) * per].to_vec();
        let mut tape = Tape::new();
        let logits = model.forward(&mut tape, &Var::constant(Tensor::from_vec(chunk, &dims)?))?;
        out.extend(argmax_rows(logits.value()));
    }
    Ok(out)
}

/// The share of `images[N, ...]` whose predicted class is the label.
pub fn accuracy<T: Float>(
    model: &Model<T>,
    images: &Tensor<T>,
    labels: &[usize],
    batch_size: usize,
) -> Result<f64> {
    let predicted = predict(model, images, batch_size)?;
    let hits = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(hits as f64 / labels.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize, seed: u64) -> Tensor<f64> {
        Tensor::uniform(&[n, 2, 6, 6], -1.0, 1.0, seed).unwrap()
    }

    #[test]
    fn forward_with_constant_params_matches_forward() {
        let model = small_cnn::<f64>(&[2, 6, 6], &[3, 4], GlobalPool::Average, 5, 1).unwrap();
        let x = Var::constant(images(3, 2));
        let params: Vec<Var<f64>> = model
            .parameters()
            .into_iter()
            .map(|(_, t)| Var::constant(t))
            .collect();
        let mut tape = Tape::new();
        let a = model.forward(&mut tape, &x).unwrap();
        let b = model.forward_with_params(&mut tape, &x, &params).unwrap();
        assert_eq!(a.value(), b.value());
        assert!(
            model
                .forward_with_params(&mut tape, &x, &params[1..])
                .is_err()
        );
    }

    #[test]
    fn weight_gradients_match_finite_differences() {
        let model = small_cnn::<f64>(&[2, 6, 6], &[3, 4], GlobalPool::Max, 3, 4).unwrap();
        let (x, labels) = (images(4, 5), vec![0, 2, 1, 2]);
        let trainer = Trainer::new(model.clone(), Optimizer::sgd(0.1, 0.0));
        let (_, grads, _) = trainer.gradients(&x, &labels).unwrap();
        let loss = |m: &Model<f64>| {
            let mut tape = Tape::new();
            let y = m.forward(&mut tape, &Var::constant(x.clone())).unwrap();
            tape.cross_entropy(&y, &labels).unwrap().value().as_slice()[0]
        };
        let params: Vec<Tensor<f64>> = model.parameters().into_iter().map(|(_, t)| t).collect();
        let h = 1e-6;
        for (k, g) in grads.iter().enumerate() {
            for e in [0, g.numel() / 2, g.numel() - 1] {
                let bumped = |d: f64| {
                    let mut p = params.clone();
                    p[k].data_mut()[e] += d;
                    let mut m = model.clone();
                    m.set_parameters(&p).unwrap();
                    loss(&m)
                };
                let fd = (bumped(h) - bumped(-h)) / (2.0 * h);
                let an = g.as_slice()[e];
                assert!(
                    (fd - an).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{k}/{e}: {fd} vs {an}"
                );
            }
        }
    }

    /// A model whose single parameter vector is updated with a known gradient.
    fn one_param_trainer(optimizer: Optimizer) -> Trainer<f64> {
        let nodes = vec![Node {
            name: "fc".into(),
            layer: Layer::Linear {
                weight: Tensor::from_vec(vec![1.0, -2.0], &[1, 2]).unwrap(),
                bias: None,
            },
            inputs: vec![0],
        }];
        Trainer::new(Model::new("t", &[2], nodes, 1).unwrap(), optimizer)
    }

    fn weights(t: &Trainer<f64>) -> Vec<f64> {
        t.model().parameters()[0].1.as_slice().to_vec()
    }

    #[test]
    fn sgd_with_momentum_follows_pytorch() {
        let mut t = one_param_trainer(Optimizer::Sgd {
            learning_rate: 0.1,
            momentum: 0.9,
            weight_decay: 0.5,
        });
        let g = Tensor::from_vec(vec![0.5, 1.0], &[1, 2]).unwrap();
        t.apply(std::slice::from_ref(&g)).unwrap();
        // buf = g + 0.5 p = [1.0, 0.0]; p = [1, -2] - 0.1 buf.
        assert_eq!(weights(&t), vec![0.9, -2.0]);
        t.apply(&[g]).unwrap();
        // d = [0.5 + 0.45, 1 - 1] = [0.95, 0]; buf = 0.9 [1, 0] + d = [1.85, 0].
        let w = weights(&t);
        assert!(
            (w[0] - (0.9 - 0.185)).abs() < 1e-12 && w[1] == -2.0,
            "{w:?}"
        );
    }

    #[test]
    fn adam_first_step_moves_by_the_learning_rate() {
        let mut t = one_param_trainer(Optimizer::adam(0.01));
        let g = Tensor::from_vec(vec![3.0, -0.25], &[1, 2]).unwrap();
        t.apply(&[g]).unwrap();
        // m̂ = g and v̂ = g², so the step is lr·sign(g) (up to eps).
        let w = weights(&t);
        assert!(
            (w[0] - 0.99).abs() < 1e-7 && (w[1] + 1.99).abs() < 1e-7,
            "{w:?}"
        );
    }

    #[test]
    fn training_fits_a_separable_problem() {
        // Class = which channel holds the brighter mean.
        let x = images(32, 9);
        let per = 36;
        let labels: Vec<usize> = (0..32)
            .map(|i| {
                let s = x.as_slice();
                let a: f64 = s[i * 72..i * 72 + per].iter().sum();
                let b: f64 = s[i * 72 + per..(i + 1) * 72].iter().sum();
                usize::from(b > a)
            })
            .collect();
        let model = small_cnn::<f64>(&[2, 6, 6], &[8], GlobalPool::Average, 2, 3).unwrap();
        for optimizer in [Optimizer::adam(0.03), Optimizer::sgd(0.1, 0.9)] {
            let mut t = Trainer::new(model.clone(), optimizer);
            let first = t.step(&x, &labels).unwrap().loss;
            for _ in 0..150 {
                t.step(&x, &labels).unwrap();
            }
            let last = t.step(&x, &labels).unwrap().loss;
            let acc = accuracy(t.model(), &x, &labels, 7).unwrap();
            assert!(
                last < first * 0.5 && acc >= 0.9,
                "{optimizer:?}: {first} -> {last}, {acc}"
            );
        }
    }

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_zero() {
        assert_eq!(cosine_learning_rate(1.0, 0, 100, 10), 0.1);
        assert_eq!(cosine_learning_rate(1.0, 10, 100, 10), 1.0);
        assert!((cosine_learning_rate(1.0, 55, 100, 10) - 0.5).abs() < 1e-12);
        assert!(cosine_learning_rate(1.0, 100, 100, 10).abs() < 1e-12);
    }

    #[test]
    fn he_init_has_the_right_scale() {
        let model = small_cnn::<f64>(&[16, 8, 8], &[64], GlobalPool::Average, 2, 11).unwrap();
        let (name, w) = &model.parameters()[0];
        assert_eq!(name, "conv1.weight");
        let n = w.numel() as f64;
        let var = w.as_slice().iter().map(|v| v * v).sum::<f64>() / n;
        let want = 2.0 / (16.0 * 9.0);
        assert!((var / want - 1.0).abs() < 0.1, "{var} vs {want}");
        assert!(model.parameters()[1].1.as_slice().iter().all(|&b| b == 0.0));
    }
}
