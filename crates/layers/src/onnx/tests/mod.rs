//! Tests of the ONNX reader: the PyTorch-exported fixtures decode as expected (`fixtures`), valid
//! models built here with the `proto` structs convert faithfully (`programmatic`), and broken ones
//! fail with the specific error (`broken`). This file holds the helpers they share.

mod broken;
mod build;
mod fixtures;
mod programmatic;

use std::path::{Path, PathBuf};

use prost::Message;

use super::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto, data_type,
};
use super::*;

fn fixture_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(file)
}

fn initializer<'a>(graph: &'a OnnxGraph, name: &str) -> &'a OnnxTensor {
    graph
        .initializers
        .get(name)
        .unwrap_or_else(|| panic!("no initializer `{name}`"))
}

fn attribute<'a>(node: &'a OnnxNode, name: &str) -> &'a Attribute {
    node.attributes
        .get(name)
        .unwrap_or_else(|| panic!("node `{}` has no attribute `{name}`", node.name))
}

fn op_types(graph: &OnnxGraph) -> Vec<&str> {
    graph
        .nodes
        .iter()
        .map(|node| node.op_type.as_str())
        .collect()
}

fn value(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_owned(),
        r#type: None,
    }
}

fn node(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op_type.to_owned(),
        name: name.to_owned(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

fn raw_f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: &[&str],
    outputs: &[&str],
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            name: "test".to_owned(),
            node: nodes,
            initializer: initializers,
            input: inputs.iter().map(|name| value(name)).collect(),
            output: outputs.iter().map(|name| value(name)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `y = Relu(x + bias)` with a 2x3 bias.
fn small_model() -> ModelProto {
    model(
        vec![
            node("Add", "add", &["x", "bias"], &["sum"]),
            node("Relu", "relu", &["sum"], &["y"]),
        ],
        vec![raw_f32_tensor(
            "bias",
            &[2, 3],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        )],
        &["x"],
        &["y"],
    )
}

fn read(model: &ModelProto) -> Result<OnnxGraph> {
    read_onnx(&model.encode_to_vec(), "test.onnx")
}

/// A model with the single initializer `tensor` and a node reading it.
fn model_with_initializer(tensor: TensorProto) -> ModelProto {
    let name = tensor.name.clone();
    model(
        vec![node("Identity", "id", &[&name], &["y"])],
        vec![tensor],
        &[],
        &["y"],
    )
}
