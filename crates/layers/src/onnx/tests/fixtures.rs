//! The fixtures made by `tests/fixtures/models/make_models.py` decode into the graphs PyTorch exported.

use super::*;

fn load_fixture(name: &str) -> OnnxGraph {
    let path = fixture_path(&format!("{name}.onnx"));
    load_onnx_file(&path).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn count_op(graph: &OnnxGraph, op_type: &str) -> usize {
    graph
        .nodes
        .iter()
        .filter(|node| node.op_type == op_type)
        .count()
}

/// The tensor an input of `node` reads: an initializer, or the value of the `Constant` node
/// producing it.
fn constant_input<'a>(graph: &'a OnnxGraph, node: &OnnxNode, position: usize) -> &'a OnnxTensor {
    let name = &node.inputs[position];
    graph.initializers.get(name).unwrap_or_else(|| {
        let constant = graph
            .nodes
            .iter()
            .find(|n| n.op_type == "Constant" && n.outputs[0] == *name)
            .unwrap();
        attribute(constant, "value").as_tensor().unwrap()
    })
}

/// The f32 values of `name` in a safetensors file, read by hand: an 8-byte little-endian header
/// length, a JSON header with `"name":{"dtype":"F32","shape":[..],"data_offsets":[begin,end]}`.
fn safetensors_f32(file: &str, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture_path(file)).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    let entry = &header[header.find(&format!("\"{name}\":")).unwrap()..];
    let offsets = &entry[entry.find("\"data_offsets\":[").unwrap() + 16..];
    let offsets: Vec<usize> = offsets[..offsets.find(']').unwrap()]
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let data = &bytes[8 + header_len + offsets[0]..8 + header_len + offsets[1]];
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Every node input is defined before the node (the order is topological).
fn assert_topological(graph: &OnnxGraph) {
    let mut defined: std::collections::HashSet<&str> =
        graph.initializers.keys().map(String::as_str).collect();
    defined.extend(graph.inputs.iter().map(|input| input.name.as_str()));
    for node in &graph.nodes {
        for input in node.inputs.iter().filter(|input| !input.is_empty()) {
            assert!(
                defined.contains(input.as_str()),
                "`{}` reads `{input}` before it is defined",
                node.name
            );
        }
        defined.extend(node.outputs.iter().map(String::as_str));
    }
}

fn assert_image_io(graph: &OnnxGraph, channels: usize, size: usize) {
    assert_eq!(graph.inputs.len(), 1);
    assert_eq!(graph.inputs[0].name, "input");
    assert_eq!(
        graph.inputs[0].dims,
        vec![None, Some(channels), Some(size), Some(size)]
    );
    assert_eq!(graph.outputs, vec!["logits".to_owned()]);
    assert_eq!(graph.value_info["logits"].dims, vec![None, Some(10)]);
    assert_topological(graph);
}

#[test]
fn lenet_fixture_decodes_with_constant_reshape_shape() {
    let graph = load_fixture("lenet");
    assert_eq!(graph.opset, 13);
    assert_image_io(&graph, 1, 28);
    assert_eq!(
        op_types(&graph),
        [
            "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Constant", "Reshape", "Gemm",
            "Relu", "Gemm", "Relu", "Gemm"
        ]
    );
    assert_eq!(initializer(&graph, "features.0.weight").dims, [6, 1, 5, 5]);
    assert_eq!(initializer(&graph, "features.3.weight").dims, [16, 6, 5, 5]);
    assert_eq!(initializer(&graph, "classifier.0.weight").dims, [120, 256]);
    assert_eq!(initializer(&graph, "classifier.4.bias").dims, [10]);
    let reshape = graph
        .nodes
        .iter()
        .find(|node| node.op_type == "Reshape")
        .unwrap();
    let shape = constant_input(&graph, reshape, 1);
    assert_eq!(
        (shape.dims.as_slice(), shape.as_i64()),
        ([2usize].as_slice(), Some([-1i64, 256].as_slice()))
    );
    let pool = graph
        .nodes
        .iter()
        .find(|node| node.op_type == "MaxPool")
        .unwrap();
    assert_eq!(
        attribute(pool, "kernel_shape").as_ints(),
        Some([2i64, 2].as_slice())
    );
    // raw_data is decoded bit-exactly: the ONNX weights equal the PyTorch state_dict.
    for name in ["features.0.weight", "classifier.4.bias"] {
        assert_eq!(
            initializer(&graph, name).as_f32().unwrap(),
            safetensors_f32("lenet.safetensors", name),
            "{name}"
        );
    }
}

#[test]
fn vgg_fixture_from_dynamo_exporter_decodes() {
    let graph = load_fixture("vgg");
    assert_eq!(graph.opset, 18);
    assert_image_io(&graph, 3, 32);
    assert_eq!(
        (
            count_op(&graph, "Conv"),
            count_op(&graph, "MaxPool"),
            count_op(&graph, "Gemm")
        ),
        (5, 3, 2)
    );
    assert_eq!(initializer(&graph, "features.0.weight").dims, [16, 3, 3, 3]);
    assert_eq!(initializer(&graph, "classifier.0.weight").dims, [128, 1024]);
    let reshape = graph
        .nodes
        .iter()
        .find(|node| node.op_type == "Reshape")
        .unwrap();
    assert_eq!(
        constant_input(&graph, reshape, 1).as_i64(),
        Some([-1i64, 1024].as_slice())
    );
    let name = "classifier.0.weight";
    assert_eq!(
        initializer(&graph, name).as_f32().unwrap(),
        safetensors_f32("vgg.safetensors", name)
    );
}

#[test]
fn resnet_fixture_keeps_batch_norm_and_residual_adds() {
    let graph = load_fixture("resnet");
    assert_eq!(graph.opset, 17);
    assert_image_io(&graph, 3, 32);
    assert_eq!(
        (
            count_op(&graph, "BatchNormalization"),
            count_op(&graph, "Add")
        ),
        (6, 2)
    );
    assert_eq!(count_op(&graph, "GlobalAveragePool"), 1);
    assert_eq!(
        initializer(&graph, "layer2.conv1.weight").dims,
        [32, 16, 3, 3]
    );
    assert_eq!(
        initializer(&graph, "layer2.shortcut.0.weight").dims,
        [32, 16, 1, 1]
    );
    assert_eq!(
        initializer(&graph, "layer2.shortcut.1.running_var").dims,
        [32]
    );
    let batch_norm = graph
        .nodes
        .iter()
        .find(|node| node.op_type == "BatchNormalization")
        .unwrap();
    assert_eq!(batch_norm.inputs.len(), 5);
    let epsilon = attribute(batch_norm, "epsilon").as_float().unwrap();
    assert!((epsilon - 1e-5).abs() < 1e-9, "epsilon {epsilon}");
    let name = "stem.1.running_mean";
    assert_eq!(
        initializer(&graph, name).as_f32().unwrap(),
        safetensors_f32("resnet.safetensors", name)
    );
}

#[test]
fn squeezenet_fixture_has_ceil_mode_pools_and_concats() {
    let graph = load_fixture("squeezenet");
    assert_eq!(graph.opset, 13);
    assert_image_io(&graph, 3, 32);
    assert_eq!(
        (
            count_op(&graph, "Concat"),
            count_op(&graph, "MaxPool"),
            count_op(&graph, "AveragePool")
        ),
        (2, 2, 1)
    );
    for node in graph.nodes.iter().filter(|node| node.op_type == "MaxPool") {
        assert_eq!(
            attribute(node, "ceil_mode").as_int(),
            Some(1),
            "{}",
            node.name
        );
        assert_eq!(
            attribute(node, "strides").as_ints(),
            Some([2i64, 2].as_slice())
        );
    }
    for node in graph.nodes.iter().filter(|node| node.op_type == "Concat") {
        assert_eq!(attribute(node, "axis").as_int(), Some(1));
    }
    assert_eq!(
        initializer(&graph, "features.3.expand3x3.weight").dims,
        [16, 8, 3, 3]
    );
}

#[test]
fn mobilenet_fixture_has_depthwise_convs_and_clip_constants() {
    let graph = load_fixture("mobilenet");
    assert_eq!(graph.opset, 18);
    assert_image_io(&graph, 3, 32);
    assert_eq!(
        (
            count_op(&graph, "Clip"),
            count_op(&graph, "BatchNormalization"),
            count_op(&graph, "Conv")
        ),
        (7, 7, 7)
    );
    let groups: Vec<i64> = graph
        .nodes
        .iter()
        .filter(|node| node.op_type == "Conv")
        .map(|node| {
            node.attributes
                .get("group")
                .and_then(Attribute::as_int)
                .unwrap_or(1)
        })
        .collect();
    assert_eq!(groups, [1, 16, 1, 32, 1, 64, 1]);
    assert_eq!(initializer(&graph, "features.3.weight").dims, [16, 1, 3, 3]);
    let clip = graph
        .nodes
        .iter()
        .find(|node| node.op_type == "Clip")
        .unwrap();
    let (min, max) = (
        constant_input(&graph, clip, 1),
        constant_input(&graph, clip, 2),
    );
    assert_eq!(
        (min.dims.len(), min.as_f32(), max.as_f32()),
        (0, Some([0.0f32].as_slice()), Some([6.0f32].as_slice()))
    );
}

#[test]
fn check_supported_accepts_every_fixture() {
    for name in ["lenet", "vgg", "resnet", "squeezenet", "mobilenet"] {
        check_supported(&load_fixture(name)).unwrap();
    }
}
