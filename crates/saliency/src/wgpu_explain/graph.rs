//! The model graph run on the device: weights uploaded once, a forward over a batch keeping what
//! the backward needs, and a backward from the one-hot target computing input gradients only —
//! either reduced over the copies as it ends (Σ, Σ²) or returned per copy.

use crate::error::{Result, SaliencyError};
use crate::method::Output;
use smoothgrad_autodiff::backend::wgpu::{GpuIndices, GpuMask, GpuTensor, Precision, WgpuContext};
use smoothgrad_autodiff::{Conv2dGeometry, Pool2dGeometry, Tensor};
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
    /// The parts' lengths along the concatenation axis.
    Concat(Vec<usize>),
}

/// Where the backward's input gradients go.
pub(super) enum Sink<'a> {
    /// Added over the copies into Σ and Σ² (by the first convolution's fused backward when it
    /// alone reads the input).
    Reduce {
        sum: &'a mut GpuTensor,
        sumsq: &'a mut GpuTensor,
    },
    /// Returned per copy, `[m, ...]`.
    PerCopy,
}

/// A model's graph on one device, with its weights stored as `precision`.
pub(super) struct Graph {
    weights: Vec<Weights>,
    /// For each value, how many node inputs read it.
    readers: Vec<usize>,
    /// For each node, whether a ReLU alone reads its (convolution) output: the pair runs fused.
    fuse_relu: Vec<bool>,
    pub(super) precision: Precision,
}

impl Graph {
    /// Uploads the weights of `model` into `ctx` as `precision`, checking every layer has a
    /// kernel.
    pub(super) fn new(model: &Model<f32>, ctx: &WgpuContext, precision: Precision) -> Result<Self> {
        let nodes = model.nodes();
        let mut readers = vec![0usize; nodes.len() + 1];
        for node in nodes {
            for &i in &node.inputs {
                readers[i] += 1;
            }
        }
        readers[model.output_index()] += 1;
        let up = |t: &Tensor<f32>| ctx.upload_as(t, precision);
        let mut weights = Vec::with_capacity(nodes.len());
        for node in nodes {
            let w = match &node.layer {
                Layer::Conv2d { weight, bias, .. } => Weights::Conv {
                    w: up(weight)?,
                    bias: bias.as_ref().map(up).transpose()?,
                },
                Layer::Linear { weight, bias } => Weights::Linear {
                    w: up(weight)?,
                    bias: bias.as_ref().map(up).transpose()?,
                },
                Layer::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    eps,
                } => Weights::BatchNorm {
                    gamma: up(gamma)?,
                    beta: up(beta)?,
                    mean: up(mean)?,
                    var: up(var)?,
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
                | Layer::Concat { .. }
                | Layer::Identity => Weights::None,
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
        Ok(Graph {
            weights,
            readers,
            fuse_relu,
            precision,
        })
    }

    /// Whether the model's input is read by one node only (the fused reduction may apply).
    fn input_read_once(&self) -> bool {
        self.readers[0] == 1
    }

    /// The forward of the graph over `batch[m, ...]`; with `save`, what the backward needs.
    fn forward(
        &self,
        ctx: &WgpuContext,
        model: &Model<f32>,
        batch: GpuTensor,
        save: bool,
    ) -> Result<(GpuTensor, Vec<Saved>)> {
        let nodes = model.nodes();
        let m = batch.dims()[0];
        let dims_of = |v: usize| -> Vec<usize> { [&[m], &model.value_dims()[v][1..]].concat() };
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
                (Layer::Concat { axis }, _) => {
                    let parts: Vec<&GpuTensor> = (0..node.inputs.len())
                        .map(|i| x(&values, &node.inputs, i))
                        .collect();
                    let lengths = parts.iter().map(|t| t.dims()[*axis]).collect();
                    (ctx.concat_fwd(&parts, *axis)?, Saved::Concat(lengths))
                }
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
                        "layer `{}` ({}) has no wgpu kernel",
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
        let out = values[model.output_index()]
            .take()
            .expect("the output value is computed");
        Ok((out, saved))
    }

    /// The model's output for `batch[m, ...]`, downloaded.
    pub(super) fn outputs(
        &self,
        ctx: &WgpuContext,
        model: &Model<f32>,
        batch: GpuTensor,
    ) -> Result<Vec<f32>> {
        let (out, _) = self.forward(ctx, model, batch, false)?;
        Ok(ctx.download(&out)?.into_vec())
    }

    /// Forward and backward of `batch[m, ...]` from the one-hot `target` of the logit or
    /// probability (`output`), computing input gradients only, sent to `sink`: the per-copy
    /// gradients `[m, ...]` for [`Sink::PerCopy`], else `None`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn input_gradients(
        &self,
        ctx: &WgpuContext,
        model: &Model<f32>,
        batch: GpuTensor,
        (target, classes): (usize, usize),
        output: Output,
        guided: bool,
        sink: Sink<'_>,
    ) -> Result<Option<GpuTensor>> {
        let nodes = model.nodes();
        let m = batch.dims()[0];
        let dims_of = |v: usize| -> Vec<usize> { [&[m], &model.value_dims()[v][1..]].concat() };
        let (out, mut saved) = self.forward(ctx, model, batch, true)?;
        let mut seed = vec![0.0f32; m * classes];
        for r in 0..m {
            seed[r * classes + target] = 1.0;
        }
        let mut dy = ctx.upload_slice_as(&seed, &[m, classes], self.precision)?;
        if output == Output::Probability {
            let out = out.reshape(&[m, classes])?;
            let p = ctx.softmax_fwd(&out)?;
            dy = ctx.softmax_bwd(&p, &dy)?;
        } else {
            drop(out);
        }
        let mut grads: Vec<Option<GpuTensor>> = (0..=nodes.len()).map(|_| None).collect();
        grads[model.output_index()] = Some(dy.reshape(&dims_of(model.output_index()))?);
        let mut sink = sink;
        // The fused reduction applies when a convolution alone reads the input.
        let fused = matches!(sink, Sink::Reduce { .. }) && self.input_read_once();
        let mut reduced = false;
        for k in (0..nodes.len()).rev() {
            let node = &nodes[k];
            let Some(dy) = grads[k + 1].take() else {
                continue;
            };
            let s = std::mem::replace(&mut saved[k], Saved::None);
            let dx = match (&node.layer, &self.weights[k], s) {
                (Layer::Conv2d { .. }, Weights::Conv { w, .. }, Saved::Conv(g)) => {
                    if let (true, 0, Sink::Reduce { sum, sumsq }) =
                        (fused, node.inputs[0], &mut sink)
                    {
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
                (Layer::Concat { axis }, _, Saved::Concat(lengths)) => {
                    let parts = ctx.concat_bwd(&dy, *axis, &lengths)?;
                    for (&i, part) in node.inputs.iter().zip(parts) {
                        let part = part.reshape(&dims_of(i))?;
                        accumulate(ctx, &mut grads, i, part)?;
                    }
                    continue;
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
        let no_gradient = || SaliencyError::Input("the output does not depend on the input".into());
        match (grads[0].take(), sink) {
            (Some(g), Sink::Reduce { sum, sumsq }) => {
                ctx.reduce_copies(&g, sum, sumsq)?;
                Ok(None)
            }
            (Some(g), Sink::PerCopy) => Ok(Some(g)),
            (None, _) if reduced => Ok(None),
            (None, _) => Err(no_gradient()),
        }
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

/// A typed error for what the wgpu explainer cannot run (never a CPU fallback).
pub(super) fn unsupported(reason: String) -> SaliencyError {
    SaliencyError::Option {
        option: "device",
        reason,
    }
}
