//! The explainer on a CUDA device (feature `cuda`): the same maps as [`Explainer`](crate::Explainer)
//! for the gradient family, computed by the hand-written PTX kernels of
//! `smoothgrad_autodiff::backend::cuda`.
//!
//! The model's weights are uploaded once. Each chunk of noisy copies is made on the device by
//! `noisy_copies` (Philox noise drawn in the kernel; given noise is uploaded once and replayed by
//! `noisy_copies_given`), run forward through the graph (a convolution read only by a ReLU runs
//! fused as `conv2d_fwd_relu`), and run backward from the one-hot target computing input
//! gradients only. When the first layer is a convolution that alone reads the input, its
//! backward adds Σ and Σ² over the copies directly (`conv2d_bwd_input_reduce_copies`: the
//! n×C×H×W gradient is never formed); otherwise `noisy_copies_bwd` reduces. Only Σ and Σ² come
//! back to the host, once per explanation. Chunks are sized from the memory budget; the noise is
//! keyed by the global copy index, so the map does not depend on the chunking.
//!
//! Supported: [`Method::Gradient`] and [`Method::GuidedBackprop`], with or without smoothing
//! (gradient, SmoothGrad, SmoothGrad², VarGrad, guided backprop); layers conv2d, linear, relu,
//! clamp, max/avg/global-avg pool, batch norm, add, softmax (last axis), flatten, reshape,
//! identity. Anything else is a clear error, never a CPU fallback. With
//! [`Math::Tf32`](smoothgrad_autodiff::backend::cuda::Math) the convolutions and linear layers
//! run on tensor cores.

use crate::error::{Result, SaliencyError};
use crate::explain::{DEFAULT_GPU_MEMORY_BUDGET, SaliencyMap};
use crate::limits::Limits;
use crate::method::{Method, Output, Smoothing};
use smoothgrad_autodiff::backend::cuda::{
    CudaBatchNorm, CudaContext, CudaIndices, CudaMask, CudaTensor, Math,
};
use smoothgrad_autodiff::{Conv2dGeometry, NoiseSource, Pool2dGeometry, Tensor};
use smoothgrad_layers::{Layer, Model};

/// The weights of one node on the device.
enum Weights {
    None,
    Conv {
        w: CudaTensor,
        bias: Option<CudaTensor>,
    },
    Linear {
        w: CudaTensor,
        bias: Option<CudaTensor>,
    },
    BatchNorm(Box<CudaBatchNorm>),
}

/// What a node's backward needs from its forward.
enum Saved {
    None,
    Conv(Conv2dGeometry),
    Mask(CudaMask),
    MaxPool(Pool2dGeometry, CudaIndices),
    AvgPool(Pool2dGeometry),
    GlobalAvgPool(Vec<usize>),
    Softmax(CudaTensor),
}

/// Explains one model's decisions on a CUDA device.
///
/// ```no_run
/// # use smoothgrad_layers::Model;
/// # fn f(model: &Model<f32>, image: &smoothgrad_autodiff::Tensor<f32>) -> smoothgrad_saliency::Result<()> {
/// use smoothgrad_saliency::{CudaExplainer, Method, Smoothing};
/// // SaliencyError::Autodiff(Error::Device { device: "cuda", .. }) without a driver or device.
/// let explainer = CudaExplainer::new(model, 0)?;
/// let map = explainer.explain(image, None, &Method::Gradient, Some(&Smoothing::default()))?;
/// # Ok(()) }
/// ```
pub struct CudaExplainer<'m> {
    model: &'m Model<f32>,
    ctx: CudaContext,
    weights: Vec<Weights>,
    /// For each value, how many node inputs read it.
    readers: Vec<usize>,
    /// For each node, whether a ReLU alone reads its (convolution) output: the pair runs fused.
    fuse_relu: Vec<bool>,
    memory_budget: usize,
    limits: Limits,
    output: Output,
}

impl<'m> CudaExplainer<'m> {
    /// Opens CUDA device `ordinal` ([`CudaContext::new`]) and uploads the model's weights.
    pub fn new(model: &'m Model<f32>, ordinal: usize) -> Result<Self> {
        Self::with_context(model, CudaContext::new(ordinal)?)
    }

    /// Uploads the model's weights into `ctx` and checks every layer has a kernel. The
    /// context's [`Math`] is the explainer's (see also [`CudaExplainer::math`]).
    pub fn with_context(model: &'m Model<f32>, ctx: CudaContext) -> Result<Self> {
        let nodes = model.nodes();
        let mut readers = vec![0usize; nodes.len() + 1];
        for node in nodes {
            for &i in &node.inputs {
                readers[i] += 1;
            }
        }
        readers[model.output_index()] += 1;
        let mut weights = Vec::with_capacity(nodes.len());
        for node in nodes {
            let w = match &node.layer {
                Layer::Conv2d { weight, bias, .. } => Weights::Conv {
                    w: ctx.upload(weight)?,
                    bias: bias.as_ref().map(|b| ctx.upload(b)).transpose()?,
                },
                Layer::Linear { weight, bias } => Weights::Linear {
                    w: ctx.upload(weight)?,
                    bias: bias.as_ref().map(|b| ctx.upload(b)).transpose()?,
                },
                Layer::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    eps,
                } => Weights::BatchNorm(Box::new(CudaBatchNorm::new(
                    &ctx, gamma, beta, mean, var, *eps,
                )?)),
                Layer::Softmax { axis } => {
                    if *axis + 1 != model.value_dims()[node.inputs[0]].len() {
                        return Err(unsupported(format!(
                            "layer `{}` (softmax over axis {axis}) has no CUDA kernel: only the last axis is supported",
                            node.name
                        )));
                    }
                    Weights::None
                }
                Layer::Relu
                | Layer::Clamp { .. }
                | Layer::MaxPool2d(_)
                | Layer::AvgPool2d(_)
                | Layer::GlobalAvgPool
                | Layer::Flatten { .. }
                | Layer::Reshape { .. }
                | Layer::Add
                | Layer::Identity => Weights::None,
                other => {
                    return Err(unsupported(format!(
                        "layer `{}` ({}) has no CUDA kernel yet",
                        node.name,
                        other.kind()
                    )));
                }
            };
            weights.push(w);
        }
        let fuse_relu = (0..nodes.len())
            .map(|k| {
                matches!(nodes[k].layer, Layer::Conv2d { .. })
                    && readers[k + 1] == 1
                    && nodes
                        .get(k + 1)
                        .is_some_and(|n| matches!(n.layer, Layer::Relu) && n.inputs == [k + 1])
            })
            .collect();
        Ok(CudaExplainer {
            model,
            ctx,
            weights,
            readers,
            fuse_relu,
            memory_budget: DEFAULT_GPU_MEMORY_BUDGET,
            limits: Limits::default(),
            output: Output::Logit,
        })
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

    /// Runs the convolutions and linear layers in FP32 (default) or on TF32 tensor cores.
    pub fn math(mut self, math: Math) -> Self {
        self.ctx.set_math(math);
        self
    }

    /// The device context (its name, compute capability, or to share it).
    pub fn context(&self) -> &CudaContext {
        &self.ctx
    }

    /// The model's logits for one input `[C, H, W]` (or `[1, C, H, W]`), computed on the device.
    pub fn logits(&self, image: &Tensor<f32>) -> Result<Vec<f32>> {
        let x = check_image(self.model, image)?;
        let xg = self.ctx.upload(&x)?;
        let (out, _) = self.forward(xg, false)?;
        let v = self.ctx.download(&out)?.into_vec();
        crate::explain::ensure_finite(&v, || "logits".to_string())?;
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
        let guided = match method {
            Method::Gradient => false,
            Method::GuidedBackprop => true,
            Method::GradXInput | Method::IntegratedGradients(_) => {
                return Err(SaliencyError::Option {
                    option: "method",
                    reason: format!(
                        "{} is not supported on CUDA yet (gradient and guided backprop are, with or without smoothing)",
                        if matches!(method, Method::GradXInput) {
                            "gradient × input"
                        } else {
                            "integrated gradients"
                        }
                    ),
                });
            }
        };
        let x = check_image(self.model, image)?;
        if self.model.output_dims().len() != 1 {
            return Err(SaliencyError::Input(format!(
                "the model's output {:?} is not a vector of class scores",
                self.model.output_dims()
            )));
        }
        let (n, sigma, source, aggregate) = crate::explain::noise_plan(&x, smoothing)?;
        self.limits.check(self.model, n, None)?;
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
            None => (0..classes).fold(0, |best, i| if logits[i] > logits[best] { i } else { best }),
        };
        let chunk = self.chunk_size(n)?;
        let xg = self.ctx.upload(&x)?;
        let e = x.numel();
        let mut sum = self.ctx.zeros(x.dims())?;
        let mut sumsq = self.ctx.zeros(x.dims())?;
        let mut first = 0;
        while first < n {
            let count = chunk.min(n - first);
            let batch = match &source {
                NoiseSource::Philox { seed } => {
                    self.ctx
                        .noisy_copies(&xg, sigma as f32, *seed, first, count)?
                }
                NoiseSource::Given(draws) => {
                    // Only this chunk's rows go to the device (noise_plan checked the shape).
                    let rows = &draws.as_slice()[first * e..(first + count) * e];
                    let dims = [&[count], &x.dims()[1..]].concat();
                    let noise = self.ctx.upload_vec(rows, &dims)?;
                    self.ctx.noisy_copies_given(&xg, &noise, sigma as f32)?
                }
            };
            self.chunk_gradients(batch, target, classes, guided, &mut sum, &mut sumsq)?;
            first += count;
        }
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

    /// Copies per chunk: the chunk's values (three times the elements of every value, as the
    /// CPU's estimate) under the memory budget, every tensor under the kernels' 2³¹ elements.
    fn chunk_size(&self, n: usize) -> Result<usize> {
        let numel = |d: &Vec<usize>| d.iter().product::<usize>();
        let values = self.model.value_dims();
        let largest = values.iter().map(numel).max().unwrap_or(1).max(1);
        let total: usize = values.iter().map(numel).sum();
        let per_copy = 3 * total * size_of::<f32>();
        let by_index = ((1usize << 31) - 1) / largest;
        if by_index == 0 {
            return Err(SaliencyError::Input(format!(
                "one copy's largest value ({largest} floats) exceeds the CUDA kernels' 2^31 elements"
            )));
        }
        let by_budget = (self.memory_budget / per_copy.max(1)).max(1);
        Ok(by_budget.min(by_index).clamp(1, n))
    }

    /// The forward of the graph over `batch[m, ...]`; with `save`, what the backward needs.
    fn forward(&self, batch: CudaTensor, save: bool) -> Result<(CudaTensor, Vec<Saved>)> {
        let ctx = &self.ctx;
        let nodes = self.model.nodes();
        let m = batch.dims()[0];
        let dims_of =
            |v: usize| -> Vec<usize> { [&[m], &self.model.value_dims()[v][1..]].concat() };
        let mut values: Vec<Option<CudaTensor>> = (0..=nodes.len()).map(|_| None).collect();
        let mut left = self.readers.clone();
        values[0] = Some(batch);
        let mut saved = Vec::with_capacity(nodes.len());
        let mut fused_mask: Option<CudaMask> = None;
        for (k, node) in nodes.iter().enumerate() {
            if k > 0 && self.fuse_relu[k - 1] {
                // The ReLU of the convolution before: its output and mask are already made.
                // justified: `fuse_relu[k - 1]` means node k - 1 took the fused path, which sets it.
                #[allow(clippy::expect_used)]
                let mask = fused_mask
                    .take()
                    .expect("the fused convolution made the mask");
                saved.push(if save { Saved::Mask(mask) } else { Saved::None });
                continue;
            }
            // justified: nodes read only earlier values (`Model::new`), which are kept until
            // their last reader has run.
            #[allow(clippy::expect_used)]
            fn x<'v>(
                values: &'v [Option<CudaTensor>],
                inputs: &[usize],
                i: usize,
            ) -> &'v CudaTensor {
                values[inputs[i]]
                    .as_ref()
                    .expect("values are computed before their readers")
            }
            let (y, s) = match (&node.layer, &self.weights[k]) {
                (Layer::Conv2d { params, .. }, Weights::Conv { w, bias }) => {
                    let xi = x(&values, &node.inputs, 0);
                    let g = Conv2dGeometry::new(xi.dims(), w.dims(), params)?;
                    if self.fuse_relu[k] {
                        let (y, mask) = ctx.conv2d_fwd_relu(&g, xi, w, bias.as_ref())?;
                        // The fused ReLU's output is value k + 2; value k + 1 is never made.
                        release(&mut values, &mut left, &node.inputs);
                        left[k + 1] = 0;
                        values[k + 2] = Some(y.reshape(&dims_of(k + 2))?);
                        saved.push(if save { Saved::Conv(g) } else { Saved::None });
                        fused_mask = Some(mask);
                        continue;
                    }
                    (ctx.conv2d_fwd(&g, xi, w, bias.as_ref())?, Saved::Conv(g))
                }
                (Layer::Linear { .. }, Weights::Linear { w, bias }) => (
                    ctx.linear_fwd(x(&values, &node.inputs, 0), w, bias.as_ref())?,
                    Saved::None,
                ),
                (Layer::BatchNorm { .. }, Weights::BatchNorm(bn)) => (
                    ctx.batch_norm_fwd(x(&values, &node.inputs, 0), bn)?,
                    Saved::None,
                ),
                (Layer::Relu, _) => {
                    let (y, mask) = ctx.relu_fwd(x(&values, &node.inputs, 0))?;
                    (y, Saved::Mask(mask))
                }
                (Layer::Clamp { low, high }, _) => {
                    let (y, mask) =
                        ctx.clamp_fwd(x(&values, &node.inputs, 0), *low as f32, *high as f32)?;
                    (y, Saved::Mask(mask))
                }
                (Layer::MaxPool2d(p), _) => {
                    let xi = x(&values, &node.inputs, 0);
                    let g = Pool2dGeometry::new("max_pool2d", xi.dims(), p)?;
                    let (y, arg) = ctx.maxpool2d_fwd(&g, xi)?;
                    (y, Saved::MaxPool(g, arg))
                }
                (Layer::AvgPool2d(p), _) => {
                    let xi = x(&values, &node.inputs, 0);
                    let g = Pool2dGeometry::new("avg_pool2d", xi.dims(), p)?;
                    (ctx.avgpool2d_fwd(&g, xi)?, Saved::AvgPool(g))
                }
                (Layer::GlobalAvgPool, _) => {
                    let xi = x(&values, &node.inputs, 0);
                    (
                        ctx.global_avg_pool_fwd(xi)?,
                        Saved::GlobalAvgPool(xi.dims().to_vec()),
                    )
                }
                (Layer::Add, _) => (
                    ctx.add(x(&values, &node.inputs, 0), x(&values, &node.inputs, 1))?,
                    Saved::None,
                ),
                (Layer::Softmax { .. }, _) => {
                    let y = ctx.softmax_fwd(x(&values, &node.inputs, 0))?;
                    let keep = if save {
                        Saved::Softmax(ctx.duplicate(&y)?)
                    } else {
                        Saved::None
                    };
                    (y, keep)
                }
                (Layer::Flatten { .. } | Layer::Reshape { .. } | Layer::Identity, _) => {
                    // A view: moved out at its last read, copied before.
                    let v = node.inputs[0];
                    left[v] -= 1;
                    // justified: as for `x` above, the value is kept until its last reader.
                    #[allow(clippy::expect_used)]
                    let y = if left[v] == 0 {
                        values[v].take().expect("present")
                    } else {
                        ctx.duplicate(values[v].as_ref().expect("present"))?
                    };
                    values[k + 1] = Some(y.reshape(&dims_of(k + 1))?);
                    saved.push(Saved::None);
                    continue;
                }
                (other, _) => {
                    return Err(unsupported(format!(
                        "layer `{}` ({}) has no CUDA kernel yet",
                        node.name,
                        other.kind()
                    )));
                }
            };
            release(&mut values, &mut left, &node.inputs);
            values[k + 1] = Some(y.reshape(&dims_of(k + 1))?);
            saved.push(if save { s } else { Saved::None });
        }
        // justified: the output value has one extra reader, so the loop never releases it.
        #[allow(clippy::expect_used)]
        let out = values[self.model.output_index()]
            .take()
            .expect("the output value is computed");
        Ok((out, saved))
    }

    /// Forward and backward of one chunk of copies `batch[m, ...]`, adding Σ and Σ² of the
    /// input gradients over the copies into `sum` and `sumsq`.
    fn chunk_gradients(
        &self,
        batch: CudaTensor,
        target: usize,
        classes: usize,
        guided: bool,
        sum: &mut CudaTensor,
        sumsq: &mut CudaTensor,
    ) -> Result<()> {
        let ctx = &self.ctx;
        let nodes = self.model.nodes();
        let m = batch.dims()[0];
        let dims_of =
            |v: usize| -> Vec<usize> { [&[m], &self.model.value_dims()[v][1..]].concat() };
        let (out, mut saved) = self.forward(batch, true)?;
        let mut seed = vec![0.0f32; m * classes];
        for r in 0..m {
            seed[r * classes + target] = 1.0;
        }
        let mut dy = ctx.upload_vec(&seed, &[m, classes])?;
        if self.output == Output::Probability {
            let out = out.reshape(&[m, classes])?;
            let p = ctx.softmax_fwd(&out)?;
            dy = ctx.softmax_bwd(&p, &dy)?;
        } else {
            drop(out);
        }
        let mut grads: Vec<Option<CudaTensor>> = (0..=nodes.len()).map(|_| None).collect();
        grads[self.model.output_index()] = Some(dy.reshape(&dims_of(self.model.output_index()))?);
        // The fused reduction applies when a convolution alone reads the input.
        let first_conv_reduces = self.readers[0] == 1;
        let mut reduced = false;
        for k in (0..nodes.len()).rev() {
            let node = &nodes[k];
            let Some(dy) = grads[k + 1].take() else {
                continue;
            };
            let s = std::mem::replace(&mut saved[k], Saved::None);
            let dx = match (&node.layer, &self.weights[k], s) {
                (Layer::Conv2d { .. }, Weights::Conv { w, .. }, Saved::Conv(g)) => {
                    if node.inputs[0] == 0 && first_conv_reduces {
                        ctx.conv2d_bwd_input_reduce_copies(&g, &dy, w, sum, sumsq)?;
                        reduced = true;
                        continue;
                    }
                    ctx.conv2d_bwd_input(&g, &dy, w)?
                }
                (Layer::Linear { .. }, Weights::Linear { w, .. }, _) => {
                    ctx.linear_bwd_input(&dy, w)?
                }
                (Layer::BatchNorm { .. }, Weights::BatchNorm(bn), _) => {
                    ctx.batch_norm_bwd(&dy, bn)?
                }
                (Layer::Relu | Layer::Clamp { .. }, _, Saved::Mask(mask)) => {
                    ctx.relu_bwd(&dy, &mask, guided)?
                }
                (Layer::MaxPool2d(_), _, Saved::MaxPool(g, arg)) => {
                    ctx.maxpool2d_bwd(&g, &dy, &arg)?
                }
                (Layer::AvgPool2d(_), _, Saved::AvgPool(g)) => ctx.avgpool2d_bwd(&g, &dy)?,
                (Layer::GlobalAvgPool, _, Saved::GlobalAvgPool(x_dims)) => {
                    let dy = dy.reshape(&[x_dims[0], x_dims[1], 1, 1])?;
                    ctx.global_avg_pool_bwd(&dy, &x_dims)?
                }
                (Layer::Softmax { .. }, _, Saved::Softmax(y)) => ctx.softmax_bwd(&y, &dy)?,
                (Layer::Add, _, _) => {
                    let other = ctx.duplicate(&dy)?;
                    accumulate(ctx, &mut grads, node.inputs[1], other)?;
                    dy
                }
                (Layer::Flatten { .. } | Layer::Reshape { .. } | Layer::Identity, _, _) => dy,
                (layer, _, _) => {
                    return Err(unsupported(format!(
                        "layer `{}` ({}): no CUDA backward",
                        node.name,
                        layer.kind()
                    )));
                }
            };
            let i = node.inputs[0];
            let dx = dx.reshape(&dims_of(i))?;
            accumulate(ctx, &mut grads, i, dx)?;
        }
        match grads[0].take() {
            Some(g) => ctx.noisy_copies_bwd(&g, sum, sumsq)?,
            None if reduced => {}
            None => {
                return Err(SaliencyError::Input(
                    "the output does not depend on the input".into(),
                ));
            }
        }
        Ok(())
    }
}

/// `image` as a finite one-sample batch `[1, C, H, W]` of the model's input shape.
fn check_image(model: &Model<f32>, image: &Tensor<f32>) -> Result<Tensor<f32>> {
    let want = model.input_dims();
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

/// Counts the reads of `inputs` done, dropping values nobody reads any more.
fn release(values: &mut [Option<CudaTensor>], left: &mut [usize], inputs: &[usize]) {
    for &i in inputs {
        left[i] -= 1;
        if left[i] == 0 {
            values[i] = None;
        }
    }
}

/// Adds `g` into the gradient of value `v` (values with several readers get several).
fn accumulate(
    ctx: &CudaContext,
    grads: &mut [Option<CudaTensor>],
    v: usize,
    g: CudaTensor,
) -> Result<()> {
    grads[v] = Some(match grads[v].take() {
        None => g,
        Some(prev) => ctx.add(&prev, &g)?,
    });
    Ok(())
}

fn unsupported(reason: String) -> SaliencyError {
    SaliencyError::Option {
        option: "device",
        reason,
    }
}
