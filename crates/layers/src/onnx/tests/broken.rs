//! Broken models: each fails with its specific error variant, naming the file, node or tensor.

use super::proto::{AttributeProto, StringStringEntryProto, attribute_type};
use super::*;

#[test]
fn graph_attribute_is_rejected() {
    let graph_attribute = AttributeProto {
        name: "body".to_owned(),
        r#type: attribute_type::GRAPH,
        ..Default::default()
    };
    let m = model(
        vec![NodeProto {
            attribute: vec![graph_attribute],
            ..node("Identity", "n", &["x"], &["y"])
        }],
        vec![],
        &["x"],
        &["y"],
    );
    let error = read(&m).unwrap_err();
    assert!(
        matches!(&error, LayersError::Attribute { node, attribute, .. } if node == "n" && attribute == "body"),
        "{error}"
    );
}

#[track_caller]
fn assert_decode_error(result: Result<OnnxGraph>) {
    match result {
        Err(LayersError::Decode { source_name, .. }) => assert_eq!(source_name, "test.onnx"),
        other => panic!("expected a Decode error, got {other:?}"),
    }
}

#[test]
fn truncated_file_is_a_decode_error() {
    let bytes = std::fs::read(fixture_path("lenet.onnx")).unwrap();
    for length in [bytes.len() / 2, bytes.len() - 1, 3] {
        assert_decode_error(read_onnx(&bytes[..length], "test.onnx"));
    }
}

#[test]
fn random_bytes_and_empty_input_are_decode_errors() {
    // A fixed xorshift stream: whatever it happens to parse as, it is no model.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    assert_decode_error(read_onnx(&bytes, "test.onnx"));
    assert_decode_error(read_onnx(&[], "test.onnx"));
}

#[test]
fn model_without_default_opset_is_a_decode_error() {
    let mut m = small_model();
    m.opset_import = vec![OperatorSetIdProto {
        domain: "com.microsoft".to_owned(),
        version: 1,
    }];
    assert_decode_error(read(&m));
}

#[test]
fn unsupported_opsets_are_rejected() {
    for version in [6, 22] {
        let mut m = small_model();
        m.opset_import = vec![OperatorSetIdProto {
            domain: "ai.onnx".to_owned(),
            version,
        }];
        let error = read(&m).unwrap_err();
        assert!(
            matches!(error, LayersError::UnsupportedOpset { opset, .. } if opset == version),
            "{error}"
        );
        assert!(
            error.to_string().contains(&format!("opset {version}")),
            "{error}"
        );
    }
}

#[track_caller]
fn assert_tensor_size_error(tensor: TensorProto, reason_part: &str) {
    match read(&model_with_initializer(tensor)) {
        Err(LayersError::TensorSize { name, reason, .. }) => {
            assert_eq!(name, "w");
            assert!(
                reason.contains(reason_part),
                "reason `{reason}` lacks `{reason_part}`"
            );
        }
        other => panic!("expected a TensorSize error, got {other:?}"),
    }
}

#[test]
fn wrong_length_raw_data_is_a_tensor_size_error() {
    let mut tensor = raw_f32_tensor("w", &[2, 3], &[0.0; 6]);
    tensor.raw_data.truncate(10);
    assert_tensor_size_error(tensor, "raw_data holds 10 bytes");
    let typed = TensorProto {
        name: "w".to_owned(),
        dims: vec![4],
        data_type: data_type::FLOAT,
        float_data: vec![1.0; 3],
        ..Default::default()
    };
    assert_tensor_size_error(typed, "holds 3");
}

#[test]
fn huge_declared_dims_fail_before_allocating() {
    // 10^11 floats (400 GB) claimed with a 10-byte payload, and with no payload at all.
    let huge = TensorProto {
        name: "w".to_owned(),
        dims: vec![100_000, 100_000, 10],
        data_type: data_type::FLOAT,
        raw_data: vec![0; 10],
        ..Default::default()
    };
    assert_tensor_size_error(huge.clone(), "raw_data holds 10 bytes");
    assert_tensor_size_error(
        TensorProto {
            raw_data: vec![],
            ..huge
        },
        "holds 0",
    );
}

#[test]
fn overflowing_dims_are_a_tensor_size_error() {
    let tensor = TensorProto {
        name: "w".to_owned(),
        dims: vec![i64::MAX, i64::MAX],
        data_type: data_type::FLOAT,
        raw_data: vec![0; 8],
        ..Default::default()
    };
    assert_tensor_size_error(tensor, "overflows");
    // The element count fits, its byte size does not.
    let tensor = TensorProto {
        name: "w".to_owned(),
        dims: vec![1 << 62],
        data_type: data_type::FLOAT,
        raw_data: vec![0; 8],
        ..Default::default()
    };
    assert_tensor_size_error(tensor, "overflows");
}

#[test]
fn negative_dim_is_a_tensor_size_error() {
    assert_tensor_size_error(raw_f32_tensor("w", &[2, -3], &[0.0; 6]), "negative");
}

#[test]
fn unsupported_element_type_is_rejected() {
    let half = TensorProto {
        name: "w".to_owned(),
        dims: vec![2],
        data_type: 10,
        raw_data: vec![0; 4],
        ..Default::default()
    };
    let error = read(&model_with_initializer(half)).unwrap_err();
    assert!(
        matches!(&error, LayersError::UnsupportedDataType { name, data_type, .. } if name == "w" && data_type.starts_with("FLOAT16")),
        "{error}"
    );
}

#[test]
fn external_data_is_rejected() {
    let external = TensorProto {
        name: "w".to_owned(),
        dims: vec![2],
        data_type: data_type::FLOAT,
        data_location: proto::DATA_LOCATION_EXTERNAL,
        external_data: vec![StringStringEntryProto {
            key: "location".to_owned(),
            value: "w.bin".to_owned(),
        }],
        ..Default::default()
    };
    let error = read(&model_with_initializer(external)).unwrap_err();
    assert!(
        matches!(&error, LayersError::ExternalData { name, .. } if name == "w"),
        "{error}"
    );
    assert!(error.to_string().contains("external_data=False"), "{error}");
}

#[test]
fn unknown_op_is_unsupported() {
    let m = model(
        vec![
            node("Relu", "relu", &["x"], &["r"]),
            node("Sin", "sine", &["r"], &["y"]),
        ],
        vec![],
        &["x"],
        &["y"],
    );
    let error = read(&m).unwrap_err();
    match &error {
        LayersError::UnsupportedOp {
            op_type,
            node,
            opset,
            supported,
            ..
        } => {
            assert_eq!(
                (op_type.as_str(), node.as_str(), *opset),
                ("Sin", "sine", 13)
            );
            assert!(supported.contains(&"Conv"));
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("test.onnx")
            && message.contains("`sine`")
            && message.contains("Conv, Relu"),
        "{message}"
    );
}

#[test]
fn op_from_another_domain_is_unsupported() {
    let m = model(
        vec![NodeProto {
            domain: "com.microsoft".to_owned(),
            ..node("Relu", "ms_relu", &["x"], &["y"])
        }],
        vec![],
        &["x"],
        &["y"],
    );
    let error = read(&m).unwrap_err();
    assert!(
        matches!(&error, LayersError::UnsupportedOp { op_type, .. } if op_type == "com.microsoft.Relu"),
        "{error}"
    );
}

#[test]
fn cycle_is_detected_naming_a_node_on_it() {
    // b -> c -> d -> b is a cycle; `tail`, first in the file, only hangs off it.
    let m = model(
        vec![
            node("Relu", "tail", &["d"], &["y"]),
            node("Relu", "a", &["x"], &["a_out"]),
            node("Add", "b", &["a_out", "d"], &["b_out"]),
            node("Relu", "c", &["b_out"], &["c_out"]),
            node("Relu", "d", &["c_out"], &["d"]),
        ],
        vec![],
        &["x"],
        &["y"],
    );
    match read(&m) {
        Err(LayersError::Cycle { node, .. }) => {
            assert!(["b", "c", "d"].contains(&node.as_str()), "named `{node}`")
        }
        other => panic!("expected a Cycle error, got {other:?}"),
    }
    let self_loop = model(
        vec![node("Add", "loop", &["x", "y"], &["y"])],
        vec![],
        &["x"],
        &["y"],
    );
    assert!(matches!(read(&self_loop), Err(LayersError::Cycle { node, .. }) if node == "loop"));
}

#[test]
fn missing_input_names_node_and_input() {
    let m = model(
        vec![node("Add", "add", &["x", "nowhere"], &["y"])],
        vec![],
        &["x"],
        &["y"],
    );
    let error = read(&m).unwrap_err();
    assert!(
        matches!(&error, LayersError::MissingInput { node, input, .. } if node == "add" && input == "nowhere"),
        "{error}"
    );
}

#[test]
fn missing_graph_output_is_rejected() {
    let m = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![],
        &["x"],
        &["z"],
    );
    assert!(matches!(read(&m), Err(LayersError::MissingOutput { output, .. }) if output == "z"));
}

#[test]
fn value_defined_twice_is_rejected() {
    let m = model(
        vec![
            node("Relu", "first", &["x"], &["y"]),
            node("Relu", "second", &["x"], &["y"]),
        ],
        vec![],
        &["x"],
        &["y"],
    );
    let error = read(&m).unwrap_err();
    assert!(
        matches!(&error, LayersError::DuplicateValue { name, .. } if name == "y"),
        "{error}"
    );
    assert!(
        error.to_string().contains("`first`") && error.to_string().contains("`second`"),
        "{error}"
    );
    let shadowing = model(
        vec![node("Relu", "relu", &["x"], &["bias"])],
        vec![raw_f32_tensor("bias", &[1], &[0.0])],
        &["x"],
        &["bias"],
    );
    assert!(
        matches!(read(&shadowing), Err(LayersError::DuplicateValue { name, .. }) if name == "bias")
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let path = fixture_path("no_such_model.onnx");
    match load_onnx_file(&path) {
        Err(LayersError::Io {
            path: error_path,
            source,
        }) => {
            assert_eq!(error_path, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
}
