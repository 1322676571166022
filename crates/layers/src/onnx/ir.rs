//! The validated intermediate graph that [`read_onnx`](super::read_onnx) produces: plain Rust
//! values, no protobuf types, every tensor already converted and size-checked.

use std::collections::HashMap;

/// A decoded, validated ONNX graph.
///
/// Guarantees, checked by [`read_onnx`](super::read_onnx):
/// - `nodes` are in topological order (every node comes after the producers of its inputs);
/// - every non-empty node input and every output name is a graph input, an initializer or the
///   output of a node; every value is defined once;
/// - every node is one of [`SUPPORTED_OPS`](super::SUPPORTED_OPS) in the default domain;
/// - every tensor's data length equals the product of its dims.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxGraph {
    /// Where the graph came from (the file name given to [`read_onnx`](super::read_onnx)), for
    /// messages.
    pub source_name: String,
    /// The graph's own name (often empty or the exporter's name).
    pub name: String,
    /// The version of the default ("" / "ai.onnx") operator set, within
    /// [`MIN_OPSET`](super::MIN_OPSET)..=[`MAX_OPSET`](super::MAX_OPSET).
    pub opset: i64,
    /// The ONNX IR (file format) version.
    pub ir_version: i64,
    /// Inputs the caller feeds, in file order; inputs that are also initializers (default values,
    /// as old exporters write them) are left out.
    pub inputs: Vec<ValueInfo>,
    /// Names of the graph outputs, in file order.
    pub outputs: Vec<String>,
    /// Shapes the file records for outputs and intermediate values, by value name (may be empty).
    pub value_info: HashMap<String, ValueInfo>,
    /// The nodes in topological order.
    pub nodes: Vec<OnnxNode>,
    /// Constant tensors (weights, biases, shapes), by value name.
    pub initializers: HashMap<String, OnnxTensor>,
}

/// The name and declared shape of a graph input or recorded value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    /// One entry per axis: `Some(n)` for a fixed size, `None` for a symbolic (`"batch"`) or
    /// unknown one. Empty when the file gives no shape.
    pub dims: Vec<Option<usize>>,
}

/// One operator application.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxNode {
    /// The node's name, or `"<op_type>#<index in file>"` when the file leaves it empty, so that
    /// messages can always name the node.
    pub name: String,
    pub op_type: String,
    /// The operator domain; "" is the default ONNX domain.
    pub domain: String,
    /// Input value names by position; an empty string is an omitted optional input (e.g. `Clip`
    /// with a max but no min).
    pub inputs: Vec<String>,
    /// Output value names by position; an empty string is an unused optional output.
    pub outputs: Vec<String>,
    pub attributes: HashMap<String, Attribute>,
}

/// A node attribute value. Graph-, string-list- and tensor-list-valued attributes are rejected
/// while decoding, as no supported op uses them.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    Float(f32),
    Int(i64),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    String(String),
    Tensor(OnnxTensor),
}

impl Attribute {
    /// The kind of the attribute, for error messages ("int", "floats", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Float(_) => "float",
            Self::Int(_) => "int",
            Self::Floats(_) => "floats",
            Self::Ints(_) => "ints",
            Self::String(_) => "string",
            Self::Tensor(_) => "tensor",
        }
    }

    pub fn as_float(&self) -> Option<f32> {
        match self {
            Self::Float(value) => Some(*value),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(value) => Some(*value),
            _ => None,
        }
    }

    pub fn as_floats(&self) -> Option<&[f32]> {
        match self {
            Self::Floats(values) => Some(values),
            _ => None,
        }
    }

    pub fn as_ints(&self) -> Option<&[i64]> {
        match self {
            Self::Ints(values) => Some(values),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(value) => Some(value),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&OnnxTensor> {
        match self {
            Self::Tensor(tensor) => Some(tensor),
            _ => None,
        }
    }
}

/// A constant tensor: row-major data whose length is the product of `dims` (1 for a scalar,
/// whose `dims` is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxTensor {
    pub dims: Vec<usize>,
    pub data: TensorData,
}

/// Tensor elements. FLOAT and DOUBLE tensors become `Float` (doubles rounded to f32); INT32 and
/// INT64 tensors become `Int64` (shapes and axes, e.g. the shape input of `Reshape`).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

impl OnnxTensor {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::Float(values) => values.len(),
            TensorData::Int64(values) => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements, if this is a float tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::Float(values) => Some(values),
            TensorData::Int64(_) => None,
        }
    }

    /// The elements, if this is an integer tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::Int64(values) => Some(values),
            TensorData::Float(_) => None,
        }
    }
}
