//! Valid models built with the `proto` structs: tensors, attributes, shapes and node order convert
//! faithfully.

use super::proto::{
    AttributeProto, TensorShapeDimension, TensorShapeProto, TypeProto, TypeProtoTensor,
    attribute_type,
};
use super::*;

#[test]
fn small_model_round_trips() {
    let graph = read(&small_model()).unwrap();
    assert_eq!(
        (graph.name.as_str(), graph.opset, graph.ir_version),
        ("test", 13, 8)
    );
    assert_eq!(
        graph.inputs,
        vec![ValueInfo {
            name: "x".to_owned(),
            dims: vec![]
        }]
    );
    assert_eq!(op_types(&graph), ["Add", "Relu"]);
    let bias = initializer(&graph, "bias");
    assert_eq!(
        (bias.dims.as_slice(), bias.as_f32()),
        (
            [2usize, 3].as_slice(),
            Some([1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].as_slice())
        )
    );
}

#[test]
fn nodes_out_of_order_are_sorted_stably() {
    // Written consumer-first; the two independent Relus keep their relative file order.
    let m = model(
        vec![
            node("Add", "add", &["a", "b"], &["y"]),
            node("Relu", "relu_b", &["x"], &["b"]),
            node("Relu", "relu_a", &["x"], &["a"]),
        ],
        vec![],
        &["x"],
        &["y"],
    );
    let names: Vec<String> = read(&m)
        .unwrap()
        .nodes
        .into_iter()
        .map(|node| node.name)
        .collect();
    assert_eq!(names, ["relu_b", "relu_a", "add"]);
}

#[test]
fn unnamed_nodes_get_op_type_and_index_names() {
    let m = model(
        vec![node("Relu", "", &["x"], &["y"])],
        vec![],
        &["x"],
        &["y"],
    );
    assert_eq!(read(&m).unwrap().nodes[0].name, "Relu#0");
}

#[test]
fn float_data_double_and_integer_tensors_convert() {
    let float_data = TensorProto {
        name: "t".to_owned(),
        dims: vec![2],
        data_type: data_type::FLOAT,
        float_data: vec![0.5, -1.5],
        ..Default::default()
    };
    assert_eq!(
        read(&model_with_initializer(float_data))
            .unwrap()
            .initializers["t"]
            .as_f32(),
        Some([0.5f32, -1.5].as_slice())
    );

    let doubles = [0.1f64, -2.5, 1e-3];
    let double_raw = TensorProto {
        name: "t".to_owned(),
        dims: vec![3],
        data_type: data_type::DOUBLE,
        raw_data: doubles.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    };
    let double_typed = TensorProto {
        raw_data: vec![],
        double_data: doubles.to_vec(),
        ..double_raw.clone()
    };
    let expected: Vec<f32> = doubles.iter().map(|&v| v as f32).collect();
    for tensor in [double_raw, double_typed] {
        assert_eq!(
            read(&model_with_initializer(tensor)).unwrap().initializers["t"].as_f32(),
            Some(expected.as_slice())
        );
    }

    let int64_raw = TensorProto {
        name: "t".to_owned(),
        dims: vec![2],
        data_type: data_type::INT64,
        raw_data: [-1i64, 1 << 40]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        ..Default::default()
    };
    let int32_typed = TensorProto {
        name: "t".to_owned(),
        dims: vec![2],
        data_type: data_type::INT32,
        int32_data: vec![-7, 9],
        ..Default::default()
    };
    let int64 = read(&model_with_initializer(int64_raw)).unwrap();
    assert_eq!(
        int64.initializers["t"].data,
        TensorData::Int64(vec![-1, 1 << 40])
    );
    let int32 = read(&model_with_initializer(int32_typed)).unwrap();
    assert_eq!(int32.initializers["t"].data, TensorData::Int64(vec![-7, 9]));
}

#[test]
fn attributes_of_each_kind_decode() {
    let attributes = vec![
        AttributeProto {
            name: "f".to_owned(),
            r#type: attribute_type::FLOAT,
            f: 0.25,
            ..Default::default()
        },
        AttributeProto {
            name: "i".to_owned(),
            r#type: attribute_type::INT,
            i: -3,
            ..Default::default()
        },
        AttributeProto {
            name: "fs".to_owned(),
            r#type: attribute_type::FLOATS,
            floats: vec![1.0, 2.0],
            ..Default::default()
        },
        AttributeProto {
            name: "is".to_owned(),
            r#type: attribute_type::INTS,
            ints: vec![1, 2, 3],
            ..Default::default()
        },
        AttributeProto {
            name: "s".to_owned(),
            r#type: attribute_type::STRING,
            s: b"NOTSET".to_vec(),
            ..Default::default()
        },
        // No type: inferred from the field in use, as pre-IR-2 files need.
        AttributeProto {
            name: "untyped".to_owned(),
            ints: vec![4],
            ..Default::default()
        },
        AttributeProto {
            name: "t".to_owned(),
            r#type: attribute_type::TENSOR,
            t: Some(raw_f32_tensor("", &[], &[6.0])),
            ..Default::default()
        },
    ];
    let m = model(
        vec![NodeProto {
            attribute: attributes,
            ..node("Identity", "n", &["x"], &["y"])
        }],
        vec![],
        &["x"],
        &["y"],
    );
    let graph = read(&m).unwrap();
    let n = &graph.nodes[0];
    assert_eq!(attribute(n, "f"), &Attribute::Float(0.25));
    assert_eq!(attribute(n, "i"), &Attribute::Int(-3));
    assert_eq!(attribute(n, "fs"), &Attribute::Floats(vec![1.0, 2.0]));
    assert_eq!(attribute(n, "is"), &Attribute::Ints(vec![1, 2, 3]));
    assert_eq!(attribute(n, "s"), &Attribute::String("NOTSET".to_owned()));
    assert_eq!(attribute(n, "untyped"), &Attribute::Ints(vec![4]));
    assert_eq!(
        attribute(n, "t"),
        &Attribute::Tensor(OnnxTensor {
            dims: vec![],
            data: TensorData::Float(vec![6.0])
        })
    );
}

#[test]
fn empty_optional_inputs_are_allowed() {
    let m = model(
        vec![node("Clip", "clip", &["x", "", "max"], &["y"])],
        vec![raw_f32_tensor("max", &[], &[6.0])],
        &["x"],
        &["y"],
    );
    assert_eq!(read(&m).unwrap().nodes[0].inputs, ["x", "", "max"]);
}

#[test]
fn graph_inputs_that_are_initializers_are_not_inputs() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().input.push(value("bias"));
    let graph = read(&m).unwrap();
    assert_eq!(
        graph
            .inputs
            .iter()
            .map(|input| input.name.as_str())
            .collect::<Vec<_>>(),
        ["x"]
    );
}

#[test]
fn symbolic_dims_are_none() {
    let dim = |value: Option<i64>, param: Option<&str>| TensorShapeDimension {
        dim_value: value,
        dim_param: param.map(str::to_owned),
    };
    let mut m = small_model();
    m.graph.as_mut().unwrap().input[0].r#type = Some(TypeProto {
        tensor_type: Some(TypeProtoTensor {
            elem_type: data_type::FLOAT,
            shape: Some(TensorShapeProto {
                dim: vec![
                    dim(None, Some("batch")),
                    dim(Some(2), None),
                    dim(Some(3), None),
                ],
            }),
        }),
    });
    assert_eq!(
        read(&m).unwrap().inputs[0].dims,
        vec![None, Some(2), Some(3)]
    );
}
