//! The ONNX → layers mapping on small graphs built with the `proto` structs: each tricky
//! operator is run through the built model and compared with the autodiff ops applied directly,
//! and each misuse fails with its specific error.

use smoothgrad_autodiff::{Conv2dParams, Pool2dParams, Tape, Tensor, Var};

use super::proto::{
    AttributeProto, TensorShapeDimension, TensorShapeProto, TypeProto, TypeProtoTensor,
    attribute_type,
};
use super::*;
use crate::model::{Layer, Model};

/// A graph input `x` of shape [batch, dims...] with a symbolic batch.
fn shaped_input(dims: &[i64]) -> ValueInfoProto {
    let dim = |value: Option<i64>| TensorShapeDimension {
        dim_value: value,
        dim_param: value.is_none().then(|| "batch".to_owned()),
    };
    let mut all = vec![dim(None)];
    all.extend(dims.iter().map(|&d| dim(Some(d))));
    ValueInfoProto {
        name: "x".to_owned(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: all }),
            }),
        }),
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: attribute_type::INTS,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: attribute_type::INT,
        i: value,
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: attribute_type::FLOAT,
        f: value,
        ..Default::default()
    }
}

fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: attribute_type::STRING,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn with(node: NodeProto, attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        attribute: attributes,
        ..node
    }
}

fn int64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: vec![values.len() as i64],
        data_type: data_type::INT64,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// A `Constant` node producing `tensor` as `output`.
fn constant(output: &str, tensor: TensorProto) -> NodeProto {
    let value = AttributeProto {
        name: "value".to_owned(),
        r#type: attribute_type::TENSOR,
        t: Some(tensor),
        ..Default::default()
    };
    with(node("Constant", output, &[], &[output]), vec![value])
}

/// Seeded values as a raw f32 initializer, returned with the same values as an engine tensor.
fn weight(name: &str, dims: &[usize], seed: u64) -> (TensorProto, Tensor<f32>) {
    let t = Tensor::<f32>::randn(dims, seed).unwrap();
    let dims_i64: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    (raw_f32_tensor(name, &dims_i64, t.as_slice()), t)
}

/// The model of a graph from input `x` ([batch, input_dims...]) to output `y`, at `opset`.
fn build_graph(
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    input_dims: &[i64],
    opset: i64,
) -> Result<Model<f32>> {
    let mut m = model(nodes, initializers, &[], &["y"]);
    m.opset_import[0].version = opset;
    m.graph.as_mut().unwrap().input = vec![shaped_input(input_dims)];
    build_model(&read(&m)?)
}

/// A batch of two seeded inputs for a model.
fn input(model: &Model<f32>, seed: u64) -> Tensor<f32> {
    let dims = [&[2], model.input_dims()].concat();
    Tensor::randn(&dims, seed).unwrap()
}

fn forward(model: &Model<f32>, x: &Tensor<f32>) -> Tensor<f32> {
    let mut tape = Tape::new();
    let x = tape.var(x.clone());
    model.forward(&mut tape, &x).unwrap().into_value()
}

#[track_caller]
fn assert_close(got: &Tensor<f32>, want: &Tensor<f32>) {
    assert_eq!(got.dims(), want.dims());
    for (i, (g, w)) in got.as_slice().iter().zip(want.as_slice()).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "element {i}: {g} vs {w}"
        );
    }
}

/// Applies `f` to constants on a scratch tape: the reference computation.
fn direct(f: impl FnOnce(&mut Tape<f32>) -> smoothgrad_autodiff::Result<Var<f32>>) -> Tensor<f32> {
    f(&mut Tape::new()).unwrap().into_value()
}

fn k(t: &Tensor<f32>) -> Var<f32> {
    Var::constant(t.clone())
}

#[test]
fn gemm_folds_alpha_and_beta_with_trans_b_0_and_1() {
    let (_, b) = weight("B", &[3, 4], 1);
    let (c_proto, c) = weight("C", &[4], 2);
    // transB = 0 reads B as [in, out]; transB = 1 as [out, in], so it gets Bᵀ.
    let b_transposed: Vec<f32> = (0..4)
        .flat_map(|o| (0..3).map(move |i| (o, i)))
        .map(|(o, i)| b.as_slice()[i * 4 + o])
        .collect();
    for (trans_b, b_proto) in [
        (0, raw_f32_tensor("B", &[3, 4], b.as_slice())),
        (1, raw_f32_tensor("B", &[4, 3], &b_transposed)),
    ] {
        let gemm = with(
            node("Gemm", "fc", &["x", "B", "C"], &["y"]),
            vec![
                int("transB", trans_b),
                float("alpha", 0.5),
                float("beta", 2.0),
            ],
        );
        let m = build_graph(vec![gemm], vec![b_proto, c_proto.clone()], &[3], 13).unwrap();
        assert!(matches!(m.nodes()[0].layer, Layer::Linear { .. }));
        let x = input(&m, 3);
        let want = direct(|t| {
            let xb = t.matmul(&k(&x), &k(&b))?;
            let scaled = t.mul_scalar(&xb, 0.5)?;
            let bias = t.mul_scalar(&k(&c), 2.0)?;
            t.add(&scaled, &bias)
        });
        assert_close(&forward(&m, &x), &want);
    }
}

#[test]
fn gemm_with_trans_a_is_an_attribute_error() {
    let (b, _) = weight("B", &[3, 4], 1);
    let gemm = with(
        node("Gemm", "fc", &["x", "B"], &["y"]),
        vec![int("transA", 1)],
    );
    let error = build_graph(vec![gemm], vec![b], &[3], 13).unwrap_err();
    assert!(
        matches!(&error, LayersError::Attribute { node, attribute, .. }
            if node == "fc" && attribute == "transA"),
        "{error}"
    );
}

#[test]
fn matmul_then_add_folds_into_the_bias() {
    let (w, w_t) = weight("W", &[3, 4], 4);
    let (b, b_t) = weight("b", &[4], 5);
    // The constant may come first or second.
    for add_inputs in [["mm", "b"], ["b", "mm"]] {
        let nodes = vec![
            node("MatMul", "mm", &["x", "W"], &["mm"]),
            node("Add", "add", &add_inputs, &["y"]),
        ];
        let m = build_graph(nodes, vec![w.clone(), b.clone()], &[3], 13).unwrap();
        assert_eq!(m.nodes().len(), 1, "the Add is folded away");
        let x = input(&m, 6);
        let want = direct(|t| {
            let xw = t.matmul(&k(&x), &k(&w_t))?;
            t.add(&xw, &k(&b_t))
        });
        assert_close(&forward(&m, &x), &want);
    }
}

#[test]
fn conv_then_per_channel_add_folds_into_the_bias() {
    let (w, w_t) = weight("W", &[3, 2, 3, 3], 7);
    let (b, b_t) = weight("b", &[1, 3, 1, 1], 8);
    let nodes = vec![
        node("Conv", "conv", &["x", "W"], &["c"]),
        node("Add", "add", &["c", "b"], &["y"]),
    ];
    let m = build_graph(nodes, vec![w, b], &[2, 5, 5], 13).unwrap();
    assert_eq!(m.nodes().len(), 1);
    let x = input(&m, 9);
    let want = direct(|t| {
        let c = t.conv2d(&k(&x), &k(&w_t), None, &Conv2dParams::new())?;
        t.add(&c, &k(&b_t))
    });
    assert_close(&forward(&m, &x), &want);
}

#[test]
fn add_of_a_constant_that_is_not_a_bias_is_an_error() {
    let (w, _) = weight("W", &[3, 4], 4);
    let (b, _) = weight("b", &[4], 5);
    let (b2, _) = weight("b2", &[2, 4], 6);
    let mm = || node("MatMul", "mm", &["x", "W"], &["mm"]);
    let cases = [
        // After a ReLU there is no bias to fold into.
        (
            vec![
                node("Relu", "relu", &["x"], &["r"]),
                node("Add", "add", &["r", "b"], &["y"]),
            ],
            4,
            "relu layer",
        ),
        // The MatMul's output is also read by the second Add.
        (
            vec![
                mm(),
                node("Add", "add", &["mm", "b"], &["s"]),
                node("Add", "add2", &["s", "mm"], &["y"]),
            ],
            3,
            "read elsewhere",
        ),
        // [2, 4] is not one value per output feature.
        (
            vec![mm(), node("Add", "add", &["mm", "b2"], &["y"])],
            3,
            "one value per output channel",
        ),
    ];
    for (nodes, width, reason_part) in cases {
        let error =
            build_graph(nodes, vec![w.clone(), b.clone(), b2.clone()], &[width], 13).unwrap_err();
        assert!(
            matches!(&error, LayersError::UnsupportedNode { node, reason, .. }
                if node == "add" && reason.contains(reason_part)),
            "{error}"
        );
    }
}

#[test]
fn reshape_resolves_minus_one_and_zero_and_keeps_the_batch() {
    // Input samples [2, 3, 4]; the shape comes from an initializer or a Constant node.
    let cases: [(&[i64], &[usize]); 4] = [
        (&[0, -1, 4], &[6, 4]),
        (&[-1, 0, 12], &[2, 12]),
        (&[1, 24], &[24]),
        (&[0, 4, 0, 2], &[4, 3, 2]),
    ];
    for (shape, sample_dims) in cases {
        for from_constant_node in [false, true] {
            let reshape = node("Reshape", "reshape", &["x", "shape"], &["y"]);
            let (nodes, initializers) = if from_constant_node {
                (
                    vec![constant("shape", int64_tensor("", shape)), reshape],
                    vec![],
                )
            } else {
                (vec![reshape], vec![int64_tensor("shape", shape)])
            };
            let m = build_graph(nodes, initializers, &[2, 3, 4], 13).unwrap();
            assert_eq!(m.output_dims(), sample_dims, "{shape:?}");
            let x = input(&m, 10);
            let want = direct(|t| t.reshape(&k(&x), &[&[2], sample_dims].concat()));
            assert_close(&forward(&m, &x), &want);
        }
    }
}

#[test]
fn reshape_that_would_change_the_batch_is_an_error() {
    for shape in [&[-1, 12][..], &[2, -1], &[0, 5, -1], &[0, -1, -1], &[-1]] {
        let error = build_graph(
            vec![node("Reshape", "reshape", &["x", "shape"], &["y"])],
            vec![int64_tensor("shape", shape)],
            &[2, 3, 4],
            13,
        )
        .unwrap_err();
        assert!(
            matches!(&error, LayersError::UnsupportedNode { node, .. } if node == "reshape"),
            "{shape:?}: {error}"
        );
    }
}

#[test]
fn clip_bounds_come_from_attributes_before_opset_11_and_inputs_after() {
    let old = with(
        node("Clip", "clip", &["x"], &["y"]),
        vec![float("min", -0.5), float("max", 0.25)],
    );
    let new_nodes = vec![
        constant("hi", raw_f32_tensor("", &[], &[0.25])),
        node("Clip", "clip", &["x", "lo", "hi"], &["y"]),
    ];
    let lo = raw_f32_tensor("lo", &[], &[-0.5]);
    for m in [
        build_graph(vec![old], vec![], &[3, 5], 10).unwrap(),
        build_graph(new_nodes, vec![lo], &[3, 5], 13).unwrap(),
    ] {
        let x = input(&m, 11);
        assert_close(&forward(&m, &x), &direct(|t| t.clamp(&k(&x), -0.5, 0.25)));
    }
    // A missing bound is unbounded: an omitted min input, an absent max attribute.
    let only_max = build_graph(
        vec![node("Clip", "clip", &["x", "", "hi"], &["y"])],
        vec![raw_f32_tensor("hi", &[], &[6.0])],
        &[3],
        13,
    )
    .unwrap();
    let only_min = build_graph(
        vec![with(
            node("Clip", "clip", &["x"], &["y"]),
            vec![float("min", 0.0)],
        )],
        vec![],
        &[3],
        9,
    )
    .unwrap();
    let bounds = |m: &Model<f32>| match m.nodes()[0].layer {
        Layer::Clamp { low, high } => (low, high),
        _ => panic!("not a clamp"),
    };
    assert_eq!(bounds(&only_max), (f64::NEG_INFINITY, 6.0));
    assert_eq!(bounds(&only_min), (0.0, f64::INFINITY));
}

#[test]
fn clip_bound_computed_by_the_graph_is_not_constant() {
    let nodes = vec![
        node("Relu", "relu", &["x"], &["r"]),
        node("Clip", "clip", &["x", "r"], &["y"]),
    ];
    let error = build_graph(nodes, vec![], &[3], 13).unwrap_err();
    assert!(
        matches!(&error, LayersError::NotConstant { node, input, .. }
            if node == "clip" && input == "r"),
        "{error}"
    );
}

#[test]
fn conv_auto_pad_same_upper_and_lower_pad_from_the_input_size() {
    let (w, w_t) = weight("W", &[3, 2, 3, 3], 12);
    // 5 x 6 input, stride 2: outputs 3 x 3; padding 2 rows (1 + 1) and 1 column, which goes
    // after (UPPER) or before (LOWER).
    for (mode, padding) in [("SAME_UPPER", [1, 0, 1, 1]), ("SAME_LOWER", [1, 1, 1, 0])] {
        let conv = with(
            node("Conv", "conv", &["x", "W"], &["y"]),
            vec![string("auto_pad", mode), ints("strides", &[2, 2])],
        );
        let m = build_graph(vec![conv], vec![w.clone()], &[2, 5, 6], 13).unwrap();
        assert_eq!(m.output_dims(), &[3, 3, 3], "{mode}");
        let params = Conv2dParams {
            stride: [2, 2],
            padding,
            ..Conv2dParams::new()
        };
        let x = input(&m, 13);
        let want = direct(|t| t.conv2d(&k(&x), &k(&w_t), None, &params));
        assert_close(&forward(&m, &x), &want);
    }
}

#[test]
fn conv_pads_are_top_left_bottom_right() {
    let (w, w_t) = weight("W", &[2, 1, 2, 3], 14);
    let conv = with(
        node("Conv", "conv", &["x", "W"], &["y"]),
        vec![ints("pads", &[1, 0, 2, 3]), ints("dilations", &[2, 1])],
    );
    let m = build_graph(vec![conv], vec![w], &[1, 6, 5], 13).unwrap();
    let params = Conv2dParams {
        padding: [1, 0, 2, 3],
        dilation: [2, 1],
        ..Conv2dParams::new()
    };
    let x = input(&m, 15);
    let want = direct(|t| t.conv2d(&k(&x), &k(&w_t), None, &params));
    assert_close(&forward(&m, &x), &want);
}

#[test]
fn average_pool_excludes_padding_by_default_unlike_pytorch() {
    let pool = |attributes: Vec<AttributeProto>| {
        let mut all = vec![
            ints("kernel_shape", &[3, 3]),
            ints("strides", &[2, 2]),
            ints("pads", &[1, 1, 1, 1]),
        ];
        all.extend(attributes);
        with(node("AveragePool", "pool", &["x"], &["y"]), all)
    };
    let default = build_graph(vec![pool(vec![])], vec![], &[2, 5, 5], 13).unwrap();
    let included = build_graph(
        vec![pool(vec![int("count_include_pad", 1)])],
        vec![],
        &[2, 5, 5],
        13,
    )
    .unwrap();
    let x = input(&default, 16);
    let params = Pool2dParams::new(3).stride(2).padding(1);
    let excluding = direct(|t| t.avg_pool2d(&k(&x), &params.count_include_pad(false)));
    let including = direct(|t| t.avg_pool2d(&k(&x), &params.count_include_pad(true)));
    assert_close(&forward(&default, &x), &excluding);
    assert_close(&forward(&included, &x), &including);
    assert_ne!(excluding.as_slice(), including.as_slice());
}

#[test]
fn max_pool_with_ceil_mode_and_dilation_maps_directly() {
    let pool = with(
        node("MaxPool", "pool", &["x"], &["y"]),
        vec![
            ints("kernel_shape", &[2, 2]),
            ints("strides", &[2, 2]),
            ints("dilations", &[1, 2]),
            int("ceil_mode", 1),
        ],
    );
    let m = build_graph(vec![pool], vec![], &[1, 7, 7], 13).unwrap();
    let params = Pool2dParams {
        dilation: [1, 2],
        ..Pool2dParams::new(2).ceil_mode(true)
    };
    let x = input(&m, 17);
    assert_close(&forward(&m, &x), &direct(|t| t.max_pool2d(&k(&x), &params)));
}

#[test]
fn max_pool_misuses_are_errors_naming_the_node() {
    let base = vec![ints("kernel_shape", &[3, 3])];
    let cases = [
        (vec![ints("pads", &[1, 1, 0, 0])], "pads"),
        (vec![int("storage_order", 1)], "storage_order"),
        // Stride 2 on width 6: SAME pads one column, on one side only.
        (
            vec![string("auto_pad", "SAME_UPPER"), ints("strides", &[2, 2])],
            "pads",
        ),
        (vec![string("auto_pad", "SIDEWAYS")], "auto_pad"),
    ];
    for (extra, name) in cases {
        let pool = with(
            node("MaxPool", "pool", &["x"], &["y"]),
            [base.clone(), extra].concat(),
        );
        let error = build_graph(vec![pool], vec![], &[1, 5, 6], 13).unwrap_err();
        assert!(
            matches!(&error, LayersError::Attribute { node, attribute, .. }
                if node == "pool" && attribute == name),
            "{name}: {error}"
        );
    }
    // The Indices output cannot be used.
    let pool = with(
        node("MaxPool", "pool", &["x"], &["p", "indices"]),
        base.clone(),
    );
    let error = build_graph(
        vec![pool, node("Identity", "id", &["indices"], &["y"])],
        vec![],
        &[1, 5, 5],
        13,
    )
    .unwrap_err();
    assert!(
        matches!(&error, LayersError::UnsupportedNode { node, reason, .. }
            if node == "pool" && reason.contains("indices")),
        "{error}"
    );
}

#[test]
fn batch_norm_maps_to_the_inference_formula_and_folds_into_the_conv() {
    let (w, w_t) = weight("W", &[3, 2, 3, 3], 18);
    let (scale, scale_t) = weight("scale", &[3], 19);
    let (bias, bias_t) = weight("bias", &[3], 20);
    let (mean, mean_t) = weight("mean", &[3], 21);
    let var_t = Tensor::<f32>::uniform(&[3], 0.5, 2.0, 22).unwrap();
    let var = raw_f32_tensor("var", &[3], var_t.as_slice());
    let mut m = model(
        vec![
            node("Conv", "conv", &["x", "W"], &["c"]),
            with(
                node(
                    "BatchNormalization",
                    "bn",
                    &["c", "scale", "bias", "mean", "var"],
                    &["y"],
                ),
                vec![float("epsilon", 1e-3)],
            ),
        ],
        vec![w, scale, bias, mean, var],
        &[],
        &["y"],
    );
    m.graph.as_mut().unwrap().input = vec![shaped_input(&[2, 6, 6])];
    let graph = read(&m).unwrap();
    let unfolded = build_model_unfolded(&graph).unwrap();
    let folded = build_model(&graph).unwrap();
    assert!(matches!(unfolded.nodes()[1].layer, Layer::BatchNorm { eps, .. } if eps == 1e-3));
    assert!(matches!(folded.nodes()[1].layer, Layer::Identity));
    let x = input(&unfolded, 23);
    let want = direct(|t| {
        let c = t.conv2d(&k(&x), &k(&w_t), None, &Conv2dParams::new())?;
        t.batch_norm(&c, &k(&scale_t), &k(&bias_t), &mean_t, &var_t, 1e-3)
    });
    assert_close(&forward(&unfolded, &x), &want);
    assert_close(&forward(&folded, &x), &want);
}

#[test]
fn weight_computed_by_the_graph_is_not_constant() {
    let nodes = vec![
        node("Relu", "relu", &["x"], &["r"]),
        node("Conv", "conv", &["x", "r"], &["y"]),
    ];
    let error = build_graph(nodes, vec![], &[1, 3, 3], 13).unwrap_err();
    assert!(
        matches!(&error, LayersError::NotConstant { node, input, role, .. }
            if node == "conv" && input == "r" && role == "weight"),
        "{error}"
    );
}

#[test]
fn softmax_axis_follows_the_opset() {
    // Opset 13: the default is the last axis, any axis is a softmax along it.
    let m = build_graph(
        vec![node("Softmax", "sm", &["x"], &["y"])],
        vec![],
        &[3, 4],
        13,
    )
    .unwrap();
    assert!(matches!(m.nodes()[0].layer, Layer::Softmax { axis: 2 }));
    let x = input(&m, 24);
    assert_close(&forward(&m, &x), &direct(|t| t.softmax(&k(&x), 2)));
    // Before 13, axis 1 of a 3-D input normalizes over two axes together: refused.
    let error = build_graph(
        vec![node("Softmax", "sm", &["x"], &["y"])],
        vec![],
        &[3, 4],
        11,
    )
    .unwrap_err();
    assert!(
        matches!(&error, LayersError::Attribute { node, attribute, .. }
            if node == "sm" && attribute == "axis"),
        "{error}"
    );
    // ... but on 2-D input it is the last axis.
    let m = build_graph(
        vec![node("Softmax", "sm", &["x"], &["y"])],
        vec![],
        &[5],
        11,
    )
    .unwrap();
    assert!(matches!(m.nodes()[0].layer, Layer::Softmax { axis: 1 }));
}

#[test]
fn flatten_and_concat_axes() {
    let flatten = |axis: i64| {
        with(
            node("Flatten", "flat", &["x"], &["y"]),
            vec![int("axis", axis)],
        )
    };
    let m = build_graph(vec![flatten(-3)], vec![], &[2, 3, 4], 13).unwrap();
    assert_eq!(m.output_dims(), &[24]);
    for axis in [0, 2] {
        let error = build_graph(vec![flatten(axis)], vec![], &[2, 3, 4], 13).unwrap_err();
        assert!(
            matches!(&error, LayersError::Attribute { node, attribute, .. }
                if node == "flat" && attribute == "axis"),
            "{error}"
        );
    }
    let concat = with(
        node("Concat", "cat", &["x", "r"], &["y"]),
        vec![int("axis", -2)],
    );
    let m = build_graph(
        vec![node("Relu", "relu", &["x"], &["r"]), concat],
        vec![],
        &[2, 3, 4],
        13,
    )
    .unwrap();
    assert_eq!(m.output_dims(), &[2, 6, 4]);
    let x = input(&m, 25);
    let want = direct(|t| {
        let r = t.relu(&k(&x))?;
        t.concat(&[&k(&x), &r], 2)
    });
    assert_close(&forward(&m, &x), &want);
}

#[test]
fn identity_and_dropout_pass_through() {
    let nodes = vec![
        node("Dropout", "drop", &["x"], &["d"]),
        node("Identity", "id", &["d"], &["y"]),
    ];
    let m = build_graph(nodes, vec![], &[3], 13).unwrap();
    let x = input(&m, 26);
    assert_eq!(forward(&m, &x).as_slice(), x.as_slice());
}

#[test]
fn shapes_that_do_not_chain_name_the_node() {
    // A Gemm on a 4-D input without a Flatten.
    let (b, _) = weight("B", &[10, 12], 27);
    let gemm = with(
        node("Gemm", "fc", &["x", "B"], &["y"]),
        vec![int("transB", 1)],
    );
    let error = build_graph(vec![gemm], vec![b.clone()], &[3, 2, 2], 13).unwrap_err();
    assert!(
        matches!(&error, LayersError::UnsupportedNode { node, .. } if node == "fc"),
        "{error}"
    );
    // A MatMul whose weight does not fit the input width.
    let error = build_graph(
        vec![node("MatMul", "mm", &["x", "B"], &["y"])],
        vec![b],
        &[7],
        13,
    )
    .unwrap_err();
    assert!(
        matches!(&error, LayersError::Graph { node, .. } if node == "mm"),
        "{error}"
    );
}

#[test]
fn fixtures_build_and_keep_their_shapes() {
    for (name, input_dims) in [
        ("lenet", [1, 28, 28]),
        ("vgg", [3, 32, 32]),
        ("resnet", [3, 32, 32]),
        ("squeezenet", [3, 32, 32]),
        ("mobilenet", [3, 32, 32]),
    ] {
        let m = load_onnx_model(&fixture_path(&format!("{name}.onnx")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.input_dims(), m.output_dims()),
            (&input_dims[..], &[10][..]),
            "{name}"
        );
    }
}
