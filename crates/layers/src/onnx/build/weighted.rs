//! Operators that carry constant weights: Conv, Gemm, MatMul, a bias Add folded into them, and
//! BatchNormalization.

use smoothgrad_autodiff::{Conv2dParams, Tensor};

use super::super::ir::{OnnxNode, OnnxTensor};
use super::{Builder, Value};
use crate::error::Result;
use crate::model::Layer;

impl<'g> Builder<'g> {
    pub(super) fn conv(&mut self, node: &'g OnnxNode) -> Result<()> {
        let x = self.computed(node, 0)?;
        let (w_name, w) = self.constant(node, 1, "weight")?;
        let &[out_channels, _, kernel_h, kernel_w] = w.dims.as_slice() else {
            return Err(self.unsupported(
                node,
                format!(
                    "weight `{w_name}` has dims {:?}; only 2-D convolutions (weight \
                     [O, C/group, kH, kW]) are supported",
                    w.dims
                ),
            ));
        };
        let attrs = self.attributes(node);
        let kernel = [kernel_h, kernel_w];
        if let Some(declared) = attrs.ints("kernel_shape")?
            && attrs.sizes("kernel_shape", declared)? != kernel
        {
            return Err(attrs.error(
                "kernel_shape",
                format!(
                    "{declared:?} disagrees with weight `{w_name}` of dims {:?}",
                    w.dims
                ),
            ));
        }
        let stride = attrs.pair("strides", [1, 1])?;
        let dilation = attrs.pair("dilations", [1, 1])?;
        let groups = attrs.int("group", 1)?;
        let groups = usize::try_from(groups)
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| attrs.error("group", format!("must be positive, got {groups}")))?;
        let padding = self.pads(&attrs, x, kernel, stride, dilation)?;
        self.check_sizes(node, [&kernel[..], &stride, &dilation, &padding, &[groups]])?;
        let weight = self.float_tensor(node, w_name, w)?;
        let bias = match self.optional_constant(node, 2, "bias")? {
            None => None,
            Some((b_name, b)) => {
                if b.dims != [out_channels] {
                    let expected = format!("[{out_channels}] (one per output channel)");
                    return Err(self.weight_shape_error(b_name, expected, &b.dims));
                }
                Some(self.float_tensor(node, b_name, b)?)
            }
        };
        let params = Conv2dParams {
            stride,
            padding,
            dilation,
            groups,
        };
        self.push(
            node,
            Layer::Conv2d {
                weight,
                bias,
                params,
            },
            vec![x],
        )
    }

    pub(super) fn gemm(&mut self, node: &'g OnnxNode) -> Result<()> {
        let a = self.computed(node, 0)?;
        let attrs = self.attributes(node);
        if attrs.flag("transA", false)? {
            return Err(attrs.error("transA", "must be 0: the data input must be [N, in]"));
        }
        let trans_b = attrs.flag("transB", false)?;
        let alpha = attrs.float("alpha", 1.0)?;
        let beta = attrs.float("beta", 1.0)?;
        let input = self.shape(a)?;
        if input.len() != 2 {
            return Err(self.unsupported(
                node,
                format!(
                    "input shape {input:?} is not a matrix [N, in]; Gemm needs a Flatten first"
                ),
            ));
        }
        let (b_name, b) = self.constant(node, 1, "weight (B)")?;
        if b.dims.len() != 2 {
            let expected = if trans_b { "[out, in]" } else { "[in, out]" };
            return Err(self.weight_shape_error(b_name, expected.to_owned(), &b.dims));
        }
        let mut weight = self.float_tensor(node, b_name, b)?;
        if !trans_b {
            weight = transpose(&weight)?;
        }
        if alpha != 1.0 {
            weight = weight.map(|v| (f64::from(v) * alpha) as f32);
        }
        let out = weight.dims().first().copied().unwrap_or(0);
        let bias = match self.optional_constant(node, 2, "bias (C)")? {
            Some((c_name, c)) if beta != 0.0 => {
                let values = per_channel(c, out, 2, 1).ok_or_else(|| {
                    self.weight_shape_error(
                        c_name,
                        format!("[{out}], [1, {out}] or one value (broadcast to [N, {out}])"),
                        &c.dims,
                    )
                })?;
                let values = values
                    .into_iter()
                    .map(|v| (f64::from(v) * beta) as f32)
                    .collect();
                Some(Tensor::from_vec(values, &[out])?)
            }
            _ => None,
        };
        self.push(node, Layer::Linear { weight, bias }, vec![a])
    }

    pub(super) fn matmul(&mut self, node: &'g OnnxNode) -> Result<()> {
        let a = self.computed(node, 0)?;
        let (b_name, b) = self.constant(node, 1, "weight (B)")?;
        if b.dims.len() != 2 {
            return Err(self.unsupported(
                node,
                format!(
                    "right operand `{b_name}` has dims {:?}; only a constant matrix [in, out] is \
                     supported",
                    b.dims
                ),
            ));
        }
        let weight = transpose(&self.float_tensor(node, b_name, b)?)?;
        self.push(node, Layer::Linear { weight, bias: None }, vec![a])
    }

    pub(super) fn add(&mut self, node: &'g OnnxNode) -> Result<()> {
        let names = [self.required_input(node, 0)?, self.required_input(node, 1)?];
        let is_constant = names.map(|n| matches!(self.values.get(n), Some(Value::Constant(_))));
        match is_constant {
            [false, false] => {
                let (a, b) = (self.computed(node, 0)?, self.computed(node, 1)?);
                self.push(node, Layer::Add, vec![a, b])
            }
            [false, true] => self.fold_bias(node, 0, names[1]),
            [true, false] => self.fold_bias(node, 1, names[0]),
            [true, true] => Err(self.unsupported(
                node,
                "adds two constants; constant folding is not supported",
            )),
        }
    }

    /// An `Add` of constant `bias_name` to the computed input `data_position`: folded into the
    /// bias of the Conv / Gemm / MatMul that computes it, when that is its only reader.
    fn fold_bias(
        &mut self,
        node: &'g OnnxNode,
        data_position: usize,
        bias_name: &str,
    ) -> Result<()> {
        let data_name = self.required_input(node, data_position)?;
        let a = self.computed(node, data_position)?;
        let Some(Value::Constant(constant)) = self.values.get(bias_name) else {
            return Err(self.unsupported(node, format!("`{bias_name}` is not a constant")));
        };
        let refuse = |why: String| {
            self.unsupported(
                node,
                format!(
                    "adds constant `{bias_name}` (dims {:?}) to `{data_name}`, which {why}; only \
                     a per-channel bias right after a Conv, Gemm or MatMul can be folded",
                    constant.dims
                ),
            )
        };
        if a == 0 {
            return Err(refuse("is the model input".to_owned()));
        }
        if self.readers.get(data_name).copied().unwrap_or(0) != 1 {
            return Err(refuse("is also read elsewhere".to_owned()));
        }
        let shape = self.shape(a)?;
        let rank = shape.len();
        // Value a > 0 is the output of node a - 1.
        let producer = self.nodes.get(a - 1).map(|n| &n.layer);
        let (out, channel_axis) = match producer {
            Some(Layer::Conv2d { weight, .. }) => (weight.dims().first().copied(), 1),
            Some(Layer::Linear { weight, .. }) => {
                (weight.dims().first().copied(), rank.saturating_sub(1))
            }
            Some(other) => return Err(refuse(format!("comes from a {} layer", other.kind()))),
            None => return Err(refuse(format!("is value {a}, which has no layer"))),
        };
        let out = out.unwrap_or(0);
        let values = per_channel(constant, out, rank, channel_axis).ok_or_else(|| {
            refuse(format!(
                "has shape {shape:?}: the constant is not one value per output channel ({out})"
            ))
        })?;
        let bias = match self.nodes.get_mut(a - 1).map(|n| &mut n.layer) {
            Some(Layer::Conv2d { bias, .. } | Layer::Linear { bias, .. }) => bias,
            _ => return Err(self.unsupported(node, "the layer before the bias changed")),
        };
        let mut sum = values;
        if let Some(old) = bias {
            sum.iter_mut()
                .zip(old.as_slice())
                .for_each(|(s, o)| *s += o);
        }
        *bias = Some(Tensor::from_vec(sum, &[out])?);
        self.define(node, Value::Computed(a));
        Ok(())
    }

    pub(super) fn batch_norm(&mut self, node: &'g OnnxNode) -> Result<()> {
        let x = self.computed(node, 0)?;
        self.only_first_output_used(node)?;
        let attrs = self.attributes(node);
        if self.graph.opset >= 14 && attrs.flag("training_mode", false)? {
            return Err(attrs.error("training_mode", "must be 0: only inference is supported"));
        }
        if self.graph.opset < 9 && !attrs.flag("spatial", true)? {
            return Err(attrs.error("spatial", "must be 1 (statistics per channel)"));
        }
        let eps = attrs.float("epsilon", 1e-5)?;
        let input = self.shape(x)?;
        let channels = input.get(1).copied().unwrap_or(0);
        let get = |position: usize, role: &str| -> Result<Tensor<f32>> {
            let (name, t) = self.constant(node, position, role)?;
            if t.dims != [channels] {
                let expected = format!("[{channels}] for input {input:?}");
                return Err(self.weight_shape_error(name, expected, &t.dims));
            }
            self.float_tensor(node, name, t)
        };
        let layer = Layer::BatchNorm {
            gamma: get(1, "scale")?,
            beta: get(2, "bias (B)")?,
            mean: get(3, "mean")?,
            var: get(4, "variance")?,
            eps,
        };
        self.push(node, layer, vec![x])
    }
}

/// `[rows, cols]` → `[cols, rows]` (ONNX's `[in, out]` to the layers' `[out, in]`).
fn transpose(t: &Tensor<f32>) -> Result<Tensor<f32>> {
    let &[rows, cols] = t.dims() else {
        return Ok(t.clone());
    };
    let src = t.as_slice();
    // Column c is every cols-th element from c on (cols >= 1 whenever the range is not empty).
    let data = (0..cols)
        .flat_map(|c| src.iter().skip(c).step_by(cols.max(1)).copied())
        .collect();
    Ok(Tensor::from_vec(data, &[cols, rows])?)
}

/// The `out` per-channel values of a float constant that broadcasts against an output of rank
/// `rank` along `channel_axis` only (`[out]`, `[1, out]`, `[out, 1, 1]`, one value, ...).
fn per_channel(
    constant: &OnnxTensor,
    out: usize,
    rank: usize,
    channel_axis: usize,
) -> Option<Vec<f32>> {
    let values = constant.as_f32()?;
    let dims = &constant.dims;
    let offset = rank.checked_sub(dims.len())?;
    let fits = dims
        .iter()
        .enumerate()
        .all(|(k, &n)| n == 1 || (k + offset == channel_axis && n == out));
    match values {
        &[value] if fits => Some(vec![value; out]),
        _ if fits && values.len() == out => Some(values.to_vec()),
        _ => None,
    }
}
