//! ONNX model files, decoded into a validated intermediate graph ([`OnnxGraph`]) that
//! [`build_model`] turns into a [`Model`](crate::Model) ([`load_onnx_model`] does both).
//!
//! Decoding uses `prost` with the needed subset of the ONNX schema written as Rust structs
//! ([`proto`]), so no `protoc` runs at build time. [`read_onnx`] then checks everything a builder
//! would otherwise trip over: the opset is in [`MIN_OPSET`]..=[`MAX_OPSET`], every tensor's payload
//! matches its dims (checked before allocating, so a file cannot make us reserve memory it does not
//! hold), external data is refused, every input exists, the nodes form a DAG (sorted
//! topologically), and every op is in [`SUPPORTED_OPS`].
//!
//! ```
//! use prost::Message;
//! use smoothgrad_layers::onnx::{proto, read_onnx};
//!
//! // A one-node model: y = Relu(x).
//! let value = |name: &str| proto::ValueInfoProto { name: name.into(), r#type: None };
//! let model = proto::ModelProto {
//!     ir_version: 8,
//!     opset_import: vec![proto::OperatorSetIdProto { domain: String::new(), version: 13 }],
//!     graph: Some(proto::GraphProto {
//!         node: vec![proto::NodeProto {
//!             op_type: "Relu".into(),
//!             input: vec!["x".into()],
//!             output: vec!["y".into()],
//!             ..Default::default()
//!         }],
//!         input: vec![value("x")],
//!         output: vec![value("y")],
//!         ..Default::default()
//!     }),
//!     ..Default::default()
//! };
//! let graph = read_onnx(&model.encode_to_vec(), "relu.onnx")?;
//! assert_eq!(graph.opset, 13);
//! assert_eq!(graph.nodes[0].name, "Relu#0"); // unnamed nodes get a name for messages
//! # Ok::<(), smoothgrad_layers::error::LayersError>(())
//! ```
//!
//! Every entry point has a `*_with_limits` twin taking a [`LoadLimits`](crate::LoadLimits); the
//! declared node count, tensor shapes, weight bytes, size attributes, input shape and every
//! inferred value shape are checked against it before anything is allocated or built from them.
#![deny(clippy::indexing_slicing)]

mod attributes;
mod build;
mod decode;
mod ir;
pub mod proto;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

pub use build::{
    build_model, build_model_unfolded, build_model_unfolded_with_limits, build_model_with_limits,
    load_onnx_model, load_onnx_model_with_limits,
};
pub use ir::{Attribute, OnnxGraph, OnnxNode, OnnxTensor, TensorData, ValueInfo};
pub use validate::check_supported;

use crate::error::{LayersError, Result};
use crate::limits::LoadLimits;

/// The operators the model builder implements (default ONNX domain).
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "Relu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Gemm",
    "MatMul",
    "Add",
    "Flatten",
    "Reshape",
    "BatchNormalization",
    "Concat",
    "Softmax",
    "Dropout",
    "Identity",
    "Clip",
    "Constant",
];

/// The oldest default-domain opset accepted.
pub const MIN_OPSET: i64 = 7;
/// The newest default-domain opset accepted.
pub const MAX_OPSET: i64 = 21;

/// Protobuf messages are limited to 2 GiB; a larger file cannot be a valid model.
const MAX_FILE_BYTES: u64 = 2 << 30;

/// Reads and validates an ONNX model file within the default [`LoadLimits`]. The path, as
/// displayed, names the model in messages.
pub fn load_onnx_file(path: &Path) -> Result<OnnxGraph> {
    load_onnx_file_with_limits(path, &LoadLimits::default())
}

/// [`load_onnx_file`] within `limits`.
pub fn load_onnx_file_with_limits(path: &Path, limits: &LoadLimits) -> Result<OnnxGraph> {
    let io_error = |source| LayersError::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io_error)?.len();
    let source_name = path.display().to_string();
    if size > MAX_FILE_BYTES {
        return Err(LayersError::Decode {
            source_name,
            reason: format!("the file is {size} bytes, over the 2 GiB limit of a protobuf message"),
        });
    }
    let bytes = std::fs::read(path).map_err(io_error)?;
    read_onnx_with_limits(&bytes, &source_name, limits)
}

/// Decodes and validates the bytes of an ONNX model within the default [`LoadLimits`];
/// `source_name` (usually the file name) names the model in messages. See the
/// [module documentation](self) for what is checked.
pub fn read_onnx(bytes: &[u8], source_name: &str) -> Result<OnnxGraph> {
    read_onnx_with_limits(bytes, source_name, &LoadLimits::default())
}

/// [`read_onnx`] within `limits`: the node count, each tensor's shape, the total weight bytes
/// and the size attributes (kernels, strides, paddings, dilations, groups) are checked as the
/// messages are converted, before any tensor data is copied.
pub fn read_onnx_with_limits(
    bytes: &[u8],
    source_name: &str,
    limits: &LoadLimits,
) -> Result<OnnxGraph> {
    let decode_error = |reason: String| LayersError::Decode {
        source_name: source_name.to_owned(),
        reason,
    };
    let model =
        proto::ModelProto::decode(bytes).map_err(|error| decode_error(error.to_string()))?;
    let graph = model
        .graph
        .ok_or_else(|| decode_error("the model has no graph".to_owned()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|import| is_default_domain(&import.domain))
        .map(|import| import.version)
        .ok_or_else(|| {
            decode_error("no opset is imported for the default (ai.onnx) domain".to_owned())
        })?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(LayersError::UnsupportedOpset {
            source_name: source_name.to_owned(),
            opset,
            min: MIN_OPSET,
            max: MAX_OPSET,
        });
    }
    if let Some(sparse) = graph.sparse_initializer.first() {
        let name = sparse
            .values
            .as_ref()
            .map_or("", |values| values.name.as_str());
        return Err(decode_error(format!(
            "sparse initializer `{name}` is not supported"
        )));
    }

    limits.check_nodes(source_name, graph.node.len())?;
    let mut decoder = decode::Decoder {
        source_name,
        limits,
        weight_bytes: 0,
    };
    let mut initializers = HashMap::with_capacity(graph.initializer.len());
    for tensor_message in graph.initializer {
        let name = tensor_message.name.clone();
        if name.is_empty() {
            return Err(decode_error("an initializer has no name".to_owned()));
        }
        let tensor = decode::tensor(tensor_message, &name, &mut decoder)?;
        if initializers.insert(name.clone(), tensor).is_some() {
            return Err(LayersError::DuplicateValue {
                source_name: source_name.to_owned(),
                name,
                first: "an initializer".to_owned(),
                second: "another initializer".to_owned(),
            });
        }
    }
    let mut inputs = Vec::with_capacity(graph.input.len());
    for input in graph
        .input
        .iter()
        .filter(|input| !initializers.contains_key(&input.name))
    {
        if input.name.is_empty() {
            return Err(decode_error("a graph input has no name".to_owned()));
        }
        inputs.push(decode::value_info(input, source_name)?);
    }
    let outputs: Vec<String> = graph
        .output
        .iter()
        .map(|output| output.name.clone())
        .collect();
    if outputs.is_empty() {
        return Err(decode_error("the graph has no outputs".to_owned()));
    }
    let value_info = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .map(|info| Ok((info.name.clone(), decode::value_info(info, source_name)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    let nodes = graph
        .node
        .into_iter()
        .enumerate()
        .map(|(index, node)| decode::node(node, index, &mut decoder))
        .collect::<Result<Vec<_>>>()?;

    let mut onnx_graph = OnnxGraph {
        source_name: source_name.to_owned(),
        name: graph.name,
        opset,
        ir_version: model.ir_version,
        inputs,
        outputs,
        value_info,
        nodes,
        initializers,
    };
    validate::sort_and_check_values(&mut onnx_graph)?;
    check_supported(&onnx_graph)?;
    Ok(onnx_graph)
}

/// The default ONNX operator domain, spelled either way the standard allows.
fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}
