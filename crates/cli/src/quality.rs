//! `smoothgrad dataset`, `train` and `evaluate`: the ground-truth shapes benchmark, a CNN trained
//! on it by our own engine, and the explanation-quality study (docs/quality.md).

use anyhow::{Context, Result};
use clap::Args;
use smoothgrad_layers::load_safetensors_model;
use smoothgrad_layers::train::{arch_json, safetensors_bytes};
use smoothgrad_saliency::dataset::{
    ShapesConfig, TEST_SEED, TrainConfig, save_examples, train_shapes_cnn,
};
use smoothgrad_saliency::evaluate::{EvalConfig, run_evaluation};
use smoothgrad_saliency::npy::write_atomically;
use std::io::Write;
use std::path::PathBuf;

/// Options of `smoothgrad dataset`.
#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// Where to write the images and their masks.
    #[arg(long, value_name = "DIR", default_value = "shapes-dataset")]
    pub out_dir: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 20)]
    pub count: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// The stream the images come from (1 = training, 2 = test).
    #[arg(long, default_value_t = TEST_SEED)]
    pub seed: u64,
}

/// Options of `smoothgrad train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Where to write the weights (safetensors); the architecture goes beside it as .arch.json.
    #[arg(long, value_name = "FILE", default_value = "shapes-cnn.safetensors")]
    pub out: PathBuf,
    /// Optimisation steps (Adam, warm-up then cosine decay).
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-2)]
    pub learning_rate: f64,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Options of `smoothgrad evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The model's weights (default: the bundled shapes CNN).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "assets/shapes-cnn.safetensors"
    )]
    pub model: PathBuf,
    /// The model's JSON architecture (default: beside the weights).
    #[arg(long, value_name = "FILE")]
    pub arch: Option<PathBuf>,
    /// Where to write the table, the sweeps and the plots.
    #[arg(long, value_name = "DIR", default_value = "quality-output")]
    pub out_dir: PathBuf,
    /// Benchmark images in the table.
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    /// Noisy copies of the smoothed methods.
    #[arg(long, default_value_t = 50)]
    pub samples: usize,
    /// Images per point of the two sweeps.
    #[arg(long)]
    pub sweep_images: Option<usize>,
}

pub fn run_dataset(args: &DatasetArgs) -> Result<()> {
    let config = ShapesConfig {
        size: args.size,
        ..ShapesConfig::default()
    };
    let paths = save_examples(&config, args.seed, args.count, &args.out_dir)
        .with_context(|| format!("cannot write the dataset into {}", args.out_dir.display()))?;
    println!(
        "wrote {} images with their masks into {}",
        paths.len(),
        args.out_dir.display()
    );
    Ok(())
}

pub fn run_train(args: &TrainArgs) -> Result<()> {
    let config = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let (model, report) = train_shapes_cnn(&config, |p| {
        eprintln!(
            "step {:>5}  loss {:.4}  train accuracy {:.3}  {:.1} s",
            p.step, p.loss, p.train_accuracy, p.seconds
        );
    })
    .context("training failed")?;
    let arch = args.out.with_extension("arch.json");
    // Both files are encoded first and each written atomically: an interrupted save leaves
    // the previous files or complete new ones, never half a file.
    let weights = safetensors_bytes(&model)
        .with_context(|| format!("cannot save the model to {}", args.out.display()))?;
    let layers = arch_json(&model)
        .with_context(|| format!("cannot save the model to {}", arch.display()))?;
    write_atomically(&args.out, |w| w.write_all(&weights))?;
    write_atomically(&arch, |w| w.write_all(layers.as_bytes()))?;
    println!(
        "test accuracy {:.2}% after {} steps in {:.1} s; wrote {} and {}",
        100.0 * report.test_accuracy,
        report.steps,
        report.train_seconds,
        args.out.display(),
        arch.display()
    );
    Ok(())
}

pub fn run_evaluate(args: &EvaluateArgs) -> Result<()> {
    let arch = args
        .arch
        .clone()
        .unwrap_or_else(|| args.model.with_extension("arch.json"));
    let model = load_safetensors_model(&args.model, &arch)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    let mut config = EvalConfig {
        images: args.images,
        samples: args.samples,
        ..EvalConfig::default()
    };
    if let Some(n) = args.sweep_images {
        config.sweep_images = n;
    }
    let report = run_evaluation(&model, &config, &args.out_dir, &|m| eprintln!("{m}"))
        .context("the evaluation failed")?;
    println!("{}", report.table.to_markdown());
    for f in &report.files {
        println!("wrote {}", f.display());
    }
    println!("in {:.1} s", report.seconds);
    Ok(())
}
