//! The explainer on a WebGPU device (feature `wgpu`): the same maps as [`Explainer`](crate::Explainer)
//! for every method, computed by the WGSL kernels of `smoothgrad_autodiff::backend::wgpu`.
//!
//! The model's weights are uploaded once. Each chunk of noisy copies is made on the device
//! (`noisy_copies`: Philox noise drawn in the kernel, or given noise replayed), run forward
//! through the graph (a convolution read only by a ReLU runs fused as `conv2d_fwd_relu`), and
//! run backward from the one-hot target computing input gradients only. For the gradient and
//! guided backprop, when the first layer is a convolution that alone reads the input, its
//! backward writes Σ and Σ² over the copies directly (`conv2d_bwd_input_reduce_copies`);
//! otherwise `reduce_copies` does. Grad×Input multiplies the per-copy gradients by the copies as
//! it reduces them (`grad_x_input_bwd`); Integrated Gradients makes the path points of each copy
//! on the device (`ig_path_fwd`) and integrates their gradients as it reduces
//! (`ig_accumulate_bwd`). Only Σ and Σ² come back to the host, once per explanation.
//!
//! Every [`Method`], with or without smoothing, on layers conv2d, linear, relu, clamp,
//! max/avg/global-avg pool, batch norm, add, concat, softmax (last
//! axis), flatten, reshape, identity. Anything else is a typed error naming the layer, never a
//! CPU fallback. With [`Precision::F16Storage`] activations and weights are stored as f16 (the
//! arithmetic stays f32, Σ and Σ² stay f32).

mod graph;

use crate::error::{Result, SaliencyError};
use crate::explain::{DEFAULT_GPU_MEMORY_BUDGET, SaliencyMap};
use crate::limits::Limits;
use crate::method::{IgConfig, Method, Output, Smoothing};
use graph::{Graph, Sink};
use smoothgrad_autodiff::backend::wgpu::{GpuTensor, IgPath, IgPoints, WgpuContext, wgpu};
use smoothgrad_autodiff::{NoiseSource, NoiseSpec, Tensor};
use smoothgrad_layers::Model;

pub use smoothgrad_autodiff::backend::wgpu::Precision;

/// Explains one model's decisions on a WebGPU device.
///
/// ```no_run
/// # use smoothgrad_layers::Model;
/// # fn f(model: &Model<f32>, image: &smoothgrad_autodiff::Tensor<f32>) -> smoothgrad_saliency::Result<()> {
/// use smoothgrad_saliency::{Method, Smoothing, WgpuExplainer, wgpu_explain::Precision};
/// let explainer = WgpuExplainer::new(model)?; // SaliencyError::Autodiff(Device) without an adapter
/// let map = explainer.explain(image, None, &Method::Gradient, Some(&Smoothing::default()))?;
/// // Activations and weights stored as f16 (an error where the adapter lacks SHADER_F16).
/// let half = WgpuExplainer::new(model)?.precision(Precision::F16Storage)?;
/// let map16 = half.explain(image, None, &Method::Gradient, Some(&Smoothing::default()))?;
/// # Ok(()) }
/// ```
pub struct WgpuExplainer<'m> {
    model: &'m Model<f32>,
    ctx: WgpuContext,
    graph: Graph,
    memory_budget: usize,
    limits: Limits,
    output: Output,
}

/// What one chunk of copies (or path points) computes.
struct Job<'a> {
    x: &'a GpuTensor,
    target: usize,
    classes: usize,
    sigma: f64,
    source: &'a NoiseSource<f32>,
}

impl<'m> WgpuExplainer<'m> {
    /// Opens the default adapter ([`WgpuContext::new`]) and uploads the model's weights.
    pub fn new(model: &'m Model<f32>) -> Result<Self> {
        Self::with_context(model, WgpuContext::new()?)
    }

    /// Uploads the model's weights into `ctx` (f32) and checks every layer has a kernel.
    pub fn with_context(model: &'m Model<f32>, ctx: WgpuContext) -> Result<Self> {
        let graph = Graph::new(model, &ctx, Precision::F32)?;
        Ok(WgpuExplainer {
            model,
            ctx,
            graph,
            memory_budget: DEFAULT_GPU_MEMORY_BUDGET,
            limits: Limits::default(),
            output: Output::Logit,
        })
    }

    /// Stores activations and weights as `precision` from now on (the weights are uploaded
    /// again). [`Precision::F16Storage`] halves the memory of a chunk; the kernels still compute
    /// in f32 and Σ, Σ² stay f32.
    ///
    /// # Errors
    /// [`SaliencyError::Option`] (option `precision`) naming the adapter when it lacks
    /// `SHADER_F16`.
    pub fn precision(mut self, precision: Precision) -> Result<Self> {
        if let Err(e) = self.ctx.check_precision(precision) {
            return Err(SaliencyError::Option {
                option: "precision",
                reason: e.to_string(),
            });
        }
        if precision != self.graph.precision {
            self.graph = Graph::new(self.model, &self.ctx, precision)?;
        }
        Ok(self)
    }

    /// How activations and weights are stored.
    pub fn storage_precision(&self) -> Precision {
        self.graph.precision
    }

    /// Sets what one explanation may cost (see [`Explainer::limits`](crate::Explainer::limits)).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
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

    /// The adapter the explanations run on.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        self.ctx.adapter_info()
    }

    /// The device context (for statistics, or to share it).
    pub fn context(&self) -> &WgpuContext {
        &self.ctx
    }

    /// The model's logits for one input `[C, H, W]` (or `[1, C, H, W]`), computed on the device.
    pub fn logits(&self, image: &Tensor<f32>) -> Result<Vec<f32>> {
        let x = self.check_image(image)?;
        let xg = self.ctx.upload_as(&x, self.graph.precision)?;
        let v = self.graph.outputs(&self.ctx, self.model, xg)?;
        crate::explain::ensure_finite(&v, || "logits of the input".into())?;
        Ok(v)
    }

    /// Attribution of `target` (default: the top class) for `image` `[C, H, W]` by `method`,
    /// averaged over noisy copies when `smoothing` is given: the semantics of
    /// [`Explainer::explain`](crate::Explainer::explain).
    pub fn explain(
        &self,
        image: &Tensor<f32>,
        target: Option<usize>,
        method: &Method,
        smoothing: Option<&Smoothing<f32>>,
    ) -> Result<SaliencyMap<f32>> {
        let x = self.check_image(image)?;
        if self.model.output_dims().len() != 1 {
            return Err(SaliencyError::Input(format!(
                "the model's output {:?} is not a vector of class scores",
                self.model.output_dims()
            )));
        }
        let (n, sigma, source, aggregate) = crate::explain::noise_plan(&x, smoothing)?;
        let steps = match method {
            Method::IntegratedGradients(c) => Some(c.steps),
            _ => None,
        };
        self.limits.check(self.model, n, steps)?;
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
        let xg = self.ctx.upload_as(&x, self.graph.precision)?;
        let mut sum = self.ctx.zeros(x.dims())?;
        let mut sumsq = self.ctx.zeros(x.dims())?;
        let job = Job {
            x: &xg,
            target,
            classes,
            sigma,
            source: &source,
        };
        let chunk = match method {
            Method::Gradient => self.gradients(&job, n, false, &mut sum, &mut sumsq)?,
            Method::GuidedBackprop => self.gradients(&job, n, true, &mut sum, &mut sumsq)?,
            Method::GradXInput => self.grad_x_input(&job, n, &mut sum, &mut sumsq)?,
            Method::IntegratedGradients(c) => {
                self.integrated_gradients(&job, &x, c, n, &mut sum, &mut sumsq)?
            }
        };
        let sum = self.ctx.download(&sum)?.into_vec();
        let sumsq = self.ctx.download(&sumsq)?.into_vec();
        let values = crate::explain::aggregate_copies(&sum, &sumsq, n, aggregate)?;
        Ok(SaliencyMap {
            attribution: Tensor::from_vec(values, self.model.input_dims())?,
            target,
            logits,
            sigma,
            chunk,
            lanes: 1,
        })
    }

    /// Noisy copies `first..first + count` of the job's input, made on the device.
    fn copies(&self, job: &Job<'_>, first: usize, count: usize) -> Result<GpuTensor> {
        let spec = NoiseSpec {
            sigma: job.sigma,
            first,
            count,
            source: job.source.clone(),
        };
        Ok(self.ctx.noisy_copies(job.x, &spec)?)
    }

    /// Σ and Σ² over the copies of the (guided) input gradient; returns the chunk size.
    fn gradients(
        &self,
        job: &Job<'_>,
        n: usize,
        guided: bool,
        sum: &mut GpuTensor,
        sumsq: &mut GpuTensor,
    ) -> Result<usize> {
        let chunk = self.chunk_size(n)?;
        let mut first = 0;
        while first < n {
            let count = chunk.min(n - first);
            let batch = self.copies(job, first, count)?;
            self.graph.input_gradients(
                &self.ctx,
                self.model,
                batch,
                (job.target, job.classes),
                self.output,
                guided,
                Sink::Reduce {
                    sum: &mut *sum,
                    sumsq: &mut *sumsq,
                },
            )?;
            first += count;
        }
        Ok(chunk)
    }

    /// Σ and Σ² over the copies of copy ⊙ gradient; returns the chunk size.
    fn grad_x_input(
        &self,
        job: &Job<'_>,
        n: usize,
        sum: &mut GpuTensor,
        sumsq: &mut GpuTensor,
    ) -> Result<usize> {
        let chunk = self.chunk_size(n)?;
        let mut first = 0;
        while first < n {
            let count = chunk.min(n - first);
            let batch = self.copies(job, first, count)?;
            let inputs = self.ctx.duplicate(&batch)?;
            let g = self.per_copy_gradients(job, batch)?;
            self.ctx
                .grad_x_input_reduce_copies(&inputs, &g, sum, sumsq)?;
            first += count;
        }
        Ok(chunk)
    }

    /// Σ and Σ² over the copies of their Integrated Gradients, the path points of all copies
    /// numbered copy-major and run in chunks, as the CPU; returns the chunk size.
    fn integrated_gradients(
        &self,
        job: &Job<'_>,
        x: &Tensor<f32>,
        c: &IgConfig,
        n: usize,
        sum: &mut GpuTensor,
        sumsq: &mut GpuTensor,
    ) -> Result<usize> {
        let (baseline, alphas, weights) = crate::explain::ig_path(x, c)?;
        let steps = c.steps;
        let to_f32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let baseline = self
            .ctx
            .upload_slice_as(&baseline, x.dims(), self.graph.precision)?;
        let alphas = self.ctx.upload_slice(&to_f32(&alphas), &[steps])?;
        let weights = self.ctx.upload_slice(&to_f32(&weights), &[steps])?;
        let path = IgPath {
            baseline: &baseline,
            alphas: &alphas,
            weights: &weights,
        };
        let mut integral = self.ctx.zeros(x.dims())?;
        let total = n * steps;
        let chunk = self.chunk_size(total)?;
        let mut p = 0;
        while p < total {
            let count = chunk.min(total - p);
            let first_copy = p / steps;
            let last_copy = (p + count - 1) / steps;
            let copies = self.copies(job, first_copy, last_copy - first_copy + 1)?;
            let points = IgPoints {
                copies: &copies,
                first_copy,
                first_point: p,
                count,
            };
            let batch = self.ctx.ig_path_fwd(&path, &points)?;
            let g = self.per_copy_gradients(job, batch)?;
            self.ctx
                .ig_accumulate_bwd(&path, &points, &g, &mut integral, sum, sumsq)?;
            p += count;
        }
        Ok(chunk)
    }

    /// The input gradient of each input of `batch[m, ...]`.
    fn per_copy_gradients(&self, job: &Job<'_>, batch: GpuTensor) -> Result<GpuTensor> {
        self.graph
            .input_gradients(
                &self.ctx,
                self.model,
                batch,
                (job.target, job.classes),
                self.output,
                false,
                Sink::PerCopy,
            )?
            .ok_or_else(|| SaliencyError::Input("the output does not depend on the input".into()))
    }

    /// Inputs per chunk: every buffer under the device's binding limit, the chunk's values
    /// (three times the elements of every value, as the CPU's estimate) under the memory budget.
    fn chunk_size(&self, n: usize) -> Result<usize> {
        let limits = self.ctx.limits();
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(usize::MAX as u64) as usize;
        let numel = |d: &Vec<usize>| d.iter().product::<usize>();
        let values = self.model.value_dims();
        let largest = values.iter().map(numel).max().unwrap_or(1).max(1);
        let total: usize = values.iter().map(numel).sum();
        let bytes = self.graph.precision.bytes();
        let per_copy = 3 * total * bytes;
        let by_binding = max_binding / (largest * bytes);
        if by_binding == 0 {
            return Err(SaliencyError::Input(format!(
                "one copy's largest value ({largest} values) does not fit the device's binding limit of {max_binding} bytes"
            )));
        }
        let by_budget =
            crate::explain::chunk_size(self.memory_budget, &self.limits, per_copy as u64, n);
        Ok(by_budget.min(by_binding).clamp(1, n))
    }

    /// `image` as a finite one-sample batch `[1, C, H, W]` of the model's input shape.
    fn check_image(&self, image: &Tensor<f32>) -> Result<Tensor<f32>> {
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
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
