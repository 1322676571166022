//! Conversion of protobuf messages into the intermediate graph: tensors, attributes, value infos.
//! Sizes are checked against the [`LoadLimits`] and the payload before anything is allocated from
//! declared dims.

use std::collections::HashMap;

use super::ir::{Attribute, OnnxNode, OnnxTensor, TensorData, ValueInfo};
use super::proto::{self, attribute_type, data_type};
use crate::error::{LayersError, Result};
use crate::limits::LoadLimits;

/// Attributes that hold sizes (of kernels, strides, paddings, dilations, groups): each entry must
/// be within `max_dim`, so no arithmetic on them can overflow.
const SIZE_ATTRIBUTES: &[&str] = &["kernel_shape", "strides", "pads", "dilations", "group"];

/// What decoding needs besides the message: the file name for messages, the limits, and the
/// bytes of constant tensors decoded so far (bounded by `max_total_weight_bytes`).
pub(crate) struct Decoder<'a> {
    pub source_name: &'a str,
    pub limits: &'a LoadLimits,
    pub weight_bytes: u64,
}

/// Converts a tensor message; `name` is used in messages (the tensor's own name may be empty).
/// Takes the message by value so typed payloads move instead of being copied.
pub(crate) fn tensor(
    message: proto::TensorProto,
    name: &str,
    decoder: &mut Decoder<'_>,
) -> Result<OnnxTensor> {
    let source_name = decoder.source_name;
    let size_error = |reason: String| LayersError::TensorSize {
        source_name: source_name.to_owned(),
        name: name.to_owned(),
        dims: message.dims.clone(),
        reason,
    };
    if message.data_location == proto::DATA_LOCATION_EXTERNAL || !message.external_data.is_empty() {
        return Err(LayersError::ExternalData {
            source_name: source_name.to_owned(),
            name: name.to_owned(),
        });
    }
    let dims = message
        .dims
        .iter()
        .map(|&dim| {
            usize::try_from(dim).map_err(|_| size_error(format!("dimension {dim} is negative")))
        })
        .collect::<Result<Vec<usize>>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim))
        .ok_or_else(|| size_error("the element count overflows usize".to_owned()))?;

    let (element_bytes, typed_len) = match message.data_type {
        data_type::FLOAT => (4, message.float_data.len()),
        data_type::DOUBLE => (8, message.double_data.len()),
        data_type::INT32 => (4, message.int32_data.len()),
        data_type::INT64 => (8, message.int64_data.len()),
        other => {
            return Err(LayersError::UnsupportedDataType {
                source_name: source_name.to_owned(),
                name: name.to_owned(),
                data_type: format!("{} ({other})", data_type::name(other)),
            });
        }
    };
    let raw = &message.raw_data;
    if !raw.is_empty() && typed_len != 0 {
        return Err(size_error(
            "both raw_data and typed data are present".to_owned(),
        ));
    }
    // Compare the declared size with the payload first: a file may claim any dims for free.
    if raw.is_empty() && typed_len != count {
        return Err(size_error(format!(
            "declares {count} elements but holds {typed_len}"
        )));
    }
    let expected_bytes = count
        .checked_mul(element_bytes)
        .ok_or_else(|| size_error("the byte size overflows usize".to_owned()))?;
    if !raw.is_empty() && raw.len() != expected_bytes {
        return Err(size_error(format!(
            "declares {count} elements ({expected_bytes} bytes) but raw_data holds {} bytes",
            raw.len()
        )));
    }
    // The payload matches the dims; now whether an honest tensor is one we accept.
    let limits = decoder.limits;
    limits.check_shape(
        source_name,
        &format!("tensor `{name}`"),
        &dims,
        "max_tensor_elements",
        limits.max_tensor_elements,
    )?;
    limits.add_weight_bytes(
        source_name,
        name,
        &mut decoder.weight_bytes,
        expected_bytes as u64,
    )?;

    let data = match message.data_type {
        data_type::FLOAT if raw.is_empty() => TensorData::Float(message.float_data),
        data_type::FLOAT => TensorData::Float(
            raw.as_chunks::<4>()
                .0
                .iter()
                .map(|b| f32::from_le_bytes(*b))
                .collect(),
        ),
        // Weights are used in f32; rounding a double initializer loses nothing the engine keeps.
        data_type::DOUBLE if raw.is_empty() => {
            TensorData::Float(message.double_data.iter().map(|&v| v as f32).collect())
        }
        data_type::DOUBLE => TensorData::Float(
            raw.as_chunks::<8>()
                .0
                .iter()
                .map(|b| f64::from_le_bytes(*b) as f32)
                .collect(),
        ),
        data_type::INT32 if raw.is_empty() => {
            TensorData::Int64(message.int32_data.iter().map(|&v| i64::from(v)).collect())
        }
        data_type::INT32 => TensorData::Int64(
            raw.as_chunks::<4>()
                .0
                .iter()
                .map(|b| i64::from(i32::from_le_bytes(*b)))
                .collect(),
        ),
        data_type::INT64 if raw.is_empty() => TensorData::Int64(message.int64_data),
        _ => TensorData::Int64(
            raw.as_chunks::<8>()
                .0
                .iter()
                .map(|b| i64::from_le_bytes(*b))
                .collect(),
        ),
    };
    Ok(OnnxTensor { dims, data })
}

/// Converts a node; `index` is its position in the file, used to name unnamed nodes.
pub(crate) fn node(
    message: proto::NodeProto,
    index: usize,
    decoder: &mut Decoder<'_>,
) -> Result<OnnxNode> {
    let source_name = decoder.source_name;
    let name = if message.name.is_empty() {
        format!("{}#{index}", message.op_type)
    } else {
        message.name
    };
    let mut attributes = HashMap::with_capacity(message.attribute.len());
    for attribute_message in message.attribute {
        let attribute_name = attribute_message.name.clone();
        let value = attribute(attribute_message, &name, decoder)?;
        let sizes = match &value {
            Attribute::Int(v) => std::slice::from_ref(v),
            Attribute::Ints(v) => v.as_slice(),
            _ => &[],
        };
        if SIZE_ATTRIBUTES.contains(&attribute_name.as_str())
            && let Some(&v) = sizes.iter().max_by_key(|v| v.unsigned_abs())
        {
            let what = format!("node `{name}`, attribute `{attribute_name}`");
            decoder
                .limits
                .check_size(source_name, &what, u128::from(v.unsigned_abs()))?;
        }
        if attributes.insert(attribute_name.clone(), value).is_some() {
            return Err(attribute_error(
                source_name,
                &name,
                &attribute_name,
                "given twice".to_owned(),
            ));
        }
    }
    Ok(OnnxNode {
        name,
        op_type: message.op_type,
        domain: message.domain,
        inputs: message.input,
        outputs: message.output,
        attributes,
    })
}

fn attribute_error(source_name: &str, node: &str, attribute: &str, reason: String) -> LayersError {
    LayersError::Attribute {
        source_name: source_name.to_owned(),
        node: node.to_owned(),
        attribute: attribute.to_owned(),
        reason,
    }
}

fn attribute(
    message: proto::AttributeProto,
    node: &str,
    decoder: &mut Decoder<'_>,
) -> Result<Attribute> {
    let source_name = decoder.source_name;
    let error = |reason: String| attribute_error(source_name, node, &message.name, reason);
    let kind = match message.r#type {
        // Files from before IR version 2 leave the type out; infer it from the field in use.
        attribute_type::UNDEFINED => {
            infer_attribute_type(&message).ok_or_else(|| error("has no type".to_owned()))?
        }
        kind => kind,
    };
    Ok(match kind {
        attribute_type::FLOAT => Attribute::Float(message.f),
        attribute_type::INT => Attribute::Int(message.i),
        attribute_type::FLOATS => Attribute::Floats(message.floats),
        attribute_type::INTS => Attribute::Ints(message.ints),
        attribute_type::STRING => Attribute::String(
            String::from_utf8(message.s)
                .map_err(|_| error("the string is not UTF-8".to_owned()))?,
        ),
        attribute_type::TENSOR => {
            let tensor_message = message
                .t
                .ok_or_else(|| error("tensor attribute without a tensor".to_owned()))?;
            let tensor_name = if tensor_message.name.is_empty() {
                format!("{node}.{}", message.name)
            } else {
                tensor_message.name.clone()
            };
            Attribute::Tensor(tensor(tensor_message, &tensor_name, decoder)?)
        }
        attribute_type::GRAPH
        | attribute_type::STRINGS
        | attribute_type::TENSORS
        | attribute_type::GRAPHS
        | attribute_type::SPARSE_TENSOR
        | attribute_type::SPARSE_TENSORS
        | attribute_type::TYPE_PROTO
        | attribute_type::TYPE_PROTOS => {
            return Err(error(format!(
                "attributes of type {kind} (graphs, lists of strings or tensors, sparse tensors, types) are not supported"
            )));
        }
        other => return Err(error(format!("unknown attribute type {other}"))),
    })
}

fn infer_attribute_type(message: &proto::AttributeProto) -> Option<i32> {
    if message.t.is_some() {
        Some(attribute_type::TENSOR)
    } else if !message.floats.is_empty() {
        Some(attribute_type::FLOATS)
    } else if !message.ints.is_empty() {
        Some(attribute_type::INTS)
    } else if !message.s.is_empty() {
        Some(attribute_type::STRING)
    } else if message.i != 0 {
        Some(attribute_type::INT)
    } else if message.f != 0.0 {
        Some(attribute_type::FLOAT)
    } else {
        None
    }
}

/// Converts a value info; symbolic and unset dims become `None`.
pub(crate) fn value_info(message: &proto::ValueInfoProto, source_name: &str) -> Result<ValueInfo> {
    let shape = message
        .r#type
        .as_ref()
        .and_then(|kind| kind.tensor_type.as_ref())
        .and_then(|tensor| tensor.shape.as_ref());
    let dims = shape
        .map(|shape| {
            shape
                .dim
                .iter()
                .map(|dim| match dim.dim_value {
                    Some(value) => {
                        usize::try_from(value)
                            .map(Some)
                            .map_err(|_| LayersError::Decode {
                                source_name: source_name.to_owned(),
                                reason: format!(
                                    "value `{}` has negative dimension {value}",
                                    message.name
                                ),
                            })
                    }
                    None => Ok(None),
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(ValueInfo {
        name: message.name.clone(),
        dims,
    })
}
