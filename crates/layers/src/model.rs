//! A model: a small DAG of layers over one input, run on an autodiff tape.
//!
//! Values are numbered: value 0 is the model input, value `k + 1` is the output of node `k`.
//! Nodes only read earlier values, so the node list is a topological order by construction,
//! which is what makes residual adds (ResNet) and channel concats (SqueezeNet) plain nodes.

use crate::error::{LayersError, Result};
use smoothgrad_autodiff::{
    Conv2dGeometry, Conv2dParams, Float, Pool2dGeometry, Pool2dParams, Tape, Tensor, Var,
};

/// One operation of a model. Weights are stored in PyTorch's layouts (OIHW, [out, in]).
#[derive(Debug, Clone)]
pub enum Layer<T: Float> {
    Conv2d {
        weight: Tensor<T>,
        bias: Option<Tensor<T>>,
        params: Conv2dParams,
    },
    Linear {
        weight: Tensor<T>,
        bias: Option<Tensor<T>>,
    },
    Relu,
    /// `min(max(x, low), high)`; ReLU6 is `Clamp { low: 0, high: 6 }`.
    Clamp {
        low: f64,
        high: f64,
    },
    MaxPool2d(Pool2dParams),
    AvgPool2d(Pool2dParams),
    GlobalAvgPool,
    /// Inference-form batch norm over axis 1.
    BatchNorm {
        gamma: Tensor<T>,
        beta: Tensor<T>,
        mean: Tensor<T>,
        var: Tensor<T>,
        eps: f64,
    },
    /// Collapse the axes from `start_dim` on (PyTorch's `flatten`; `start_dim` counts the batch).
    Flatten {
        start_dim: usize,
    },
    /// Reshape each sample to `sample_dims` (the batch axis is kept as it is).
    Reshape {
        sample_dims: Vec<usize>,
    },
    /// Elementwise sum of two inputs of the same shape (residual connections).
    Add,
    /// Concatenation along `axis` (1 = channels).
    Concat {
        axis: usize,
    },
    Softmax {
        axis: usize,
    },
    /// Passes its input through (dropout in inference, a folded batch norm, ONNX `Identity`).
    Identity,
}

impl<T: Float> Layer<T> {
    /// Whether finite inputs always give a finite output: every output value is an input
    /// value, 0 or a finite clamp bound. Checking such an output after its inputs finds nothing
    /// (the forward skips that pass).
    fn keeps_finite(&self) -> bool {
        match self {
            Layer::Relu
            | Layer::Flatten { .. }
            | Layer::Reshape { .. }
            | Layer::Concat { .. }
            | Layer::Identity => true,
            // Without dilation every window holds an input element (padding ≤ half the kernel).
            Layer::MaxPool2d(p) => p.dilation == [1, 1],
            Layer::Clamp { low, high } => {
                T::from_f64(*low).is_finite() && T::from_f64(*high).is_finite()
            }
            _ => false,
        }
    }

    /// A short name of the kind of layer, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv2d { .. } => "conv2d",
            Layer::Linear { .. } => "linear",
            Layer::Relu => "relu",
            Layer::Clamp { .. } => "clamp",
            Layer::MaxPool2d(_) => "max_pool2d",
            Layer::AvgPool2d(_) => "avg_pool2d",
            Layer::GlobalAvgPool => "global_avg_pool2d",
            Layer::BatchNorm { .. } => "batch_norm",
            Layer::Flatten { .. } => "flatten",
            Layer::Reshape { .. } => "reshape",
            Layer::Add => "add",
            Layer::Concat { .. } => "concat",
            Layer::Softmax { .. } => "softmax",
            Layer::Identity => "identity",
        }
    }

    /// The layer's type as the variant is named (`Linear`, `Conv2d`, ...), for messages that name
    /// a layer by its file name and its type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Layer::Conv2d { .. } => "Conv2d",
            Layer::Linear { .. } => "Linear",
            Layer::Relu => "Relu",
            Layer::Clamp { .. } => "Clamp",
            Layer::MaxPool2d(_) => "MaxPool2d",
            Layer::AvgPool2d(_) => "AvgPool2d",
            Layer::GlobalAvgPool => "GlobalAvgPool",
            Layer::BatchNorm { .. } => "BatchNorm",
            Layer::Flatten { .. } => "Flatten",
            Layer::Reshape { .. } => "Reshape",
            Layer::Add => "Add",
            Layer::Concat { .. } => "Concat",
            Layer::Softmax { .. } => "Softmax",
            Layer::Identity => "Identity",
        }
    }

    fn arity(&self) -> Option<usize> {
        match self {
            Layer::Add => Some(2),
            Layer::Concat { .. } => None,
            _ => Some(1),
        }
    }

    fn cast<U: Float>(&self) -> Layer<U> {
        let c = |t: &Tensor<T>| t.cast::<U>();
        match self {
            Layer::Conv2d {
                weight,
                bias,
                params,
            } => Layer::Conv2d {
                weight: c(weight),
                bias: bias.as_ref().map(c),
                params: *params,
            },
            Layer::Linear { weight, bias } => Layer::Linear {
                weight: c(weight),
                bias: bias.as_ref().map(c),
            },
            Layer::Relu => Layer::Relu,
            Layer::Clamp { low, high } => Layer::Clamp {
                low: *low,
                high: *high,
            },
            Layer::MaxPool2d(p) => Layer::MaxPool2d(*p),
            Layer::AvgPool2d(p) => Layer::AvgPool2d(*p),
            Layer::GlobalAvgPool => Layer::GlobalAvgPool,
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
            } => Layer::BatchNorm {
                gamma: c(gamma),
                beta: c(beta),
                mean: c(mean),
                var: c(var),
                eps: *eps,
            },
            Layer::Flatten { start_dim } => Layer::Flatten {
                start_dim: *start_dim,
            },
            Layer::Reshape { sample_dims } => Layer::Reshape {
                sample_dims: sample_dims.clone(),
            },
            Layer::Add => Layer::Add,
            Layer::Concat { axis } => Layer::Concat { axis: *axis },
            Layer::Softmax { axis } => Layer::Softmax { axis: *axis },
            Layer::Identity => Layer::Identity,
        }
    }

    /// The output shape for inputs of the given shapes (batch axis included), or why not.
    pub(crate) fn infer(&self, ins: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let Some(&x) = ins.first() else {
            return Err("has no input".to_owned());
        };
        let err = |e: smoothgrad_autodiff::Error| e.to_string();
        let product = |dims: &[usize]| {
            dims.iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| format!("the element count of {dims:?} overflows"))
        };
        Ok(match self {
            Layer::Conv2d {
                weight,
                bias,
                params,
            } => {
                let g = Conv2dGeometry::new(x, weight.dims(), params).map_err(err)?;
                if let Some(b) = bias
                    && b.dims() != [g.out_channels]
                {
                    return Err(format!(
                        "bias has shape {:?}, expected [{}]",
                        b.dims(),
                        g.out_channels
                    ));
                }
                g.out_dims().to_vec()
            }
            Layer::Linear { weight, bias } => {
                let w = weight.dims();
                if w.len() != 2 || x.last() != Some(&w[1]) {
                    return Err(format!(
                        "input {x:?} does not fit weight {w:?} ([out, in]); flatten first?"
                    ));
                }
                if let Some(b) = bias
                    && b.dims() != [w[0]]
                {
                    return Err(format!(
                        "bias has shape {:?}, expected [{}]",
                        b.dims(),
                        w[0]
                    ));
                }
                let mut d = x.to_vec();
                let last = d.len() - 1;
                d[last] = w[0];
                d
            }
            Layer::Relu | Layer::Clamp { .. } | Layer::Identity => x.to_vec(),
            Layer::MaxPool2d(p) => Pool2dGeometry::new("max_pool2d", x, p)
                .map_err(err)?
                .out_dims()
                .to_vec(),
            Layer::AvgPool2d(p) => Pool2dGeometry::new("avg_pool2d", x, p)
                .map_err(err)?
                .out_dims()
                .to_vec(),
            Layer::GlobalAvgPool => {
                if x.len() != 4 {
                    return Err(format!("input {x:?} is not [N, C, H, W]"));
                }
                vec![x[0], x[1], 1, 1]
            }
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                ..
            } => {
                let c = x.get(1).copied().unwrap_or(0);
                for (name, t) in [
                    ("weight", gamma),
                    ("bias", beta),
                    ("mean", mean),
                    ("var", var),
                ] {
                    if t.dims() != [c] {
                        return Err(format!(
                            "{name} has shape {:?}, expected [{c}] for input {x:?}",
                            t.dims()
                        ));
                    }
                }
                x.to_vec()
            }
            Layer::Flatten { start_dim } => {
                if *start_dim == 0 || *start_dim >= x.len() {
                    return Err(format!(
                        "start_dim {start_dim} must be in 1..{} (the batch axis stays)",
                        x.len()
                    ));
                }
                let (kept, merged) = x.split_at(*start_dim);
                let mut d = kept.to_vec();
                d.push(product(merged)?);
                d
            }
            Layer::Reshape { sample_dims } => {
                let Some((&batch, sample)) = x.split_first() else {
                    return Err("input has no batch axis".to_owned());
                };
                if product(sample)? != product(sample_dims)? {
                    return Err(format!(
                        "cannot reshape samples of shape {sample:?} to {sample_dims:?}"
                    ));
                }
                let mut d = vec![batch];
                d.extend(sample_dims);
                d
            }
            Layer::Add => match ins {
                [a, b] if a == b => x.to_vec(),
                [a, b] => {
                    return Err(format!("adds inputs of different shapes {a:?} and {b:?}"));
                }
                _ => return Err(format!("an add takes 2 inputs, got {}", ins.len())),
            },
            Layer::Concat { axis } => {
                let mut d = x.to_vec();
                if *axis == 0 || *axis >= d.len() {
                    return Err(format!("axis {axis} out of range for {x:?}"));
                }
                d[*axis] = 0;
                for i in ins {
                    let same =
                        i.len() == x.len() && (0..x.len()).all(|k| k == *axis || i[k] == x[k]);
                    if !same {
                        return Err(format!("inputs {:?} and {i:?} differ off axis {axis}", x));
                    }
                    d[*axis] = d[*axis]
                        .checked_add(i[*axis])
                        .ok_or_else(|| format!("concatenated size along axis {axis} overflows"))?;
                }
                d
            }
            Layer::Softmax { axis } => {
                if *axis >= x.len() {
                    return Err(format!("axis {axis} out of range for {x:?}"));
                }
                x.to_vec()
            }
        })
    }

    /// The trainable tensors of this layer and their weight-name suffixes, in a fixed order:
    /// weight then bias (convolution, linear), weight (γ) then bias (β) (batch norm).
    pub fn parameters(&self) -> Vec<(&'static str, &Tensor<T>)> {
        match self {
            Layer::Conv2d { weight, bias, .. } | Layer::Linear { weight, bias } => {
                let mut p = vec![("weight", weight)];
                p.extend(bias.as_ref().map(|b| ("bias", b)));
                p
            }
            Layer::BatchNorm { gamma, beta, .. } => vec![("weight", gamma), ("bias", beta)],
            _ => Vec::new(),
        }
    }

    /// The tensors of [`parameters`](Self::parameters), mutably, in the same order.
    fn parameters_mut(&mut self) -> Vec<&mut Tensor<T>> {
        match self {
            Layer::Conv2d { weight, bias, .. } | Layer::Linear { weight, bias } => {
                let mut p = vec![weight];
                p.extend(bias.as_mut());
                p
            }
            Layer::BatchNorm { gamma, beta, .. } => vec![gamma, beta],
            _ => Vec::new(),
        }
    }

    /// Records this layer on `tape`; `params` (in [`parameters`](Self::parameters) order)
    /// replaces the stored weights when given (training: variables that require a gradient).
    fn forward_with(
        &self,
        tape: &mut Tape<T>,
        ins: &[&Var<T>],
        params: Option<&[Var<T>]>,
    ) -> smoothgrad_autodiff::Result<Var<T>> {
        let x = ins[0];
        match (self, params) {
            (Layer::Conv2d { params: p, .. }, Some(v)) => tape.conv2d(x, &v[0], v.get(1), p),
            (Layer::Linear { .. }, Some(v)) => tape.linear(x, &v[0], v.get(1)),
            (Layer::BatchNorm { mean, var, eps, .. }, Some(v)) => {
                tape.batch_norm(x, &v[0], &v[1], mean, var, *eps)
            }
            (layer, _) => layer.forward_constant(tape, ins),
        }
    }

    /// Records this layer on `tape` with its stored weights as constants.
    fn forward_constant(
        &self,
        tape: &mut Tape<T>,
        ins: &[&Var<T>],
    ) -> smoothgrad_autodiff::Result<Var<T>> {
        let x = ins[0];
        let k = |t: &Tensor<T>| Var::constant(t.clone());
        match self {
            Layer::Conv2d {
                weight,
                bias,
                params,
            } => tape.conv2d(x, &k(weight), bias.as_ref().map(k).as_ref(), params),
            Layer::Linear { weight, bias } => {
                tape.linear(x, &k(weight), bias.as_ref().map(k).as_ref())
            }
            Layer::Relu => tape.relu(x),
            Layer::Clamp { low, high } => tape.clamp(x, *low, *high),
            Layer::MaxPool2d(p) => tape.max_pool2d(x, p),
            Layer::AvgPool2d(p) => tape.avg_pool2d(x, p),
            Layer::GlobalAvgPool => tape.global_avg_pool2d(x),
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
            } => tape.batch_norm(x, &k(gamma), &k(beta), mean, var, *eps),
            Layer::Flatten { start_dim } => tape.flatten(x, *start_dim),
            Layer::Reshape { sample_dims } => {
                let mut d = vec![x.dims()[0]];
                d.extend(sample_dims);
                tape.reshape(x, &d)
            }
            Layer::Add => tape.add(ins[0], ins[1]),
            Layer::Concat { axis } => tape.concat(ins, *axis),
            Layer::Softmax { axis } => tape.softmax(x, *axis),
            Layer::Identity => Ok(x.clone()),
        }
    }
}

/// Activation `layer` on a value nothing reads after it: a ReLU takes the value over and, when
/// nothing else holds it, overwrites it in place ([`Tape::relu_owned`]); other layers as
/// [`Layer::forward_constant`].
fn activate_owned<T: Float>(
    layer: &Layer<T>,
    tape: &mut Tape<T>,
    x: Var<T>,
) -> smoothgrad_autodiff::Result<Var<T>> {
    match layer {
        Layer::Relu => tape.relu_owned(x),
        other => other.forward_constant(tape, &[&x]),
    }
}

/// Fails with [`LayersError::NonFinite`] when `value`, the output of `node`, holds a NaN or an
/// infinity: one pass that counts them all (an overflow rarely stops at one value).
fn check_finite<T: Float>(node: &Node<T>, value: &Tensor<T>) -> Result<()> {
    if value.all_finite() {
        return Ok(());
    }
    let values = value.as_slice();
    Err(LayersError::NonFinite {
        layer: node.name.clone(),
        kind: node.layer.type_name().to_owned(),
        count: values.iter().filter(|v| !v.is_finite()).count(),
        total: values.len(),
    })
}

/// A named layer and the values it reads (0 = model input, k + 1 = output of node k).
#[derive(Debug, Clone)]
pub struct Node<T: Float> {
    pub name: String,
    pub layer: Layer<T>,
    pub inputs: Vec<usize>,
}

/// A validated model: every node's inputs exist and every shape fits, for inputs of
/// `input_dims` (one sample, without the batch axis) and any batch size.
#[derive(Debug, Clone)]
pub struct Model<T: Float = f32> {
    input_dims: Vec<usize>,
    nodes: Vec<Node<T>>,
    output: usize,
    output_dims: Vec<usize>,
    /// For each value, the index of the last node reading it (to free it early in forward).
    last_use: Vec<usize>,
    /// Each value's shape for a batch of one.
    value_dims: Vec<Vec<usize>>,
}

/// Floating-point operations of one sample: multiply-adds count 2, other ops 1 per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlopCount {
    /// The forward pass.
    pub forward: u64,
    /// The backward pass computing input gradients only (no weight gradients).
    pub input_backward: u64,
}

impl<T: Float> Model<T> {
    /// Checks the graph and infers every shape for a batch of one.
    ///
    /// `source` names the model in messages (a file name).
    pub fn new(
        source: &str,
        input_dims: &[usize],
        nodes: Vec<Node<T>>,
        output: usize,
    ) -> Result<Self> {
        let graph_err = |node: &str, reason: String| LayersError::Graph {
            source_name: source.to_string(),
            node: node.to_string(),
            reason,
        };
        if input_dims.is_empty() || input_dims.contains(&0) {
            return Err(graph_err(
                "<input>",
                format!("input shape {input_dims:?} must be non-empty with positive sizes"),
            ));
        }
        let mut shapes: Vec<Vec<usize>> = vec![[&[1], input_dims].concat()];
        let mut last_use = vec![0usize; nodes.len() + 1];
        for (k, node) in nodes.iter().enumerate() {
            if let Some(n) = node.layer.arity()
                && node.inputs.len() != n
            {
                return Err(graph_err(
                    &node.name,
                    format!(
                        "a {} layer takes {n} input(s), got {}",
                        node.layer.kind(),
                        node.inputs.len()
                    ),
                ));
            }
            if node.inputs.is_empty() {
                return Err(graph_err(&node.name, "has no input".into()));
            }
            for &i in &node.inputs {
                if i > k {
                    return Err(graph_err(
                        &node.name,
                        format!("reads value {i}, which is not computed before it"),
                    ));
                }
                last_use[i] = k;
            }
            let ins: Vec<&[usize]> = node.inputs.iter().map(|&i| shapes[i].as_slice()).collect();
            let out = node.layer.infer(&ins).map_err(|reason| {
                graph_err(&node.name, format!("{}: {reason}", node.layer.kind()))
            })?;
            shapes.push(out);
        }
        if output > nodes.len() {
            return Err(graph_err(
                "<output>",
                format!("output value {output} does not exist"),
            ));
        }
        last_use[output] = usize::MAX;
        let output_dims = shapes[output][1..].to_vec();
        Ok(Model {
            input_dims: input_dims.to_vec(),
            nodes,
            output,
            output_dims,
            last_use,
            value_dims: shapes,
        })
    }

    /// The shape of one input sample (without the batch axis), e.g. `[3, 32, 32]`.
    pub fn input_dims(&self) -> &[usize] {
        &self.input_dims
    }

    /// The shape of one output sample (without the batch axis), e.g. `[10]`.
    pub fn output_dims(&self) -> &[usize] {
        &self.output_dims
    }

    /// The nodes in execution order.
    pub fn nodes(&self) -> &[Node<T>] {
        &self.nodes
    }

    /// The value the model returns (0 = its input, k + 1 = the output of node k).
    pub fn output_index(&self) -> usize {
        self.output
    }

    /// The same model with weights converted to another element type (f64 for validation).
    pub fn cast<U: Float>(&self) -> Model<U> {
        Model {
            input_dims: self.input_dims.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|n| Node {
                    name: n.name.clone(),
                    layer: n.layer.cast(),
                    inputs: n.inputs.clone(),
                })
                .collect(),
            output: self.output,
            output_dims: self.output_dims.clone(),
            last_use: self.last_use.clone(),
            value_dims: self.value_dims.clone(),
        }
    }

    /// Each value's shape for a batch of one: index 0 is the input, k + 1 the output of node k.
    pub fn value_dims(&self) -> &[Vec<usize>] {
        &self.value_dims
    }

    /// FLOPs of one sample through forward and the input-gradient backward, counted from the
    /// graph: convolutions and linear layers 2 per multiply-add (their dX costs the same as their
    /// forward), every other layer 1 per output element each way.
    pub fn flops_per_sample(&self) -> FlopCount {
        // Saturating: a model built from a file may declare sizes whose FLOPs overflow u64.
        let count = |dims: &[usize]| dims.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
        let mut f = FlopCount::default();
        for (node, out) in self.nodes.iter().zip(self.value_dims.iter().skip(1)) {
            let out = count(out);
            let multiply_adds = |per_out: u64| 2u64.saturating_mul(out).saturating_mul(per_out);
            let (fwd, bwd) = match &node.layer {
                Layer::Conv2d { weight, .. } => {
                    let per_out = multiply_adds(count(weight.dims().get(1..).unwrap_or(&[])));
                    (per_out, per_out)
                }
                Layer::Linear { weight, .. } => {
                    let per_out = multiply_adds(count(weight.dims().get(1..).unwrap_or(&[])));
                    (per_out, per_out)
                }
                Layer::Identity | Layer::Flatten { .. } | Layer::Reshape { .. } => (0, 0),
                _ => (out, out),
            };
            f.forward = f.forward.saturating_add(fwd);
            f.input_backward = f.input_backward.saturating_add(bwd);
        }
        f
    }

    /// Runs the model on a batch `x[N, ...input_dims]`, recording on `tape` whatever depends on
    /// a variable (weights are constants: their gradients are never computed).
    pub fn forward(&self, tape: &mut Tape<T>, x: &Var<T>) -> Result<Var<T>> {
        self.run(tape, x, None)
    }

    /// The model's trainable tensors in execution order, named as in a safetensors file
    /// (`<node name>.weight`, `<node name>.bias`; a batch norm's γ and β as weight and bias).
    pub fn parameters(&self) -> Vec<(String, Tensor<T>)> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.layer
                    .parameters()
                    .into_iter()
                    .map(|(suffix, t)| (format!("{}.{suffix}", n.name), t.clone()))
            })
            .collect()
    }

    /// Replaces the trainable tensors, given in [`parameters`](Self::parameters) order; each
    /// must keep its shape.
    pub fn set_parameters(&mut self, values: &[Tensor<T>]) -> Result<()> {
        let count = self.parameters_count();
        let mismatch = |reason: String| LayersError::Graph {
            source_name: "set_parameters".into(),
            node: "<parameters>".into(),
            reason,
        };
        if values.len() != count {
            return Err(mismatch(format!(
                "{} tensors given for {count} parameters",
                values.len()
            )));
        }
        // Every shape is checked before anything is replaced: a mismatch changes nothing.
        let current = self.nodes.iter().flat_map(|node| {
            node.layer
                .parameters()
                .into_iter()
                .map(move |(_, t)| (node.name.as_str(), t))
        });
        for ((name, slot), v) in current.zip(values) {
            if v.dims() != slot.dims() {
                return Err(mismatch(format!(
                    "a parameter of `{name}` has shape {:?}, given {:?}",
                    slot.dims(),
                    v.dims()
                )));
            }
        }
        let slots = self
            .nodes
            .iter_mut()
            .flat_map(|node| node.layer.parameters_mut());
        // The counts were compared above, so the zip pairs every slot with a value.
        for (slot, v) in slots.zip(values) {
            *slot = v.clone();
        }
        Ok(())
    }

    /// Number of trainable tensors (the length of [`parameters`](Self::parameters)).
    pub fn parameters_count(&self) -> usize {
        self.nodes.iter().map(|n| n.layer.parameters().len()).sum()
    }

    /// Runs the model with `params` (in [`parameters`](Self::parameters) order) in place of
    /// the stored weights: with variables that require a gradient, a backward pass then gives
    /// the weights' gradients (training).
    pub fn forward_with_params(
        &self,
        tape: &mut Tape<T>,
        x: &Var<T>,
        params: &[Var<T>],
    ) -> Result<Var<T>> {
        let count = self.parameters_count();
        if params.len() != count {
            return Err(LayersError::Graph {
                source_name: "forward_with_params".into(),
                node: "<parameters>".into(),
                reason: format!("{} variables given for {count} parameters", params.len()),
            });
        }
        self.run(tape, x, Some(params))
    }

    fn run(&self, tape: &mut Tape<T>, x: &Var<T>, params: Option<&[Var<T>]>) -> Result<Var<T>> {
        if x.dims().get(1..) != Some(&self.input_dims[..]) {
            return Err(LayersError::InputShape {
                expected: self.input_dims.clone(),
                found: x.dims().to_vec(),
            });
        }
        // A value that is missing where `Model::new` proved it present: an internal error, not
        // a panic, should the invariant ever break.
        let missing = |node: &str, what: String| LayersError::Graph {
            source_name: "forward".into(),
            node: node.to_string(),
            reason: what,
        };
        let mut values: Vec<Option<Var<T>>> = vec![None; self.nodes.len() + 1];
        if let Some(input) = values.first_mut() {
            *input = Some(x.clone());
        }
        let mut next_param = 0;
        // Nodes already run out of order (see below).
        let mut skip = 0;
        for (k, node) in self.nodes.iter().enumerate() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let count = node.layer.parameters().len();
            let layer_params = match params {
                None => None,
                Some(p) => Some(p.get(next_param..next_param + count).ok_or_else(|| {
                    missing(&node.name, format!("parameters {next_param}.. not given"))
                })?),
            };
            next_param += count;
            let ins: Vec<&Var<T>> =
                node.inputs
                    .iter()
                    .map(|&i| {
                        values.get(i).and_then(Option::as_ref).ok_or_else(|| {
                            missing(&node.name, format!("value {i} is not computed"))
                        })
                    })
                    .collect::<Result<_>>()?;
            let forward_err = |node: &Node<T>| {
                let name = node.name.clone();
                move |e| LayersError::Forward {
                    node: name,
                    source: e,
                }
            };
            // Inputs that are node outputs were checked finite when computed (the model's
            // input is the caller's).
            let checked = node.inputs.iter().all(|&i| i != 0);
            let conv_pool = match (&node.layer, params, self.pool_after_conv(k)) {
                (
                    Layer::Conv2d {
                        weight,
                        bias,
                        params: conv,
                    },
                    None,
                    Some((
                        activation,
                        pool @ Node {
                            layer: Layer::MaxPool2d(pool_params),
                            ..
                        },
                    )),
                ) => Some((weight, bias, conv, activation, pool, pool_params)),
                _ => None,
            };
            if let Some((weight, bias, conv, activation, pool, pool_params)) = conv_pool {
                // conv → activation → max pool as (conv + max pool) → activation, the first two
                // fused (see `pool_after_conv`). The pooled values hold every non-finite value
                // the pool passes on, and the convolution is where it arose.
                let k_ = |t: &Tensor<T>| Var::constant(t.clone());
                let pooled = tape
                    .conv2d_max_pool2d(
                        ins[0],
                        &k_(weight),
                        bias.as_ref().map(k_).as_ref(),
                        conv,
                        pool_params,
                    )
                    .map_err(forward_err(node))?;
                check_finite(node, pooled.value())?;
                let out = activate_owned(&activation.layer, tape, pooled)
                    .map_err(forward_err(activation))?;
                if !(activation.layer.keeps_finite() && pool.layer.keeps_finite()) {
                    check_finite(pool, out.value())?;
                }
                if let Some(slot) = values.get_mut(k + 3) {
                    *slot = Some(out);
                }
                skip = 2;
            } else if let Some(pool) = self.pool_before_activation(k) {
                // max_pool(relu(x)) = relu(max_pool(x)) with the same gradient: the activation
                // then runs on a quarter of the elements (see `pool_before_activation`).
                let pooled = pool
                    .layer
                    .forward_constant(tape, &ins)
                    .map_err(forward_err(pool))?;
                let out = activate_owned(&node.layer, tape, pooled).map_err(forward_err(node))?;
                if !(node.layer.keeps_finite() && pool.layer.keeps_finite() && checked) {
                    check_finite(pool, out.value())?;
                }
                if let Some(slot) = values.get_mut(k + 2) {
                    *slot = Some(out);
                }
                skip = 1;
            } else if matches!(node.layer, Layer::Relu)
                && let [i] = node.inputs[..]
                && checked
                && self.last_use.get(i) == Some(&k)
            {
                // This node is the value's last reader: the ReLU takes it over and, when
                // nothing else holds it, overwrites it in place (`Tape::relu_owned`). Its
                // input was checked finite when computed, and a ReLU keeps it so.
                drop(ins);
                let x = values
                    .get_mut(i)
                    .and_then(Option::take)
                    .ok_or_else(|| missing(&node.name, format!("value {i} is not computed")))?;
                let out = tape.relu_owned(x).map_err(forward_err(node))?;
                if let Some(slot) = values.get_mut(k + 1) {
                    *slot = Some(out);
                }
            } else {
                let out = node
                    .layer
                    .forward_with(tape, &ins, layer_params.filter(|p| !p.is_empty()))
                    .map_err(forward_err(node))?;
                if !(node.layer.keeps_finite() && checked) {
                    check_finite(node, out.value())?;
                }
                if let Some(slot) = values.get_mut(k + 1) {
                    *slot = Some(out);
                }
            }
            for &i in &node.inputs {
                if self.last_use.get(i) == Some(&k)
                    && let Some(slot) = values.get_mut(i)
                {
                    *slot = None;
                }
            }
        }
        values
            .get_mut(self.output)
            .and_then(Option::take)
            .ok_or_else(|| missing("<output>", format!("value {} is not computed", self.output)))
    }

    /// The max pool to run before node `k`, when node `k` is a ReLU or a clamp whose only
    /// reader is the next node, a max pool (and the model does not return its output).
    ///
    /// A nondecreasing activation f commutes with a max, so max_pool(f(x)) = f(max_pool(x)),
    /// bit for bit (NaN included: f passes it and the pool selects it either way). The
    /// gradients agree too: where the window's maximum is in f's increasing part, both orders
    /// route the gradient to the same element (ties in f(x) there are ties in x); where f is
    /// flat at the maximum (x ≤ 0 for ReLU, saturated for a clamp), both give 0 — the separate
    /// order picks an element whose f-gradient is 0, the pooled order masks the pooled value.
    /// Guided backpropagation's extra `dY > 0` condition is applied to the same dY either way
    /// only if no input element is in two windows (the separate order tests the sum of the
    /// windows' gradients, the pooled order each one), so the pool's windows must not overlap:
    /// stride ≥ kernel, dilation 1 (every window then holds at least one input element, as
    /// padding is at most half the kernel).
    fn pool_before_activation(&self, k: usize) -> Option<&Node<T>> {
        let node = self.nodes.get(k)?;
        let next = self.nodes.get(k + 1)?;
        let activation = matches!(node.layer, Layer::Relu | Layer::Clamp { .. });
        // Windows that do not overlap: see above.
        let pool = matches!(&next.layer, Layer::MaxPool2d(p)
            if p.dilation == [1, 1] && p.stride[0] >= p.kernel[0] && p.stride[1] >= p.kernel[1]);
        // Values are numbered from 1 for node outputs: node k writes value k + 1, and its last
        // reader being node k + 1 (which reads nothing else) makes it the only reader.
        (activation && pool && next.inputs == [k + 1] && self.last_use.get(k + 1) == Some(&(k + 1)))
            .then_some(next)
    }

    /// The activation and max pool to fuse with node `k`, when node `k` is a convolution whose
    /// only reader is the next node, an activation that [`pool_before_activation`] runs after
    /// the max pool that follows it (and the model does not return the convolution's output).
    /// The convolution and the pool then run as one op ([`Tape::conv2d_max_pool2d`], which
    /// falls back to the two separate ops where its kernels do not fuse), then the activation:
    /// the same values and gradients, bit for bit, without storing the convolution's output.
    ///
    /// [`pool_before_activation`]: Self::pool_before_activation
    fn pool_after_conv(&self, k: usize) -> Option<(&Node<T>, &Node<T>)> {
        let conv = self.nodes.get(k)?;
        let activation = self.nodes.get(k + 1)?;
        let pool = self.pool_before_activation(k + 1)?;
        let only_reader =
            activation.inputs == [k + 1] && self.last_use.get(k + 1) == Some(&(k + 1));
        (matches!(conv.layer, Layer::Conv2d { .. }) && only_reader).then_some((activation, pool))
    }

    /// Folds each inference batch norm that directly follows a convolution (and is its only
    /// reader) into that convolution's weights and bias: one op less, same function.
    pub fn fold_batch_norms(&mut self) {
        let mut readers = vec![0usize; self.nodes.len() + 1];
        for n in &self.nodes {
            for &i in &n.inputs {
                readers[i] += 1;
            }
        }
        readers[self.output] += 1;
        for k in 0..self.nodes.len() {
            let Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
            } = &self.nodes[k].layer
            else {
                continue;
            };
            let src = self.nodes[k].inputs[0];
            if src == 0 || readers[src] != 1 {
                continue;
            }
            let Layer::Conv2d { weight, bias, .. } = &self.nodes[src - 1].layer else {
                continue;
            };
            let out_c = weight.dims()[0];
            let per_out = weight.numel() / out_c.max(1);
            let eps_t = T::from_f64(*eps);
            let scale: Vec<T> = (0..out_c)
                .map(|o| gamma.as_slice()[o] / (var.as_slice()[o] + eps_t).sqrt())
                .collect();
            let mut w = weight.clone();
            for (o, chunk) in w.data_mut().chunks_mut(per_out.max(1)).enumerate() {
                chunk.iter_mut().for_each(|v| *v *= scale[o]);
            }
            let b: Vec<T> = (0..out_c)
                .map(|o| {
                    let b0 = bias.as_ref().map_or(T::zero(), |b| b.as_slice()[o]);
                    (b0 - mean.as_slice()[o]) * scale[o] + beta.as_slice()[o]
                })
                .collect();
            // `b` has one value per output channel; a failure leaves this batch norm unfolded.
            let Ok(b) = Tensor::from_vec(b, &[out_c]) else {
                continue;
            };
            if let Layer::Conv2d { weight, bias, .. } = &mut self.nodes[src - 1].layer {
                *weight = w;
                *bias = Some(b);
            }
            self.nodes[k].layer = Layer::Identity;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoothgrad_autodiff::{BackwardOptions, Conv2dParams, Pool2dParams};

    fn node<T: Float>(name: &str, layer: Layer<T>, inputs: &[usize]) -> Node<T> {
        Node {
            name: name.into(),
            layer,
            inputs: inputs.to_vec(),
        }
    }

    /// Values on a grid of eighths in [-`r`, `r`], so that sums are exact and ties and zeros
    /// are common.
    fn eighths<T: Float>(dims: &[usize], r: f64, seed: u64) -> Tensor<T> {
        Tensor::<T>::uniform(dims, -r, r, seed)
            .unwrap()
            .map(|v| T::from_f64((v.as_f64() * 8.0).round() / 8.0))
    }

    /// conv → ReLU → 2×2 max pool → conv → clamp → 3×3/3 max pool (padded) → linear; with
    /// `barrier`, an identity between each activation and its pool, which keeps the separate
    /// order.
    fn model<T: Float>(barrier: bool) -> Model<T> {
        let conv = |o, c, seed| Layer::Conv2d {
            weight: eighths(&[o, c, 3, 3], 0.25, seed),
            bias: Some(eighths(&[o], 0.5, seed + 1)),
            params: Conv2dParams::new().padding(1),
        };
        let mut padded = Pool2dParams::new(3);
        padded.padding = [1, 1];
        let mut nodes = vec![
            node("conv1", conv(4, 2, 1), &[0]),
            node("relu", Layer::Relu, &[1]),
            node("pool1", Layer::MaxPool2d(Pool2dParams::new(2)), &[2]),
            node("conv2", conv(3, 4, 3), &[3]),
            node(
                "clamp",
                Layer::Clamp {
                    low: 0.0,
                    high: 1.5,
                },
                &[4],
            ),
            node("pool2", Layer::MaxPool2d(padded), &[5]),
            node("flat", Layer::Flatten { start_dim: 1 }, &[6]),
            node(
                "fc",
                Layer::Linear {
                    weight: eighths(&[5, 3 * 3 * 3], 1.0, 5),
                    bias: None,
                },
                &[7],
            ),
        ];
        if barrier {
            // Identities after the activations; every later input index moves up.
            nodes.insert(2, node("keep1", Layer::Identity, &[2]));
            nodes.insert(6, node("keep2", Layer::Identity, &[6]));
            for (k, n) in nodes.iter_mut().enumerate() {
                if !matches!(n.layer, Layer::Identity) && k > 0 {
                    n.inputs = vec![k];
                }
            }
        }
        let output = nodes.len();
        Model::new("reorder", &[2, 16, 16], nodes, output).unwrap()
    }

    fn logits_and_grads<T: Float>(model: &Model<T>, guided: bool) -> (Vec<u64>, Vec<u64>) {
        let mut tape = Tape::new();
        let x = tape.var(eighths::<T>(&[3, 2, 16, 16], 1.0, 9));
        let y = model.forward(&mut tape, &x).unwrap();
        let seed = eighths::<T>(&[3, 5], 1.0, 10);
        let g = tape
            .backward_with(
                &y,
                &seed,
                BackwardOptions {
                    guided,
                    sums_only: false,
                },
            )
            .unwrap();
        let bits = |t: &Tensor<T>| t.as_slice().iter().map(|v| v.as_f64().to_bits()).collect();
        (bits(y.value()), bits(g.get(&x).unwrap()))
    }

    fn check<T: Float>() {
        let (fused, separate) = (model::<T>(false), model::<T>(true));
        assert!(fused.pool_before_activation(1).is_some());
        assert!(fused.pool_before_activation(4).is_some());
        assert!(separate.pool_before_activation(1).is_none());
        // conv1 → ReLU → pool runs as (conv1 + pool) → ReLU, conv2's pool is padded.
        assert!(fused.pool_after_conv(0).is_some());
        assert!(fused.pool_after_conv(3).is_some());
        assert!(separate.pool_after_conv(0).is_none());
        for guided in [false, true] {
            let (a, b) = (
                logits_and_grads(&fused, guided),
                logits_and_grads(&separate, guided),
            );
            assert_eq!(a.0, b.0, "logits, guided {guided}");
            assert_eq!(a.1, b.1, "input gradient, guided {guided}");
            // The case is not degenerate: many input elements get a gradient.
            let nonzero = a.1.iter().filter(|&&v| f64::from_bits(v) != 0.0).count();
            assert!(nonzero > 100, "{nonzero} nonzero, guided {guided}");
        }
    }

    #[test]
    fn pooling_before_the_activation_changes_no_bit() {
        check::<f32>();
        check::<f64>();
    }

    #[test]
    fn overlapping_pools_keep_the_separate_order() {
        let mut m = model::<f32>(false);
        if let Layer::MaxPool2d(p) = &mut m.nodes[2].layer {
            p.stride = [1, 1];
        }
        assert!(m.pool_before_activation(1).is_none());
        assert!(m.pool_before_activation(4).is_some());
    }
}
