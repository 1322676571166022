//! Writing a model back out: its weights as safetensors (PyTorch names, f32) and its layers as
//! the JSON architecture that [`load_safetensors_model`](crate::load_safetensors_model) reads.

use crate::arch::ARCH_FORMAT;
use crate::error::{LayersError, Result};
use crate::model::{Layer, Model};
use safetensors::{Dtype, tensor::TensorView};
use serde_json::{Value, json};
use smoothgrad_autodiff::Float;
use std::collections::HashSet;
use std::path::Path;

fn export_err(layer: &str, reason: impl Into<String>) -> LayersError {
    LayersError::Arch {
        source_name: "<export>".into(),
        layer: layer.to_string(),
        reason: reason.into(),
    }
}

/// The JSON architecture (`smoothgrad-arch/1`) of `model`, one layer per line with `type`
/// first and options left out where they are the loader's defaults. Each node's name is its id
/// and, for layers with weights, the prefix of its tensors. Fails for layers the format cannot
/// express (a clamp other than ReLU6, a reshape) and for names that are repeated or `"input"`.
pub fn arch_json<T: Float>(model: &Model<T>) -> Result<String> {
    let mut ids: Vec<String> = vec!["input".into()];
    let mut seen = HashSet::from(["input".to_string()]);
    let mut lines = Vec::new();
    for (k, node) in model.nodes().iter().enumerate() {
        if !seen.insert(node.name.clone()) {
            return Err(export_err(
                &node.name,
                "the name is used twice (or is \"input\")",
            ));
        }
        let (kind, options) = layer_json(&node.name, &node.layer)?;
        let key = if node.layer.parameters().is_empty() {
            "id"
        } else {
            "name"
        };
        let mut fields = vec![("type", json!(kind)), (key, json!(node.name))];
        if node.inputs != [k] {
            let inputs: Vec<&str> = node.inputs.iter().map(|&i| ids[i].as_str()).collect();
            fields.push(("inputs", json!(inputs)));
        }
        fields.extend(options);
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        lines.push(format!("    {{{}}}", body.join(", ")));
        ids.push(node.name.clone());
    }
    let mut text = format!(
        "{{\n  \"format\": \"{ARCH_FORMAT}\",\n  \"input\": {},\n  \"layers\": [\n{}\n  ]",
        json!(model.input_dims()),
        lines.join(",\n")
    );
    if model.output_index() != model.nodes().len() {
        text += &format!(",\n  \"output\": {}", json!(ids[model.output_index()]));
    }
    Ok(text + "\n}\n")
}

/// The `type` of one layer and its options that differ from the loader's defaults.
fn layer_json<T: Float>(
    name: &str,
    layer: &Layer<T>,
) -> Result<(&'static str, Vec<(&'static str, Value)>)> {
    let mut o: Vec<(&'static str, Value)> = Vec::new();
    let kind = match layer {
        Layer::Conv2d { params, .. } => {
            if params.stride != [1, 1] {
                o.push(("stride", json!(params.stride)));
            }
            if params.padding != [0; 4] {
                let [t, l, b, r] = params.padding;
                let p = if t == l && l == b && b == r {
                    json!(t)
                } else {
                    json!(params.padding)
                };
                o.push(("padding", p));
            }
            if params.dilation != [1, 1] {
                o.push(("dilation", json!(params.dilation)));
            }
            if params.groups != 1 {
                o.push(("groups", json!(params.groups)));
            }
            "conv2d"
        }
        Layer::Linear { .. } => "linear",
        Layer::Relu => "relu",
        Layer::Clamp { low, high } if *low == 0.0 && *high == 6.0 => "relu6",
        Layer::Clamp { .. } => return Err(export_err(name, "only ReLU6 clamps can be written")),
        Layer::MaxPool2d(p) | Layer::AvgPool2d(p) => {
            o.push(("kernel", json!(p.kernel)));
            if p.stride != p.kernel {
                o.push(("stride", json!(p.stride)));
            }
            if p.padding != [0, 0] {
                o.push(("padding", json!(p.padding)));
            }
            if p.ceil_mode {
                o.push(("ceil_mode", json!(true)));
            }
            if matches!(layer, Layer::MaxPool2d(_)) {
                if p.dilation != [1, 1] {
                    o.push(("dilation", json!(p.dilation)));
                }
                "max_pool2d"
            } else {
                if !p.count_include_pad {
                    o.push(("count_include_pad", json!(false)));
                }
                "avg_pool2d"
            }
        }
        Layer::GlobalAvgPool => "global_avg_pool2d",
        Layer::BatchNorm { eps, .. } => {
            o.push(("eps", json!(eps)));
            "batch_norm2d"
        }
        Layer::Flatten { start_dim } => {
            o.push(("start_dim", json!(start_dim)));
            "flatten"
        }
        Layer::Reshape { .. } => {
            return Err(export_err(name, "reshape has no JSON architecture form"));
        }
        Layer::Add => "add",
        Layer::Concat { axis } => {
            o.push(("axis", json!(axis)));
            "concat"
        }
        Layer::Softmax { axis } => {
            o.push(("axis", json!(axis)));
            "softmax"
        }
        Layer::Identity => "identity",
    };
    Ok((kind, o))
}

/// The model's weights as a safetensors file (f32, little-endian), named as
/// [`Model::parameters`] names them; batch norms also write their running statistics.
pub fn safetensors_bytes<T: Float>(model: &Model<T>) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, t: &smoothgrad_autodiff::Tensor<T>| {
        let bytes = t
            .as_slice()
            .iter()
            .flat_map(|v| (v.as_f64() as f32).to_le_bytes())
            .collect();
        tensors.push((name, t.dims().to_vec(), bytes));
    };
    for node in model.nodes() {
        for (suffix, t) in node.layer.parameters() {
            add(format!("{}.{suffix}", node.name), t);
        }
        if let Layer::BatchNorm { mean, var, .. } = &node.layer {
            add(format!("{}.running_mean", node.name), mean);
            add(format!("{}.running_var", node.name), var);
        }
    }
    let views = tensors
        .iter()
        .map(|(name, dims, bytes)| {
            TensorView::new(Dtype::F32, dims.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| export_err(name, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| export_err("<weights>", e.to_string()))
}

/// Writes `weights` (safetensors) and `arch` (JSON) for `model`.
pub fn save_model<T: Float>(model: &Model<T>, weights: &Path, arch: &Path) -> Result<()> {
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|e| LayersError::Arch {
            source_name: path.display().to_string(),
            layer: "<file>".into(),
            reason: format!("cannot write: {e}"),
        })
    };
    write(weights, &safetensors_bytes(model)?)?;
    write(arch, arch_json(model)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::build_safetensors_model;
    use crate::train::{GlobalPool, small_cnn};
    use smoothgrad_autodiff::{Tape, Tensor, Var};

    #[test]
    fn written_models_load_back_with_the_same_function() {
        let model = small_cnn::<f32>(&[3, 12, 12], &[4, 6, 8], GlobalPool::Max, 5, 2).unwrap();
        let arch = arch_json(&model).unwrap();
        let weights = safetensors_bytes(&model).unwrap();
        let back = build_safetensors_model(&weights, "w", &arch, "a").unwrap();
        let x = Var::constant(Tensor::randn(&[2, 3, 12, 12], 3).unwrap());
        let mut tape = Tape::new();
        let a = model.forward(&mut tape, &x).unwrap();
        let b = back.forward(&mut tape, &x).unwrap();
        assert_eq!(a.value(), b.value());
        assert_eq!(
            model.parameters().iter().map(|p| &p.0).collect::<Vec<_>>(),
            back.parameters().iter().map(|p| &p.0).collect::<Vec<_>>()
        );
        assert!(arch.contains(r#"{"type": "conv2d", "name": "conv1", "padding": 1}"#));
        assert!(arch.contains(r#"{"type": "max_pool2d", "id": "pool1", "kernel": [2,2]}"#));
        serde_json::from_str::<Value>(&arch).unwrap();
    }

    #[test]
    fn graphs_with_branches_and_an_inner_output_round_trip() {
        let conv = |o: usize, c: usize| Layer::Conv2d {
            weight: Tensor::randn(&[o, c, 3, 3], o as u64).unwrap(),
            bias: None,
            params: smoothgrad_autodiff::Conv2dParams::new().padding(1),
        };
        let node = |name: &str, layer, inputs: Vec<usize>| crate::Node {
            name: name.into(),
            layer,
            inputs,
        };
        let nodes = vec![
            node("a", conv(2, 2), vec![0]),
            node("r", Layer::Relu, vec![1]),
            node("sum", Layer::Add, vec![0, 2]),
            node("cat", Layer::Concat { axis: 1 }, vec![3, 1]),
            node("unused", Layer::Relu, vec![4]),
        ];
        let model = Model::new("g", &[2, 5, 5], nodes, 4).unwrap();
        let arch = arch_json(&model).unwrap();
        assert!(arch.contains(r#""inputs": ["input","r"]"#) && arch.contains(r#""output": "cat""#));
        let back =
            build_safetensors_model(&safetensors_bytes(&model).unwrap(), "w", &arch, "a").unwrap();
        let x = Var::constant(Tensor::randn(&[1, 2, 5, 5], 9).unwrap());
        let mut tape = Tape::new();
        let (a, b) = (
            model.forward(&mut tape, &x).unwrap(),
            back.forward(&mut tape, &x).unwrap(),
        );
        assert_eq!(a.value(), b.value());

        let reshape = vec![node(
            "r",
            Layer::Reshape {
                sample_dims: vec![50],
            },
            vec![0],
        )];
        let model = Model::<f32>::new("r", &[2, 5, 5], reshape, 1).unwrap();
        assert!(
            arch_json(&model)
                .unwrap_err()
                .to_string()
                .contains("reshape")
        );
    }
}
