//! `smoothgrad explain --device cuda` and `smoothgrad bench --device cuda` (needs `--features
//! cuda`). Where CUDA cannot be opened, both exit non-zero with one clear line naming the missing
//! driver or device and write nothing; where a device exists, explain gives the CPU's maps on the
//! bundled digits model (within 1e-4 relative L2) and bench reports a rate. Set
//! `SMOOTHGRAD_REQUIRE_GPU=cuda` (or `all`) to make a missing device a failure.

use smoothgrad_autodiff::backend::cuda::CudaContext;
use smoothgrad_saliency::npy::read_npy;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn explain(device: &str, method: &str, npy: &Path) -> Output {
    let mut words: Vec<&str> = method.split(' ').collect();
    if words.len() > 1 || matches!(words[0], "smoothgrad" | "vargrad" | "smoothgrad-sq") {
        words.extend(["--samples", "16"]);
    }
    Command::new(env!("CARGO_BIN_EXE_smoothgrad"))
        .args(["explain", "--model"])
        .arg(assets().join("digits-cnn.onnx"))
        .arg("--image")
        .arg(assets().join("images/digit-3.png"))
        .arg("--method")
        .args(&words)
        .args(["--device", device, "--npy"])
        .arg(npy)
        .output()
        .expect("the binary runs")
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    num.sqrt() / den.sqrt().max(1e-30)
}

/// Whether this machine has a CUDA device; without one, panics if a device is required.
fn device_present() -> bool {
    match CudaContext::new(0) {
        Ok(_) => true,
        Err(reason) => {
            let required = std::env::var("SMOOTHGRAD_REQUIRE_GPU").unwrap_or_default();
            if required
                .split(',')
                .any(|v| matches!(v.trim(), "cuda" | "all"))
            {
                panic!("SMOOTHGRAD_REQUIRE_GPU={required} but there is no CUDA device: {reason}");
            }
            false
        }
    }
}

/// The failure of a command run with no CUDA device: exit 1, stderr exactly one line that names
/// the flag and the CUDA device problem, nothing on stdout.
fn assert_clear_device_error(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("error: --device cuda: cuda device: ")
            && (lines[0].contains("no CUDA driver") || lines[0].contains("CUDA_ERROR")),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn explain_on_cuda_matches_the_cpu_or_is_a_clear_error() {
    let present = device_present();
    let dir = tempfile::tempdir().unwrap();
    for method in [
        "smoothgrad",
        "vargrad",
        "gradient",
        "guided-backprop --smooth",
    ] {
        let stem = method.replace(' ', "");
        let cpu_path = dir.path().join(format!("{stem}-cpu.npy"));
        let gpu_path = dir.path().join(format!("{stem}-cuda.npy"));
        let gpu = explain("cuda", method, &gpu_path);
        if !present {
            assert_clear_device_error(&gpu);
            assert!(!gpu_path.exists(), "no output is written on failure");
            println!(
                "skipped: no CUDA device ({})",
                String::from_utf8_lossy(&gpu.stderr).trim()
            );
            return;
        }
        let err = String::from_utf8_lossy(&gpu.stderr);
        assert!(gpu.status.success(), "--device cuda failed: {err}");
        assert!(err.contains("device: cuda 0"), "{err}");
        let cpu = explain("cpu", method, &cpu_path);
        assert!(
            cpu.status.success(),
            "{}",
            String::from_utf8_lossy(&cpu.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&gpu.stdout).replace(&*gpu_path.to_string_lossy(), "OUT"),
            String::from_utf8_lossy(&cpu.stdout).replace(&*cpu_path.to_string_lossy(), "OUT"),
            "the same logits table and target"
        );
        let (c, g) = (read_npy(&cpu_path).unwrap(), read_npy(&gpu_path).unwrap());
        assert_eq!(c.dims(), g.dims());
        let e = rel_l2(g.as_slice(), c.as_slice());
        println!("{method}: rel L2 {e:.2e}");
        assert!(e <= 1e-4, "{method}: rel L2 {e:e}");
    }
}

#[test]
fn bench_on_cuda_reports_a_rate_or_is_a_clear_error() {
    let present = device_present();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_smoothgrad"))
        .args(["bench", "--model"])
        .arg(assets().join("digits-cnn.onnx"))
        .args([
            "--device",
            "cuda",
            "--samples",
            "8",
            "--runs",
            "2",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("the binary runs");
    if !present {
        assert_clear_device_error(&out);
        assert!(!json.exists(), "no JSON is written on failure");
        println!("skipped: no CUDA device");
        return;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("images/s") && text.contains("GFLOP/s"),
        "{text}"
    );
    let written = std::fs::read_to_string(&json).unwrap();
    assert!(written.contains("\"device\": \"cuda\""), "{written}");
}
