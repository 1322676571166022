//! The one error type of the layers crate: reading, validating and building models.
//!
//! Every message names what it is about (the file, the node, the tensor), so a user who sees only
//! the message can find the offending part of the model.

use std::path::PathBuf;

/// A `Result` whose error is [`LayersError`].
pub type Result<T, E = LayersError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a model or building it into layers.
///
/// `source_name` is the file the model came from (or whatever name the caller gave the bytes).
#[derive(Debug, thiserror::Error)]
pub enum LayersError {
    /// A model file could not be read from disk.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a well-formed model: protobuf decoding failed, a required part is
    /// missing, or a field holds an impossible value.
    #[error("{source_name}: not a valid ONNX model: {reason}")]
    Decode { source_name: String, reason: String },
    /// The model's default-domain opset is outside the range the loader understands.
    #[error("{source_name}: ONNX opset {opset} is not supported (supported: {min}..={max})")]
    UnsupportedOpset {
        source_name: String,
        opset: i64,
        min: i64,
        max: i64,
    },
    /// A node whose operator the model builder cannot run.
    #[error(
        "{source_name}: node `{node}` is a `{op_type}` (opset {opset}), which is not supported; \
         supported ops: {}",
        .supported.join(", ")
    )]
    UnsupportedOp {
        source_name: String,
        op_type: String,
        node: String,
        opset: i64,
        supported: &'static [&'static str],
    },
    /// A node reads a value that no node, initializer or graph input produces.
    #[error(
        "{source_name}: node `{node}` reads `{input}`, which no node, initializer or graph input produces"
    )]
    MissingInput {
        source_name: String,
        node: String,
        input: String,
    },
    /// A graph output that no node, initializer or graph input produces.
    #[error(
        "{source_name}: graph output `{output}` is not produced by any node, initializer or graph input"
    )]
    MissingOutput { source_name: String, output: String },
    /// Two definitions of one value name (ONNX graphs are single-assignment).
    #[error("{source_name}: value `{name}` is defined twice: by {first} and by {second}")]
    DuplicateValue {
        source_name: String,
        name: String,
        first: String,
        second: String,
    },
    /// The node graph is not acyclic; `node` lies on a cycle.
    #[error("{source_name}: the graph has a cycle through node `{node}`")]
    Cycle { source_name: String, node: String },
    /// A tensor whose declared dims are invalid or disagree with the size of its payload.
    #[error("{source_name}: tensor `{name}` with dims {dims:?}: {reason}")]
    TensorSize {
        source_name: String,
        name: String,
        dims: Vec<i64>,
        reason: String,
    },
    /// A tensor of an element type the loader does not convert (only float, double, int32 and
    /// int64 are read).
    #[error(
        "{source_name}: tensor `{name}` has element type {data_type}; only FLOAT, DOUBLE, INT32 and INT64 are supported"
    )]
    UnsupportedDataType {
        source_name: String,
        name: String,
        data_type: String,
    },
    /// A tensor that keeps its data in a separate file, which the loader refuses to follow.
    #[error(
        "{source_name}: tensor `{name}` stores its data in an external file; re-export the model \
         with the weights inside the .onnx file (torch.onnx.export(..., external_data=False))"
    )]
    ExternalData { source_name: String, name: String },
    /// A node input that must be a constant (a weight, a bias, a shape, a bound) is computed by
    /// the graph instead.
    #[error(
        "{source_name}: node `{node}` ({op_type}) needs its {role} `{input}` to be a constant \
         (an initializer or a Constant node), but the graph computes it"
    )]
    NotConstant {
        source_name: String,
        node: String,
        op_type: String,
        role: String,
        input: String,
    },
    /// A supported operator used in a way the model builder cannot map to layers (an `Add` of a
    /// constant that is not a bias, a `Reshape` that would change the batch, ...).
    #[error("{source_name}: node `{node}` ({op_type}): {reason}")]
    UnsupportedNode {
        source_name: String,
        node: String,
        op_type: String,
        reason: String,
    },
    /// A node attribute of a kind the loader does not read, or with an invalid value.
    #[error("{source_name}: node `{node}`, attribute `{attribute}`: {reason}")]
    Attribute {
        source_name: String,
        node: String,
        attribute: String,
        reason: String,
    },
    /// A layer graph that does not fit together: wrong input count, shapes that do not
    /// chain, a value read before it is computed.
    #[error("{source_name}: layer `{node}`: {reason}")]
    Graph {
        source_name: String,
        node: String,
        reason: String,
    },
    /// The input given to a model does not have the shape the model was built for.
    #[error("model input has shape {found:?}, expected [N, {}]", .expected.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))]
    InputShape {
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A layer failed while running (the engine's error says how).
    #[error("layer `{node}`: {source}")]
    Forward {
        node: String,
        #[source]
        source: smoothgrad_autodiff::Error,
    },
    /// A JSON architecture file that is malformed or asks for something unknown.
    #[error("{source_name}: layer `{layer}`: {reason}")]
    Arch {
        source_name: String,
        layer: String,
        reason: String,
    },
    /// A safetensors file that cannot be parsed (bad header, offsets outside the file, ...).
    #[error("{source_name}: not a valid safetensors file: {reason}")]
    Safetensors { source_name: String, reason: String },
    /// A weight the architecture needs is not in the weights file.
    #[error("{source_name}: missing weight `{tensor}`")]
    MissingWeight { source_name: String, tensor: String },
    /// A weight whose shape does not fit the layer that uses it.
    #[error("{source_name}: weight `{tensor}` has shape {found:?}, expected {expected}")]
    WeightShape {
        source_name: String,
        tensor: String,
        expected: String,
        found: Vec<usize>,
    },
    /// A weight stored in an element type the loader does not convert.
    #[error("{source_name}: weight `{tensor}` has dtype {dtype}; only F32, F64 and BF16 are read")]
    WeightDType {
        source_name: String,
        tensor: String,
        dtype: String,
    },
    /// A size the file declares is over a [`LoadLimits`](crate::LoadLimits) bound; nothing was
    /// allocated for it.
    #[error("{source_name}: {what}: {value} exceeds the limit {limit} = {max}")]
    Limit {
        source_name: String,
        /// What the size belongs to: a tensor and its shape, a layer option, the graph.
        what: String,
        /// The name of the [`LoadLimits`](crate::LoadLimits) field.
        limit: &'static str,
        /// The declared size (`u64::MAX` when it does not even fit in 64 bits).
        value: u64,
        max: u64,
    },
    /// A layer produced NaN or an infinity (e.g. logits that overflow f32), found when the
    /// forward pass checks each layer's output.
    #[error(
        "non-finite value (NaN or ±Inf) first produced by layer '{layer}' ({kind}): {count} of {total} values"
    )]
    NonFinite {
        /// The node name from the file (ONNX node name, JSON layer id).
        layer: String,
        /// The layer type, e.g. `linear`.
        kind: String,
        /// How many values of the layer's output are not finite.
        count: usize,
        /// How many values the output has.
        total: usize,
    },
    /// An error from the autodiff engine while building or running layers.
    #[error(transparent)]
    Autodiff(#[from] smoothgrad_autodiff::Error),
}
