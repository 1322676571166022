//! A corpus of broken inputs run through the real binary: truncated and garbage models, images
//! and `.npy` files, impossible option values, outputs that cannot be written, and models whose
//! numbers overflow. Each case asserts the exit status, a message naming what is wrong, one line
//! on stderr with no panic, and that no output file was created.
//!
//! The broken files are made here from the bundled digits model (`assets/`), so nothing binary
//! is committed for them.

use smoothgrad_autodiff::Tensor;
use smoothgrad_layers::train::{arch_json, safetensors_bytes};
use smoothgrad_layers::{Layer, Model, Node};
use smoothgrad_saliency::npy::{encode_npy, write_npy};
use std::path::{Path, PathBuf};
use std::process::Command;

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn asset(name: &str) -> String {
    assets().join(name).display().to_string()
}

fn onnx() -> String {
    asset("digits-cnn.onnx")
}

fn digit() -> String {
    asset("images/digit-3.png")
}

/// One broken run: its arguments after `explain`, and what it must end with.
struct Case {
    name: &'static str,
    args: Vec<String>,
    status: i32,
    message: String,
    /// Whether `--npy`/`--png` into a fresh directory are added (cases about outputs set
    /// their own).
    outputs: bool,
}

fn case(name: &'static str, args: &[&str], status: i32, message: &str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        message: message.to_string(),
        outputs: true,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs every case; returns one line per case that did not end as it must.
fn failures(cases: &[Case]) -> Vec<String> {
    let mut bad = Vec::new();
    for c in cases {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec!["explain".to_string()];
        args.extend(c.args.iter().cloned());
        if c.outputs {
            for (flag, name) in [("--npy", "map.npy"), ("--png", "map.png")] {
                args.push(flag.into());
                args.push(out.path().join(name).display().to_string());
            }
        }
        let o = Command::new(env!("CARGO_BIN_EXE_smoothgrad"))
            .args(&args)
            .output()
            .expect("the binary runs");
        let err = String::from_utf8_lossy(&o.stderr);
        let mut problems = Vec::new();
        if o.status.code() != Some(c.status) {
            problems.push(format!(
                "status {:?}, expected {}",
                o.status.code(),
                c.status
            ));
        }
        if !err.contains(&c.message) {
            problems.push(format!("message lacks {:?}", c.message));
        }
        if err.contains("panicked at") {
            problems.push("panicked".into());
        }
        if !err.starts_with("error: ") || err.trim_end().lines().count() != 1 {
            problems.push("not one `error: ` line".into());
        }
        let left = files_in(out.path());
        if !left.is_empty() {
            problems.push(format!("left files {left:?}"));
        }
        if !problems.is_empty() {
            bad.push(format!(
                "{}: {} — stderr: {}",
                c.name,
                problems.join("; "),
                err.trim_end()
            ));
        }
    }
    bad
}

fn check(cases: &[Case]) {
    let bad = failures(cases);
    assert!(
        bad.is_empty(),
        "{} of {} cases failed:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

/// A scratch directory of broken files.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().unwrap())
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }

    fn npy(&self, name: &str, t: &Tensor<f32>) -> String {
        let path = self.0.path().join(name);
        write_npy(&path, t).unwrap();
        path.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.0.path().join(name).display().to_string()
    }
}

/// A `.npy` file with `header` as its dictionary and `data` after it.
fn npy_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

fn digit_npy() -> Tensor<f32> {
    smoothgrad_saliency::load_image(
        Path::new(&digit()),
        &smoothgrad_saliency::ImageOptions {
            channels: 1,
            resize: None,
        },
    )
    .unwrap()
}

#[test]
fn broken_models() {
    let s = Scratch::new();
    let good = std::fs::read(onnx()).unwrap();
    let truncated = s.file("truncated.onnx", &good[..good.len() / 3]);
    let garbage = s.file(
        "garbage.onnx",
        b"this is not a protobuf at all \xff\xff\xff\xff",
    );
    let empty = s.file("empty.onnx", b"");
    // Every `Gemm` renamed `Gemz`: the same length, so the protobuf stays well formed.
    let renamed: Vec<u8> = {
        let mut b = good.clone();
        let mut i = 0;
        while i + 4 <= b.len() {
            if &b[i..i + 4] == b"Gemm" {
                b[i + 3] = b'z';
            }
            i += 1;
        }
        b
    };
    let unknown_op = s.file("unknown-op.onnx", &renamed);
    let weights = std::fs::read(asset("digits-cnn.safetensors")).unwrap();
    let arch = std::fs::read_to_string(asset("digits-cnn.arch.json")).unwrap();
    let arch_path = s.file("digits.arch.json", arch.as_bytes());
    // A header length of 2^40 bytes.
    let mut huge_header = (1u64 << 40).to_le_bytes().to_vec();
    huge_header.extend_from_slice(b"{}");
    let bad_header = s.file("bad-header.safetensors", &huge_header);
    let mut json_header = 20u64.to_le_bytes().to_vec();
    json_header.extend_from_slice(b"{\"a\": [1, 2, 3 ]   ");
    let not_json = s.file("not-json.safetensors", &json_header);
    let cut = s.file("cut.safetensors", &weights[..weights.len() - 100]);
    let broken_arch = s.file("broken.arch.json", &arch.as_bytes()[..arch.len() / 2]);
    let unknown_layer = s.file(
        "unknown-layer.arch.json",
        arch.replacen("\"max_pool2d\"", "\"max_pool9d\"", 1)
            .as_bytes(),
    );
    let missing_weight = s.file(
        "missing-weight.arch.json",
        arch.replacen("\"name\": \"3\"", "\"name\": \"nowhere\"", 1)
            .as_bytes(),
    );
    let rgb_arch = s.file(
        "rgb.arch.json",
        arch.replacen("\"input\": [\n    1,", "\"input\": [\n    3,", 1)
            .as_bytes(),
    );
    let st = asset("digits-cnn.safetensors");
    let d = digit();
    let cases = vec![
        case(
            "truncated onnx",
            &["--model", &truncated, "--image", &d],
            3,
            "truncated.onnx: not a valid ONNX model",
        ),
        case(
            "garbage onnx",
            &["--model", &garbage, "--image", &d],
            3,
            "garbage.onnx: not a valid ONNX model",
        ),
        case(
            "empty onnx",
            &["--model", &empty, "--image", &d],
            3,
            "empty.onnx: not a valid ONNX model: the model has no graph",
        ),
        case(
            "onnx with an unknown op",
            &["--model", &unknown_op, "--image", &d],
            3,
            "is a `Gemz` (opset",
        ),
        case(
            "missing model",
            &["--model", &s.path("absent.onnx"), "--image", &d],
            3,
            "absent.onnx: No such file",
        ),
        case(
            "unknown model format",
            &["--model", &s.file("model.bin", b"\0"), "--image", &d],
            3,
            "model.bin: cannot tell the model format",
        ),
        case(
            "safetensors header length absurd",
            &["--model", &bad_header, "--arch", &arch_path, "--image", &d],
            3,
            "bad-header.safetensors: not a valid safetensors file",
        ),
        case(
            "safetensors header not the tensors",
            &["--model", &not_json, "--arch", &arch_path, "--image", &d],
            3,
            "not-json.safetensors: not a valid safetensors file",
        ),
        case(
            "safetensors truncated",
            &["--model", &cut, "--arch", &arch_path, "--image", &d],
            3,
            "cut.safetensors: not a valid safetensors file",
        ),
        case(
            "safetensors without --arch",
            &["--model", &st, "--image", &d],
            2,
            "needs its architecture: add --arch",
        ),
        case(
            "--arch with onnx",
            &["--model", &onnx(), "--arch", &arch_path, "--image", &d],
            2,
            "--arch is for .safetensors models",
        ),
        case(
            "arch json cut in half",
            &["--model", &st, "--arch", &broken_arch, "--image", &d],
            3,
            "broken.arch.json: layer `<file>`: invalid JSON",
        ),
        case(
            "arch json unknown layer",
            &["--model", &st, "--arch", &unknown_layer, "--image", &d],
            3,
            "unknown-layer.arch.json: layer `#2`: unknown layer type \"max_pool9d\"",
        ),
        case(
            "weight missing",
            &["--model", &st, "--arch", &missing_weight, "--image", &d],
            3,
            "missing weight `nowhere.weight`",
        ),
        case(
            "weight of the wrong shape",
            &["--model", &st, "--arch", &rgb_arch, "--image", &d],
            3,
            "weight `0.weight` has shape [16, 1, 3, 3]",
        ),
    ];
    check(&cases);
}

#[test]
fn broken_npy_inputs() {
    let s = Scratch::new();
    let model = onnx();
    let floats: Vec<u8> = (0..1024).flat_map(|_| 0.5f32.to_le_bytes()).collect();
    let good = npy_bytes(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 32, 32), }",
        &floats,
    );
    let bad_magic = s.file("magic.npy", &[b"\x93NUMPX", &good[6..]].concat());
    let truncated = s.file("truncated.npy", &good[..good.len() - 10]);
    let ints = s.file(
        "ints.npy",
        &npy_bytes(
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 32, 32), }",
            &floats,
        ),
    );
    let big_endian = s.file(
        "big.npy",
        &npy_bytes(
            "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 32, 32), }",
            &floats,
        ),
    );
    let shape_lies = s.file(
        "shape.npy",
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64, 64), }",
            &floats,
        ),
    );
    let header_cut = s.file("header.npy", &good[..30]);
    let not_dict = s.file("dict.npy", &npy_bytes("[1, 2, 3]", &floats));
    let rgb = s.npy("rgb.npy", &Tensor::zeros(&[3, 32, 32]).unwrap());
    let mut values = digit_npy().into_vec();
    values[100] = f32::NAN;
    let nan = s.npy("nan.npy", &Tensor::from_vec(values, &[1, 32, 32]).unwrap());
    let mut values = digit_npy().into_vec();
    values[7] = f32::INFINITY;
    let inf = s.npy("inf.npy", &Tensor::from_vec(values, &[1, 32, 32]).unwrap());
    let m = model.as_str();
    let cases = vec![
        case(
            "npy bad magic",
            &["--model", m, "--input", &bad_magic],
            3,
            "magic.npy: not a .npy file",
        ),
        case(
            "npy truncated data",
            &["--model", m, "--input", &truncated],
            3,
            "truncated.npy: shape [1, 32, 32] of '<f4' needs 4096 data bytes, the file holds 4086",
        ),
        case(
            "npy int dtype",
            &["--model", m, "--input", &ints],
            3,
            "ints.npy: dtype '<i4' is not supported",
        ),
        case(
            "npy big-endian",
            &["--model", m, "--input", &big_endian],
            3,
            "big.npy: dtype '>f4' is big-endian",
        ),
        case(
            "npy shape larger than data",
            &["--model", m, "--input", &shape_lies],
            3,
            "shape.npy: shape [1, 64, 64]",
        ),
        case(
            "npy header cut",
            &["--model", m, "--input", &header_cut],
            3,
            "header.npy: the file ends inside its header",
        ),
        case(
            "npy header not a dict",
            &["--model", m, "--input", &not_dict],
            3,
            "dict.npy: malformed header",
        ),
        case(
            "npy of the wrong shape",
            &["--model", m, "--input", &rgb],
            3,
            "shape [3, 32, 32] does not fit the model, which takes [1, 32, 32]",
        ),
        case(
            "npy with a NaN pixel",
            &["--model", m, "--input", &nan],
            3,
            "value NaN at element 100 is not finite",
        ),
        case(
            "npy with an infinite pixel",
            &["--model", m, "--input", &inf],
            3,
            "value inf at element 7 is not finite",
        ),
        case(
            "missing npy",
            &["--model", m, "--input", &s.path("absent.npy")],
            3,
            "absent.npy: No such file",
        ),
        case(
            "noise of the wrong rank",
            &["--model", m, "--image", &digit(), "--noise", &rgb],
            3,
            "rgb.npy: noise has shape [3, 32, 32]; it must be [N, C, H, W]",
        ),
    ];
    check(&cases);
}

/// CRC-32 (IEEE), as PNG chunks need.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Adler-32, as zlib streams end with.
fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// A PNG declaring `width` × `height` grayscale pixels, with one IDAT of 1000 zero bytes (a
/// stored zlib block): a decoder must judge the declared size before it allocates for it.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    let raw = [0u8; 1000];
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    zlib.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    out
}

#[test]
fn broken_images_and_directories() {
    let s = Scratch::new();
    let m = onnx();
    let good = std::fs::read(digit()).unwrap();
    let truncated = s.file("truncated.png", &good[..good.len() / 2]);
    let garbage = s.file(
        "garbage.png",
        b"GIF? no: plain text pretending to be a picture",
    );
    let empty = s.file("empty.png", b"");
    let huge = s.file("huge.png", &png_header(100_000, 100_000));
    let zero = s.file("zero.png", &png_header(0, 0));
    let no_images = tempfile::tempdir().unwrap();
    std::fs::write(no_images.path().join("notes.txt"), "no pictures here").unwrap();
    let no_images = no_images.path().display().to_string();
    let cases = vec![
        case(
            "png truncated",
            &["--model", &m, "--image", &truncated],
            3,
            "truncated.png: cannot decode the image",
        ),
        case(
            "png garbage",
            &["--model", &m, "--image", &garbage],
            3,
            "garbage.png: cannot read the image: The image format could not be determined",
        ),
        case(
            "png empty",
            &["--model", &m, "--image", &empty],
            3,
            "empty.png: cannot read the image: The image format could not be determined",
        ),
        case(
            "png declaring 100000 × 100000 pixels",
            &["--model", &m, "--image", &huge],
            3,
            "huge.png: ",
        ),
        case(
            "png declaring 0 × 0 pixels",
            &["--model", &m, "--image", &zero],
            3,
            "zero.png: ",
        ),
        case(
            "missing image",
            &["--model", &m, "--image", &s.path("absent.png")],
            3,
            "absent.png: No such file",
        ),
        case(
            "directory without images",
            &["--model", &m, "--image", &no_images],
            3,
            "no .png, .jpg or .jpeg images in this directory",
        ),
        case(
            "image of the wrong size",
            &["--model", &m, "--image", &digit(), "--resize", "16,16"],
            3,
            "shape [1, 16, 16] does not fit the model, which takes [1, 32, 32]",
        ),
    ];
    check(&cases);
}

#[test]
fn impossible_arguments() {
    let m = onnx();
    let d = digit();
    let base = ["--model", m.as_str(), "--image", d.as_str()];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    let cases = vec![
        case(
            "n = 0",
            &with(&["--samples", "0"]),
            2,
            "samples: the number of noisy copies must be at least 1",
        ),
        case(
            "negative n",
            &with(&["--samples", "-5"]),
            2,
            "unexpected argument '-5'",
        ),
        case(
            "negative sigma",
            &with(&["--sigma", "-0.5"]),
            2,
            "noise: the noise level must be finite and non-negative (σ = -0.5)",
        ),
        case(
            "NaN noise level",
            &with(&["--noise-level", "NaN"]),
            2,
            "noise: the noise level must be finite and non-negative (σ = NaN)",
        ),
        case(
            "IG steps 0",
            &with(&["--method", "integrated-gradients", "--ig-steps", "0"]),
            2,
            "ig-steps: must be at least 1",
        ),
        case(
            "IG steps on another method",
            &with(&["--method", "gradient", "--ig-steps", "4"]),
            2,
            "--ig-steps only applies to --method integrated-gradients",
        ),
        case(
            "target past the classes",
            &with(&["--target", "10"]),
            2,
            "target: class 10 does not exist (the model has 10 classes)",
        ),
        case(
            "target not a number",
            &with(&["--target", "seven"]),
            2,
            "invalid value 'seven' for '--target <K>'",
        ),
        case(
            "unknown method",
            &with(&["--method", "lime"]),
            2,
            "invalid value 'lime' for '--method <METHOD>'",
        ),
        case(
            "zero resize",
            &with(&["--resize", "0,32"]),
            2,
            "\"0\" is not a side between 1",
        ),
        case(
            "--resume without --out-dir",
            &with(&["--resume"]),
            2,
            "--resume needs --out-dir DIR",
        ),
        case(
            "absurd n",
            &with(&["--samples", "1000000000"]),
            5,
            "1000000000 noisy copies requested, more than the limit of 10000 (Limits::max_copies); raise it with --max-samples N",
        ),
        case(
            "absurd IG steps",
            &with(&["--method", "integrated-gradients", "--ig-steps", "99999999"]),
            5,
            "99999999 Integrated Gradients steps requested, more than the limit of 10000 (Limits::max_ig_steps); raise it with --max-ig-steps N",
        ),
        case(
            "work over the limit",
            &with(&["--max-work", "0.1"]),
            5,
            "the explanation needs 391.6 MFLOP (50 copies × 7.8 MFLOP per forward and backward), more than the limit of 100.0 MFLOP (Limits::max_work_flops); raise it with --max-work GFLOP",
        ),
        case(
            "IG work over the limit",
            &with(&[
                "--method",
                "integrated-gradients",
                "--smooth",
                "--samples",
                "100",
                "--ig-steps",
                "1000",
                "--max-work",
                "100",
            ]),
            5,
            "(100 copies × 1000 Integrated Gradients points × 7.8 MFLOP per forward and backward)",
        ),
        case(
            "one copy over the memory limit",
            &with(&["--max-memory", "0"]),
            5,
            "one copy of the input needs 720.1 KiB of working memory",
        ),
        case(
            "--max-work not a number",
            &with(&["--max-work", "lots"]),
            2,
            "expected a positive number of GFLOP",
        ),
    ];
    check(&cases);
}

#[test]
fn outputs_that_cannot_be_written() {
    let s = Scratch::new();
    let m = onnx();
    let d = digit();
    let a_file = s.file("a-file.txt", b"not a directory");
    let a_dir = tempfile::tempdir().unwrap();
    let out_dir = a_dir.path().display().to_string();
    let inside_file = format!("{a_file}/map.npy");
    let mut cases = vec![
        case(
            "output path is a directory",
            &["--model", &m, "--image", &d, "--npy", &out_dir],
            1,
            "(--npy): it is a directory",
        ),
        case(
            "output inside a file",
            &["--model", &m, "--image", &d, "--png", &inside_file],
            1,
            "a-file.txt is not a directory",
        ),
        case(
            "output in a missing directory",
            &[
                "--model",
                &m,
                "--image",
                &d,
                "--npy",
                &s.path("nowhere/map.npy"),
            ],
            1,
            "nowhere is not a directory",
        ),
        case(
            "--out-dir is a file",
            &["--model", &m, "--image", &d, "--out-dir", &a_file],
            1,
            "(--out-dir): it is not a directory",
        ),
    ];
    for c in &mut cases {
        c.outputs = false;
    }
    check(&cases);
    assert!(files_in(a_dir.path()).is_empty());
    assert_eq!(std::fs::read(&a_file).unwrap(), b"not a directory");
}

fn linear(name: &str, weight: Vec<f32>, input: usize) -> Node<f32> {
    Node {
        name: name.into(),
        layer: Layer::Linear {
            weight: Tensor::from_vec(weight, &[2, 2]).unwrap(),
            bias: None,
        },
        inputs: vec![input],
    }
}

/// Writes `[1, 1, 2]` → flatten → fc1 → (ReLU →) fc2 as safetensors + JSON; returns the paths.
fn two_layer_model(s: &Scratch, name: &str, w1: f32, w2: f32, relu: bool) -> (String, String) {
    let mut nodes = vec![
        Node {
            name: "flat".into(),
            layer: Layer::Flatten { start_dim: 1 },
            inputs: vec![0],
        },
        linear("fc1", vec![w1, 0.0, 0.0, w1], 1),
    ];
    if relu {
        nodes.push(Node {
            name: "relu".into(),
            layer: Layer::Relu,
            inputs: vec![2],
        });
    }
    let last = nodes.len();
    nodes.push(linear("fc2", vec![w2, 0.0, 0.0, w2], last));
    let model = Model::new(name, &[1, 1, 2], nodes, last + 1).unwrap();
    (
        s.file(
            &format!("{name}.safetensors"),
            &safetensors_bytes(&model).unwrap(),
        ),
        s.file(
            &format!("{name}.arch.json"),
            arch_json(&model).unwrap().as_bytes(),
        ),
    )
}

#[test]
fn a_gradient_that_overflows_in_the_backward_is_a_numerical_fault() {
    let s = Scratch::new();
    // Forward: 1e20 · 1e-30 = 1e-10, then 1e10, all finite; backward: 1e20 · 1e20 = inf.
    let (weights, arch) = two_layer_model(&s, "backward-overflow", 1e20, 1e20, true);
    let x = s.file(
        "tiny.npy",
        &encode_npy(&Tensor::from_vec(vec![1e-30, 0.0], &[1, 1, 2]).unwrap()),
    );
    let cases = vec![
        case(
            "gradient overflow",
            &[
                "--model", &weights, "--arch", &arch, "--input", &x, "--method", "gradient",
            ],
            4,
            "non-finite value (inf) in the input gradient of copy 0, first at element 0",
        ),
        case(
            "gradient overflow, grad × input",
            &[
                "--model",
                &weights,
                "--arch",
                &arch,
                "--input",
                &x,
                "--method",
                "grad-x-input",
            ],
            4,
            "in the input gradient of copy 0",
        ),
    ];
    check(&cases);
}

#[test]
fn a_forward_that_overflows_names_the_layer() {
    let s = Scratch::new();
    // 1 · 1e20 · 1e20 = inf in fc2's output.
    let (weights, arch) = two_layer_model(&s, "forward-overflow", 1e20, 1e20, false);
    let x = s.file(
        "ones.npy",
        &encode_npy(&Tensor::from_vec(vec![1.0, 1.0], &[1, 1, 2]).unwrap()),
    );
    let cases = vec![case(
        "forward overflow",
        &[
            "--model", &weights, "--arch", &arch, "--input", &x, "--method", "gradient",
        ],
        4,
        "first produced by layer 'fc2' (Linear)",
    )];
    check(&cases);
}
