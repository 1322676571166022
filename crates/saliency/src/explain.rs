//! The engine: one batched forward and one backward per chunk of noisy copies, input gradients
//! only, with the reduction over copies fused into the first convolution's backward.

use crate::error::{Result, SaliencyError};
use crate::method::{Aggregate, IgConfig, Method, NoiseLevel, Output, Smoothing};
use smoothgrad_autodiff::{BackwardOptions, Float, NoiseSource, NoiseSpec, Tape, Tensor, Var};
use smoothgrad_layers::Model;

/// Default working memory for one chunk of copies.
pub const DEFAULT_MEMORY_BUDGET: usize = 128 << 20;

/// An attribution map and what it explains.
#[derive(Debug, Clone)]
pub struct SaliencyMap<T: Float = f32> {
    /// The attribution, the input's shape `[C, H, W]`.
    pub attribution: Tensor<T>,
    /// The explained class.
    pub target: usize,
    /// The model's logits for the clean input.
    pub logits: Vec<T>,
    /// The noise standard deviation used (0 without smoothing).
    pub sigma: f64,
    /// Number of copies per forward/backward chunk.
    pub chunk: usize,
}

/// Explains one model's decisions.
///
/// ```
/// # use smoothgrad_autodiff::{Conv2dParams, Tensor};
/// # use smoothgrad_layers::{Layer, Model, Node};
/// use smoothgrad_saliency::{Explainer, Method, Smoothing};
/// # let w = Tensor::<f32>::randn(&[3, 1, 3, 3], 7)?;
/// # let nodes = vec![
/// #     Node { name: "conv".into(), layer: Layer::Conv2d { weight: w, bias: None, params: Conv2dParams::new().padding(1) }, inputs: vec![0] },
/// #     Node { name: "relu".into(), layer: Layer::Relu, inputs: vec![1] },
/// #     Node { name: "pool".into(), layer: Layer::GlobalAvgPool, inputs: vec![2] },
/// #     Node { name: "flat".into(), layer: Layer::Flatten { start_dim: 1 }, inputs: vec![3] },
/// # ];
/// # let model = Model::new("example", &[1, 8, 8], nodes, 4)?;
/// let image = Tensor::<f32>::randn(&[1, 8, 8], 1)?;
/// let explainer = Explainer::new(&model);
/// let map = explainer.explain(&image, None, &Method::Gradient, Some(&Smoothing::default()))?;
/// assert_eq!(map.attribution.dims(), &[1, 8, 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Explainer<'m, T: Float = f32> {
    model: &'m Model<T>,
    memory_budget: usize,
    output: Output,
}

impl<'m, T: Float> Explainer<'m, T> {
    /// An explainer of the target logit with the default memory budget.
    pub fn new(model: &'m Model<T>) -> Self {
        Explainer {
            model,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            output: Output::Logit,
        }
    }

    /// Sets the working memory for one chunk of copies, in bytes (at least one copy runs).
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Explains the logit (default) or the softmax probability of the target.
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// The model's logits for one input `[C, H, W]` (or `[1, C, H, W]`).
    pub fn logits(&self, image: &Tensor<T>) -> Result<Vec<T>> {
        let x = self.check_image(image)?;
        let mut tape = Tape::new();
        let y = self.model.forward(&mut tape, &Var::constant(x))?;
        let v = y.into_value().into_vec();
        if let Some(i) = v.iter().position(|v| !v.is_finite()) {
            return Err(SaliencyError::NonFinite {
                what: "logit",
                index: i,
            });
        }
        Ok(v)
    }

    /// Attribution of `target` (default: the top class) for `image` `[C, H, W]` by `method`,
    /// averaged over noisy copies when `smoothing` is given.
    pub fn explain(
        &self,
        image: &Tensor<T>,
        target: Option<usize>,
        method: &Method,
        smoothing: Option<&Smoothing<T>>,
    ) -> Result<SaliencyMap<T>> {
        let x = self.check_image(image)?;
        if self.model.output_dims().len() != 1 {
            return Err(SaliencyError::Input(format!(
                "the model's output {:?} is not a vector of class scores",
                self.model.output_dims()
            )));
        }
        let logits = self.logits(&x)?;
        let classes = logits.len();
        let target = match target {
            Some(t) if t >= classes => {
                return Err(SaliencyError::Option {
                    option: "target",
                    reason: format!("class {t} does not exist (the model has {classes} classes)"),
                });
            }
            Some(t) => t,
            None => argmax(&logits),
        };
        let (n, sigma, source, aggregate) = noise_plan(&x, smoothing)?;
        let per_copy = self.bytes_per_copy(&x)?;
        let points = match method {
            Method::IntegratedGradients(c) => {
                if c.steps == 0 {
                    return Err(SaliencyError::Option {
                        option: "ig-steps",
                        reason: "must be at least 1".into(),
                    });
                }
                c.steps
            }
            _ => 1,
        };
        let chunk = (self.memory_budget / per_copy.max(1)).clamp(1, n * points);
        let run = Run {
            explainer: self,
            x: &x,
            target,
            classes,
            n,
            sigma,
            source,
            chunk,
        };
        let (sum, sumsq) = match method {
            Method::Gradient => run.gradients(false)?,
            Method::GuidedBackprop => run.gradients(true)?,
            Method::GradXInput => run.grad_x_input()?,
            Method::IntegratedGradients(c) => run.integrated_gradients(c)?,
        };
        let values = aggregate_copies(&sum, &sumsq, n, aggregate)?;
        Ok(SaliencyMap {
            attribution: Tensor::from_vec(values, self.model.input_dims())?,
            target,
            logits,
            sigma,
            chunk: chunk.min(n * points),
        })
    }

    /// `image` as a finite one-sample batch `[1, C, H, W]` of the model's input shape.
    fn check_image(&self, image: &Tensor<T>) -> Result<Tensor<T>> {
        let want = self.model.input_dims();
        let d = image.dims();
        let sample = if d.len() == want.len() + 1 && d[0] == 1 {
            &d[1..]
        } else {
            d
        };
        if sample != want {
            return Err(SaliencyError::Input(format!(
                "shape {d:?} does not fit the model, which takes {want:?} (or [1, ...])"
            )));
        }
        if let Some(i) = image.first_non_finite() {
            return Err(SaliencyError::Input(format!(
                "value {} at element {i} is not finite",
                image.as_slice()[i]
            )));
        }
        Ok(image.reshape(&[&[1], want].concat())?)
    }

    /// Memory one copy holds through forward and backward: recorded values, saved tensors and
    /// gradients, estimated as three times the recorded elements.
    fn bytes_per_copy(&self, x: &Tensor<T>) -> Result<usize> {
        let mut tape = Tape::new();
        let xv = tape.var(x.clone());
        self.model.forward(&mut tape, &xv)?;
        Ok(3 * tape.recorded_elements() * std::mem::size_of::<T>())
    }
}

/// (copies, σ, noise source, aggregate) for a request: shared by every backend's explainer.
pub(crate) fn noise_plan<T: Float>(
    x: &Tensor<T>,
    smoothing: Option<&Smoothing<T>>,
) -> Result<(usize, f64, NoiseSource<T>, Aggregate)> {
    let Some(s) = smoothing else {
        return Ok((1, 0.0, NoiseSource::Philox { seed: 0 }, Aggregate::Mean));
    };
    if s.samples == 0 {
        return Err(SaliencyError::Option {
            option: "samples",
            reason: "the number of noisy copies must be at least 1".into(),
        });
    }
    let sigma = match s.noise {
        NoiseLevel::Relative(level) => {
            let (lo, hi) = x
                .as_slice()
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| {
                    (lo.min(v.as_f64()), hi.max(v.as_f64()))
                });
            level * (hi - lo)
        }
        NoiseLevel::Absolute(sigma) => sigma,
    };
    if !sigma.is_finite() || sigma < 0.0 {
        return Err(SaliencyError::Option {
            option: "noise",
            reason: format!("the noise level must be finite and non-negative (σ = {sigma})"),
        });
    }
    let source = match &s.given_noise {
        None => NoiseSource::Philox { seed: s.seed },
        Some(t) => {
            let want = [&[s.samples], &x.dims()[1..]].concat();
            if t.dims() != want {
                return Err(SaliencyError::Option {
                    option: "noise",
                    reason: format!(
                        "the given noise has shape {:?}, expected {want:?}",
                        t.dims()
                    ),
                });
            }
            NoiseSource::Given(t.clone())
        }
    };
    Ok((s.samples, sigma, source, s.aggregate))
}

/// The map from Σ and Σ² over `n` copies: mean, mean of squares, or their variance (Captum's
/// E[a²] − E[a]²); a non-finite value is an error naming its element. Shared by every backend.
pub(crate) fn aggregate_copies<T: Float>(
    sum: &[T],
    sumsq: &[T],
    n: usize,
    aggregate: Aggregate,
) -> Result<Vec<T>> {
    let inv_n = T::one() / T::from_usize(n);
    let values: Vec<T> = match aggregate {
        Aggregate::Mean => sum.iter().map(|&s| s * inv_n).collect(),
        Aggregate::MeanOfSquares => sumsq.iter().map(|&q| q * inv_n).collect(),
        Aggregate::Variance => sum
            .iter()
            .zip(sumsq)
            .map(|(&s, &q)| q * inv_n - (s * inv_n) * (s * inv_n))
            .collect(),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(SaliencyError::NonFinite {
            what: "attribution",
            index: i,
        });
    }
    Ok(values)
}

/// Integrated Gradients' path for `x[1, ...]`: the baseline's values (zeros when none is given)
/// and the rule's α and weights, one per step. Shared by every backend's explainer.
pub(crate) fn ig_path<T: Float>(
    x: &Tensor<T>,
    c: &IgConfig,
) -> Result<(Vec<T>, Vec<f64>, Vec<f64>)> {
    if c.steps == 0 {
        return Err(SaliencyError::Option {
            option: "ig-steps",
            reason: "must be at least 1".into(),
        });
    }
    let e = x.numel();
    let baseline: Vec<T> = match &c.baseline {
        None => vec![T::zero(); e],
        Some(b) => {
            if b.numel() != e {
                return Err(SaliencyError::Option {
                    option: "baseline",
                    reason: format!(
                        "shape {:?} does not match the input {:?}",
                        b.dims(),
                        &x.dims()[1..]
                    ),
                });
            }
            b.as_slice()
                .iter()
                .map(|v| T::from_f64(v.as_f64()))
                .collect()
        }
    };
    let (alphas, weights) = c.rule.points(c.steps);
    Ok((baseline, alphas, weights))
}

fn argmax<T: Float>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// One explanation in progress.
struct Run<'a, 'm, T: Float> {
    explainer: &'a Explainer<'m, T>,
    x: &'a Tensor<T>,
    target: usize,
    classes: usize,
    n: usize,
    sigma: f64,
    source: NoiseSource<T>,
    chunk: usize,
}

impl<T: Float> Run<'_, '_, T> {
    fn spec(&self, first: usize, count: usize) -> NoiseSpec<T> {
        NoiseSpec {
            sigma: self.sigma,
            first,
            count,
            source: self.source.clone(),
        }
    }

    /// The differentiated output of a batch and its one-hot seed.
    fn objective(&self, tape: &mut Tape<T>, batch: &Var<T>) -> Result<(Var<T>, Tensor<T>)> {
        let mut out = self.explainer.model.forward(tape, batch)?;
        if self.explainer.output == Output::Probability {
            out = tape.softmax(&out, 1)?;
        }
        let rows = batch.dims()[0];
        let mut seed = vec![T::zero(); rows * self.classes];
        for r in 0..rows {
            seed[r * self.classes + self.target] = T::one();
        }
        Ok((out, Tensor::from_vec(seed, &[rows, self.classes])?))
    }

    /// Σ and Σ² over copies of the (guided) gradient, through the noisy-copies op so the first
    /// convolution's backward reduces over copies as it goes.
    fn gradients(&self, guided: bool) -> Result<(Vec<T>, Vec<T>)> {
        let e = self.x.numel();
        let (mut sum, mut sumsq) = (vec![T::zero(); e], vec![T::zero(); e]);
        let mut first = 0;
        while first < self.n {
            let count = self.chunk.min(self.n - first);
            let mut tape = Tape::new();
            let xv = tape.var(self.x.clone());
            let batch = tape.noisy_copies(&xv, &self.spec(first, count))?;
            let (out, seed) = self.objective(&mut tape, &batch)?;
            let grads = tape.backward_with(&out, &seed, BackwardOptions { guided })?;
            let zero_grad =
                || SaliencyError::Input("the output does not depend on the input".into());
            let g = grads.get(&xv).ok_or_else(zero_grad)?;
            let q = grads.sum_of_squares(&xv).ok_or_else(zero_grad)?;
            add_into(&mut sum, g.as_slice());
            add_into(&mut sumsq, q.as_slice());
            first += count;
        }
        Ok((sum, sumsq))
    }

    /// Per-point input gradients of a batch of inputs `[m, ...]`.
    fn batch_gradients(&self, batch: Tensor<T>) -> Result<Tensor<T>> {
        let mut tape = Tape::new();
        let bv = tape.var(batch);
        let (out, seed) = self.objective(&mut tape, &bv)?;
        let mut grads = tape.backward_from(&out, &seed)?;
        grads
            .take(&bv)
            .ok_or_else(|| SaliencyError::Input("the output does not depend on the input".into()))
    }

    /// The noisy copies `first..first + count` as a constant batch.
    fn copies(&self, first: usize, count: usize) -> Result<Tensor<T>> {
        let mut tape = Tape::new();
        Ok(tape
            .noisy_copies(&Var::constant(self.x.clone()), &self.spec(first, count))?
            .into_value())
    }

    fn grad_x_input(&self) -> Result<(Vec<T>, Vec<T>)> {
        let e = self.x.numel();
        let (mut sum, mut sumsq) = (vec![T::zero(); e], vec![T::zero(); e]);
        let mut first = 0;
        while first < self.n {
            let count = self.chunk.min(self.n - first);
            let inputs = self.copies(first, count)?;
            let g = self.batch_gradients(inputs.clone())?;
            for (xi, gi) in inputs.as_slice().chunks(e).zip(g.as_slice().chunks(e)) {
                let a: Vec<T> = xi.iter().zip(gi).map(|(&x, &g)| x * g).collect();
                accumulate_copy(&mut sum, &mut sumsq, &a);
            }
            first += count;
        }
        Ok((sum, sumsq))
    }

    fn integrated_gradients(&self, c: &IgConfig) -> Result<(Vec<T>, Vec<T>)> {
        let e = self.x.numel();
        let (baseline, alphas, weights) = ig_path(self.x, c)?;
        let steps = c.steps;
        let (mut sum, mut sumsq) = (vec![T::zero(); e], vec![T::zero(); e]);
        // Points are numbered copy-major: point p is step p % steps of copy p / steps, so each
        // copy's path integral completes before the next begins and one accumulator suffices.
        let total = self.n * steps;
        let mut integral = vec![T::zero(); e];
        let mut current: Option<(usize, Tensor<T>)> = None;
        let mut p = 0;
        while p < total {
            let count = self.chunk.min(total - p);
            let mut batch = Vec::with_capacity(count * e);
            for q in p..p + count {
                let copy = q / steps;
                if current.as_ref().is_none_or(|(c, _)| *c != copy) {
                    current = Some((copy, self.copies(copy, 1)?));
                }
                let xi = current
                    .as_ref()
                    .map(|(_, t)| t.as_slice())
                    .unwrap_or_default();
                let alpha = T::from_f64(alphas[q % steps]);
                batch.extend(xi.iter().zip(&baseline).map(|(&x, &b)| b + alpha * (x - b)));
            }
            let dims = [&[count], &self.x.dims()[1..]].concat();
            let g = self.batch_gradients(Tensor::from_vec(batch, &dims)?)?;
            for (j, gq) in g.as_slice().chunks(e).enumerate() {
                let q = p + j;
                let w = T::from_f64(weights[q % steps]);
                for (acc, &gv) in integral.iter_mut().zip(gq) {
                    *acc += w * gv;
                }
                if q % steps == steps - 1 {
                    let copy = q / steps;
                    let xi = self.copies(copy, 1)?;
                    let a: Vec<T> = xi
                        .as_slice()
                        .iter()
                        .zip(&baseline)
                        .zip(&integral)
                        .map(|((&x, &b), &i)| (x - b) * i)
                        .collect();
                    accumulate_copy(&mut sum, &mut sumsq, &a);
                    integral.iter_mut().for_each(|v| *v = T::zero());
                }
            }
            p += count;
        }
        Ok((sum, sumsq))
    }
}

fn add_into<T: Float>(acc: &mut [T], v: &[T]) {
    for (a, &b) in acc.iter_mut().zip(v) {
        *a += b;
    }
}

fn accumulate_copy<T: Float>(sum: &mut [T], sumsq: &mut [T], a: &[T]) {
    for ((s, q), &v) in sum.iter_mut().zip(sumsq.iter_mut()).zip(a) {
        *s += v;
        *q += v * v;
    }
}
