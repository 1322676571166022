//! Broken model files, in both formats: each fails with its specific error variant and a message
//! naming what is wrong (the node, the tensor, the layer), and none panics or allocates what the
//! file merely claims. The broken bytes are made here from the committed fixtures.

use prost::Message;
use serde_json::{Value, json};
use smoothgrad_layers::onnx::{build_model, proto, read_onnx};
use smoothgrad_layers::{LayersError, Model, build_safetensors_model, load_safetensors_model};
use std::path::PathBuf;

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(file)
}

fn read_fixture(file: &str) -> Vec<u8> {
    std::fs::read(fixture(file)).unwrap()
}

// ---------- ONNX ----------

/// Reads and builds ONNX bytes named `broken.onnx`.
fn build_onnx(bytes: &[u8]) -> Result<Model<f32>, LayersError> {
    build_model(&read_onnx(bytes, "broken.onnx")?)
}

/// The lenet fixture as protobuf messages, changed by `edit`, re-encoded and built.
fn build_edited_lenet(edit: impl FnOnce(&mut proto::GraphProto)) -> LayersError {
    let mut model = proto::ModelProto::decode(read_fixture("lenet.onnx").as_slice()).unwrap();
    edit(model.graph.as_mut().unwrap());
    build_onnx(&model.encode_to_vec()).unwrap_err()
}

fn node_named<'a>(graph: &'a mut proto::GraphProto, name: &str) -> &'a mut proto::NodeProto {
    graph.node.iter_mut().find(|n| n.name == name).unwrap()
}

fn initializer_named<'a>(
    graph: &'a mut proto::GraphProto,
    name: &str,
) -> &'a mut proto::TensorProto {
    graph
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap()
}

#[track_caller]
fn assert_decode_error(error: LayersError) {
    assert!(
        matches!(&error, LayersError::Decode { source_name, .. } if source_name == "broken.onnx"),
        "{error:?}"
    );
}

#[test]
fn truncated_onnx_is_a_decode_error() {
    let bytes = read_fixture("lenet.onnx");
    for length in [0, 1, 100, bytes.len() / 2, bytes.len() - 1] {
        assert_decode_error(build_onnx(&bytes[..length]).unwrap_err());
    }
}

#[test]
fn random_bytes_and_other_formats_are_decode_errors() {
    // Splitmix64 bytes: not a protobuf, or one without a graph.
    let mut state = 0x5EED_u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect();
    assert_decode_error(build_onnx(&random).unwrap_err());
    // A zip header (a PyTorch .pt file), a safetensors file and JSON text given as ONNX.
    assert_decode_error(build_onnx(b"PK\x03\x04\x14\x00\x00\x00\x08\x00").unwrap_err());
    assert_decode_error(build_onnx(&read_fixture("lenet.safetensors")).unwrap_err());
    assert_decode_error(build_onnx(&read_fixture("lenet.arch.json")).unwrap_err());
}

#[test]
fn onnx_length_prefix_claiming_100_gb_fails_before_allocating() {
    // Field 7 (graph), wire type 2, then a varint length of 100 GB and a few bytes.
    let mut bytes = vec![(7 << 3) | 2];
    let mut length: u64 = 100 << 30;
    while length >= 0x80 {
        bytes.push((length as u8) | 0x80);
        length >>= 7;
    }
    bytes.push(length as u8);
    bytes.extend_from_slice(&[0; 16]);
    assert_decode_error(build_onnx(&bytes).unwrap_err());
}

#[test]
fn onnx_initializer_claiming_100_gb_is_a_tensor_size_error() {
    let error = build_edited_lenet(|graph| {
        initializer_named(graph, "features.0.weight").dims = vec![250_000, 100_000];
    });
    assert!(
        matches!(&error, LayersError::TensorSize { name, dims, .. }
            if name == "features.0.weight" && dims == &[250_000, 100_000]),
        "{error:?}"
    );
}

#[test]
fn onnx_unsupported_element_type_names_the_tensor() {
    let error = build_edited_lenet(|graph| {
        initializer_named(graph, "features.0.weight").data_type = 10; // FLOAT16
    });
    assert!(
        matches!(&error, LayersError::UnsupportedDataType { name, data_type, .. }
            if name == "features.0.weight" && data_type.contains("FLOAT16")),
        "{error:?}"
    );
}

#[test]
fn onnx_weight_of_the_wrong_shape_names_tensor_expected_and_found() {
    // Six bias values, stored as [3, 2].
    let error = build_edited_lenet(|graph| {
        initializer_named(graph, "features.0.bias").dims = vec![3, 2];
    });
    assert!(
        matches!(&error, LayersError::WeightShape { tensor, expected, found, .. }
            if tensor == "features.0.bias" && expected.starts_with("[6]") && found == &[3, 2]),
        "{error:?}"
    );
    assert!(error.to_string().contains("features.0.bias"), "{error}");
}

#[test]
fn onnx_missing_weight_names_the_node_and_the_input() {
    let error = build_edited_lenet(|graph| {
        graph.initializer.retain(|t| t.name != "features.3.weight");
    });
    assert!(
        matches!(&error, LayersError::MissingInput { node, input, .. }
            if node == "/features/features.3/Conv" && input == "features.3.weight"),
        "{error:?}"
    );
}

#[test]
fn unknown_onnx_op_names_op_node_opset_and_the_supported_ones() {
    let error = build_edited_lenet(|graph| {
        node_named(graph, "/features/features.1/Relu").op_type = "Gelu".into();
    });
    assert!(
        matches!(&error, LayersError::UnsupportedOp { op_type, node, opset: 13, supported, .. }
            if op_type == "Gelu"
                && node == "/features/features.1/Relu"
                && supported.contains(&"Conv")),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("Gelu") && message.contains("Conv, Relu"),
        "{message}"
    );
}

#[test]
fn cyclic_onnx_graph_names_a_node_on_the_cycle() {
    // The first convolution reads the ReLU after it.
    let error = build_edited_lenet(|graph| {
        node_named(graph, "/features/features.0/Conv").input[0] =
            "/features/features.1/Relu_output_0".into();
    });
    assert!(
        matches!(&error, LayersError::Cycle { node, .. }
            if node == "/features/features.0/Conv" || node == "/features/features.1/Relu"),
        "{error:?}"
    );
}

#[test]
fn onnx_model_without_flatten_does_not_chain() {
    // The Gemm reads the pooled [N, 16, 4, 4] features directly.
    let error = build_edited_lenet(|graph| {
        node_named(graph, "/classifier/classifier.0/Gemm").input[0] =
            "/features/features.5/MaxPool_output_0".into();
    });
    assert!(
        matches!(&error, LayersError::UnsupportedNode { node, reason, .. }
            if node == "/classifier/classifier.0/Gemm" && reason.contains("[1, 16, 4, 4]")),
        "{error:?}"
    );
}

#[test]
fn onnx_weight_computed_by_the_graph_is_not_constant() {
    let error = build_edited_lenet(|graph| {
        node_named(graph, "/features/features.3/Conv").input[1] =
            "/features/features.2/MaxPool_output_0".into();
    });
    assert!(
        matches!(&error, LayersError::NotConstant { node, input, .. }
            if node == "/features/features.3/Conv"
                && input == "/features/features.2/MaxPool_output_0"),
        "{error:?}"
    );
}

#[test]
fn onnx_opset_out_of_range_is_unsupported() {
    let mut model = proto::ModelProto::decode(read_fixture("lenet.onnx").as_slice()).unwrap();
    model.opset_import[0].version = 99;
    let error = build_onnx(&model.encode_to_vec()).unwrap_err();
    assert!(
        matches!(error, LayersError::UnsupportedOpset { opset: 99, .. }),
        "{error:?}"
    );
}

// ---------- safetensors + JSON ----------

fn lenet_arch() -> String {
    String::from_utf8(read_fixture("lenet.arch.json")).unwrap()
}

/// Builds the lenet architecture `arch` on safetensors `weights`.
fn build_st(weights: &[u8], arch: &str) -> Result<Model<f32>, LayersError> {
    build_safetensors_model(weights, "broken.safetensors", arch, "broken.arch.json")
}

/// lenet.safetensors with its JSON header changed by `edit` (the data is kept as it is).
fn edited_lenet_weights(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let bytes = read_fixture("lenet.safetensors");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    edit(header.as_object_mut().unwrap());
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + header_len..]);
    out
}

/// The lenet architecture with its layer list changed by `edit`.
fn edited_lenet_arch(edit: impl FnOnce(&mut Vec<Value>)) -> String {
    let mut arch: Value = serde_json::from_str(&lenet_arch()).unwrap();
    edit(arch["layers"].as_array_mut().unwrap());
    arch.to_string()
}

#[track_caller]
fn assert_safetensors_error(error: LayersError) {
    assert!(
        matches!(&error, LayersError::Safetensors { source_name, .. }
            if source_name == "broken.safetensors"),
        "{error:?}"
    );
}

#[test]
fn the_unedited_fixture_builds() {
    // The helpers below change only what each case says.
    let weights = edited_lenet_weights(|_| {});
    build_st(&weights, &lenet_arch()).unwrap();
    build_st(&weights, &edited_lenet_arch(|_| {})).unwrap();
}

#[test]
fn truncated_safetensors_is_an_error() {
    let bytes = read_fixture("lenet.safetensors");
    for length in [0, 4, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        assert_safetensors_error(build_st(&bytes[..length], &lenet_arch()).unwrap_err());
    }
}

#[test]
fn safetensors_header_claiming_100_gb_fails_before_allocating() {
    let tiny = |header: Value, data: &[u8]| {
        let header = header.to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    };
    // A 100 GB tensor (shape) over 8 bytes of data.
    let huge_shape = tiny(
        json!({"w": {"dtype": "F32", "shape": [250_000, 100_000], "data_offsets": [0, 8]}}),
        &[0; 8],
    );
    // 100 GB of data (offsets) in an 8-byte body.
    let huge_offsets = tiny(
        json!({"w": {
            "dtype": "F32",
            "shape": [25_000_000_000u64],
            "data_offsets": [0, 100_000_000_000u64],
        }}),
        &[0; 8],
    );
    // A header length of 100 GB.
    let mut huge_header = (100u64 << 30).to_le_bytes().to_vec();
    huge_header.extend_from_slice(b"{}");
    for bytes in [huge_shape, huge_offsets, huge_header] {
        assert_safetensors_error(build_st(&bytes, &lenet_arch()).unwrap_err());
    }
}

#[test]
fn safetensors_weight_of_the_wrong_shape_names_tensor_expected_and_found() {
    // Same element count, so the file itself is valid: [16, 6, 5, 5] stored as [16, 5, 6, 5].
    let weights = edited_lenet_weights(|h| {
        h["features.3.weight"]["shape"] = json!([16, 5, 6, 5]);
    });
    let error = build_st(&weights, &lenet_arch()).unwrap_err();
    assert!(
        matches!(&error, LayersError::WeightShape { tensor, expected, found, .. }
            if tensor == "features.3.weight"
                && expected.starts_with("[out, 6, kH, kW]")
                && found == &[16, 5, 6, 5]),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("[16, 5, 6, 5]") && message.contains("expected [out, 6"),
        "{message}"
    );
}

#[test]
fn safetensors_weight_of_an_unread_dtype_is_a_weight_dtype_error() {
    // I32 has the size of F32, so the file stays valid.
    let weights = edited_lenet_weights(|h| {
        h["classifier.2.weight"]["dtype"] = json!("I32");
    });
    let error = build_st(&weights, &lenet_arch()).unwrap_err();
    assert!(
        matches!(&error, LayersError::WeightDType { tensor, dtype, .. }
            if tensor == "classifier.2.weight" && dtype == "I32"),
        "{error:?}"
    );
}

#[test]
fn missing_weight_names_the_tensor() {
    // Renamed in the file ...
    let weights = edited_lenet_weights(|h| {
        let entry = h.remove("features.3.weight").unwrap();
        h.insert("features.3.weights".into(), entry);
    });
    let error = build_st(&weights, &lenet_arch()).unwrap_err();
    assert!(
        matches!(&error, LayersError::MissingWeight { tensor, .. }
            if tensor == "features.3.weight"),
        "{error:?}"
    );
    // ... or asked for by the architecture under a name the file does not have.
    let arch = edited_lenet_arch(|layers| layers[3]["name"] = json!("features.9"));
    let error = build_st(&read_fixture("lenet.safetensors"), &arch).unwrap_err();
    assert!(
        matches!(&error, LayersError::MissingWeight { tensor, .. }
            if tensor == "features.9.weight"),
        "{error:?}"
    );
}

#[test]
fn unknown_json_layer_type_names_the_layer() {
    let arch = edited_lenet_arch(|layers| {
        layers[1] = json!({"type": "gelu", "id": "act1"});
    });
    let error = build_st(&read_fixture("lenet.safetensors"), &arch).unwrap_err();
    assert!(
        matches!(&error, LayersError::Arch { layer, reason, .. }
            if layer == "act1" && reason.contains("unknown layer type \"gelu\"")),
        "{error:?}"
    );
}

#[test]
fn json_that_is_not_json_is_an_arch_error() {
    for text in ["", "{ \"format\": ", "layers: [conv2d]", "\u{feff}[]]"] {
        let error = build_st(&read_fixture("lenet.safetensors"), text).unwrap_err();
        assert!(
            matches!(&error, LayersError::Arch { source_name, layer, reason }
                if source_name == "broken.arch.json"
                    && layer == "<file>"
                    && reason.contains("invalid JSON")),
            "{text:?}: {error:?}"
        );
    }
    // Valid JSON, but not an architecture.
    for arch in [
        json!([1, 2]),
        json!({"format": "smoothgrad-arch/2"}),
        json!({"format": "smoothgrad-arch/1", "input": [1, 28, 28], "layers": []}),
    ] {
        let error = build_st(&read_fixture("lenet.safetensors"), &arch.to_string()).unwrap_err();
        assert!(
            matches!(&error, LayersError::Arch { layer, .. } if layer == "<file>"),
            "{arch}: {error:?}"
        );
    }
}

#[test]
fn layer_input_referencing_a_missing_id_names_layer_and_id() {
    let arch = edited_lenet_arch(|layers| {
        layers[3]["inputs"] = json!(["pool9"]);
    });
    let error = build_st(&read_fixture("lenet.safetensors"), &arch).unwrap_err();
    assert!(
        matches!(&error, LayersError::Arch { layer, reason, .. }
            if layer == "features.3" && reason.contains("\"pool9\"")),
        "{error:?}"
    );
    // An empty input list is an error too, not an index out of bounds.
    let arch = edited_lenet_arch(|layers| layers[1]["inputs"] = json!([]));
    let error = build_st(&read_fixture("lenet.safetensors"), &arch).unwrap_err();
    assert!(
        matches!(&error, LayersError::Arch { layer, .. } if layer == "#1"),
        "{error:?}"
    );
}

#[test]
fn linear_after_conv_without_flatten_does_not_chain() {
    // Without the flatten, the first linear layer sees [1, 16, 4, 4]: its weight [120, 256]
    // does not fit the last axis (4).
    let arch = edited_lenet_arch(|layers| {
        layers.retain(|l| l["type"] != "flatten");
    });
    let error = build_st(&read_fixture("lenet.safetensors"), &arch).unwrap_err();
    assert!(
        matches!(&error, LayersError::WeightShape { tensor, expected, found, .. }
            if tensor == "classifier.0.weight"
                && expected.contains("[1, 16, 4, 4]")
                && found == &[120, 256]),
        "{error:?}"
    );
}

#[test]
fn residual_add_of_different_shapes_does_not_chain() {
    // ResNet's second block without its projection shortcut adds [32, 16, 16] to [16, 32, 32].
    let arch = std::fs::read_to_string(fixture("resnet.arch.json")).unwrap();
    let mut arch: Value = serde_json::from_str(&arch).unwrap();
    for layer in arch["layers"].as_array_mut().unwrap() {
        if layer["id"] == "layer2.add" {
            layer["inputs"] = json!(["layer2.bn2", "layer1.out"]);
        }
    }
    let error = build_safetensors_model(
        &read_fixture("resnet.safetensors"),
        "resnet.safetensors",
        &arch.to_string(),
        "resnet.arch.json",
    )
    .unwrap_err();
    assert!(
        matches!(&error, LayersError::Graph { node, reason, .. }
            if node == "layer2.add"
                && reason.contains("[1, 32, 16, 16]")
                && reason.contains("[1, 16, 32, 32]")),
        "{error:?}"
    );
}

#[test]
fn missing_files_are_io_errors_naming_the_path() {
    let missing = fixture("no-such-model.safetensors");
    let error = load_safetensors_model(&missing, &fixture("lenet.arch.json")).unwrap_err();
    assert!(
        matches!(&error, LayersError::Io { path, .. } if path == &missing),
        "{error:?}"
    );
    let missing = fixture("no-such-model.onnx");
    let error = smoothgrad_layers::onnx::load_onnx_model(&missing).unwrap_err();
    assert!(
        matches!(&error, LayersError::Io { path, .. } if path == &missing),
        "{error:?}"
    );
}

// ---------- numerical faults ----------

/// A linear layer without bias.
fn linear(w: Vec<f32>, dims: &[usize]) -> smoothgrad_layers::Layer<f32> {
    smoothgrad_layers::Layer::Linear {
        weight: smoothgrad_autodiff::Tensor::from_vec(w, dims).unwrap(),
        bias: None,
    }
}

/// `x[N, 3]` -> `hidden` (Linear 3 -> 2, small weights) -> ReLU -> `logits` (Linear 2 -> 2 with
/// a row of weights 1e30).
fn overflowing_model() -> Model<f32> {
    use smoothgrad_layers::{Layer, Node};
    let nodes = vec![
        Node {
            name: "hidden".into(),
            layer: linear(vec![0.5; 6], &[2, 3]),
            inputs: vec![0],
        },
        Node {
            name: "act".into(),
            layer: Layer::Relu,
            inputs: vec![1],
        },
        Node {
            name: "logits".into(),
            layer: linear(vec![1e30, 1e30, 1.0, 1.0], &[2, 2]),
            inputs: vec![2],
        },
    ];
    Model::new("overflow", &[3], nodes, 3).unwrap()
}

fn forward(model: &Model<f32>, x: Vec<f32>) -> Result<Vec<f32>, LayersError> {
    let mut tape = smoothgrad_autodiff::Tape::new();
    let n = x.len() / 3;
    let x = tape.var(smoothgrad_autodiff::Tensor::from_vec(x, &[n, 3]).unwrap());
    Ok(model.forward(&mut tape, &x)?.value().as_slice().to_vec())
}

#[test]
fn overflowing_logits_name_the_layer_where_they_first_appear() {
    let model = overflowing_model();
    // hidden = 1.5e10 per unit; logits[0] = 3e40 (past f32::MAX), logits[1] = 3e10.
    let error = forward(&model, vec![1e10; 6]).unwrap_err();
    assert!(
        matches!(&error, LayersError::NonFinite { layer, kind, count: 2, total: 4 } if layer == "logits" && kind == "Linear"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "non-finite value (NaN or ±Inf) first produced by layer 'logits' (Linear): 2 of 4 values"
    );
    // A NaN in the input is reported by the first layer that reads it, not later ones.
    let error = forward(&model, vec![1.0, f32::NAN, 1.0]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "non-finite value (NaN or ±Inf) first produced by layer 'hidden' (Linear): 2 of 2 values"
    );
}

/// Layers whose output values are input values (ReLU, max pool, flatten…) skip the finite check
/// after a checked layer — but not on the model's input, which nothing checked before them.
#[test]
fn a_non_finite_input_read_by_a_relu_is_named_by_the_relu() {
    use smoothgrad_layers::{Layer, Node};
    let nodes = vec![
        Node {
            name: "first-act".into(),
            layer: Layer::Relu,
            inputs: vec![0],
        },
        Node {
            name: "logits".into(),
            layer: linear(vec![1.0; 6], &[2, 3]),
            inputs: vec![1],
        },
    ];
    let model = Model::new("relu-first", &[3], nodes, 2).unwrap();
    let error = forward(&model, vec![1.0, f32::INFINITY, 1.0]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "non-finite value (NaN or ±Inf) first produced by layer 'first-act' (Relu): 1 of 3 values"
    );
}

#[test]
fn finite_models_are_unaffected_by_the_check() {
    let logits = forward(&overflowing_model(), vec![1e-20, 2e-20, 3e-20]).unwrap();
    // hidden = 0.5 * 6e-20 = 3e-20 per unit, logits = [6e10, 6e-20].
    assert!((logits[0] - 6e10).abs() < 1e4, "{logits:?}");
    assert!((logits[1] - 6e-20).abs() < 1e-25, "{logits:?}");
}
