//! Batch runs that are interrupted: outputs are complete or absent (never half written under
//! their final names), and `--resume` finishes the batch, recomputing only what is missing.

use smoothgrad_saliency::npy::read_npy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn onnx() -> String {
    assets().join("digits-cnn.onnx").display().to_string()
}

fn explain_args(images: &Path, out: &Path, samples: &str, resume: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "explain",
        "--model",
        &onnx(),
        "--image",
        &images.display().to_string(),
        "--samples",
        samples,
        "--out-dir",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if resume {
        args.push("--resume".into());
    }
    args
}

fn run(args: &[String]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_smoothgrad"))
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Every file of `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap();
            (name, (bytes, e.metadata().unwrap().modified().unwrap()))
        })
        .collect()
}

/// Checks every file under its final name is a complete map (.npy [1, 32, 32]) or picture
/// (256 × 256 PNG); returns the stems whose two outputs are both there, and the temporary files.
fn complete_outputs(dir: &Path) -> (Vec<String>, Vec<String>) {
    let (mut npy, mut png, mut temporaries) = (Vec::new(), Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            temporaries.push(name);
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => {
                let map = read_npy(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(map.dims(), &[1, 32, 32], "{name}");
                npy.push(stem);
            }
            Some("png") => {
                let picture = image::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!((picture.width(), picture.height()), (256, 256), "{name}");
                png.push(stem);
            }
            _ => panic!("unexpected file {name}"),
        }
    }
    let mut both: Vec<String> = npy.into_iter().filter(|s| png.contains(s)).collect();
    both.sort();
    (both, temporaries)
}

#[test]
fn resume_recomputes_only_what_is_missing() {
    let out = tempfile::tempdir().unwrap();
    let images = assets().join("images");
    run(&explain_args(&images, out.path(), "4", false));
    let before = snapshot(out.path());
    assert_eq!(before.len(), 12);

    std::fs::remove_file(out.path().join("digit-5.png")).unwrap();
    // What a killed run leaves: a temporary file of one of this run's outputs, and a file that
    // is not ours, which must be kept.
    std::fs::write(out.path().join(".digit-5.npy.Xy12ab.tmp"), b"half a fi").unwrap();
    std::fs::write(out.path().join(".notes.tmp"), b"someone else's").unwrap();
    let o = run(&explain_args(&images, out.path(), "4", true));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("resume: skipped 5 of 6 inputs whose outputs already exist"),
        "{stdout}"
    );
    let explained: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(": smoothgrad (n = 4"))
        .collect();
    assert_eq!(explained.len(), 1, "{stdout}");
    assert!(explained[0].contains("digit-5.png"), "{stdout}");

    let mut after = snapshot(out.path());
    assert_eq!(
        after.remove(".notes.tmp").map(|(b, _)| b),
        Some(b"someone else's".to_vec())
    );
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (name, (bytes, modified)) in &after {
        let (old_bytes, old_modified) = &before[name];
        assert_eq!(bytes, old_bytes, "{name} differs after the resumed run");
        if !name.starts_with("digit-5.") {
            assert_eq!(modified, old_modified, "{name} was rewritten");
        }
    }
}

#[test]
fn a_killed_batch_leaves_complete_outputs_and_resume_finishes_it() {
    let images = tempfile::tempdir().unwrap();
    let total = 12;
    for i in 0..total {
        let digit = [0, 2, 3, 5, 7, 8][i % 6];
        std::fs::copy(
            assets().join(format!("images/digit-{digit}.png")),
            images.path().join(format!("img-{i:02}.png")),
        )
        .unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let args = explain_args(images.path(), out.path(), "64", false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_smoothgrad"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL as soon as the first map is written: mid-batch, and possibly mid-write.
    let start = Instant::now();
    while std::fs::read_dir(out.path())
        .map(|d| d.count() == 0)
        .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no output after two minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (done, _temporaries) = complete_outputs(out.path());
    assert!(
        done.len() < total,
        "the kill came after the batch finished: {done:?}"
    );

    let o = run(&explain_args(images.path(), out.path(), "64", true));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!(
            "resume: skipped {} of {total} inputs whose outputs already exist",
            done.len()
        )),
        "{stdout}"
    );
    let (finished, temporaries) = complete_outputs(out.path());
    assert_eq!(finished.len(), total, "{finished:?}");
    assert!(temporaries.is_empty(), "{temporaries:?}");
}
