//! The explainer on a WebGPU device (feature `wgpu`): the same maps as [`Explainer`](crate::Explainer)
//! for the gradient family, computed by the WGSL kernels of `smoothgrad_autodiff::backend::wgpu`.
//!
//! The model's weights are uploaded once. Each chunk of noisy copies is made on the device
//! (`noisy_copies`: Philox noise drawn in the kernel, or given noise replayed), run forward
//! through the graph (a convolution read only by a ReLU runs fused as `conv2d_fwd_relu`), and
//! run backward from the one-hot target computing input gradients only. When the first layer
//! is a convolution that alone reads the input, its backward writes Σ and Σ² over the copies
//! directly (`conv2d_bwd_input_reduce_copies`); otherwise `reduce_copies` does. Only Σ and Σ²
//! come back to the host, once per explanation.
//!
//! Supported: [`Method::Gradient`] and [`Method::GuidedBackprop`], with or without smoothing
//! (gradient, SmoothGrad, SmoothGrad², VarGrad, guided backprop); layers conv2d, linear, relu,
//! clamp, max/avg/global-avg pool, batch norm, add, softmax (last axis), flatten, reshape,
//! identity. Anything else is a clear error, never a CPU fallback.

use crate::error::{Result, SaliencyError};
use crate::explain::{DEFAULT_MEMORY_BUDGET, SaliencyMap};
use crate::limits::Limits;
use crate::method::{Method, Output, Smoothing};
use smoothgrad_autodiff::backend::wgpu::{GpuIndices, GpuMask, GpuTensor, WgpuContext, wgpu};
use smoothgrad_autodiff::{Conv2dGeometry, NoiseSpec, Pool2dGeometry, Tensor};
use smoothgrad_layers::{Layer, Model};

/// The weights of one node on the device.
enum Weights {
    None,
    Conv {
        w: GpuTensor,
        bias: Option<GpuTensor>,
    },
    Linear {
        w: GpuTensor,
        bias: Option<GpuTensor>,
    },
    BatchNorm {
        gamma: GpuTensor,
        beta: GpuTensor,
        mean: GpuTensor,
        var: GpuTensor,
        eps: f32,
    },
}

/// What a node's backward needs from its forward.
enum Saved {
    None,
    Conv(Conv2dGeometry),
    Mask(GpuMask),
    MaxPool(Pool2dGeometry, GpuIndices),
    AvgPool(Pool2dGeometry),
    GlobalAvgPool(Vec<usize>),
    Softmax(GpuTensor),
}

/// Explains one model's decisions on a WebGPU device.
///
/// ```no_run
/// # use smoothgrad_layers::Model;
/// # fn f(model: &Model<f32>, image: &smoothgrad_autodiff::Tensor<f32>) -> smoothgrad_saliency::Result<()> {
/// use smoothgrad_saliency::{Method, Smoothing, WgpuExplainer};
/// let explainer = WgpuExplainer::new(model)?; // SaliencyError::Autodiff(Device) without an adapter
/// let map = explainer.explain(image, None, &Method::Gradient, Some(&Smoothing::default()))?;
/// # Ok(()) }
/// ```
pub struct WgpuExplainer<'m> {
    model: &'m Model<f32>,
    ctx: WgpuContext,
    weights: Vec<Weights>,
    /// For each value, how many node inputs read it.
    readers: Vec<usize>,
    /// For each node, whether a ReLU alone reads its (convolution) output: the pair runs fused.
    fuse_relu: Vec<bool>,
    memory_budget: usize,
    limits: Limits,
    output: Output,
}

impl<'m> WgpuExplainer<'m> {
    /// Opens the default adapter ([`WgpuContext::new`]) and uploads the model's weights.
    pub fn new(model: &'m Model<f32>) -> Result<Self> {
        Self::with_context(model, WgpuContext::new()?)
    }

    /// Uploads the model's weights into `ctx` and checks every layer has a kernel.
    pub fn with_context(model: &'m Model<f32>, ctx: WgpuContext) -> Result<Self> {
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
                } => Weights::BatchNorm {
                    gamma: ctx.upload(gamma)?,
                    beta: ctx.upload(beta)?,
                    mean: ctx.upload(mean)?,
                    var: ctx.upload(var)?,
                    eps: *eps as f32,
                },
                Layer::Softmax { axis } => {
                    if *axis + 1 != model.value_dims()[node.inputs[0]].len() {
                        return Err(unsupported(format!(
                            "layer `{}` (softmax over axis {axis}) has no wgpu kernel: only the last axis is supported",
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
                        "layer `{}` ({}) has no wgpu kernel yet",
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
        Ok(WgpuExplainer {
            model,
            ctx,
            weights,
            readers,
            fuse_relu,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            limits: Limits::default(),
            output: Output::Logit,
        })
    }

    /// Sets the working memory for one chunk of copies, in bytes (at least one copy runs).
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Sets what one explanation may cost (see [`Explainer::limits`](crate::Explainer::limits)).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
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
        let xg = self.ctx.upload(&x)?;
        let (out, _) = self.forward(xg, false)?;
        let v = self.ctx.download(&out)?.into_vec();
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
        let guided = match method {
            Method::Gradient => false,
            Method::GuidedBackprop => true,
            other => {
                return Err(SaliencyError::Option {
                    option: "method",
                    reason: format!(
                        "{} is not supported on wgpu yet (gradient and guided backprop are, with or without smoothing)",
                        method_name(other)
                    ),
                });
            }
        };
        let x = self.check_image(image)?;
        if self.model.output_dims().len() != 1 {
            return Err(SaliencyError::Input(format!(
                "the model's output {:?} is not a vector of class scores",
                self.model.output_dims()
            )));
        }
        let (n, sigma, source, aggregate) = crate::explain::noise_plan(&x, smoothing)?;
        let cost = self.limits.check(self.model, n, None)?;
        let chunk = self.chunk_size(n, cost.bytes_per_copy)?;
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
        let xg = self.ctx.upload(&x)?;
        let mut sum = self.ctx.zeros(x.dims())?;
        let mut sumsq = self.ctx.zeros(x.dims())?;
        let mut first = 0;
        while first < n {
            let count = chunk.min(n - first);
            let spec = NoiseSpec {
                sigma,
                first,
                count,
                source: source.clone(),
            };
            let batch = self.ctx.noisy_copies(&xg, &spec)?;
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
        })
    }

    /// Copies per chunk: every buffer under the device's binding limit, the chunk's values
    /// (`bytes_per_copy` each, as the CPU's estimate) under the memory budget and limit.
    fn chunk_size(&self, n: usize, bytes_per_copy: u64) -> Result<usize> {
        let limits = self.ctx.limits();
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(usize::MAX as u64) as usize;
        let numel = |d: &Vec<usize>| d.iter().product::<usize>();
        let values = self.model.value_dims();
        let largest = values.iter().map(numel).max().unwrap_or(1).max(1);
        let by_binding = max_binding / (largest * size_of::<f32>());
        if by_binding == 0 {
            return Err(SaliencyError::Input(format!(
                "one copy's largest value ({largest} floats) does not fit the device's binding limit of {max_binding} bytes"
            )));
        }
        let by_budget =
            crate::explain::chunk_size(self.memory_budget, &self.limits, bytes_per_copy, n);
        Ok(by_budget.min(by_binding).clamp(1, n))
    }

    /// The forward of the graph over `batch[m, ...]`; with `save`, what the backward needs.
    fn forward(&self, batch: GpuTensor, save: bool) -> Result<(GpuTensor, Vec<Saved>)> {
        let ctx = &self.ctx;
        let nodes = self.model.nodes();
        let m = batch.dims()[0];
        let dims_of =
            |v: usize| -> Vec<usize> { [&[m], &self.model.value_dims()[v][1..]].concat() };
        let mut values: Vec<Option<GpuTensor>> = (0..=nodes.len()).map(|_| None).collect();
        let mut left = self.readers.clone();
        values[0] = Some(batch);
        let mut saved = Vec::with_capacity(nodes.len());
        // Takes value `v` for a reader: moved out at its last read, duplicated before.
        // justified: `Model::new` orders nodes topologically and counts readers, so a value is
        // present from when it is computed until its last reader takes it.
        #[allow(clippy::expect_used)]
        let take = |values: &mut Vec<Option<GpuTensor>>, left: &mut Vec<usize>, v: usize| {
            left[v] -= 1;
            let t = values[v]
                .as_ref()
                .expect("values are computed before their readers");
            if left[v] == 0 {
                Ok(values[v].take().expect("present"))
            } else {
                ctx.duplicate(t)
            }
        };
        let mut fused_mask: Option<GpuMask> = None;
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
            fn x<'v>(values: &'v [Option<GpuTensor>], inputs: &[usize], i: usize) -> &'v GpuTensor {
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
                (
                    Layer::BatchNorm { .. },
                    Weights::BatchNorm {
                        gamma,
                        beta,
                        mean,
                        var,
                        eps,
                    },
                ) => (
                    ctx.batch_norm_fwd(x(&values, &node.inputs, 0), gamma, beta, mean, var, *eps)?,
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
                        ctx.global_avgpool2d_fwd(xi)?,
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
                    let y = take(&mut values, &mut left, node.inputs[0])?;
                    values[k + 1] = Some(y.reshape(&dims_of(k + 1))?);
                    saved.push(Saved::None);
                    continue;
                }
                (other, _) => {
                    return Err(unsupported(format!(
                        "layer `{}` ({}) has no wgpu kernel yet",
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
        batch: GpuTensor,
        target: usize,
        classes: usize,
        guided: bool,
        sum: &mut GpuTensor,
        sumsq: &mut GpuTensor,
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
        let mut dy = ctx.upload_slice(&seed, &[m, classes])?;
        if self.output == Output::Probability {
            let out = out.reshape(&[m, classes])?;
            let p = ctx.softmax_fwd(&out)?;
            dy = ctx.softmax_bwd(&p, &dy)?;
        } else {
            drop(out);
        }
        let mut grads: Vec<Option<GpuTensor>> = (0..=nodes.len()).map(|_| None).collect();
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
                (
                    Layer::BatchNorm { .. },
                    Weights::BatchNorm {
                        gamma, var, eps, ..
                    },
                    _,
                ) => ctx.batch_norm_bwd(&dy, gamma, var, *eps)?,
                (Layer::Relu | Layer::Clamp { .. }, _, Saved::Mask(mask)) => {
                    ctx.relu_bwd(&dy, &mask, guided)?
                }
                (Layer::MaxPool2d(_), _, Saved::MaxPool(g, arg)) => {
                    ctx.maxpool2d_bwd(&g, &dy, &arg)?
                }
                (Layer::AvgPool2d(_), _, Saved::AvgPool(g)) => ctx.avgpool2d_bwd(&g, &dy)?,
                (Layer::GlobalAvgPool, _, Saved::GlobalAvgPool(x_dims)) => {
                    let dy = dy.reshape(&[x_dims[0], x_dims[1], 1, 1])?;
                    ctx.global_avgpool2d_bwd(&dy, &x_dims)?
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
                        "layer `{}` ({}): no wgpu backward",
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
            Some(g) => ctx.reduce_copies(&g, sum, sumsq)?,
            None if reduced => {}
            None => {
                return Err(SaliencyError::Input(
                    "the output does not depend on the input".into(),
                ));
            }
        }
        Ok(())
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

/// Counts the reads of `inputs` done, dropping values nobody reads any more.
fn release(values: &mut [Option<GpuTensor>], left: &mut [usize], inputs: &[usize]) {
    for &i in inputs {
        left[i] -= 1;
        if left[i] == 0 {
            values[i] = None;
        }
    }
}

/// Adds `g` into the gradient of value `v` (values with several readers get several).
fn accumulate(
    ctx: &WgpuContext,
    grads: &mut [Option<GpuTensor>],
    v: usize,
    g: GpuTensor,
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

fn method_name(m: &Method) -> &'static str {
    match m {
        Method::Gradient => "gradient",
        Method::GuidedBackprop => "guided backprop",
        Method::GradXInput => "gradient × input",
        Method::IntegratedGradients(_) => "integrated gradients",
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
