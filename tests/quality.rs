//! Explanation quality on the shapes benchmark, with known answers (see docs/quality.md).
//!
//! The tests load the bundled model `assets/shapes-cnn.*`; two ignored tests regenerate it and
//! run the full study:
//! `cargo test --release -p smoothgrad-tests --test quality -- --ignored --nocapture`.

use smoothgrad_autodiff::Tensor;
use smoothgrad_layers::train::{accuracy, save_model};
use smoothgrad_layers::{Layer, Model, Node, load_safetensors_model};
use smoothgrad_saliency::dataset::{
    ShapesConfig, TEST_SEED, TrainConfig, generate, save_examples, train_shapes_cnn,
};
use smoothgrad_saliency::evaluate::{EvalConfig, MapSource, MethodSpec, edge_map, run_evaluation};
use smoothgrad_saliency::metrics::{
    CurveConfig, cascading_randomization, deletion_curve, insertion_curve, mass_accuracy,
    pointing_game,
};
use smoothgrad_saliency::{Explainer, Method};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bundled_model() -> Model<f32> {
    let assets = repo().join("assets");
    load_safetensors_model(
        &assets.join("shapes-cnn.safetensors"),
        &assets.join("shapes-cnn.arch.json"),
    )
    .expect("the bundled shapes model loads")
}

fn mask_map(mask: &[bool], side: usize) -> Tensor<f32> {
    let v = mask.iter().map(|&m| f32::from(u8::from(m))).collect();
    Tensor::from_vec(v, &[side, side]).unwrap()
}

fn gradient(model: &Model<f32>, image: &Tensor<f32>, target: usize) -> Tensor<f32> {
    Explainer::new(model)
        .explain(image, Some(target), &Method::Gradient, None)
        .unwrap()
        .attribution
}

#[test]
fn the_mask_is_a_perfect_explanation() {
    for i in 0..25 {
        let s = generate(TEST_SEED, i);
        let map = mask_map(&s.mask, 32);
        assert_eq!(mass_accuracy(&map, &s.mask).unwrap(), 1.0, "image {i}");
        assert!(pointing_game(&map, &s.mask).unwrap(), "image {i}");
    }
}

#[test]
fn the_bundled_model_is_accurate_on_the_test_stream() {
    let model = bundled_model();
    let test = ShapesConfig::default().batch(TEST_SEED, 0..300);
    let acc = accuracy(&model, &test.images, &test.labels, 100).unwrap();
    assert!(acc >= 0.95, "test accuracy {acc}");
}

#[test]
fn edges_fail_the_randomization_check_and_the_gradient_passes() {
    let model = bundled_model();
    let images = 6;
    let mut final_rho = 0.0;
    for i in 0..images {
        let s = generate(TEST_SEED, i);
        let edges = cascading_randomization(&model, &s.image, |_, x| edge_map(x), 1).unwrap();
        assert_eq!(edges.len(), 4);
        assert!(edges.iter().all(|step| step.spearman > 0.999), "{edges:?}");
        let grads =
            cascading_randomization(&model, &s.image, |m, x| Ok(gradient(m, x, s.label)), 1)
                .unwrap();
        let layers: Vec<&str> = grads.iter().map(|g| g.layer.as_str()).collect();
        assert_eq!(layers, ["fc", "conv3", "conv2", "conv1"]);
        // Already the top layer changes the map; with every layer random it is another map.
        assert!(
            grads.iter().all(|g| g.spearman < 0.95),
            "image {i}: {grads:?}"
        );
        let last = grads.last().unwrap().spearman;
        assert!(last < 0.7, "image {i}: {grads:?}");
        final_rho += last / images as f64;
    }
    assert!(
        final_rho < 0.4,
        "mean ρ with every layer random: {final_rho}"
    );
}

#[test]
fn inserting_the_object_first_beats_a_random_order() {
    let model = bundled_model();
    let config = CurveConfig {
        step: 0.05,
        ..CurveConfig::default()
    };
    let (mut by_mask, mut random) = (0.0, 0.0);
    let images = 10;
    for i in 0..images {
        let s = generate(TEST_SEED, i);
        // Object pixels first, then the rest; both orders shuffled by a fixed permutation.
        let shuffled: Vec<usize> = (0..1024)
            .map(|p| (p * 389 + 17 * i as usize) % 1024)
            .collect();
        let object_first: Vec<usize> = shuffled
            .iter()
            .copied()
            .filter(|&p| s.mask[p])
            .chain(shuffled.iter().copied().filter(|&p| !s.mask[p]))
            .collect();
        by_mask += insertion_curve(&model, &s.image, s.label, &object_first, &config)
            .unwrap()
            .auc;
        random += insertion_curve(&model, &s.image, s.label, &shuffled, &config)
            .unwrap()
            .auc;
    }
    let (by_mask, random) = (by_mask / images as f64, random / images as f64);
    assert!(
        by_mask > random + 0.2,
        "mask order {by_mask} vs random {random}"
    );
}

#[test]
fn deleting_a_region_a_linear_model_ignores_changes_nothing() {
    // Logits ±w·x on benchmark images, w = 0 on the left half of every channel.
    let w: Vec<f32> = (0..3 * 1024)
        .map(|e| {
            if e % 32 < 16 {
                0.0
            } else {
                ((e % 7) as f32 - 3.0) * 0.01
            }
        })
        .collect();
    let weight = w.iter().copied().chain(w.iter().map(|v| -v)).collect();
    let nodes = vec![
        Node {
            name: "flatten".into(),
            layer: Layer::Flatten { start_dim: 1 },
            inputs: vec![0],
        },
        Node {
            name: "fc".into(),
            layer: Layer::Linear {
                weight: Tensor::from_vec(weight, &[2, 3 * 1024]).unwrap(),
                bias: None,
            },
            inputs: vec![1],
        },
    ];
    let model = Model::new("linear", &[3, 32, 32], nodes, 2).unwrap();
    let s = generate(TEST_SEED, 3);
    let left_first: Vec<usize> = (0..1024)
        .filter(|p| p % 32 < 16)
        .chain((0..1024).filter(|p| p % 32 >= 16))
        .collect();
    let curve = deletion_curve(&model, &s.image, 0, &left_first, &CurveConfig::default()).unwrap();
    let half = curve.fractions.iter().filter(|&&f| f <= 0.5).count();
    assert!(half >= 26);
    for k in 0..half {
        assert_eq!(curve.probabilities[k], curve.probabilities[0], "point {k}");
    }
    assert_ne!(curve.probabilities[half], curve.probabilities[0]);
}

#[test]
fn a_quick_study_writes_every_output() {
    let model = bundled_model();
    let dir = tempfile::tempdir().unwrap();
    let report = run_evaluation(&model, &EvalConfig::quick(3), dir.path(), &|_| {}).unwrap();
    assert_eq!(report.table.rows.len(), 9);
    for f in &report.files {
        let meta = std::fs::metadata(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(meta.len() > 100, "{} is nearly empty", f.display());
    }
    let csv = std::fs::read_to_string(dir.path().join("quality-table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 10);
    let png = image::open(dir.path().join("noise-sweep.png")).unwrap();
    assert_eq!(png.width(), 820);
    // The control map ignores the model entirely: every randomisation step keeps ρ = 1.
    let edges = report
        .table
        .rows
        .iter()
        .find(|r| r.name.starts_with("edges"))
        .unwrap();
    assert!(edges.randomization.iter().all(|(_, s)| s.mean > 0.999));
    let spec = MethodSpec {
        name: "edges".into(),
        source: MapSource::Edges,
    };
    let s = generate(TEST_SEED, 0);
    assert_eq!(
        spec.explain(&model, &s.image, 0).unwrap(),
        edge_map(&s.image).unwrap()
    );
}

/// Trains the benchmark CNN and writes `assets/shapes-cnn.*` and `assets/shapes/`.
#[test]
#[ignore = "regenerates the assets (about two minutes in release)"]
fn regenerate_assets() {
    let assets = repo().join("assets");
    let config = TrainConfig::default();
    let (model, report) = train_shapes_cnn(&config, |p| {
        eprintln!(
            "step {}/{}: loss {:.4}, train accuracy {:.3}, {:.0} s",
            p.step, p.steps, p.loss, p.train_accuracy, p.seconds
        )
    })
    .unwrap();
    eprintln!("{report:?}");
    save_model(
        &model,
        &assets.join("shapes-cnn.safetensors"),
        &assets.join("shapes-cnn.arch.json"),
    )
    .unwrap();
    save_examples(
        &ShapesConfig::default(),
        TEST_SEED,
        10,
        &assets.join("shapes"),
    )
    .unwrap();
}

/// The full study into `$QUALITY_OUT` (default `target/quality`); `QUALITY_IMAGES`,
/// `QUALITY_SAMPLES` and `QUALITY_SWEEP_IMAGES` override the image count, n and the sweeps'
/// image count.
#[test]
#[ignore = "the full study (several minutes in release)"]
fn full_study() {
    let out = std::env::var_os("QUALITY_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/quality"));
    let count = |key: &str, default: usize| {
        std::env::var(key)
            .ok()
            .map_or(default, |v| v.parse().expect("a count"))
    };
    let defaults = EvalConfig::default();
    let config = EvalConfig {
        images: count("QUALITY_IMAGES", defaults.images),
        samples: count("QUALITY_SAMPLES", defaults.samples),
        sweep_images: count("QUALITY_SWEEP_IMAGES", defaults.sweep_images),
        ..defaults
    };
    let report = run_evaluation(&bundled_model(), &config, &out, &|m| eprintln!("{m}")).unwrap();
    println!("{}", report.table.to_markdown());
    println!("{}", report.noise.to_csv());
    println!("{}", report.samples.to_csv());
    eprintln!(
        "table {:.0} s, noise sweep {:.0} s, samples sweep {:.0} s, total {:.0} s",
        report.table.seconds, report.noise.seconds, report.samples.seconds, report.seconds
    );
}
