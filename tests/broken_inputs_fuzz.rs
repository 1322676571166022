//! Inputs that once panicked, overflowed or allocated what they merely claimed (files in
//! `fixtures/fuzz/`, made by `fixtures/fuzz/make_fuzz_fixtures.py`), each now a typed error with
//! a specific message; the loaders' limits; and the fuzz seed corpus, which must stay valid for
//! the fuzzers to reach past the parsers (`fuzz/corpus/`, see `scripts/fuzz.sh`).

use smoothgrad_layers::onnx::{
    build_model, build_model_with_limits, read_onnx, read_onnx_with_limits,
};
use smoothgrad_layers::{
    LayersError, LoadLimits, Model, build_safetensors_model, build_safetensors_model_with_limits,
    load_safetensors_model,
};
use smoothgrad_saliency::image_io::{
    ImageLimits, ImageOptions, decode_image, decode_image_with_limits,
};
use smoothgrad_saliency::npy::{NpyProblem, decode_npy, decode_npy_with_limit, encode_npy};
use std::path::{Path, PathBuf};

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fuzz")
        .join(file)
}

fn read(file: &str) -> Vec<u8> {
    std::fs::read(fixture(file)).unwrap()
}

fn onnx_error(file: &str) -> LayersError {
    let bytes = read(file);
    read_onnx(&bytes, file)
        .and_then(|graph| build_model(&graph))
        .unwrap_err()
}

#[track_caller]
fn assert_message(error: &impl std::fmt::Display, want: &str) {
    let text = error.to_string();
    assert!(text.contains(want), "`{text}` does not contain `{want}`");
}

// ---------- regressions ----------

#[test]
fn same_padding_with_a_zero_kernel_or_stride_is_an_attribute_error() {
    // Used to underflow `kernel - 1` and divide by a zero stride.
    let error = onnx_error("same_pool_zero_kernel.onnx");
    assert!(
        matches!(&error, LayersError::Attribute { node, attribute, .. } if node == "pool" && attribute == "auto_pad"),
        "{error:?}"
    );
    assert_message(&error, "SAME_UPPER needs positive kernel [0, 0]");
    let error = onnx_error("same_conv_zero_stride.onnx");
    assert!(
        matches!(&error, LayersError::Attribute { node, .. } if node == "conv"),
        "{error:?}"
    );
    assert_message(
        &error,
        "SAME_LOWER needs positive kernel [3, 3], strides [0, 0]",
    );
}

#[test]
fn huge_paddings_are_limit_errors_naming_node_and_attribute() {
    // Paddings of 2^62 used to overflow their sum in the convolution geometry.
    let error = onnx_error("conv_huge_pads.onnx");
    assert!(
        matches!(
            &error,
            LayersError::Limit {
                limit: "max_dim",
                ..
            }
        ),
        "{error:?}"
    );
    assert_message(
        &error,
        "conv_huge_pads.onnx: node `conv`, attribute `pads`: 4611686018427387904 exceeds the limit max_dim = 16777216",
    );
    // The same in a JSON architecture (2^63, past every sum).
    let error = load_safetensors_model(
        &fixture("conv1x1.safetensors"),
        &fixture("huge_padding.arch.json"),
    )
    .unwrap_err();
    assert_message(
        &error,
        "huge_padding.arch.json: layer `conv`, \"padding\": 9223372036854775808 exceeds the limit max_dim = 16777216",
    );
}

#[test]
fn element_counts_past_usize_are_errors() {
    // A Reshape target of 2^68 elements per sample: its product used to overflow.
    let error = onnx_error("reshape_overflow.onnx");
    assert!(
        matches!(&error, LayersError::UnsupportedNode { node, .. } if node == "reshape"),
        "{error:?}"
    );
    assert_message(
        &error,
        "the element count of [4294967296, 4294967296, 16] overflows",
    );
    // Inputs of 2^80 and 2^66 elements, flattened: refused before any layer is built.
    let error = onnx_error("input_overflow.onnx");
    assert_message(
        &error,
        "input_overflow.onnx: the input `x` with shape [1, 1048576, 1048576, 1048576, 1048576]: \
         18446744073709551615 exceeds the limit max_input_elements = 67108864",
    );
    let error = load_safetensors_model(
        &fixture("conv1x1.safetensors"),
        &fixture("flatten_overflow.arch.json"),
    )
    .unwrap_err();
    assert_message(
        &error,
        "flatten_overflow.arch.json: the input with shape [1, 4194304, 4194304, 4194304]: \
         18446744073709551615 exceeds the limit max_input_elements = 67108864",
    );
}

#[test]
fn a_picture_claiming_ten_billion_pixels_is_refused_from_its_header() {
    let options = ImageOptions {
        channels: 3,
        resize: None,
    };
    let error = decode_image(
        &read("huge_claim.png"),
        Path::new("huge_claim.png"),
        &options,
    )
    .unwrap_err();
    assert_message(
        &error,
        "huge_claim.png: the picture is too large (Image size exceeds limit), over the limit of \
         16384x16384 and 67108864 pixels",
    );
}

#[test]
fn image_limits_apply_from_the_header() {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(40, 10, image::Rgb([9, 9, 9]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let options = ImageOptions {
        channels: 1,
        resize: None,
    };
    let path = Path::new("wide.png");
    let fits = ImageLimits {
        max_width: 40,
        max_height: 10,
        max_pixels: 400,
    };
    let x = decode_image_with_limits(&png, path, &options, &fits).unwrap();
    assert_eq!(x.dims(), &[1, 10, 40]);
    let too_many = ImageLimits {
        max_pixels: 399,
        ..fits
    };
    let error = decode_image_with_limits(&png, path, &options, &too_many).unwrap_err();
    assert_eq!(
        error.to_string(),
        "wide.png: the picture is 40x10 pixels, over the limit of 40x10 and 399 pixels"
    );
    let too_wide = ImageLimits {
        max_width: 39,
        ..fits
    };
    assert_message(
        &decode_image_with_limits(&png, path, &options, &too_wide).unwrap_err(),
        "wide.png: ",
    );
}

#[test]
fn npy_claims_are_checked_against_the_data_and_the_limit() {
    // 2^40 values claimed over 16 bytes.
    assert_eq!(
        decode_npy(&read("huge_claim.npy")).unwrap_err(),
        NpyProblem::DataLength {
            shape: vec![1 << 20, 1 << 20],
            dtype: "<f4".into(),
            expected: 4 << 40,
            found: 16,
        }
    );
    let t = smoothgrad_autodiff::Tensor::from_vec(vec![1.0f32; 12], &[3, 4]).unwrap();
    let bytes = encode_npy(&t);
    assert_eq!(decode_npy_with_limit(&bytes, 12).unwrap(), t);
    let error = decode_npy_with_limit(&bytes, 11).unwrap_err();
    assert_eq!(
        error,
        NpyProblem::TooLarge {
            shape: vec![3, 4],
            elements: 12,
            max: 11
        }
    );
    assert_eq!(
        error.to_string(),
        "shape [3, 4] holds 12 elements, over the limit of 11"
    );
}

// ---------- limits on honest files ----------

fn seed(target: &str, file: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
            .join(file),
    )
    .unwrap()
}

/// A safetensors + JSON seed split at its NUL byte, as the fuzz target does.
fn split_seed(bytes: &[u8]) -> (&str, &[u8]) {
    let at = bytes.iter().position(|&b| b == 0).unwrap();
    (std::str::from_utf8(&bytes[..at]).unwrap(), &bytes[at + 1..])
}

#[test]
fn onnx_limits_name_the_file_the_part_and_the_limit() {
    let bytes = seed("onnx", "conv_pool_gemm.onnx");
    let name = "seed.onnx";
    let within = |limits: LoadLimits| {
        read_onnx_with_limits(&bytes, name, &limits)
            .and_then(|graph| build_model_with_limits(&graph, &limits))
    };
    within(LoadLimits::default()).unwrap();
    let cases = [
        (
            LoadLimits {
                max_nodes: 4,
                ..LoadLimits::default()
            },
            "seed.onnx: the graph: 5 exceeds the limit max_nodes = 4",
        ),
        (
            LoadLimits {
                max_tensor_elements: 53,
                ..LoadLimits::default()
            },
            "seed.onnx: tensor `fc_w` with shape [3, 18]: 54 exceeds the limit max_tensor_elements = 53",
        ),
        (
            LoadLimits {
                max_total_weight_bytes: 100,
                ..LoadLimits::default()
            },
            "exceeds the limit max_total_weight_bytes = 100",
        ),
        (
            LoadLimits {
                max_input_elements: 35,
                ..LoadLimits::default()
            },
            "seed.onnx: the input `x` with shape [1, 1, 6, 6]: 36 exceeds the limit max_input_elements = 35",
        ),
        (
            LoadLimits {
                max_value_elements: 71,
                ..LoadLimits::default()
            },
            "seed.onnx: the output of node `conv` with shape [1, 2, 6, 6]: 72 exceeds the limit max_value_elements = 71",
        ),
        (
            LoadLimits {
                max_dim: 2,
                ..LoadLimits::default()
            },
            "seed.onnx: tensor `w` with shape [2, 1, 3, 3]: 3 exceeds the limit max_dim = 2",
        ),
        (
            LoadLimits {
                max_rank: 3,
                ..LoadLimits::default()
            },
            "seed.onnx: tensor `w` with shape [2, 1, 3, 3]: 4 exceeds the limit max_rank = 3",
        ),
    ];
    for (limits, want) in cases {
        let error = within(limits).unwrap_err();
        assert!(matches!(error, LayersError::Limit { .. }), "{error:?}");
        assert_message(&error, want);
    }
}

#[test]
fn safetensors_limits_name_the_file_the_part_and_the_limit() {
    let bytes = seed("safetensors_json", "conv_pool_linear.bin");
    let (arch, weights) = split_seed(&bytes);
    let within = |limits: LoadLimits| {
        build_safetensors_model_with_limits(weights, "w.safetensors", arch, "a.json", &limits)
    };
    within(LoadLimits::default()).unwrap();
    let cases = [
        (
            LoadLimits {
                max_nodes: 5,
                ..LoadLimits::default()
            },
            "a.json: the graph: 6 exceeds the limit max_nodes = 5",
        ),
        (
            LoadLimits {
                max_tensor_elements: 53,
                ..LoadLimits::default()
            },
            "w.safetensors: tensor `fc.weight` with shape [3, 18]: 54 exceeds the limit max_tensor_elements = 53",
        ),
        (
            LoadLimits {
                max_total_weight_bytes: 299,
                ..LoadLimits::default()
            },
            "w.safetensors: the weights up to `fc.weight`: 308 exceeds the limit max_total_weight_bytes = 299",
        ),
        (
            LoadLimits {
                max_input_elements: 35,
                ..LoadLimits::default()
            },
            "a.json: the input with shape [1, 1, 6, 6]: 36 exceeds the limit max_input_elements = 35",
        ),
        (
            LoadLimits {
                max_value_elements: 71,
                ..LoadLimits::default()
            },
            "a.json: the output of layer `conv` with shape [1, 2, 6, 6]: 72 exceeds the limit max_value_elements = 71",
        ),
        (
            LoadLimits {
                max_dim: 5,
                ..LoadLimits::default()
            },
            "w.safetensors: tensor `fc.weight` with shape [3, 18]: 18 exceeds the limit max_dim = 5",
        ),
    ];
    for (limits, want) in cases {
        let error = within(limits).unwrap_err();
        assert!(matches!(error, LayersError::Limit { .. }), "{error:?}");
        assert_message(&error, want);
    }
}

// ---------- the seed corpus ----------

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds for {target}");
    files
}

/// Runs a model once on a batch of one (what the fuzz targets do when a model is small).
fn run_once(model: &Model<f32>) -> Vec<usize> {
    let dims: Vec<usize> = [&[1], model.input_dims()].concat();
    let n = dims.iter().product();
    let x = smoothgrad_autodiff::Tensor::from_vec(vec![0.25f32; n], &dims).unwrap();
    let mut tape = smoothgrad_autodiff::Tape::new();
    let x = tape.var(x);
    model.forward(&mut tape, &x).unwrap().dims().to_vec()
}

#[test]
fn every_model_seed_builds_and_runs() {
    for path in corpus("onnx") {
        let bytes = std::fs::read(&path).unwrap();
        let model = build_model(&read_onnx(&bytes, "seed.onnx").unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let out = run_once(&model);
        assert_eq!(out[1..], *model.output_dims(), "{}", path.display());
    }
    for path in corpus("safetensors_json") {
        let bytes = std::fs::read(&path).unwrap();
        let (arch, weights) = split_seed(&bytes);
        let model = build_safetensors_model(weights, "seed.safetensors", arch, "seed.json")
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let out = run_once(&model);
        assert_eq!(out[1..], *model.output_dims(), "{}", path.display());
    }
}

#[test]
fn every_npy_and_image_seed_decodes() {
    for path in corpus("npy") {
        decode_npy(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for path in corpus("image") {
        let bytes = std::fs::read(&path).unwrap();
        // The first byte is the fuzz target's options byte.
        let options = ImageOptions {
            channels: 3,
            resize: None,
        };
        let x = decode_image(&bytes[1..], &path, &options)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(x.dims()[0], 3);
    }
}
