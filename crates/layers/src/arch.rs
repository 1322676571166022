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

use crate::error::{LayersError, Result};
use crate::model::{Layer, Model, Node};
use safetensors::{Dtype, SafeTensors};
use serde_json::{Map, Value};
use smoothgrad_autodiff::{Conv2dParams, Pool2dParams, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The `format` value this loader reads.
pub const ARCH_FORMAT: &str = "smoothgrad-arch/1";

/// Reads `weights` (safetensors) and `arch` (JSON) from disk and builds the model.
pub fn load_safetensors_model(weights: &Path, arch: &Path) -> Result<Model<f32>> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| LayersError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let (wbytes, abytes) = (read(weights)?, read(arch)?);
    let arch_text = std::str::from_utf8(&abytes).map_err(|e| LayersError::Arch {
        source_name: arch.display().to_string(),
        layer: "<file>".into(),
        reason: format!("not UTF-8 text: {e}"),
    })?;
    build_safetensors_model(
        &wbytes,
        &weights.display().to_string(),
        arch_text,
        &arch.display().to_string(),
    )
}

/// Builds a model from safetensors bytes and JSON architecture text (names for messages).
pub fn build_safetensors_model(
    weights: &[u8],
    weights_name: &str,
    arch: &str,
    arch_name: &str,
) -> Result<Model<f32>> {
    let st = SafeTensors::deserialize(weights).map_err(|e| LayersError::Safetensors {
        source_name: weights_name.to_string(),
        reason: e.to_string(),
    })?;
    let doc: Value = serde_json::from_str(arch).map_err(|e| LayersError::Arch {
        source_name: arch_name.to_string(),
        layer: "<file>".into(),
        reason: format!("invalid JSON: {e}"),
    })?;
    Builder {
        st: &st,
        weights_name,
        arch_name,
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
        let specs = top
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| self.arch_err("<file>", "\"layers\" must be a list"))?;
        if specs.is_empty() {
            return Err(self.arch_err("<file>", "\"layers\" is empty"));
        }
        let mut ids: HashMap<String, usize> = HashMap::from([("input".to_string(), 0)]);
        let mut shapes: Vec<Vec<usize>> = vec![[&[1], input.as_slice()].concat()];
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
            // Checked before indexing: `"inputs": []` must be an error, not a panic.
            if let Some(n) = layer_arity_mismatch(obj, &inputs) {
                return Err(self.arch_err(&id, n));
            }
            let in_shape = shapes[inputs[0]].clone();
            let layer = self.layer(&id, name.as_deref(), obj, &in_shape)?;
            // Infer the output shape now: later layers' expected weight shapes depend on it.
            let ins: Vec<&[usize]> = inputs.iter().map(|&i| shapes[i].as_slice()).collect();
            let out = layer.infer(&ins).map_err(|reason| LayersError::Graph {
                source_name: self.arch_name.to_string(),
                node: id.clone(),
                reason: format!("{}: {reason}", layer.kind()),
            })?;
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
                let wd = w.dims().to_vec();
                let expected_in = channels.checked_div(groups).unwrap_or(0);
                if wd.len() != 4 || wd[1] != expected_in {
                    return Err(LayersError::WeightShape {
                        source_name: self.weights_name.to_string(),
                        tensor: weight_name("weight")?,
                        expected: format!(
                            "[out, {expected_in}, kH, kW] for input {in_shape:?} with groups {groups}"
                        ),
                        found: wd,
                    });
                }
                let bias = self.bias(&weight_name("bias")?, wd[0])?;
                let padding = match self.usizes_opt(id, o.get("padding"), "padding")? {
                    None => [0; 4],
                    Some(p) if p.len() == 1 => [p[0]; 4],
                    Some(p) if p.len() == 2 => [p[0], p[1], p[0], p[1]],
                    Some(p) if p.len() == 4 => [p[0], p[1], p[2], p[3]],
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
                if w.dims().len() != 2 || w.dims()[1] != in_f {
                    return Err(LayersError::WeightShape {
                        source_name: self.weights_name.to_string(),
                        tensor: weight_name("weight")?,
                        expected: format!(
                            "[out, {in_f}] for input {in_shape:?}{}",
                            if in_shape.len() > 2 {
                                " (flatten first?)"
                            } else {
                                ""
                            }
                        ),
                        found: w.dims().to_vec(),
                    });
                }
                let bias = self.bias(&weight_name("bias")?, w.dims()[0])?;
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

    fn weight(&self, tensor: &str) -> Result<Tensor<f32>> {
        let view = self
            .st
            .tensor(tensor)
            .map_err(|_| LayersError::MissingWeight {
                source_name: self.weights_name.to_string(),
                tensor: tensor.to_string(),
            })?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
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
        match v {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(vec![n.as_u64().ok_or_else(bad)? as usize])),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_u64().map(|u| u as usize).ok_or_else(bad))
                .collect::<Result<Vec<_>>>()
                .map(Some),
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
            Some(v) => v.as_u64().map(|u| u as usize).ok_or_else(|| {
                self.arch_err(
                    id,
                    format!("\"{key}\" must be a non-negative integer, got {v}"),
                )
            }),
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
