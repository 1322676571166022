//! Operators without weights: pooling, Clip, and the ones that reshape, join, normalize or pass
//! values through, plus `Constant`.

use std::borrow::Cow;

use smoothgrad_autodiff::Pool2dParams;

use super::super::attributes::NodeAttributes;
use super::super::ir::{OnnxNode, OnnxTensor, TensorData};
use super::{Builder, Value};
use crate::error::Result;
use crate::model::Layer;

impl<'g> Builder<'g> {
    /// Padding [top, left, bottom, right] from `pads` or `auto_pad` (SAME_* from the input size:
    /// output = ceil(input / stride), the odd pixel after (UPPER) or before (LOWER)).
    pub(super) fn pads(
        &self,
        attrs: &NodeAttributes<'_>,
        x: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Result<[usize; 4]> {
        match attrs.string("auto_pad", "NOTSET")? {
            "NOTSET" => match attrs.ints("pads")? {
                None => Ok([0; 4]),
                Some(pads) => {
                    let pads = attrs.sizes("pads", pads)?;
                    <[usize; 4]>::try_from(pads.as_slice()).map_err(|_| {
                        let reason = format!(
                            "has {pads:?}; 2-D ops need 4 entries [top, left, bottom, right]"
                        );
                        attrs.error("pads", reason)
                    })
                }
            },
            "VALID" => Ok([0; 4]),
            mode @ ("SAME_UPPER" | "SAME_LOWER") => {
                let dims = self.shape(x)?;
                let &[_, _, height, width] = dims else {
                    return Err(attrs.error(
                        "auto_pad",
                        format!("{mode} needs an input [N, C, H, W], got {dims:?}"),
                    ));
                };
                if [kernel, stride, dilation].iter().any(|v| v.contains(&0)) {
                    return Err(attrs.error(
                        "auto_pad",
                        format!(
                            "{mode} needs positive kernel {kernel:?}, strides {stride:?} and \
                             dilations {dilation:?}"
                        ),
                    ));
                }
                // Saturating: a graph built in code has not been through the decoder's limits.
                let same = |size: usize, kernel: usize, stride: usize, dilation: usize| {
                    let out = size.div_ceil(stride);
                    let span = dilation.saturating_mul(kernel - 1).saturating_add(1);
                    let total = out
                        .saturating_sub(1)
                        .saturating_mul(stride)
                        .saturating_add(span)
                        .saturating_sub(size);
                    let before = if mode == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    (before, total - before)
                };
                let (top, bottom) = same(height, kernel[0], stride[0], dilation[0]);
                let (left, right) = same(width, kernel[1], stride[1], dilation[1]);
                Ok([top, left, bottom, right])
            }
            other => Err(attrs.error(
                "auto_pad",
                format!("unknown value {other:?} (NOTSET, VALID, SAME_UPPER or SAME_LOWER)"),
            )),
        }
    }

    pub(super) fn pool(&mut self, node: &'g OnnxNode) -> Result<()> {
        let x = self.computed(node, 0)?;
        self.only_first_output_used(node)?;
        let attrs = self.attributes(node);
        if attrs.ints("kernel_shape")?.is_none() {
            return Err(attrs.error("kernel_shape", "is required"));
        }
        let kernel = attrs.pair("kernel_shape", [1, 1])?;
        let stride = attrs.pair("strides", [1, 1])?;
        let dilation = attrs.pair("dilations", [1, 1])?;
        let pads = self.pads(&attrs, x, kernel, stride, dilation)?;
        self.check_sizes(node, [&kernel[..], &stride, &dilation, &pads])?;
        let [top, left, bottom, right] = pads;
        if top != bottom || left != right {
            return Err(attrs.error(
                "pads",
                format!(
                    "{pads:?} (top, left, bottom, right) is asymmetric; pooling supports only \
                     the same padding on both sides of an axis"
                ),
            ));
        }
        let mut params = Pool2dParams {
            kernel,
            stride,
            padding: [top, left],
            dilation,
            ceil_mode: attrs.flag("ceil_mode", false)?,
            count_include_pad: false,
        };
        let layer = if node.op_type == "MaxPool" {
            if attrs.int("storage_order", 0)? != 0 {
                return Err(attrs.error("storage_order", "must be 0 (row-major indices)"));
            }
            Layer::MaxPool2d(params)
        } else {
            // ONNX's default is 0, unlike PyTorch's AvgPool2d.
            params.count_include_pad = attrs.flag("count_include_pad", false)?;
            Layer::AvgPool2d(params)
        };
        self.push(node, layer, vec![x])
    }

    pub(super) fn clip(&mut self, node: &'g OnnxNode) -> Result<()> {
        let x = self.computed(node, 0)?;
        let (low, high) = if self.graph.opset < 11 {
            let attrs = self.attributes(node);
            (
                attrs.float("min", f64::NEG_INFINITY)?,
                attrs.float("max", f64::INFINITY)?,
            )
        } else {
            (
                self.bound(node, 1, "min", f64::NEG_INFINITY)?,
                self.bound(node, 2, "max", f64::INFINITY)?,
            )
        };
        if low.is_nan() || high.is_nan() || low > high {
            return Err(
                self.unsupported(node, format!("bounds [{low}, {high}] are not an interval"))
            );
        }
        self.push(node, Layer::Clamp { low, high }, vec![x])
    }

    /// A Clip bound from a one-element constant input, `default` when omitted.
    fn bound(&self, node: &'g OnnxNode, position: usize, role: &str, default: f64) -> Result<f64> {
        let Some((name, tensor)) = self.optional_constant(node, position, role)? else {
            return Ok(default);
        };
        match tensor.as_f32() {
            Some(&[value]) => Ok(f64::from(value)),
            _ => Err(self.unsupported(
                node,
                format!(
                    "its {role} `{name}` must be one float, got dims {:?}",
                    tensor.dims
                ),
            )),
        }
    }

    pub(super) fn flatten(&mut self, node: &'g OnnxNode) -> Result<()> {
        let x = self.computed(node, 0)?;
        let rank = self.shape(x)?.len() as i64;
        let attrs = self.attributes(node);
        let axis = attrs.int("axis", 1)?;
        let axis = if axis < 0 { axis + rank } else { axis };
        match axis {
            1 => self.push(node, Layer::Flatten { start_dim: 1 }, vec![x]),
            0 => Err(attrs.error(
                "axis",
                "0 flattens the batch axis into the features; only axis 1 is supported",
            )),
            _ => Err(attrs.error(
                "axis",
                format!(
                    "{axis} (input rank {rank}) would merge the batch axis with feature axes; \
                     only axis 1 is supported"
                ),
            )),
        }
    }

    pub(super) fn reshape(&mut self, node: &'g OnnxNode) -> Result<()> {
        let x = self.computed(node, 0)?;
        let (s_name, s) = self.constant(node, 1, "shape")?;
        let allow_zero =
            self.graph.opset >= 14 && self.attributes(node).flag("allowzero", false)?;
        let input = self.shape(x)?;
        let sample_shape = input.get(1..).unwrap_or_default();
        let bad = |why: String| {
            self.unsupported(
                node,
                format!(
                    "shape {:?} (`{s_name}`) for samples of shape {sample_shape:?}: {why}",
                    s.as_i64().unwrap_or_default(),
                ),
            )
        };
        // Value shapes are within the limits, so their element counts fit in usize.
        let product = |dims: &[usize]| {
            dims.iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| bad(format!("the element count of {dims:?} overflows")))
        };
        let sample = product(sample_shape)?;
        let shape = match s.as_i64() {
            Some(shape) if s.dims.len() == 1 => shape,
            _ => return Err(bad("the shape must be a 1-D integer tensor".to_owned())),
        };
        let Some((&lead, rest)) = shape.split_first() else {
            return Err(bad("the shape is empty".to_owned()));
        };
        let batch = self.exported_batch as i64;
        if !(lead == -1 || (lead == 0 && !allow_zero) || lead == batch) {
            return Err(bad(format!(
                "the leading entry must be the batch (-1, 0 or {batch})"
            )));
        }
        let mut sample_dims = Vec::with_capacity(rest.len());
        let mut inferred = None;
        for (j, &entry) in rest.iter().enumerate() {
            let axis = j + 1;
            let size = match entry {
                -1 if inferred.is_none() && lead != -1 => {
                    inferred = Some(j);
                    1
                }
                -1 => return Err(bad("more than one -1".to_owned())),
                0 if !allow_zero => *input.get(axis).ok_or_else(|| {
                    bad(format!(
                        "entry {axis} is 0 but the input has no axis {axis}"
                    ))
                })?,
                size if size > 0 => usize::try_from(size)
                    .map_err(|_| bad(format!("entry {axis} ({entry}) is not a size")))?,
                _ => return Err(bad(format!("entry {axis} ({entry}) is not a size"))),
            };
            sample_dims.push(size);
        }
        if let Some(j) = inferred {
            let known = product(&sample_dims)?;
            if !sample.is_multiple_of(known) {
                return Err(bad(format!("{known} does not divide {sample}")));
            }
            if let Some(slot) = sample_dims.get_mut(j) {
                *slot = sample / known;
            }
        }
        let got = product(&sample_dims)?;
        if got != sample {
            return Err(bad(format!(
                "{got} values per sample instead of {sample}: the batch size would change"
            )));
        }
        self.push(node, Layer::Reshape { sample_dims }, vec![x])
    }

    pub(super) fn concat(&mut self, node: &'g OnnxNode) -> Result<()> {
        let inputs = (0..node.inputs.len())
            .map(|position| self.computed(node, position))
            .collect::<Result<Vec<usize>>>()?;
        let attrs = self.attributes(node);
        let Some(&first) = inputs.first() else {
            return Err(self.unsupported(node, "has no inputs"));
        };
        let rank = self.shape(first)?.len() as i64;
        let axis = attrs.int("axis", i64::MIN)?;
        if axis == i64::MIN {
            return Err(attrs.error("axis", "is required"));
        }
        let normalized = if axis < 0 { axis + rank } else { axis };
        if normalized <= 0 || normalized >= rank {
            return Err(attrs.error(
                "axis",
                format!("{axis} is the batch axis or outside rank {rank}"),
            ));
        }
        let axis = normalized as usize;
        self.push(node, Layer::Concat { axis }, inputs)
    }

    pub(super) fn softmax(&mut self, node: &'g OnnxNode) -> Result<()> {
        let x = self.computed(node, 0)?;
        let rank = self.shape(x)?.len() as i64;
        let attrs = self.attributes(node);
        let modern = self.graph.opset >= 13;
        let axis = attrs.int("axis", if modern { -1 } else { 1 })?;
        let normalized = if axis < 0 { axis + rank } else { axis };
        if normalized <= 0 || normalized >= rank {
            return Err(attrs.error(
                "axis",
                format!("{axis} is the batch axis or outside rank {rank}"),
            ));
        }
        if !modern && normalized != rank - 1 {
            return Err(attrs.error(
                "axis",
                format!(
                    "{axis}: before opset 13 Softmax normalizes over all axes from `axis` on; \
                     only the case equal to the last axis (axis = rank - 1 = {}) is supported",
                    rank - 1
                ),
            ));
        }
        let axis = normalized as usize;
        self.push(node, Layer::Softmax { axis }, vec![x])
    }

    /// `Identity` and inference `Dropout`: a constant passes through as a constant.
    pub(super) fn identity(&mut self, node: &'g OnnxNode) -> Result<()> {
        self.only_first_output_used(node)?;
        let name = self.required_input(node, 0)?;
        if let Some(Value::Constant(tensor)) = self.values.get(name) {
            let tensor = tensor.clone();
            self.define(node, Value::Constant(tensor));
            return Ok(());
        }
        let x = self.computed(node, 0)?;
        self.push(node, Layer::Identity, vec![x])
    }

    pub(super) fn constant_node(&mut self, node: &'g OnnxNode) -> Result<()> {
        let attrs = self.attributes(node);
        let attributes = &node.attributes;
        let tensor = if let Some(value) = attributes.get("value") {
            Cow::Borrowed(
                value
                    .as_tensor()
                    .ok_or_else(|| attrs.error("value", "must be a tensor"))?,
            )
        } else if attributes.contains_key("value_float") {
            let v = attrs.float("value_float", 0.0)? as f32;
            Cow::Owned(OnnxTensor {
                dims: vec![],
                data: TensorData::Float(vec![v]),
            })
        } else if let Some(value) = attributes.get("value_floats") {
            let v = value
                .as_floats()
                .ok_or_else(|| attrs.error("value_floats", "must be a list of floats"))?;
            Cow::Owned(OnnxTensor {
                dims: vec![v.len()],
                data: TensorData::Float(v.to_vec()),
            })
        } else if attributes.contains_key("value_int") {
            let v = attrs.int("value_int", 0)?;
            Cow::Owned(OnnxTensor {
                dims: vec![],
                data: TensorData::Int64(vec![v]),
            })
        } else if let Some(v) = attrs.ints("value_ints")? {
            Cow::Owned(OnnxTensor {
                dims: vec![v.len()],
                data: TensorData::Int64(v.to_vec()),
            })
        } else {
            return Err(attrs.error(
                "value",
                "a Constant needs `value`, `value_float(s)` or `value_int(s)`; sparse and string \
                 constants are not supported",
            ));
        };
        self.define(node, Value::Constant(tensor));
        Ok(())
    }
}
