//! `smoothgrad explain`: attribution maps for one input or many.

use crate::common::{self, ConvChoice, Drawing, IgRuleName, MethodName, Recipe};
use crate::exit::{bad_input, usage};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use smoothgrad_autodiff::Tensor;
use smoothgrad_layers::Model;
use smoothgrad_saliency::image_io::{self, ImageOptions};
use smoothgrad_saliency::visualize::{self, Colormap};
use smoothgrad_saliency::{Explainer, IgConfig, Limits, NoiseLevel, Output, Smoothing, npy};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("source").required(true).args(["input", "image"])),
    after_help = crate::exit::EXIT_STATUS_HELP
)]
pub struct ExplainArgs {
    /// The model: an .onnx file, or a .safetensors file (with --arch).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// The JSON architecture of a .safetensors model ("smoothgrad-arch/1").
    #[arg(long, value_name = "FILE")]
    arch: Option<PathBuf>,
    /// A NumPy .npy input of shape [C, H, W] or [1, C, H, W], float32 or float64, used as given.
    #[arg(long, value_name = "FILE", conflicts_with = "image")]
    input: Option<PathBuf>,
    /// A PNG or JPEG image, or a directory of them (repeatable). Values read in [0, 1].
    #[arg(long, value_name = "FILE|DIR")]
    image: Vec<PathBuf>,
    /// Resize images to H,W (bilinear) before explaining.
    #[arg(long, value_name = "H,W", value_parser = parse_size, conflicts_with = "input")]
    resize: Option<[usize; 2]>,
    /// Per-channel mean subtracted from images (one value, or one per channel).
    #[arg(long, value_name = "R,G,B", value_delimiter = ',', num_args = 1.., requires = "std", conflicts_with = "input", allow_negative_numbers = true)]
    mean: Vec<f32>,
    /// Per-channel standard deviation images are divided by (after --mean).
    #[arg(long, value_name = "R,G,B", value_delimiter = ',', num_args = 1.., requires = "mean", conflicts_with = "input")]
    std: Vec<f32>,
    /// The class to explain (default: the top prediction).
    #[arg(long, value_name = "K")]
    target: Option<usize>,
    /// The attribution method.
    #[arg(long, value_enum, default_value_t = MethodName::Smoothgrad)]
    method: MethodName,
    /// Average the method over noisy copies (SmoothGrad on top of any method).
    #[arg(long)]
    smooth: bool,
    /// Number of noisy copies n [default: 50, or the first dimension of --noise].
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Noise σ as a fraction of the input's range (max − min) [default: 0.15].
    #[arg(
        long,
        value_name = "LEVEL",
        conflicts_with = "sigma",
        allow_negative_numbers = true
    )]
    noise_level: Option<f64>,
    /// Noise σ in input units, instead of --noise-level.
    #[arg(long, value_name = "SIGMA", allow_negative_numbers = true)]
    sigma: Option<f64>,
    /// Seed of the noise [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Standard normal noise draws [N, C, H, W] (.npy) to use instead of the built-in generator.
    #[arg(long, value_name = "FILE", conflicts_with = "seed")]
    noise: Option<PathBuf>,
    /// Points on the Integrated Gradients path [default: 50].
    #[arg(long, value_name = "STEPS")]
    ig_steps: Option<usize>,
    /// Quadrature rule of Integrated Gradients [default: gauss-legendre].
    #[arg(long, value_enum, value_name = "RULE")]
    ig_rule: Option<IgRuleName>,
    /// What is differentiated: the target's logit or its softmax probability.
    #[arg(long, value_enum, default_value_t = OutputName::Logit)]
    output: OutputName,
    /// Where to compute: cpu, or wgpu / cuda in a binary built with the `wgpu` / `cuda` feature
    /// (wgpu: every method; cuda: gradient, guided backprop and their smoothed forms). An
    /// error, never a CPU fallback, when no adapter or CUDA device is found.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// How --device wgpu stores activations and weights: f32, or f16 (f32 arithmetic; needs
    /// the adapter's SHADER_F16 feature).
    #[arg(long, value_enum, default_value_t = PrecisionName::F32)]
    precision: PrecisionName,
    /// Convolution algorithm on the CPU: winograd (the default: Winograd F(2×2,3×3) forward,
    /// whose rounding stays close to im2col's, and F(4×4,3×3) input gradient),
    /// winograd-backward (im2col forward: the same predictions and ReLU decisions as im2col;
    /// maps within ≈ 1e-6 of im2col's), im2col (+ GEMM both ways: PyTorch's summation order,
    /// the last digit), or fastest (F(4×4,3×3) forward too; its rounding can flip near-zero
    /// ReLUs).
    #[arg(long, value_enum, default_value_t = ConvChoice::Winograd)]
    conv: ConvChoice,
    /// Working memory of the noisy copies in flight, in MiB (CPU: all chunks running side by
    /// side; GPU: one chunk) [default: 256 on the CPU, 128 on a GPU].
    #[arg(long, value_name = "MB")]
    memory_budget: Option<usize>,
    /// Refuse more noisy copies than this (exit status 5) [default: 10000].
    #[arg(long, value_name = "N")]
    max_samples: Option<usize>,
    /// Refuse more Integrated Gradients steps than this (exit status 5) [default: 10000].
    #[arg(long, value_name = "N")]
    max_ig_steps: Option<usize>,
    /// Refuse an explanation needing more work than this, in GFLOP: the model's FLOPs per
    /// forward and backward × copies × IG steps (exit status 5) [default: 10000].
    #[arg(long, value_name = "GFLOP", value_parser = parse_gflop)]
    max_work: Option<u64>,
    /// Refuse a model whose single copy needs more working memory than this, in MiB; chunks of
    /// copies never exceed it either (exit status 5) [default: 4096].
    #[arg(long, value_name = "MB")]
    max_memory: Option<u64>,
    /// Write the attribution [C, H, W] as float32 .npy (one input only).
    #[arg(long, value_name = "FILE", conflicts_with = "out_dir")]
    npy: Option<PathBuf>,
    /// Write a picture of the map as PNG (one input only).
    #[arg(long, value_name = "FILE", conflicts_with = "out_dir")]
    png: Option<PathBuf>,
    /// Write NAME.npy and NAME.png for every input (NAME: its file stem) into this directory.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Skip inputs whose outputs in --out-dir all exist already (outputs are written atomically,
    /// so an existing one is complete): finishes an interrupted batch run.
    #[arg(long)]
    resume: bool,
    /// Draw the map over the input picture.
    #[arg(long)]
    overlay: bool,
    /// Draw the signed attribution (blue negative, red positive) instead of its magnitude.
    #[arg(long, conflicts_with = "overlay")]
    diverging: bool,
    /// Colour map of the PNG: gray, inferno, viridis, magma, plasma, cividis, turbo, red-blue
    /// [default: gray; inferno with --overlay; red-blue with --diverging].
    #[arg(long, value_name = "NAME", value_parser = common::parse_colormap)]
    colormap: Option<Colormap>,
    /// Enlarge the PNG this many times, nearest neighbour [default: to about 256 pixels].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=64))]
    scale: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputName {
    Logit,
    Probability,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PrecisionName {
    F32,
    F16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    Cpu,
    Cuda,
    Wgpu,
}

/// The explainer of the chosen device.
enum Engine<'m> {
    Cpu(Explainer<'m, f32>),
    #[cfg(feature = "wgpu")]
    Wgpu(Box<smoothgrad_saliency::WgpuExplainer<'m>>),
    #[cfg(feature = "cuda")]
    Cuda(Box<smoothgrad_saliency::CudaExplainer<'m>>),
}

impl<'m> Engine<'m> {
    #[cfg_attr(not(feature = "wgpu"), allow(unused_variables))]
    fn new(
        device: Device,
        model: &'m Model<f32>,
        budget: usize,
        output: Output,
        precision: PrecisionName,
    ) -> Result<Self> {
        match device {
            #[cfg(feature = "wgpu")]
            Device::Wgpu => {
                // No silent CPU fallback: without an adapter this is an error that lists what
                // wgpu found.
                let explainer = smoothgrad_saliency::WgpuExplainer::new(model)
                    .context("--device wgpu")?
                    .memory_budget(budget)
                    .output(output);
                let explainer = match precision {
                    PrecisionName::F32 => explainer,
                    PrecisionName::F16 => explainer
                        .precision(smoothgrad_saliency::wgpu_explain::Precision::F16Storage)
                        .context("--precision f16")?,
                };
                let info = explainer.adapter_info();
                eprintln!(
                    "device: wgpu ({}, {:?}, {:?}, {} storage)",
                    info.name,
                    info.backend,
                    info.device_type,
                    explainer.storage_precision().name()
                );
                Ok(Engine::Wgpu(Box::new(explainer)))
            }
            #[cfg(feature = "cuda")]
            Device::Cuda => {
                // No silent CPU fallback: without a driver or device this is an error.
                let explainer = smoothgrad_saliency::CudaExplainer::new(model, 0)
                    .context("--device cuda")?
                    .memory_budget(budget)
                    .output(output);
                let ctx = explainer.context();
                let name = ctx.name().unwrap_or_else(|_| "unnamed".into());
                let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
                eprintln!("device: cuda 0 ({name}, sm_{major}{minor})");
                Ok(Engine::Cuda(Box::new(explainer)))
            }
            _ => Ok(Engine::Cpu(
                Explainer::new(model).memory_budget(budget).output(output),
            )),
        }
    }

    fn explain(
        &self,
        x: &Tensor<f32>,
        target: Option<usize>,
        recipe: &Recipe,
    ) -> smoothgrad_saliency::Result<smoothgrad_saliency::SaliencyMap<f32>> {
        match self {
            Engine::Cpu(e) => e.explain(x, target, &recipe.method, recipe.smoothing.as_ref()),
            #[cfg(feature = "wgpu")]
            Engine::Wgpu(e) => e.explain(x, target, &recipe.method, recipe.smoothing.as_ref()),
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => e.explain(x, target, &recipe.method, recipe.smoothing.as_ref()),
        }
    }
}

impl Engine<'_> {
    /// The engine with `limits` on what one explanation may cost.
    fn with_limits(self, limits: Limits) -> Self {
        match self {
            Engine::Cpu(e) => Engine::Cpu(e.limits(limits)),
            #[cfg(feature = "wgpu")]
            Engine::Wgpu(e) => Engine::Wgpu(Box::new(e.limits(limits))),
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => Engine::Cuda(Box::new(e.limits(limits))),
        }
    }
}

/// One input to explain.
struct Item {
    /// As named in messages.
    path: PathBuf,
    /// Output file stem.
    stem: String,
    is_npy: bool,
}

/// Where the outputs of one input go.
struct Outputs {
    npy: Option<PathBuf>,
    png: Option<PathBuf>,
}

impl Outputs {
    /// Whether every output exists under its final name: written atomically, so complete.
    fn all_exist(&self) -> bool {
        [&self.npy, &self.png]
            .into_iter()
            .flatten()
            .all(|p| p.is_file())
    }
}

pub fn run(args: &ExplainArgs) -> Result<()> {
    let built = match (cfg!(feature = "wgpu"), cfg!(feature = "cuda")) {
        (true, true) => "cpu, wgpu, cuda",
        (true, false) => "cpu, wgpu",
        (false, true) => "cpu, cuda",
        (false, false) => "cpu",
    };
    if (args.device == Device::Cuda && !cfg!(feature = "cuda"))
        || (args.device == Device::Wgpu && !cfg!(feature = "wgpu"))
    {
        let name = args
            .device
            .to_possible_value()
            .map(|v| v.get_name().to_string());
        bail!(
            "device {} is not built into this binary (available: {built})",
            name.unwrap_or_default()
        );
    }
    if args.resume && args.out_dir.is_none() {
        return Err(usage(
            "--resume needs --out-dir DIR: it skips inputs whose outputs are already there",
        ));
    }
    if args.precision != PrecisionName::F32 && args.device != Device::Wgpu {
        return Err(usage("--precision f16 applies to --device wgpu only"));
    }
    let mut recipe = recipe(args)?;
    let limits = limits(args)?;
    let items = collect_inputs(args)?;
    if args.out_dir.is_none() && items.len() > 1 && (args.npy.is_some() || args.png.is_some()) {
        return Err(usage(format!(
            "{} inputs were given: use --out-dir DIR to write one .npy and .png per input",
            items.len()
        )));
    }
    check_output_paths(args)?;
    let model = common::load_model(&args.model, args.arch.as_deref())?;
    if let (Some(path), Some(s)) = (&args.noise, recipe.smoothing.as_mut()) {
        let noise = npy::read_npy(path)?;
        let draws = match noise.dims() {
            &[n, _, _, _] => n,
            dims => {
                return Err(bad_input(format!(
                    "{}: noise has shape {dims:?}; it must be [N, C, H, W] standard normal draws",
                    path.display()
                )));
            }
        };
        match args.samples {
            Some(n) if n != draws => {
                return Err(usage(format!(
                    "{}: holds {draws} noise draws but --samples is {n}",
                    path.display()
                )));
            }
            _ => s.samples = draws,
        }
        s.given_noise = Some(noise);
    }
    // The whole request against the limits, before any input is read or buffer allocated.
    let ig_steps = match &recipe.method {
        smoothgrad_saliency::Method::IntegratedGradients(c) => Some(c.steps),
        _ => None,
    };
    let copies = recipe.smoothing.as_ref().map_or(1, |s| s.samples);
    limits.check(&model, copies, ig_steps)?;
    let budget = match args.memory_budget {
        Some(mb) => mb
            .checked_mul(1 << 20)
            .ok_or_else(|| usage(format!("--memory-budget {mb} MiB is too large")))?,
        None if args.device == Device::Cpu => smoothgrad_saliency::DEFAULT_MEMORY_BUDGET,
        None => smoothgrad_saliency::DEFAULT_GPU_MEMORY_BUDGET,
    };
    let output = match args.output {
        OutputName::Logit => Output::Logit,
        OutputName::Probability => Output::Probability,
    };
    if args.conv != ConvChoice::Winograd && args.device != Device::Cpu {
        return Err(usage("--conv applies to --device cpu only"));
    }
    args.conv.apply();
    let explainer =
        Engine::new(args.device, &model, budget, output, args.precision)?.with_limits(limits);
    let drawing = Drawing::new(args.diverging, args.overlay, args.colormap);
    let description = recipe.describe(&method_label(args));

    let bar = if items.len() > 1 {
        let bar = ProgressBar::new(items.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:32} {pos}/{len} [{elapsed}<{eta}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    if args.resume {
        remove_stale_temporaries(args, &items)?;
    }
    let mut skipped = 0;
    for item in &items {
        bar.set_message(item.stem.clone());
        let outputs = outputs_for(args, item);
        if args.resume && outputs.all_exist() {
            skipped += 1;
            bar.inc(1);
            continue;
        }
        let report = explain_one(&explainer, &model, args, &recipe, drawing, item, &outputs)?;
        bar.suspend(|| print!("{}: {description}\n{report}", item.path.display()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if args.resume {
        println!(
            "resume: skipped {skipped} of {} inputs whose outputs already exist",
            items.len()
        );
    }
    Ok(())
}

/// The limits the flags ask for.
fn limits(args: &ExplainArgs) -> Result<Limits> {
    let defaults = Limits::default();
    let max_memory_bytes = match args.max_memory {
        Some(mb) => mb
            .checked_mul(1 << 20)
            .ok_or_else(|| usage(format!("--max-memory {mb} MiB is too large")))?,
        None => defaults.max_memory_bytes,
    };
    Ok(Limits {
        max_copies: args.max_samples.unwrap_or(defaults.max_copies),
        max_ig_steps: args.max_ig_steps.unwrap_or(defaults.max_ig_steps),
        max_work_flops: args.max_work.unwrap_or(defaults.max_work_flops),
        max_memory_bytes,
    })
}

/// Output paths that cannot be written are refused before any work: a directory named as a
/// file, a file in a directory that does not exist, an --out-dir that is a file.
fn check_output_paths(args: &ExplainArgs) -> Result<()> {
    for (flag, path) in [("--npy", &args.npy), ("--png", &args.png)] {
        let Some(path) = path else { continue };
        if path.is_dir() {
            bail!(
                "cannot write {} ({flag}): it is a directory",
                path.display()
            );
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            bail!(
                "cannot write {} ({flag}): {} is not a directory",
                path.display(),
                parent.display()
            );
        }
    }
    if let Some(dir) = &args.out_dir
        && dir.exists()
        && !dir.is_dir()
    {
        bail!(
            "cannot write into {} (--out-dir): it is not a directory",
            dir.display()
        );
    }
    Ok(())
}

/// Removes the temporary files a killed run left for this run's outputs (`.NAME.XXXXXX.tmp`,
/// as `npy::write_atomically` names them); nothing else in the directory is touched.
fn remove_stale_temporaries(args: &ExplainArgs, items: &[Item]) -> Result<()> {
    let Some(dir) = &args.out_dir else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let prefixes: Vec<String> = items
        .iter()
        .flat_map(|item| {
            let o = outputs_for(args, item);
            [o.npy, o.png]
        })
        .flatten()
        .filter_map(|p| p.file_name().map(|n| format!(".{}.", n.to_string_lossy())))
        .collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.ends_with(".tmp") && prefixes.iter().any(|p| name.starts_with(p));
        if ours && entry.path().is_file() {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove the stale {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The method and smoothing the flags ask for, checking they make sense together.
fn recipe(args: &ExplainArgs) -> Result<Recipe> {
    let ig = IgConfig {
        steps: args.ig_steps.unwrap_or(50),
        rule: args
            .ig_rule
            .map_or(smoothgrad_saliency::IgRule::GaussLegendre, Into::into),
        baseline: None,
    };
    let ig_flag = [
        args.ig_steps.map(|_| "--ig-steps"),
        args.ig_rule.map(|_| "--ig-rule"),
    ]
    .into_iter()
    .flatten()
    .next();
    if let Some(flag) = ig_flag
        && args.method != MethodName::IntegratedGradients
    {
        return Err(usage(format!(
            "{flag} only applies to --method integrated-gradients"
        )));
    }
    let (method, aggregate) = args.method.base(&ig);
    let aggregate = aggregate.or(args.smooth.then_some(smoothgrad_saliency::Aggregate::Mean));
    let Some(aggregate) = aggregate else {
        let given = [
            args.samples.map(|_| "--samples"),
            args.noise_level.map(|_| "--noise-level"),
            args.sigma.map(|_| "--sigma"),
            args.seed.map(|_| "--seed"),
            args.noise.as_ref().map(|_| "--noise"),
        ];
        if let Some(flag) = given.into_iter().flatten().next() {
            return Err(usage(format!(
                "{flag} only applies to smoothed methods (smoothgrad, smoothgrad-sq, vargrad, or any method with --smooth)"
            )));
        }
        return Ok(Recipe {
            method,
            smoothing: None,
        });
    };
    let noise = match (args.noise_level, args.sigma) {
        (_, Some(sigma)) => NoiseLevel::Absolute(sigma),
        (Some(level), None) => NoiseLevel::Relative(level),
        (None, None) => NoiseLevel::Relative(0.15),
    };
    Ok(Recipe {
        method,
        smoothing: Some(Smoothing {
            samples: args.samples.unwrap_or(50),
            noise,
            seed: args.seed.unwrap_or(0),
            given_noise: None,
            aggregate,
        }),
    })
}

/// "smoothgrad", or "guided-backprop + smoothing".
fn method_label(args: &ExplainArgs) -> String {
    let name = args.method.cli_name();
    let smoothed_already = matches!(
        args.method,
        MethodName::Smoothgrad | MethodName::SmoothgradSq | MethodName::Vargrad
    );
    if args.smooth && !smoothed_already {
        format!("{name} + smoothing")
    } else {
        name
    }
}

/// The inputs named on the command line, directories expanded (sorted), stems unique.
fn collect_inputs(args: &ExplainArgs) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    if let Some(path) = &args.input {
        items.push(Item {
            path: path.clone(),
            stem: stem_of(path),
            is_npy: true,
        });
    }
    for path in &args.image {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && image_io::is_image_file(p))
                .collect();
            if found.is_empty() {
                return Err(bad_input(format!(
                    "{}: no .png, .jpg or .jpeg images in this directory",
                    path.display()
                )));
            }
            found.sort();
            items.extend(found.into_iter().map(|p| Item {
                stem: stem_of(&p),
                path: p,
                is_npy: false,
            }));
        } else {
            items.push(Item {
                path: path.clone(),
                stem: stem_of(path),
                is_npy: false,
            });
        }
    }
    if args.out_dir.is_some() {
        let mut seen: HashMap<&str, &Path> = HashMap::new();
        for item in &items {
            if let Some(first) = seen.insert(&item.stem, &item.path) {
                return Err(usage(format!(
                    "{} and {} would both write {}.npy/.png into the output directory",
                    first.display(),
                    item.path.display(),
                    item.stem
                )));
            }
        }
    }
    Ok(items)
}

fn stem_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "input".into())
}

fn outputs_for(args: &ExplainArgs, item: &Item) -> Outputs {
    match &args.out_dir {
        Some(dir) => Outputs {
            npy: Some(dir.join(format!("{}.npy", item.stem))),
            png: Some(dir.join(format!("{}.png", item.stem))),
        },
        None => Outputs {
            npy: args.npy.clone(),
            png: args.png.clone(),
        },
    }
}

/// (model input, picture shown under overlays) of one item.
fn load_input(
    model: &Model<f32>,
    args: &ExplainArgs,
    item: &Item,
) -> Result<(Tensor<f32>, Tensor<f32>)> {
    if item.is_npy {
        let x = npy::read_npy(&item.path)?;
        let dims = x.dims();
        let x = if dims.len() == 4 && dims[0] == 1 {
            x.reshape(&dims[1..])?
        } else {
            x
        };
        return Ok((x.clone(), x));
    }
    let options = ImageOptions {
        channels: model.input_dims()[0],
        resize: args.resize,
    };
    let picture = image_io::load_image(&item.path, &options)?;
    let x = if args.mean.is_empty() {
        picture.clone()
    } else {
        image_io::normalize(&picture, &args.mean, &args.std)?
    };
    Ok((x, picture))
}

/// Explains one item, writes its outputs, and returns the text to print.
fn explain_one(
    explainer: &Engine<'_>,
    model: &Model<f32>,
    args: &ExplainArgs,
    recipe: &Recipe,
    drawing: Drawing,
    item: &Item,
    outputs: &Outputs,
) -> Result<String> {
    let (x, picture) = load_input(model, args, item)?;
    let map = explainer
        .explain(&x, args.target, recipe)
        .with_context(|| item.path.display().to_string())?;
    // Draw before writing anything, so a failure leaves no file behind.
    let png = match &outputs.png {
        Some(_) => {
            let image = drawing.draw(&map.attribution, &picture)?;
            let dims = map.attribution.dims();
            let side = dims[dims.len() - 2].max(dims[dims.len() - 1]);
            let scale = args.scale.unwrap_or_else(|| common::auto_scale(side));
            Some(visualize::upscale_nearest(&image, scale)?)
        }
        None => None,
    };
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut written = Vec::new();
    if let Some(path) = &outputs.npy {
        npy::write_npy(path, &map.attribution)?;
        written.push(path.display().to_string());
    }
    if let (Some(path), Some(image)) = (&outputs.png, &png) {
        image_io::save_png(path, image)?;
        written.push(path.display().to_string());
    }
    let mut text = common::prediction_table(&map.logits);
    text.push_str(&format!("  target: class {}", map.target));
    if map.sigma > 0.0 {
        text.push_str(&format!(" (noise σ = {:.4})", map.sigma));
    }
    text.push('\n');
    if !written.is_empty() {
        text.push_str(&format!("  wrote {}\n", written.join(", ")));
    }
    Ok(text)
}

/// Parses `--max-work` (GFLOP, a positive number) into FLOP.
fn parse_gflop(s: &str) -> std::result::Result<u64, String> {
    match s.trim().parse::<f64>() {
        Ok(g) if g.is_finite() && g > 0.0 => Ok((g * 1e9).min(u64::MAX as f64) as u64),
        _ => Err(format!("expected a positive number of GFLOP, got {s:?}")),
    }
}

/// Parses `H,W`.
fn parse_size(s: &str) -> std::result::Result<[usize; 2], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [h, w] = parts.as_slice() else {
        return Err(format!("expected H,W (two positive integers), got {s:?}"));
    };
    let side = |v: &str| {
        v.parse::<usize>()
            .ok()
            .filter(|&n| (1..=image_io::MAX_SIDE).contains(&n))
            .ok_or_else(|| format!("{v:?} is not a side between 1 and {}", image_io::MAX_SIDE))
    };
    Ok([side(h)?, side(w)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("224,192").unwrap(), [224, 192]);
        assert_eq!(parse_size(" 32 , 32 ").unwrap(), [32, 32]);
        for bad in ["32", "0,32", "a,b", "1,2,3", "-1,4"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn work_limits_parse_in_gflop() {
        assert_eq!(parse_gflop("2.5").unwrap(), 2_500_000_000);
        assert_eq!(parse_gflop("1e30").unwrap(), u64::MAX);
        for bad in ["0", "-1", "nan", "inf", "lots"] {
            assert!(parse_gflop(bad).is_err(), "{bad}");
        }
    }
}
