//! `smoothgrad explain --device wgpu` gives the CPU's maps on the bundled digits model for every
//! method (within 1e-4 relative L2), and with `--precision f16` within 1e-2. Needs `--features wgpu`; with no adapter it checks the error is clear and
//! prints `skipped: no wgpu adapter (...)`, unless `SMOOTHGRAD_REQUIRE_GPU` is `wgpu` or `all`.

use smoothgrad_saliency::npy::read_npy;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn explain(device: &str, method: &str, npy: &Path) -> Output {
    let mut words: Vec<&str> = method.split(' ').collect();
    if words.contains(&"--smooth") || matches!(words[0], "smoothgrad" | "vargrad" | "smoothgrad-sq")
    {
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

#[test]
fn wgpu_explain_matches_the_cpu_on_the_digits_model() {
    let dir = tempfile::tempdir().unwrap();
    for (method, tolerance) in [
        ("smoothgrad", 1e-4),
        ("vargrad", 1e-4),
        ("gradient", 1e-4),
        ("guided-backprop --smooth", 1e-4),
        ("grad-x-input --smooth", 1e-4),
        // Not a rule with a point at the all-zero baseline: there the digits model's max-pool
        // windows tie to the last bit, and which one wins depends on the summation order (CPU
        // and GPU sum in different orders; with a trapezoid rule the maps differed by 7e-3).
        (
            "integrated-gradients --ig-steps 8 --ig-rule riemann-middle",
            1e-4,
        ),
        ("smoothgrad --precision f16", 1e-2),
    ] {
        let stem = method.replace([' ', '-'], "");
        let (method, precision) = match method.strip_suffix(" --precision f16") {
            Some(m) => (m, Some("--precision f16")),
            None => (method, None),
        };
        let cpu_path = dir.path().join(format!("{stem}-cpu.npy"));
        let gpu_path = dir.path().join(format!("{stem}-wgpu.npy"));
        let cpu = explain("cpu", method, &cpu_path);
        assert!(
            cpu.status.success(),
            "{}",
            String::from_utf8_lossy(&cpu.stderr)
        );
        let gpu_method = precision.map_or(method.to_string(), |p| format!("{method} {p}"));
        let gpu = explain("wgpu", &gpu_method, &gpu_path);
        let err = String::from_utf8_lossy(&gpu.stderr);
        if !gpu.status.success() {
            let required = std::env::var("SMOOTHGRAD_REQUIRE_GPU").unwrap_or_default();
            let no_adapter = err.contains("no adapter") && !gpu_path.exists();
            if no_adapter
                && !required
                    .split(',')
                    .any(|v| matches!(v.trim(), "wgpu" | "all"))
            {
                println!("skipped: no wgpu adapter ({})", err.trim());
                return;
            }
            panic!("--device wgpu failed: {err}");
        }
        assert!(err.contains("device: wgpu"), "{err}");
        if precision.is_none() {
            assert_eq!(
                String::from_utf8_lossy(&gpu.stdout).replace(&*gpu_path.to_string_lossy(), "OUT"),
                String::from_utf8_lossy(&cpu.stdout).replace(&*cpu_path.to_string_lossy(), "OUT"),
                "the same logits table and target"
            );
        } else {
            assert!(err.contains("f16 storage"), "{err}");
        }
        let (c, g) = (read_npy(&cpu_path).unwrap(), read_npy(&gpu_path).unwrap());
        assert_eq!(c.dims(), g.dims());
        let e = rel_l2(g.as_slice(), c.as_slice());
        println!("{gpu_method}: rel L2 {e:.2e}");
        assert!(e <= tolerance, "{gpu_method}: rel L2 {e:e}");
    }
}

#[test]
fn f16_precision_is_refused_off_wgpu() {
    let dir = tempfile::tempdir().unwrap();
    let out = explain("cpu", "gradient --precision f16", &dir.path().join("x.npy"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--precision f16 applies to --device wgpu only"),
        "{err}"
    );
    assert!(!dir.path().join("x.npy").exists());
}
