//! The engine: one batched forward and one backward per chunk of noisy copies, input gradients
//! only, with the reduction over copies fused into the first convolution's backward.

#![deny(clippy::indexing_slicing)]

use crate::error::{Result, SaliencyError};
use crate::limits::Limits;
use crate::method::{Aggregate, IgConfig, Method, NoiseLevel, Output, Smoothing};
use rayon::prelude::*;
use smoothgrad_autodiff::{
    BackwardOptions, Float, NoiseSource, NoiseSpec, Tape, Tensor, Var, parallel,
};
use smoothgrad_layers::Model;

/// Default working memory of the CPU explainer: every chunk of copies in flight together (with
/// two threads, two chunks run side by side; see [`Explainer::memory_budget`]). The per-copy
/// estimate it is divided by is an upper bound (three times every value of the graph); the
/// `medium` benchmark model (ResNet-18 at 224²) runs two copies at once within it and grows the
/// process by about 60 MiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// Default working memory of one chunk of copies on a GPU (wgpu, CUDA).
pub const DEFAULT_GPU_MEMORY_BUDGET: usize = 128 << 20;

/// FLOPs per copy (forward and input gradient) below which [`Explainer::explain`] runs on a
/// rayon worker rather than on the calling thread.
const POOL_HANDOFF_FLOPS: u64 = 1 << 30;

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
    /// Chunks run at the same time, each on one thread (1: one chunk at a time over all
    /// threads).
    pub lanes: usize,
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
    limits: Limits,
    output: Output,
}

impl<'m, T: Float> Explainer<'m, T> {
    /// An explainer of the target logit with the default memory budget and [`Limits`].
    pub fn new(model: &'m Model<T>) -> Self {
        Explainer {
            model,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            limits: Limits::default(),
            output: Output::Logit,
        }
    }

    /// Sets the working memory for the copies in flight, in bytes: one chunk, or with several
    /// threads and room for two copies or more, one chunk per thread side by side (at least one
    /// copy runs;
    /// [`Limits::max_memory_bytes`] caps it).
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Sets what one explanation may cost; a request over a limit is refused with
    /// [`SaliencyError::LimitExceeded`] before anything is allocated.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
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
        self.limits.check(self.model, 1, None)?;
        self.clean_logits(&x)
    }

    /// Attribution of `target` (default: the top class) for `image` `[C, H, W]` by `method`,
    /// averaged over noisy copies when `smoothing` is given.
    ///
    /// The request is checked against the explainer's [`Limits`] before anything is allocated,
    /// and every stage's values are checked to be finite: a NaN or ±Inf is an error naming the
    /// stage and the copy ([`SaliencyError::NonFinite`]), never part of a returned map.
    pub fn explain(
        &self,
        image: &Tensor<T>,
        target: Option<usize>,
        method: &Method,
        smoothing: Option<&Smoothing<T>>,
    ) -> Result<SaliencyMap<T>> {
        // A cheap explanation runs whole on a rayon worker: the calling thread hands it over
        // and sleeps once, instead of once per parallel step (each a wake-up of the pool and of
        // the caller: 4.5 → 3.3 context switches and −8% CPU per `tiny` map). A costly one stays
        // on the caller, where those wake-ups do not count and its buffers come from the
        // caller's malloc arena (glibc keeps freed memory per thread arena: `medium` grew its
        // RSS by 94 MiB run on a worker, 67 MiB on the caller).
        let f = self.model.flops_per_sample();
        if f.forward.saturating_add(f.input_backward) < POOL_HANDOFF_FLOPS {
            rayon::scope(|_| self.explain_here(image, target, method, smoothing))
        } else {
            self.explain_here(image, target, method, smoothing)
        }
    }

    fn explain_here(
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
        let (n, sigma, source, aggregate) = noise_plan(&x, smoothing)?;
        let steps = match method {
            Method::IntegratedGradients(c) if c.steps == 0 => {
                return Err(SaliencyError::Option {
                    option: "ig-steps",
                    reason: "must be at least 1".into(),
                });
            }
            Method::IntegratedGradients(c) => Some(c.steps),
            _ => None,
        };
        let cost = self.limits.check(self.model, n, steps)?;
        let passes = n * steps.unwrap_or(1);
        let (chunk, lanes) = lane_plan(
            self.memory_budget,
            &self.limits,
            cost.bytes_per_copy,
            passes,
            rayon::current_num_threads(),
        );
        let logits = self.clean_logits(&x)?;
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
        let run = Run {
            explainer: self,
            x: &x,
            target,
            classes,
            n,
            sigma,
            source,
            chunk,
            lanes,
            squares: aggregate != Aggregate::Mean,
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
            chunk,
            lanes,
        })
    }

    /// The logits of the clean input `x[1, ...]`, all finite.
    fn clean_logits(&self, x: &Tensor<T>) -> Result<Vec<T>> {
        let mut tape = Tape::new();
        let y = self.model.forward(&mut tape, &Var::constant(x.clone()))?;
        let v = y.into_value().into_vec();
        ensure_finite(&v, || "logits of the input".into())?;
        Ok(v)
    }

    /// `image` as a finite one-sample batch `[1, C, H, W]` of the model's input shape.
    fn check_image(&self, image: &Tensor<T>) -> Result<Tensor<T>> {
        let want = self.model.input_dims();
        let d = image.dims();
        let sample = match d.split_first() {
            Some((1, rest)) if d.len() == want.len() + 1 => rest,
            _ => d,
        };
        if sample != want {
            return Err(SaliencyError::Input(format!(
                "shape {d:?} does not fit the model, which takes {want:?} (or [1, ...])"
            )));
        }
        if let Some(i) = image.first_non_finite() {
            let value = image.as_slice().get(i).map_or(f64::NAN, |v| v.as_f64());
            return Err(SaliencyError::Input(format!(
                "value {value} at element {i} is not finite"
            )));
        }
        Ok(image.reshape(&[&[1], want].concat())?)
    }
}

/// Copies per forward/backward: at most as many as fit the budget (capped by the memory
/// limit), at least one, at most `passes`, and balanced: the fewest chunks that fit, of equal
/// size (50 passes with room for 48 run as 25 + 25, not 48 + a slow 2-copy tail). Shared by
/// every backend's explainer.
pub(crate) fn chunk_size(
    budget: usize,
    limits: &Limits,
    bytes_per_copy: u64,
    passes: usize,
) -> usize {
    let budget = (budget as u64).min(limits.max_memory_bytes);
    let passes = passes.max(1);
    let fit = usize::try_from(budget / bytes_per_copy.max(1))
        .unwrap_or(usize::MAX)
        .clamp(1, passes);
    passes.div_ceil(passes.div_ceil(fit))
}

/// (copies per chunk, chunks at once) on `threads` threads. When the
/// budget holds two or more copies, the chunks run side by side, one per thread with the
/// kernels serial inside ([`smoothgrad_autodiff::parallel::serial`]): no fork-join per op, and
/// each thread's chunk stays in its core's cache. The budget covers every chunk in flight; the
/// chunks are balanced and their count is a multiple of the lanes, so no lane idles at the end.
/// With room for one copy only, one chunk at a time uses all threads.
pub(crate) fn lane_plan(
    budget: usize,
    limits: &Limits,
    bytes_per_copy: u64,
    passes: usize,
    threads: usize,
) -> (usize, usize) {
    let passes = passes.max(1);
    let fit = usize::try_from((budget as u64).min(limits.max_memory_bytes) / bytes_per_copy.max(1))
        .unwrap_or(usize::MAX);
    let lanes = threads.min(passes).min(fit);
    if lanes < 2 {
        return (chunk_size(budget, limits, bytes_per_copy, passes), 1);
    }
    let per_lane = (fit / lanes).max(1);
    let chunks = passes.div_ceil(per_lane).next_multiple_of(lanes);
    (passes.div_ceil(chunks), lanes)
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
            let sample = x.dims().split_first().map_or(&[][..], |(_, rest)| rest);
            let want = [&[s.samples], sample].concat();
            if t.dims() != want {
                return Err(SaliencyError::Option {
                    option: "noise",
                    reason: format!(
                        "the given noise has shape {:?}, expected {want:?}",
                        t.dims()
                    ),
                });
            }
            if let Some(i) = t.first_non_finite() {
                let value = t.as_slice().get(i).map_or(f64::NAN, |v| v.as_f64());
                return Err(SaliencyError::Option {
                    option: "noise",
                    reason: format!("the given noise holds {value} at element {i}"),
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
    let (values, what): (Vec<T>, _) = match aggregate {
        Aggregate::Mean => (sum.iter().map(|&s| s * inv_n).collect(), "mean"),
        Aggregate::MeanOfSquares => (
            sumsq.iter().map(|&q| q * inv_n).collect(),
            "mean of squares",
        ),
        Aggregate::Variance => (
            sum.iter()
                .zip(sumsq)
                .map(|(&s, &q)| q * inv_n - (s * inv_n) * (s * inv_n))
                .collect(),
            "variance",
        ),
    };
    ensure_finite(&values, || {
        format!("attribution map ({what} over {n} copies)")
    })?;
    Ok(values)
}

/// An error naming `what()` when `values` holds a NaN or ±Inf.
pub(crate) fn ensure_finite<T: Float>(values: &[T], what: impl FnOnce() -> String) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(SaliencyError::NonFinite {
            what: what(),
            index,
            value: values.get(index).map_or(f64::NAN, |v| v.as_f64()),
        }),
    }
}

/// Like [`ensure_finite`] for a batch of rows of `row_len` values: `what(row)` names the row
/// holding the first bad value, and the index is within that row.
fn ensure_rows_finite<T: Float>(
    values: &[T],
    row_len: usize,
    what: impl FnOnce(usize) -> String,
) -> Result<()> {
    ensure_finite(values, String::new).map_err(|e| match e {
        SaliencyError::NonFinite { index, value, .. } => {
            let row_len = row_len.max(1);
            SaliencyError::NonFinite {
                what: what(index / row_len),
                index: index % row_len,
                value,
            }
        }
        other => other,
    })
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
                        x.dims().get(1..).unwrap_or_default()
                    ),
                });
            }
            if let Some(i) = b.first_non_finite() {
                return Err(SaliencyError::Option {
                    option: "baseline",
                    reason: format!("value at element {i} is not finite"),
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

/// The first index of the largest value (0 for an empty slice).
fn argmax<T: Float>(v: &[T]) -> usize {
    let mut best: Option<(usize, T)> = None;
    for (i, &x) in v.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map_or(0, |(i, _)| i)
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
    /// Chunks computed at once (see [`lane_plan`]).
    lanes: usize,
    /// Whether the aggregate reads Σ² (SmoothGrad², VarGrad), so it must be finite too.
    squares: bool,
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

    /// Elements of one sample.
    fn sample_len(&self) -> usize {
        self.x.numel()
    }

    /// The differentiated output of a batch and its one-hot seed; `row` names a row of the
    /// batch in messages ("copy 3").
    fn objective(
        &self,
        tape: &mut Tape<T>,
        batch: &Var<T>,
        row: &dyn Fn(usize) -> String,
    ) -> Result<(Var<T>, Tensor<T>)> {
        let mut out = self.explainer.model.forward(tape, batch)?;
        ensure_rows_finite(out.value().as_slice(), self.classes, |r| {
            format!("logits of {}", row(r))
        })?;
        if self.explainer.output == Output::Probability {
            out = tape.softmax(&out, 1)?;
            ensure_rows_finite(out.value().as_slice(), self.classes, |r| {
                format!("softmax probabilities of {}", row(r))
            })?;
        }
        let rows = batch.dims().first().copied().unwrap_or(0);
        let seed: Vec<T> = (0..rows)
            .flat_map(|_| {
                (0..self.classes).map(|c| {
                    if c == self.target {
                        T::one()
                    } else {
                        T::zero()
                    }
                })
            })
            .collect();
        Ok((out, Tensor::from_vec(seed, &[rows, self.classes])?))
    }

    /// Σ over copies `first..first + count` of the (guided) gradient and, when the aggregate
    /// reads it, of its square, through the noisy-copies op so the first convolution's backward
    /// reduces over copies as it goes (without squares, by summing its output gradient over
    /// the copies and running once).
    fn chunk_sums(
        &self,
        first: usize,
        count: usize,
        guided: bool,
    ) -> Result<(Tensor<T>, Option<Tensor<T>>)> {
        let mut tape = Tape::new();
        let xv = tape.var(self.x.clone());
        let batch = tape.noisy_copies(&xv, &self.spec(first, count))?;
        ensure_rows_finite(batch.value().as_slice(), self.sample_len(), |r| {
            format!("noisy copy {} of the input", first + r)
        })?;
        let (out, seed) = self.objective(&mut tape, &batch, &|r| format!("copy {}", first + r))?;
        let options = BackwardOptions {
            guided,
            sums_only: !self.squares,
        };
        let mut grads = tape.backward_with(&out, &seed, options)?;
        let zero_grad = || SaliencyError::Input("the output does not depend on the input".into());
        let q = match self.squares {
            true => Some(grads.sum_of_squares(&xv).ok_or_else(zero_grad)?.clone()),
            false => None,
        };
        let g = grads.take(&xv).ok_or_else(zero_grad)?;
        Ok((g, q))
    }

    /// Runs `compute(first, count)` for the chunks `self.chunk` long of `0..total`, `self.lanes`
    /// chunks side by side (each on one thread, kernels serial), and hands each result to
    /// `consume(first, count, result)` in chunk order — so sums, and the first error reported,
    /// do not depend on the threads' timing.
    fn for_chunks<R: Send>(
        &self,
        total: usize,
        compute: impl Fn(usize, usize) -> Result<R> + Sync,
        mut consume: impl FnMut(usize, usize, R) -> Result<()>,
    ) -> Result<()> {
        let chunks: Vec<(usize, usize)> = (0..total)
            .step_by(self.chunk.max(1))
            .map(|first| (first, self.chunk.min(total - first)))
            .collect();
        for group in chunks.chunks(self.lanes.max(1)) {
            let results: Vec<Result<R>> = if group.len() > 1 {
                group
                    .par_iter()
                    .map(|&(first, count)| parallel::serial(|| compute(first, count)))
                    .collect()
            } else {
                group
                    .iter()
                    .map(|&(first, count)| compute(first, count))
                    .collect()
            };
            for (&(first, count), result) in group.iter().zip(results) {
                consume(first, count, result?)?;
            }
        }
        Ok(())
    }

    /// Σ and Σ² over copies of the (guided) gradient. A chunk whose sums are not finite is run
    /// again one copy at a time to name the first copy whose gradient is at fault.
    fn gradients(&self, guided: bool) -> Result<(Vec<T>, Vec<T>)> {
        let e = self.sample_len();
        let (mut sum, mut sumsq) = (vec![T::zero(); e], vec![T::zero(); e]);
        self.for_chunks(
            self.n,
            |first, count| self.chunk_sums(first, count, guided),
            |first, count, (g, q)| {
                let end = first + count;
                let bad = |t: &Tensor<T>| !t.all_finite();
                if bad(&g) || q.as_ref().is_some_and(bad) {
                    if count > 1 {
                        for copy in first..end {
                            let (g1, q1) = self.chunk_sums(copy, 1, guided)?;
                            self.check_gradient(&g1, q1.as_ref(), || format!("copy {copy}"))?;
                        }
                    }
                    // Every copy alone is finite (or the chunk is one copy): name the chunk.
                    let which = if count == 1 {
                        format!("copy {first}")
                    } else {
                        format!("copies {first}..{end} (summed)")
                    };
                    self.check_gradient(&g, q.as_ref(), || which)?;
                }
                add_into(&mut sum, g.as_slice());
                if let Some(q) = &q {
                    add_into(&mut sumsq, q.as_slice());
                }
                self.check_sums(&sum, &sumsq, end)
            },
        )?;
        Ok((sum, sumsq))
    }

    /// The gradient (and, when the aggregate reads it, its square) of `which` is finite.
    fn check_gradient(
        &self,
        g: &Tensor<T>,
        q: Option<&Tensor<T>>,
        which: impl FnOnce() -> String,
    ) -> Result<()> {
        let which = which();
        ensure_finite(g.as_slice(), || format!("input gradient of {which}"))?;
        if let Some(q) = q {
            ensure_finite(q.as_slice(), || {
                format!("squared input gradient of {which}")
            })?;
        }
        Ok(())
    }

    /// The running sums over copies `0..end` have not overflowed.
    fn check_sums(&self, sum: &[T], sumsq: &[T], end: usize) -> Result<()> {
        ensure_finite(sum, || {
            format!("sum of the attributions of copies 0..{end}")
        })?;
        if self.squares {
            ensure_finite(sumsq, || {
                format!("sum of the squared attributions of copies 0..{end}")
            })?;
        }
        Ok(())
    }

    /// Per-row input gradients of a batch of inputs `[m, ...]`, all finite; `row` names a row.
    fn batch_gradients(
        &self,
        batch: Tensor<T>,
        row: &dyn Fn(usize) -> String,
    ) -> Result<Tensor<T>> {
        let mut tape = Tape::new();
        let bv = tape.var(batch);
        let (out, seed) = self.objective(&mut tape, &bv, row)?;
        let mut grads = tape.backward_from(&out, &seed)?;
        let g = grads.take(&bv).ok_or_else(|| {
            SaliencyError::Input("the output does not depend on the input".into())
        })?;
        ensure_rows_finite(g.as_slice(), self.sample_len(), |r| {
            format!("input gradient of {}", row(r))
        })?;
        Ok(g)
    }

    /// The noisy copies `first..first + count` as a constant batch, all finite.
    fn copies(&self, first: usize, count: usize) -> Result<Tensor<T>> {
        let mut tape = Tape::new();
        let batch = tape
            .noisy_copies(&Var::constant(self.x.clone()), &self.spec(first, count))?
            .into_value();
        ensure_rows_finite(batch.as_slice(), self.sample_len(), |r| {
            format!("noisy copy {} of the input", first + r)
        })?;
        Ok(batch)
    }

    fn grad_x_input(&self) -> Result<(Vec<T>, Vec<T>)> {
        let e = self.sample_len();
        let (mut sum, mut sumsq) = (vec![T::zero(); e], vec![T::zero(); e]);
        self.for_chunks(
            self.n,
            |first, count| {
                let inputs = self.copies(first, count)?;
                let g = self.batch_gradients(inputs.clone(), &|r| format!("copy {}", first + r))?;
                Ok((inputs, g))
            },
            |first, count, (inputs, g)| {
                let rows = inputs.as_slice().chunks(e).zip(g.as_slice().chunks(e));
                for (copy, (xi, gi)) in (first..).zip(rows) {
                    let a: Vec<T> = xi.iter().zip(gi).map(|(&x, &g)| x * g).collect();
                    ensure_finite(&a, || format!("gradient × input of copy {copy}"))?;
                    accumulate_copy(&mut sum, &mut sumsq, &a);
                }
                self.check_sums(&sum, &sumsq, first + count)
            },
        )?;
        Ok((sum, sumsq))
    }

    fn integrated_gradients(&self, c: &IgConfig) -> Result<(Vec<T>, Vec<T>)> {
        let e = self.sample_len();
        let (baseline, alphas, weights) = ig_path(self.x, c)?;
        let steps = c.steps;
        let path: Vec<(usize, T, T)> = alphas
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(s, (&a, &w))| (s, T::from_f64(a), T::from_f64(w)))
            .collect();
        let (mut sum, mut sumsq) = (vec![T::zero(); e], vec![T::zero(); e]);
        // Points are numbered copy-major: point p is step p % steps of copy p / steps, so each
        // copy's path integral completes before the next begins and one accumulator suffices.
        // A chunk of points is built and differentiated on its own (side by side with others
        // when there are lanes); the integral consumes the chunks in order.
        let point_name = |q: usize| {
            let (s, copy) = (q % steps, q / steps);
            let alpha = alphas.get(s).copied().unwrap_or(f64::NAN);
            format!("point {s} (α = {alpha:.4}) of the path of copy {copy}")
        };
        let walk = |from: usize| path.iter().cycle().skip(from % steps.max(1));
        let total = self.n * steps;
        let mut integral = vec![T::zero(); e];
        self.for_chunks(
            total,
            |p, count| {
                let mut batch = Vec::with_capacity(count * e);
                let mut current: Option<(usize, Tensor<T>)> = None;
                for (q, &(_, alpha, _)) in (p..p + count).zip(walk(p)) {
                    let copy = q / steps;
                    if current.as_ref().is_none_or(|(c, _)| *c != copy) {
                        current = Some((copy, self.copies(copy, 1)?));
                    }
                    let xi = current
                        .as_ref()
                        .map(|(_, t)| t.as_slice())
                        .unwrap_or_default();
                    batch.extend(xi.iter().zip(&baseline).map(|(&x, &b)| b + alpha * (x - b)));
                }
                let dims = [&[count], self.explainer.model.input_dims()].concat();
                self.batch_gradients(Tensor::from_vec(batch, &dims)?, &|r| point_name(p + r))
            },
            |p, _count, g| {
                let rows = g.as_slice().chunks(e).zip(walk(p));
                for (q, (gq, &(step, _, w))) in (p..).zip(rows) {
                    for (acc, &gv) in integral.iter_mut().zip(gq) {
                        *acc += w * gv;
                    }
                    if step + 1 == steps {
                        let copy = q / steps;
                        ensure_finite(&integral, || {
                            format!("path integral of the input gradient of copy {copy}")
                        })?;
                        let xi = self.copies(copy, 1)?;
                        let a: Vec<T> = xi
                            .as_slice()
                            .iter()
                            .zip(&baseline)
                            .zip(&integral)
                            .map(|((&x, &b), &i)| (x - b) * i)
                            .collect();
                        ensure_finite(&a, || format!("Integrated Gradients of copy {copy}"))?;
                        accumulate_copy(&mut sum, &mut sumsq, &a);
                        integral.iter_mut().for_each(|v| *v = T::zero());
                        self.check_sums(&sum, &sumsq, copy + 1)?;
                    }
                }
                Ok(())
            },
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_split_the_budget_and_balance_the_chunks() {
        let limits = Limits::default();
        // (budget bytes, bytes per copy, passes, threads) -> (chunk, lanes)
        for (budget, per_copy, passes, threads, want) in [
            (1000, 1, 50, 2, (25, 2)),  // everything fits: one chunk per thread
            (48, 1, 50, 2, (13, 2)),    // 24 per lane: 3 chunks, rounded to 4 of 13
            (1, 1, 50, 2, (1, 1)),      // one copy fits: one at a time over all threads
            (2, 1, 50, 2, (1, 2)),      // two fit: two lanes of one copy
            (1000, 1, 1, 2, (1, 1)),    // one pass
            (1000, 1, 50, 1, (50, 1)),  // one thread: the old plan
            (1000, 1, 50, 16, (4, 16)), // more threads than fit evenly: 16 chunks of ≤ 4
        ] {
            let got = lane_plan(budget, &limits, per_copy, passes, threads);
            assert_eq!(
                got, want,
                "budget {budget}, {passes} passes, {threads} threads"
            );
            let (chunk, lanes) = got;
            assert!(chunk as u64 * lanes as u64 * per_copy <= budget.max(per_copy as usize) as u64);
        }
    }

    #[test]
    fn chunks_are_balanced_and_fit_the_budget() {
        let limits = Limits::default();
        // (budget bytes, bytes per copy, passes) -> chunk
        let cases = [
            (48, 1, 50, 25),  // room for 48: two chunks of 25, not 48 + 2
            (100, 1, 50, 50), // everything fits
            (10, 1, 50, 10),  // five chunks of 10
            (7, 1, 50, 7),    // ⌈50/7⌉ = 8 chunks: ⌈50/8⌉ = 7
            (1, 10, 50, 1),   // not even one copy fits: one at a time
            (30, 1, 1, 1),
            (30, 1, 0, 1),
        ];
        for (budget, per_copy, passes, want) in cases {
            let got = chunk_size(budget, &limits, per_copy, passes);
            assert_eq!(
                got, want,
                "budget {budget}, {per_copy} B/copy, {passes} passes"
            );
            assert!(got as u64 * per_copy <= (budget as u64).max(per_copy));
        }
    }
}
