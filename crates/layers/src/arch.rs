//! Models from PyTorch weights: a `.safetensors` file (the `state_dict`, PyTorch names such as
//! `features.0.weight`) plus a small JSON description of the layers.
//!
//! The JSON format (`"format": "smoothgrad-arch/1"`), documented with a full example in the
//! README:
//! - `input`: the shape of one sample, e.g. `[3, 32, 32]`;
//! - `layers`: a list run in order. Each has a `type` and optionally a `name` (the prefix of its
//!   weights: `<name>.weight`, `<name>.bias`, `<name>.running_mean`, `<name>.running_var`), an
//!   `id` (how later layers refer to it; defaults to the name) and `inputs` (ids of the layers it
//!   reads, `"input"` for the model input; defaults to the previous layer);
//! - `output`: the id of the output layer (defaults to the last layer).
//!
//! Types and their options: `conv2d` (`stride`, `padding` (1, 2 or 4 numbers), `dilation`,
//! `groups`; sizes come from the weight), `linear`, `relu`, `relu6`, `max_pool2d` (`kernel`,
//! `stride` (defaults to kernel), `padding`, `dilation`, `ceil_mode`), `avg_pool2d` (`kernel`,
//! `stride`, `padding`, `ceil_mode`, `count_include_pad`), `global_avg_pool2d`, `batch_norm2d`
//! (`eps`, default 1e-5), `flatten` (`start_dim`, default 1), `add`, `concat` (`axis`, default
//! 1), `softmax` (`axis`, default 1), `dropout` and `identity`.
//!
//! Every size the files declare (tensor shapes, the input, layer options, the number of layers,
//! the shape each layer computes) is checked against [`LoadLimits`] before it is used.
#![deny(clippy::indexing_slicing)]

use crate::error::{LayersError, Result};
use crate::limits::LoadLimits;
use crate::model::{Layer, Model, Node};
use safetensors::{Dtype, SafeTensors};
use serde_json::{Map, Value};
use smoothgrad_autodiff::{Conv2dParams, Pool2dParams, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The `format` value this loader reads.
pub const ARCH_FORMAT: &str = "smoothgrad-arch/1";

/// The largest JSON architecture file read (a description of layers, not their weights).
pub const MAX_ARCH_FILE_BYTES: u64 = 16 << 20;

/// Reads `weights` (safetensors) and `arch` (JSON) from disk and builds the model, within the
/// default [`LoadLimits`].
pub fn load_safetensors_model(weights: &Path, arch: &Path) -> Result<Model<f32>> {
    load_safetensors_model_with_limits(weights, arch, &LoadLimits::default())
}

/// [`load_safetensors_model`] within `limits`: the weights file may hold at most
/// `max_total_weight_bytes` plus its header, checked before it is read.
pub fn load_safetensors_model_with_limits(
    weights: &Path,
    arch: &Path,
    limits: &LoadLimits,
) -> Result<Model<f32>> {
    fn io(p: &Path) -> impl FnOnce(std::io::Error) -> LayersError + '_ {
        move |source| LayersError::Io {
            path: p.to_path_buf(),
            source,
        }
    }
    // The data plus room for the safetensors header (100 MB at most, the format's own bound).
    let max_weights_file = limits.max_total_weight_bytes.saturating_add(100 << 20);
    let size = std::fs::metadata(weights).map_err(io(weights))?.len();
    if size > max_weights_file {
        return Err(LoadLimits::exceeded(
            &weights.display().to_string(),
            "the file size in bytes (max_total_weight_bytes + 100 MB of header)",
            "max_total_weight_bytes",
            u128::from(size),
            u128::from(max_weights_file),
        ));
    }
    let arch_size = std::fs::metadata(arch).map_err(io(arch))?.len();
    if arch_size > MAX_ARCH_FILE_BYTES {
        return Err(LayersError::Arch {
            source_name: arch.display().to_string(),
            layer: "<file>".into(),
            reason: format!(
                "the file is {arch_size} bytes; an architecture is at most {MAX_ARCH_FILE_BYTES}"
            ),
        });
    }
    let wbytes = std::fs::read(weights).map_err(io(weights))?;
    let abytes = std::fs::read(arch).map_err(io(arch))?;
    let arch_text = std::str::from_utf8(&abytes).map_err(|e| LayersError::Arch {
        source_name: arch.display().to_string(),
        layer: "<file>".into(),
        reason: format!("not UTF-8 text: {e}"),
    })?;
    build_safetensors_model_with_limits(
        &wbytes,
        &weights.display().to_string(),
        arch_text,
        &arch.display().to_string(),
        limits,
    )
}

/// Builds a model from safetensors bytes and JSON architecture text (names for messages),
/// within the default [`LoadLimits`].
pub fn build_safetensors_model(
    weights: &[u8],
    weights_name: &str,
    arch: &str,
    arch_name: &str,
) -> Result<Model<f32>> {
    build_safetensors_model_with_limits(
        weights,
        weights_name,
        arch,
        arch_name,
        &LoadLimits::default(),
    )
}

/// [`build_safetensors_model`] within `limits`: every tensor's shape and the total weight bytes
/// are checked when the header is read, the architecture's sizes as each layer is built.
pub fn build_safetensors_model_with_limits(
    weights: &[u8],
    weights_name: &str,
    arch: &str,
    arch_name: &str,
    limits: &LoadLimits,
) -> Result<Model<f32>> {
    let st = SafeTensors::deserialize(weights).map_err(|e| LayersError::Safetensors {
        source_name: weights_name.to_string(),
        reason: e.to_string(),
    })?;
    let mut total_bytes = 0u64;
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st.tensor(name).map_err(|e| LayersError::Safetensors {
            source_name: weights_name.to_string(),
            reason: format!("tensor `{name}`: {e}"),
        })?;
        limits.check_shape(
            weights_name,
            &format!("tensor `{name}`"),
            view.shape(),
            "max_tensor_elements",
            limits.max_tensor_elements,
        )?;
        let bytes = view.data().len() as u64;
        limits.add_weight_bytes(weights_name, name, &mut total_bytes, bytes)?;
    }
    let doc: Value = serde_json::from_str(arch).map_err(|e| LayersError::Arch {
        source_name: arch_name.to_string(),
        layer: "<file>".into(),
        reason: format!("invalid JSON: {e}"),
    })?;
    Builder {
        st: &st,
        weights_name,
        arch_name,
        limits,
    }
    .build(&doc)
}

/// A message when a layer's input count cannot fit its type (checked before indexing inputs).
fn layer_arity_mismatch(o: &Map<String, Value>, inputs: &[usize]) -> Option<String> {
    let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let want = match kind {
        "add" => 2,
        "concat" => return (inputs.is_empty()).then(|| "concat needs at least one input".into()),
        _ => 1,
    };
    (inputs.len() != want)
        .then(|| format!("a {kind} layer takes {want} input(s), got {}", inputs.len()))
}

struct Builder<'a> {
    st: &'a SafeTensors<'a>,
    weights_name: &'a str,
    arch_name: &'a str,
    limits: &'a LoadLimits,
}

impl Builder<'_> {
    fn arch_err(&self, layer: &str, reason: impl Into<String>) -> LayersError {
        LayersError::Arch {
            source_name: self.arch_name.to_string(),
            layer: layer.to_string(),
            reason: reason.into(),
        }
    }

    fn build(&self, doc: &Value) -> Result<Model<f32>> {
        let top = doc
            .as_object()
            .ok_or_else(|| self.arch_err("<file>", "the top level must be an object"))?;
        match top.get("format").and_then(Value::as_str) {
            Some(ARCH_FORMAT) => {}
            other => {
                return Err(self.arch_err(
                    "<file>",
                    format!("\"format\" must be \"{ARCH_FORMAT}\", found {other:?}"),
                ));
            }
        }
        let input = self.usizes("<file>", top.get("input"), "input")?;
        if input.is_empty() || input.contains(&0) {
            return Err(self.arch_err(
                "<file>",
                format!("\"input\" {input:?} must be a non-empty list of positive sizes"),
            ));
        }
        let input_shape: Vec<usize> = [&[1], input.as_slice()].concat();
        self.limits.check_shape(
            self.arch_name,
            "the input",
            &input_shape,
            "max_input_elements",
            self.limits.max_input_elements,
        )?;
        let specs = top
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| self.arch_err("<file>", "\"layers\" must be a list"))?;
        if specs.is_empty() {
            return Err(self.arch_err("<file>", "\"layers\" is empty"));
        }
        self.limits.check_nodes(self.arch_name, specs.len())?;
        let mut ids: HashMap<String, usize> = HashMap::from([("input".to_string(), 0)]);
        let mut shapes: Vec<Vec<usize>> = vec![input_shape];
        let mut nodes = Vec::with_capacity(specs.len());
        for (k, spec) in specs.iter().enumerate() {
            let obj = spec
                .as_object()
                .ok_or_else(|| self.arch_err(&format!("#{k}"), "a layer must be an object"))?;
            let name = obj.get("name").and_then(Value::as_str).map(str::to_string);
            let id = obj
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| name.clone())
                .unwrap_or_else(|| format!("#{k}"));
            let inputs: Vec<usize> = match obj.get("inputs") {
                None => vec![k],
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|v| {
                        let s = v.as_str().unwrap_or_default();
                        ids.get(s).copied().ok_or_else(|| {
                            self.arch_err(&id, format!("input {v} is not an earlier layer id"))
                        })
                    })
                    .collect::<Result<_>>()?,
                Some(other) => {
                    return Err(
                        self.arch_err(&id, format!("\"inputs\" must be a list, got {other}"))
                    );
                }
            };
            // Checked before reading shapes: `"inputs": []` must be an error, not a panic.
            if let Some(n) = layer_arity_mismatch(obj, &inputs) {
                return Err(self.arch_err(&id, n));
            }
            // Every id maps to an earlier value, whose shape is already known.
            let ins: Vec<&[usize]> = inputs
                .iter()
                .filter_map(|&i| shapes.get(i).map(Vec::as_slice))
                .collect();
            let in_shape = ins.first().map(|s| s.to_vec()).unwrap_or_default();
            let layer = self.layer(&id, name.as_deref(), obj, &in_shape)?;
            // Infer the output shape now: later layers' expected weight shapes depend on it.
            let out = layer.infer(&ins).map_err(|reason| LayersError::Graph {
                source_name: self.arch_name.to_string(),
                node: id.clone(),
                reason: format!("{}: {reason}", layer.kind()),
            })?;
            self.limits.check_shape(
                self.arch_name,
                &format!("the output of layer `{id}`"),
                &out,
                "max_value_elements",
                self.limits.max_value_elements,
            )?;
            shapes.push(out);
            if ids.insert(id.clone(), k + 1).is_some() {
                return Err(self.arch_err(&id, "this id is used twice"));
            }
            nodes.push(Node {
                name: id,
                layer,
                inputs,
            });
        }
        let output = match top.get("output").and_then(Value::as_str) {
            Some(o) => *ids.get(o).ok_or_else(|| {
                self.arch_err("<file>", format!("output {o:?} is not a layer id"))
            })?,
            None => nodes.len(),
        };
        Model::new(self.arch_name, &input, nodes, output)
    }

    fn layer(
        &self,
        id: &str,
        name: Option<&str>,
        o: &Map<String, Value>,
        in_shape: &[usize],
    ) -> Result<Layer<f32>> {
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| self.arch_err(id, "missing \"type\""))?;
        let weight_name = |suffix: &str| -> Result<String> {
            let n = name.ok_or_else(|| {
                self.arch_err(
                    id,
                    format!("a {kind} layer needs a \"name\" (its weight prefix)"),
                )
            })?;
            Ok(format!("{n}.{suffix}"))
        };
        let channels = in_shape.get(1).copied().unwrap_or(0);
        Ok(match kind {
            "conv2d" => {
                let groups = self.usize_or(id, o, "groups", 1)?;
                let w = self.weight(&weight_name("weight")?)?;
                let expected_in = channels.checked_div(groups).unwrap_or(0);
                let out_channels = match *w.dims() {
                    [out, c, _, _] if c == expected_in => out,
                    _ => {
                        return Err(LayersError::WeightShape {
                            source_name: self.weights_name.to_string(),
                            tensor: weight_name("weight")?,
                            expected: format!(
                                "[out, {expected_in}, kH, kW] for input {in_shape:?} with groups {groups}"
                            ),
                            found: w.dims().to_vec(),
                        });
                    }
                };
                let bias = self.bias(&weight_name("bias")?, out_channels)?;
                let padding = match self.usizes_opt(id, o.get("padding"), "padding")?.as_deref() {
                    None => [0; 4],
                    Some(&[p]) => [p; 4],
                    Some(&[h, w]) => [h, w, h, w],
                    Some(&[t, l, b, r]) => [t, l, b, r],
                    Some(p) => {
                        return Err(
                            self.arch_err(id, format!("padding {p:?} needs 1, 2 or 4 numbers"))
                        );
                    }
                };
                Layer::Conv2d {
                    weight: w,
                    bias,
                    params: Conv2dParams {
                        stride: self.pair_or(id, o, "stride", 1)?,
                        padding,
                        dilation: self.pair_or(id, o, "dilation", 1)?,
                        groups,
                    },
                }
            }
            "linear" => {
                let w = self.weight(&weight_name("weight")?)?;
                let in_f = in_shape.last().copied().unwrap_or(0);
                let &[out_features, w_in] = w.dims() else {
                    return Err(self.linear_shape_error(&weight_name("weight")?, in_shape, &w));
                };
                if w_in != in_f {
                    return Err(self.linear_shape_error(&weight_name("weight")?, in_shape, &w));
                }
                let bias = self.bias(&weight_name("bias")?, out_features)?;
                Layer::Linear { weight: w, bias }
            }
            "batch_norm2d" => {
                let get = |s: &str| -> Result<Tensor<f32>> {
                    let t = self.weight(&weight_name(s)?)?;
                    if t.dims() != [channels] {
                        return Err(LayersError::WeightShape {
                            source_name: self.weights_name.to_string(),
                            tensor: weight_name(s)?,
                            expected: format!("[{channels}] for input {in_shape:?}"),
                            found: t.dims().to_vec(),
                        });
                    }
                    Ok(t)
                };
                Layer::BatchNorm {
                    gamma: get("weight")?,
                    beta: get("bias")?,
                    mean: get("running_mean")?,
                    var: get("running_var")?,
                    eps: self.f64_or(id, o, "eps", 1e-5)?,
                }
            }
            "relu" => Layer::Relu,
            "relu6" => Layer::Clamp {
                low: 0.0,
                high: 6.0,
            },
            "max_pool2d" | "avg_pool2d" => {
                let kernel = self.pair(id, o, "kernel")?;
                let mut p = Pool2dParams::new(1);
                p.kernel = kernel;
                p.stride = match o.get("stride") {
                    None => kernel,
                    Some(_) => self.pair(id, o, "stride")?,
                };
                p.padding = self.pair_or(id, o, "padding", 0)?;
                p.ceil_mode = self.bool_or(id, o, "ceil_mode", false)?;
                if kind == "max_pool2d" {
                    p.dilation = self.pair_or(id, o, "dilation", 1)?;
                    Layer::MaxPool2d(p)
                } else {
                    p.count_include_pad = self.bool_or(id, o, "count_include_pad", true)?;
                    Layer::AvgPool2d(p)
                }
            }
            "global_avg_pool2d" => Layer::GlobalAvgPool,
            "flatten" => Layer::Flatten {
                start_dim: self.usize_or(id, o, "start_dim", 1)?,
            },
            "add" => Layer::Add,
            "concat" => Layer::Concat {
                axis: self.usize_or(id, o, "axis", 1)?,
            },
            "softmax" => Layer::Softmax {
                axis: self.usize_or(id, o, "axis", 1)?,
            },
            "dropout" | "identity" => Layer::Identity,
            other => {
                return Err(self.arch_err(
                    id,
                    format!(
                        "unknown layer type {other:?}; known: conv2d, linear, relu, relu6, \
                         max_pool2d, avg_pool2d, global_avg_pool2d, batch_norm2d, flatten, add, \
                         concat, softmax, dropout, identity"
                    ),
                ));
            }
        })
    }

    fn linear_shape_error(&self, tensor: &str, in_shape: &[usize], w: &Tensor<f32>) -> LayersError {
        let in_f = in_shape.last().copied().unwrap_or(0);
        let hint = if in_shape.len() > 2 {
            " (flatten first?)"
        } else {
            ""
        };
        LayersError::WeightShape {
            source_name: self.weights_name.to_string(),
            tensor: tensor.to_string(),
            expected: format!("[out, {in_f}] for input {in_shape:?}{hint}"),
            found: w.dims().to_vec(),
        }
    }

    fn weight(&self, tensor: &str) -> Result<Tensor<f32>> {
        let view = self
            .st
            .tensor(tensor)
            .map_err(|_| LayersError::MissingWeight {
                source_name: self.weights_name.to_string(),
                tensor: tensor.to_string(),
            })?;
        // The safetensors reader checked that the data holds exactly shape x dtype bytes.
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .as_chunks::<4>()
                .0
                .iter()
                .map(|b| f32::from_le_bytes(*b))
                .collect(),
            Dtype::F64 => data
                .as_chunks::<8>()
                .0
                .iter()
                .map(|b| f64::from_le_bytes(*b) as f32)
                .collect(),
            Dtype::BF16 => data
                .as_chunks::<2>()
                .0
                .iter()
                .map(|b| f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16))
                .collect(),
            other => {
                return Err(LayersError::WeightDType {
                    source_name: self.weights_name.to_string(),
                    tensor: tensor.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(Tensor::from_vec(values, view.shape())?)
    }

    fn bias(&self, tensor: &str, out: usize) -> Result<Option<Tensor<f32>>> {
        if self.st.tensor(tensor).is_err() {
            return Ok(None);
        }
        let b = self.weight(tensor)?;
        if b.dims() != [out] {
            return Err(LayersError::WeightShape {
                source_name: self.weights_name.to_string(),
                tensor: tensor.to_string(),
                expected: format!("[{out}]"),
                found: b.dims().to_vec(),
            });
        }
        Ok(Some(b))
    }

    fn usizes(&self, id: &str, v: Option<&Value>, key: &str) -> Result<Vec<usize>> {
        self.usizes_opt(id, v, key)?
            .ok_or_else(|| self.arch_err(id, format!("missing \"{key}\"")))
    }

    fn usizes_opt(&self, id: &str, v: Option<&Value>, key: &str) -> Result<Option<Vec<usize>>> {
        let bad = || {
            self.arch_err(
                id,
                format!("\"{key}\" must be a non-negative integer or a list of them"),
            )
        };
        let size = |x: &Value| -> Result<usize> {
            let u = x.as_u64().ok_or_else(bad)?;
            self.limits.check_size(
                self.arch_name,
                &format!("layer `{id}`, \"{key}\""),
                u128::from(u),
            )?;
            usize::try_from(u).map_err(|_| bad())
        };
        match v {
            None => Ok(None),
            Some(Value::Array(a)) => a.iter().map(size).collect::<Result<Vec<_>>>().map(Some),
            Some(x @ Value::Number(_)) => Ok(Some(vec![size(x)?])),
            Some(_) => Err(bad()),
        }
    }

    fn pair(&self, id: &str, o: &Map<String, Value>, key: &str) -> Result<[usize; 2]> {
        match self.usizes(id, o.get(key), key)?.as_slice() {
            [a] => Ok([*a, *a]),
            [a, b] => Ok([*a, *b]),
            other => Err(self.arch_err(id, format!("\"{key}\" {other:?} needs 1 or 2 numbers"))),
        }
    }

    fn pair_or(&self, id: &str, o: &Map<String, Value>, key: &str, d: usize) -> Result<[usize; 2]> {
        if o.contains_key(key) {
            self.pair(id, o, key)
        } else {
            Ok([d, d])
        }
    }

    fn usize_or(&self, id: &str, o: &Map<String, Value>, key: &str, d: usize) -> Result<usize> {
        match o.get(key) {
            None => Ok(d),
            Some(v) => {
                let bad = || {
                    self.arch_err(
                        id,
                        format!("\"{key}\" must be a non-negative integer, got {v}"),
                    )
                };
                let u = v.as_u64().ok_or_else(bad)?;
                self.limits.check_size(
                    self.arch_name,
                    &format!("layer `{id}`, \"{key}\""),
                    u128::from(u),
                )?;
                usize::try_from(u).map_err(|_| bad())
            }
        }
    }

    fn f64_or(&self, id: &str, o: &Map<String, Value>, key: &str, d: f64) -> Result<f64> {
        match o.get(key) {
            None => Ok(d),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.arch_err(id, format!("\"{key}\" must be a number, got {v}"))),
        }
    }

    fn bool_or(&self, id: &str, o: &Map<String, Value>, key: &str, d: bool) -> Result<bool> {
        match o.get(key) {
            None => Ok(d),
            Some(v) => v.as_bool().ok_or_else(|| {
                self.arch_err(id, format!("\"{key}\" must be true or false, got {v}"))
            }),
        }
    }
}
