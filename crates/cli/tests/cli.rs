//! The `smoothgrad` binary end to end, on the bundled digits model: outputs written with the
//! right shapes, and every user error a non-zero exit with one line saying why and no file
//! left behind.

use smoothgrad_autodiff::Tensor;
use smoothgrad_saliency::image_io::{ImageOptions, load_image};
use smoothgrad_saliency::npy::{read_npy, write_npy};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn onnx_model() -> String {
    assets().join("digits-cnn.onnx").display().to_string()
}

fn digit(label: u32) -> String {
    assets()
        .join(format!("images/digit-{label}.png"))
        .display()
        .to_string()
}

fn smoothgrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smoothgrad"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The digit as the model input [1, 32, 32].
fn digit_tensor(label: u32) -> Tensor<f32> {
    let options = ImageOptions {
        channels: 1,
        resize: None,
    };
    load_image(Path::new(&digit(label)), &options).unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn explain_writes_npy_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let (npy, png) = (dir.path().join("map.npy"), dir.path().join("map.png"));
    let o = smoothgrad(&[
        "explain",
        "--model",
        &onnx_model(),
        "--image",
        &digit(5),
        "--samples",
        "8",
        "--npy",
        npy.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("target: class 5"), "{out}");
    assert!(out.contains("probability"), "{out}");
    // Five prediction rows under the header.
    let rows = out
        .lines()
        .skip_while(|l| !l.contains("probability"))
        .skip(1)
        .take_while(|l| !l.contains("target"))
        .count();
    assert_eq!(rows, 5, "{out}");
    assert_eq!(read_npy(&npy).unwrap().dims(), &[1, 32, 32]);
    let picture = image::open(&png).unwrap();
    assert_eq!((picture.width(), picture.height()), (256, 256));
    assert_eq!(files_in(dir.path()), vec!["map.npy", "map.png"]);
}

#[test]
fn safetensors_and_onnx_models_agree() {
    let dir = tempfile::tempdir().unwrap();
    let run = |model: &[&str], out: &Path| {
        let mut args = vec!["explain", "--method", "gradient", "--image"];
        let image = digit(3);
        args.push(&image);
        args.extend_from_slice(model);
        args.extend_from_slice(&["--npy", out.to_str().unwrap()]);
        let o = smoothgrad(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        read_npy(out).unwrap()
    };
    let weights = assets().join("digits-cnn.safetensors");
    let arch = assets().join("digits-cnn.arch.json");
    let a = run(
        &[
            "--model",
            weights.to_str().unwrap(),
            "--arch",
            arch.to_str().unwrap(),
        ],
        &dir.path().join("a.npy"),
    );
    let b = run(&["--model", &onnx_model()], &dir.path().join("b.npy"));
    let scale = a.as_slice().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
        assert!((x - y).abs() <= 1e-4 * scale, "{x} vs {y}");
    }
}

/// `explain --conv`: every CPU convolution algorithm runs and gives the same SmoothGrad map to
/// within f32 rounding on the bundled model (its forward decisions agree).
#[test]
fn conv_algorithms_agree() {
    let dir = tempfile::tempdir().unwrap();
    let image = digit(7);
    let model = onnx_model();
    let run = |conv: &str| {
        let out = dir.path().join(format!("{conv}.npy"));
        let o = smoothgrad(&[
            "explain",
            "--method",
            "smoothgrad",
            "--samples",
            "8",
            "--image",
            &image,
            "--model",
            &model,
            "--conv",
            conv,
            "--npy",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "--conv {conv}: {}", stderr(&o));
        read_npy(&out).unwrap()
    };
    let exact = run("im2col");
    let scale = exact.as_slice().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    for conv in ["winograd", "winograd-backward", "fastest"] {
        let map = run(conv);
        for (x, y) in exact.as_slice().iter().zip(map.as_slice()) {
            assert!((x - y).abs() <= 1e-4 * scale, "--conv {conv}: {x} vs {y}");
        }
    }
    // A GPU device takes no --conv (checked once the device exists in this binary).
    let expected = if cfg!(feature = "wgpu") {
        "--conv applies to --device cpu only"
    } else {
        "device wgpu is not built into this binary"
    };
    assert_fails(
        &[
            "--image", &image, "--model", &model, "--conv", "im2col", "--device", "wgpu",
        ],
        expected,
    );
}

#[test]
fn npy_input_and_given_noise() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.npy");
    // [1, C, H, W] is taken as well as [C, H, W].
    write_npy(&input, &digit_tensor(7).reshape(&[1, 1, 32, 32]).unwrap()).unwrap();
    let noise = dir.path().join("noise.npy");
    write_npy(&noise, &Tensor::randn(&[6, 1, 32, 32], 3).unwrap()).unwrap();
    let model = onnx_model();
    let run = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "explain",
            "--model",
            &model,
            "--input",
            input.to_str().unwrap(),
            "--noise",
            noise.to_str().unwrap(),
            "--npy",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        (smoothgrad(&args), out)
    };
    let (o, first) = run("a.npy", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("n = 6"), "{}", stdout(&o));
    let (o, second) = run("b.npy", &["--samples", "6"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (read_npy(&first).unwrap(), read_npy(&second).unwrap());
    assert_eq!(a.dims(), &[1, 32, 32]);
    assert_eq!(a, b, "the same noise gives the same map");

    let (o, out) = run("c.npy", &["--samples", "5"]);
    assert_one_line_error(&o, "holds 6 noise draws but --samples is 5");
    assert!(!out.exists());
}

#[test]
fn a_directory_of_images_gives_one_output_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("maps");
    let images = assets().join("images");
    let o = smoothgrad(&[
        "explain",
        "--model",
        &onnx_model(),
        "--image",
        images.to_str().unwrap(),
        "--method",
        "grad-x-input",
        "--overlay",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names = files_in(&out);
    assert_eq!(names.len(), 12, "{names:?}");
    assert!(
        names.contains(&"digit-0.npy".to_string()) && names.contains(&"digit-8.png".to_string())
    );
    for label in [0, 2, 3, 5, 7, 8] {
        assert!(stdout(&o).contains(&format!("digit-{label}.png")));
    }
}

#[test]
fn demo_writes_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let o = smoothgrad(&[
        "demo",
        "--out-dir",
        dir.path().to_str().unwrap(),
        "--samples",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let grid = image::open(dir.path().join("demo-grid.png")).unwrap();
    // 9 columns and 6 rows of 128-pixel tiles.
    assert!(grid.width() > 9 * 128 && grid.height() > 6 * 128);
    // Six per-digit rows, the digits grid, and the shapes grid (10 columns, 5 rows).
    assert_eq!(files_in(dir.path()).len(), 8);
    let shapes = image::open(dir.path().join("shapes-grid.png")).unwrap();
    assert!(shapes.width() > 10 * 128 && shapes.height() > 5 * 128);
    assert!(stdout(&o).contains("relevance mass accuracy"));
}

/// A failed run: non-zero status, one line on stderr containing `expected`.
fn assert_one_line_error(o: &Output, expected: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "succeeded: {}", stdout(o));
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(expected), "expected {expected:?} in {err}");
}

/// Runs `explain` with `args` plus output paths in a fresh directory; checks the one-line error
/// and that the directory stays empty.
fn assert_fails(args: &[&str], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("out.npy");
    let png = dir.path().join("out.png");
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--npy",
        npy.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    let o = smoothgrad(&all);
    assert_one_line_error(&o, expected);
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn missing_model_file() {
    assert_fails(
        &["--model", "no-such-model.onnx", "--image", &digit(0)],
        "cannot read no-such-model.onnx: No such file",
    );
    assert_fails(
        &["--model", "weights.safetensors", "--image", &digit(0)],
        "needs its architecture: add --arch",
    );
}

#[test]
fn wrong_input_shape() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rgb.npy");
    write_npy(&input, &Tensor::zeros(&[3, 32, 32]).unwrap()).unwrap();
    assert_fails(
        &["--model", &onnx_model(), "--input", input.to_str().unwrap()],
        "shape [3, 32, 32] does not fit the model, which takes [1, 32, 32]",
    );
}

#[test]
fn nan_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nan.npy");
    let mut x = digit_tensor(2).into_vec();
    x[100] = f32::NAN;
    write_npy(&input, &Tensor::from_vec(x, &[1, 32, 32]).unwrap()).unwrap();
    assert_fails(
        &["--model", &onnx_model(), "--input", input.to_str().unwrap()],
        "value NaN at element 100 is not finite",
    );
}

#[test]
fn zero_samples() {
    assert_fails(
        &[
            "--model",
            &onnx_model(),
            "--image",
            &digit(8),
            "--samples",
            "0",
        ],
        "samples: the number of noisy copies must be at least 1",
    );
}

#[test]
fn unknown_method() {
    assert_fails(
        &[
            "--model",
            &onnx_model(),
            "--image",
            &digit(8),
            "--method",
            "lime",
        ],
        "invalid value 'lime' for '--method <METHOD>'",
    );
}

// With the `cuda` feature the device exists in the binary: tests/cuda.rs checks its errors.
#[cfg(not(feature = "cuda"))]
#[test]
fn absent_device() {
    assert_fails(
        &[
            "--model",
            &onnx_model(),
            "--image",
            &digit(8),
            "--device",
            "cuda",
        ],
        "device cuda is not built into this binary",
    );
}

#[test]
fn options_that_do_not_apply() {
    assert_fails(
        &[
            "--model",
            &onnx_model(),
            "--image",
            &digit(8),
            "--method",
            "gradient",
            "--samples",
            "5",
        ],
        "--samples only applies to smoothed methods",
    );
    assert_fails(
        &[
            "--model",
            &onnx_model(),
            "--image",
            &digit(8),
            "--target",
            "10",
        ],
        "target: class 10 does not exist (the model has 10 classes)",
    );
    assert_fails(
        &["--model", &onnx_model(), "--image", "not-there.png"],
        "cannot read not-there.png",
    );
}
