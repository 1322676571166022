//! ONNX graph → [`Model`]: each supported node becomes a layer, ONNX's semantics (opsets
//! 7..=21) translated to the layers' PyTorch conventions. The per-operator mappings are in
//! `weighted` (Conv, Gemm, MatMul, bias Add, BatchNormalization) and `unweighted` (the rest).
//!
//! Weights, biases, shapes and bounds must be constants (initializers or `Constant` nodes); the
//! data input (the graph's first non-initializer input) and everything computed from it become
//! model values. Batch-dependent ONNX ops are accepted only where they keep the batch axis apart:
//! `Flatten` at axis 1, `Reshape` whose leading entry is the batch.

mod unweighted;
mod weighted;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use smoothgrad_autodiff::Tensor;

use super::attributes::NodeAttributes;
use super::ir::{OnnxGraph, OnnxNode, OnnxTensor};
use super::{check_supported, load_onnx_file_with_limits};
use crate::error::{LayersError, Result};
use crate::limits::LoadLimits;
use crate::model::{Layer, Model, Node};

/// Reads an ONNX file and builds its model, batch norms folded into the convolutions before
/// them (see [`build_model`]).
pub fn load_onnx_model(path: &Path) -> Result<Model<f32>> {
    load_onnx_model_with_limits(path, &LoadLimits::default())
}

/// [`load_onnx_model`] within `limits` (see [`LoadLimits`]).
pub fn load_onnx_model_with_limits(path: &Path, limits: &LoadLimits) -> Result<Model<f32>> {
    build_model_with_limits(&load_onnx_file_with_limits(path, limits)?, limits)
}

/// Builds the model a validated ONNX graph describes, then folds each batch norm that follows a
/// convolution into it ([`Model::fold_batch_norms`]).
///
/// ```
/// use prost::Message;
/// use smoothgrad_layers::onnx::{build_model, proto, read_onnx};
///
/// // y = Relu(x) on inputs of shape [batch, 3, 4, 4].
/// let dim = |size: Option<i64>| proto::TensorShapeDimension {
///     dim_value: size,
///     dim_param: size.is_none().then(|| "batch".to_owned()),
/// };
/// let tensor_type = |dims: Vec<proto::TensorShapeDimension>| proto::TypeProto {
///     tensor_type: Some(proto::TypeProtoTensor {
///         elem_type: proto::data_type::FLOAT,
///         shape: Some(proto::TensorShapeProto { dim: dims }),
///     }),
/// };
/// let model = proto::ModelProto {
///     ir_version: 8,
///     opset_import: vec![proto::OperatorSetIdProto { domain: String::new(), version: 13 }],
///     graph: Some(proto::GraphProto {
///         node: vec![proto::NodeProto {
///             op_type: "Relu".into(),
///             input: vec!["x".into()],
///             output: vec!["y".into()],
///             ..Default::default()
///         }],
///         input: vec![proto::ValueInfoProto {
///             name: "x".into(),
///             r#type: Some(tensor_type([None, Some(3), Some(4), Some(4)].map(dim).to_vec())),
///         }],
///         output: vec![proto::ValueInfoProto { name: "y".into(), r#type: None }],
///         ..Default::default()
///     }),
///     ..Default::default()
/// };
/// let model = build_model(&read_onnx(&model.encode_to_vec(), "relu.onnx")?)?;
/// assert_eq!((model.input_dims(), model.output_dims()), (&[3, 4, 4][..], &[3, 4, 4][..]));
/// # Ok::<(), smoothgrad_layers::error::LayersError>(())
/// ```
pub fn build_model(graph: &OnnxGraph) -> Result<Model<f32>> {
    build_model_with_limits(graph, &LoadLimits::default())
}

/// [`build_model`] within `limits`: the input shape, the node count and the shape every node
/// computes are checked as the model is built.
pub fn build_model_with_limits(graph: &OnnxGraph, limits: &LoadLimits) -> Result<Model<f32>> {
    let mut model = build_model_unfolded_with_limits(graph, limits)?;
    model.fold_batch_norms();
    Ok(model)
}

/// Builds the model exactly as the graph states it, batch norms kept as layers. Folding rounds
/// the folded weights to f32, so this is the form to cast to f64 when validating against a
/// float64 reference.
pub fn build_model_unfolded(graph: &OnnxGraph) -> Result<Model<f32>> {
    build_model_unfolded_with_limits(graph, &LoadLimits::default())
}

/// [`build_model_unfolded`] within `limits`.
pub fn build_model_unfolded_with_limits(
    graph: &OnnxGraph,
    limits: &LoadLimits,
) -> Result<Model<f32>> {
    check_supported(graph)?;
    limits.check_nodes(&graph.source_name, graph.nodes.len())?;
    let mut builder = Builder::new(graph, limits)?;
    for node in &graph.nodes {
        builder.node(node)?;
    }
    builder.finish()
}

/// What a value name stands for while building.
enum Value<'g> {
    /// A model value (0 = the model input, k + 1 = the output of layer k).
    Computed(usize),
    /// A constant: an initializer (borrowed) or the output of a `Constant` node.
    Constant(Cow<'g, OnnxTensor>),
}

struct Builder<'g> {
    graph: &'g OnnxGraph,
    /// Every value defined so far, initializers included.
    values: HashMap<&'g str, Value<'g>>,
    nodes: Vec<Node<f32>>,
    /// The shape of every model value for a batch of one.
    shapes: Vec<Vec<usize>>,
    /// How many node inputs and graph outputs read each value name.
    readers: HashMap<&'g str, usize>,
    /// The input's batch size in the file (1 when symbolic), accepted as a Reshape's batch entry.
    exported_batch: usize,
    input_dims: Vec<usize>,
    limits: &'g LoadLimits,
}

impl<'g> Builder<'g> {
    fn new(graph: &'g OnnxGraph, limits: &'g LoadLimits) -> Result<Self> {
        let input_error = |node: &str, reason: String| LayersError::Graph {
            source_name: graph.source_name.clone(),
            node: node.to_owned(),
            reason,
        };
        let input = graph
            .inputs
            .first()
            .ok_or_else(|| input_error("<input>", "the graph has no data input".to_owned()))?;
        let (batch, sample) = match input.dims.split_first() {
            Some((batch, sample)) if !sample.is_empty() => (batch, sample),
            _ => {
                return Err(input_error(
                    &input.name,
                    format!(
                        "the graph input has shape {:?}; the model needs a batch axis and at least \
                         one more, e.g. [N, C, H, W]",
                        input.dims
                    ),
                ));
            }
        };
        let input_dims = sample
            .iter()
            .enumerate()
            .map(|(axis, dim)| match dim {
                Some(size) if *size > 0 => Ok(*size),
                _ => Err(input_error(
                    &input.name,
                    format!(
                        "axis {} of the input shape {:?} is not a fixed positive size; only the \
                         batch axis may be symbolic",
                        axis + 1,
                        input.dims
                    ),
                )),
            })
            .collect::<Result<Vec<usize>>>()?;
        let input_shape: Vec<usize> = [&[1], input_dims.as_slice()].concat();
        limits.check_shape(
            &graph.source_name,
            &format!("the input `{}`", input.name),
            &input_shape,
            "max_input_elements",
            limits.max_input_elements,
        )?;
        let mut readers: HashMap<&str, usize> = HashMap::new();
        let reads = graph
            .nodes
            .iter()
            .flat_map(|node| node.inputs.iter())
            .chain(&graph.outputs);
        for name in reads.filter(|name| !name.is_empty()) {
            *readers.entry(name.as_str()).or_default() += 1;
        }
        let mut values: HashMap<&str, Value> = graph
            .initializers
            .iter()
            .map(|(name, tensor)| (name.as_str(), Value::Constant(Cow::Borrowed(tensor))))
            .collect();
        values.insert(input.name.as_str(), Value::Computed(0));
        Ok(Builder {
            graph,
            values,
            nodes: Vec::new(),
            shapes: vec![input_shape],
            readers,
            exported_batch: batch.unwrap_or(1),
            input_dims,
            limits,
        })
    }

    fn finish(self) -> Result<Model<f32>> {
        let source_name = &self.graph.source_name;
        let name = self.graph.outputs.first().map_or("", String::as_str);
        let Some(Value::Computed(output)) = self.values.get(name) else {
            return Err(LayersError::Graph {
                source_name: source_name.clone(),
                node: "<output>".to_owned(),
                reason: format!("graph output `{name}` is not computed from the input"),
            });
        };
        Model::new(source_name, &self.input_dims, self.nodes, *output)
    }

    fn node(&mut self, node: &'g OnnxNode) -> Result<()> {
        match node.op_type.as_str() {
            "Conv" => self.conv(node),
            "Relu" => {
                let x = self.computed(node, 0)?;
                self.push(node, Layer::Relu, vec![x])
            }
            "Clip" => self.clip(node),
            "MaxPool" | "AveragePool" => self.pool(node),
            "GlobalAveragePool" => {
                let x = self.computed(node, 0)?;
                self.push(node, Layer::GlobalAvgPool, vec![x])
            }
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "Add" => self.add(node),
            "Flatten" => self.flatten(node),
            "Reshape" => self.reshape(node),
            "BatchNormalization" => self.batch_norm(node),
            "Concat" => self.concat(node),
            "Softmax" => self.softmax(node),
            "Dropout" | "Identity" => self.identity(node),
            "Constant" => self.constant_node(node),
            other => Err(LayersError::UnsupportedOp {
                source_name: self.graph.source_name.clone(),
                op_type: other.to_owned(),
                node: node.name.clone(),
                opset: self.graph.opset,
                supported: super::SUPPORTED_OPS,
            }),
        }
    }

    fn unsupported(&self, node: &OnnxNode, reason: impl Into<String>) -> LayersError {
        LayersError::UnsupportedNode {
            source_name: self.graph.source_name.clone(),
            node: node.name.clone(),
            op_type: node.op_type.clone(),
            reason: reason.into(),
        }
    }

    fn attributes<'n>(&'n self, node: &'n OnnxNode) -> NodeAttributes<'n> {
        NodeAttributes {
            source_name: &self.graph.source_name,
            node,
        }
    }

    /// The name of input `position`, or `None` when it is absent or an omitted optional input.
    fn input_name(node: &'g OnnxNode, position: usize) -> Option<&'g str> {
        node.inputs
            .get(position)
            .map(String::as_str)
            .filter(|name| !name.is_empty())
    }

    fn required_input(&self, node: &'g OnnxNode, position: usize) -> Result<&'g str> {
        Self::input_name(node, position)
            .ok_or_else(|| self.unsupported(node, format!("input #{position} is missing")))
    }

    /// The model value of a data input.
    fn computed(&self, node: &'g OnnxNode, position: usize) -> Result<usize> {
        let name = self.required_input(node, position)?;
        match self.values.get(name) {
            Some(Value::Computed(v)) => Ok(*v),
            Some(Value::Constant(_)) => Err(self.unsupported(
                node,
                format!("its data input `{name}` is a constant; constant folding is not supported"),
            )),
            None => Err(self.unsupported(
                node,
                format!(
                    "reads `{name}`, a graph input other than the model input `{}`; models with \
                     several inputs are not supported",
                    self.graph
                        .inputs
                        .first()
                        .map_or("", |input| input.name.as_str())
                ),
            )),
        }
    }

    /// A constant input (weight, bias, shape, bound) and its name, or `None` when omitted.
    fn optional_constant(
        &self,
        node: &'g OnnxNode,
        position: usize,
        role: &str,
    ) -> Result<Option<(&'g str, &OnnxTensor)>> {
        let Some(name) = Self::input_name(node, position) else {
            return Ok(None);
        };
        match self.values.get(name) {
            Some(Value::Constant(tensor)) => Ok(Some((name, tensor))),
            _ => Err(LayersError::NotConstant {
                source_name: self.graph.source_name.clone(),
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                role: role.to_owned(),
                input: name.to_owned(),
            }),
        }
    }

    fn constant(
        &self,
        node: &'g OnnxNode,
        position: usize,
        role: &str,
    ) -> Result<(&'g str, &OnnxTensor)> {
        self.optional_constant(node, position, role)?
            .ok_or_else(|| {
                self.unsupported(node, format!("its {role} (input #{position}) is missing"))
            })
    }

    /// A float constant as an engine tensor.
    fn float_tensor(
        &self,
        node: &OnnxNode,
        name: &str,
        tensor: &OnnxTensor,
    ) -> Result<Tensor<f32>> {
        let values = tensor.as_f32().ok_or_else(|| {
            self.unsupported(
                node,
                format!("`{name}` holds integers where floats are expected"),
            )
        })?;
        Ok(Tensor::from_vec(values.to_vec(), &tensor.dims)?)
    }

    fn weight_shape_error(&self, tensor: &str, expected: String, found: &[usize]) -> LayersError {
        LayersError::WeightShape {
            source_name: self.graph.source_name.clone(),
            tensor: tensor.to_owned(),
            expected,
            found: found.to_vec(),
        }
    }

    /// Appends a layer reading `inputs`, checks its shapes, and binds the node's first output
    /// to the new value.
    fn push(&mut self, node: &'g OnnxNode, layer: Layer<f32>, inputs: Vec<usize>) -> Result<()> {
        let ins = inputs
            .iter()
            .map(|&i| self.shape(i))
            .collect::<Result<Vec<&[usize]>>>()?;
        let out = layer.infer(&ins).map_err(|reason| LayersError::Graph {
            source_name: self.graph.source_name.clone(),
            node: node.name.clone(),
            reason: format!("{}: {reason}", layer.kind()),
        })?;
        self.limits.check_shape(
            &self.graph.source_name,
            &format!("the output of node `{}`", node.name),
            &out,
            "max_value_elements",
            self.limits.max_value_elements,
        )?;
        self.shapes.push(out);
        self.nodes.push(Node {
            name: node.name.clone(),
            layer,
            inputs,
        });
        self.define(node, Value::Computed(self.nodes.len()));
        Ok(())
    }

    /// Checks a node's kernel, stride, dilation, padding and group sizes against `max_dim` (the
    /// decoder checked the file's attributes; this covers graphs built in code too), so the
    /// window arithmetic cannot overflow.
    fn check_sizes<const N: usize>(&self, node: &OnnxNode, sizes: [&[usize]; N]) -> Result<()> {
        match sizes.iter().flat_map(|s| s.iter()).max() {
            Some(&largest) => self.limits.check_size(
                &self.graph.source_name,
                &format!(
                    "node `{}`, a kernel, stride, dilation, padding or group size",
                    node.name
                ),
                largest as u128,
            ),
            None => Ok(()),
        }
    }

    /// The shape of model value `value` (batch of one).
    fn shape(&self, value: usize) -> Result<&[usize]> {
        self.shapes
            .get(value)
            .map(Vec::as_slice)
            .ok_or_else(|| LayersError::Graph {
                source_name: self.graph.source_name.clone(),
                node: "<values>".to_owned(),
                reason: format!("value {value} has no shape yet"),
            })
    }

    fn define(&mut self, node: &'g OnnxNode, value: Value<'g>) {
        if let Some(output) = node.outputs.first().filter(|o| !o.is_empty()) {
            self.values.insert(output.as_str(), value);
        }
    }

    /// Fails if an output past the first (pool indices, a dropout mask, training statistics) is
    /// read by anything: only the first output is computed.
    fn only_first_output_used(&self, node: &OnnxNode) -> Result<()> {
        let used = node
            .outputs
            .iter()
            .skip(1)
            .find(|o| self.readers.get(o.as_str()).is_some_and(|&n| n > 0));
        match used {
            Some(output) => Err(self.unsupported(
                node,
                format!("its extra output `{output}` is used; only the first output is computed"),
            )),
            None => Ok(()),
        }
    }
}
