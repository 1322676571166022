//! The quality study on the shapes benchmark ([`dataset`](crate::dataset)): a table of
//! methods × metrics ([`metrics`](crate::metrics)), and the SmoothGrad paper's two sweeps —
//! quality as the noise level grows and as the number of samples grows — written as markdown,
//! CSV and PNG plots by [`run_evaluation`].
//!
//! Images are evaluated in parallel (rayon); every map, perturbation and noise draw is seeded, so
//! a run is reproducible. The target of every map is the image's true class.

mod plot;
mod sweep;

pub use plot::plot_sweep;
pub use sweep::{Series, Sweep, noise_sweep, samples_sweep};

use crate::dataset::{CLASSES, Sample, ShapesConfig, TEST_SEED};
use crate::error::{Result, SaliencyError};
use crate::explain::Explainer;
use crate::method::{Aggregate, IgConfig, Method, NoiseLevel, Smoothing};
use crate::metrics::{
    CurveConfig, InfidelityConfig, SensitivityConfig, cascading_randomization, deletion_curve,
    infidelity, insertion_curve, mass_accuracy, max_sensitivity, pixel_order, pointing_game,
    relevance,
};
use crate::npy::write_atomically;
use crate::visualize::{Colormap, grayscale, grid, input_to_rgb, overlay};
use rayon::prelude::*;
use smoothgrad_autodiff::Tensor;
use smoothgrad_layers::Model;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where a map comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MapSource {
    /// A method of the [`Explainer`], optionally smoothed.
    Explainer {
        method: Method,
        smoothing: Option<Smoothing<f32>>,
    },
    /// The input's edges ([`edge_map`]): a map that ignores the model, the control of the
    /// randomisation check.
    Edges,
}

/// A named way to make a map.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSpec {
    pub name: String,
    pub source: MapSource,
}

impl MethodSpec {
    /// A method of the explainer, without smoothing.
    pub fn plain(name: &str, method: Method) -> Self {
        MethodSpec {
            name: name.into(),
            source: MapSource::Explainer {
                method,
                smoothing: None,
            },
        }
    }

    /// A method averaged over `samples` noisy copies at relative noise `noise`.
    pub fn smoothed(
        name: &str,
        method: Method,
        samples: usize,
        noise: f64,
        aggregate: Aggregate,
        seed: u64,
    ) -> Self {
        MethodSpec {
            name: name.into(),
            source: MapSource::Explainer {
                method,
                smoothing: Some(Smoothing {
                    samples,
                    noise: NoiseLevel::Relative(noise),
                    seed,
                    given_noise: None,
                    aggregate,
                }),
            },
        }
    }

    /// The map `[C, H, W]` of `target` for `image` `[C, H, W]`.
    pub fn explain(
        &self,
        model: &Model<f32>,
        image: &Tensor<f32>,
        target: usize,
    ) -> Result<Tensor<f32>> {
        match &self.source {
            MapSource::Explainer { method, smoothing } => Ok(Explainer::new(model)
                .explain(image, Some(target), method, smoothing.as_ref())?
                .attribution),
            MapSource::Edges => edge_map(image),
        }
    }
}

/// |Sobel| of each channel of `image` `[C, H, W]` (edges clamped): where the picture changes,
/// whatever the model.
pub fn edge_map(image: &Tensor<f32>) -> Result<Tensor<f32>> {
    let &[c, h, w] = image.dims() else {
        return Err(SaliencyError::Input(format!(
            "an image must be [C, H, W], got {:?}",
            image.dims()
        )));
    };
    let x = image.as_slice();
    let at = |k: usize, y: isize, xx: isize| {
        let y = y.clamp(0, h as isize - 1) as usize;
        let xx = xx.clamp(0, w as isize - 1) as usize;
        x[(k * h + y) * w + xx]
    };
    let mut out = vec![0.0f32; x.len()];
    for k in 0..c {
        for y in 0..h as isize {
            for xx in 0..w as isize {
                let gx = at(k, y - 1, xx + 1) + 2.0 * at(k, y, xx + 1) + at(k, y + 1, xx + 1)
                    - at(k, y - 1, xx - 1)
                    - 2.0 * at(k, y, xx - 1)
                    - at(k, y + 1, xx - 1);
                let gy = at(k, y + 1, xx - 1) + 2.0 * at(k, y + 1, xx) + at(k, y + 1, xx + 1)
                    - at(k, y - 1, xx - 1)
                    - 2.0 * at(k, y - 1, xx)
                    - at(k, y - 1, xx + 1);
                out[(k * h + y as usize) * w + xx as usize] = (gx * gx + gy * gy).sqrt();
            }
        }
    }
    Ok(Tensor::from_vec(out, image.dims())?)
}

/// What the study runs; every count is configurable so a quick run and the full one share code.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// The benchmark's images (must match the model's input).
    pub data: ShapesConfig,
    /// The stream the images come from (default: the test stream).
    pub seed: u64,
    /// Images in the table (the first ones of the stream; default 200).
    pub images: usize,
    /// Noisy copies n of the smoothed methods (default 50).
    pub samples: usize,
    /// Relative noise level of the smoothed methods (default 0.15).
    pub noise: f64,
    /// Integrated Gradients' steps (default 32).
    pub ig_steps: usize,
    /// Copies and steps of smoothed IG (defaults 10 and 16).
    pub smoothed_ig_samples: usize,
    pub smoothed_ig_steps: usize,
    /// Seed of the smoothing noise.
    pub noise_seed: u64,
    /// Deletion and insertion curves (default: zeros baseline, 2% steps).
    pub curve: CurveConfig,
    /// Infidelity's perturbations (normalised: the maps' scales differ by method).
    pub infidelity: InfidelityConfig,
    /// Max-sensitivity's perturbations, and on how many of the images (each perturbation
    /// recomputes the map).
    pub sensitivity: SensitivityConfig,
    pub sensitivity_images: usize,
    /// Images of the cascading randomisation check (one map per layer each).
    pub randomization_images: usize,
    /// Images of each sweep point, and the points: relative noise levels and sample counts.
    pub sweep_images: usize,
    pub sweep_noise: Vec<f64>,
    pub sweep_samples: Vec<usize>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            data: ShapesConfig::default(),
            seed: TEST_SEED,
            images: 200,
            samples: 50,
            noise: 0.15,
            ig_steps: 32,
            smoothed_ig_samples: 10,
            smoothed_ig_steps: 16,
            noise_seed: 0,
            curve: CurveConfig::default(),
            infidelity: InfidelityConfig {
                normalize: true,
                ..InfidelityConfig::default()
            },
            sensitivity: SensitivityConfig::default(),
            sensitivity_images: 20,
            randomization_images: 20,
            sweep_images: 100,
            sweep_noise: vec![0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5],
            sweep_samples: vec![1, 2, 5, 10, 20, 50, 100, 200],
        }
    }
}

impl EvalConfig {
    /// A configuration small enough for a test: `images` images everywhere, few copies.
    pub fn quick(images: usize) -> Self {
        EvalConfig {
            images,
            samples: 10,
            ig_steps: 8,
            smoothed_ig_samples: 3,
            smoothed_ig_steps: 4,
            curve: CurveConfig {
                step: 0.1,
                ..CurveConfig::default()
            },
            infidelity: InfidelityConfig {
                samples: 10,
                normalize: true,
                ..InfidelityConfig::default()
            },
            sensitivity: SensitivityConfig {
                samples: 2,
                ..SensitivityConfig::default()
            },
            sensitivity_images: images.min(2),
            randomization_images: images.min(2),
            sweep_images: images,
            sweep_noise: vec![0.0, 0.2],
            sweep_samples: vec![1, 4],
            ..EvalConfig::default()
        }
    }
}

/// The eight methods of the table: gradient, SmoothGrad, SmoothGrad², VarGrad, Integrated
/// Gradients, smoothed IG, Grad×Input and Guided Backprop.
pub fn standard_methods(config: &EvalConfig) -> Vec<MethodSpec> {
    let (n, s, seed) = (config.samples, config.noise, config.noise_seed);
    let ig = |steps| {
        Method::IntegratedGradients(IgConfig {
            steps,
            ..IgConfig::default()
        })
    };
    vec![
        MethodSpec::plain("gradient", Method::Gradient),
        MethodSpec::smoothed("smoothgrad", Method::Gradient, n, s, Aggregate::Mean, seed),
        MethodSpec::smoothed(
            "smoothgrad-sq",
            Method::Gradient,
            n,
            s,
            Aggregate::MeanOfSquares,
            seed,
        ),
        MethodSpec::smoothed("vargrad", Method::Gradient, n, s, Aggregate::Variance, seed),
        MethodSpec::plain("integrated-gradients", ig(config.ig_steps)),
        MethodSpec::smoothed(
            "smoothgrad-ig",
            ig(config.smoothed_ig_steps),
            config.smoothed_ig_samples,
            s,
            Aggregate::Mean,
            seed,
        ),
        MethodSpec::plain("grad-x-input", Method::GradXInput),
        MethodSpec::plain("guided-backprop", Method::GuidedBackprop),
    ]
}

/// A mean and its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stat {
    pub mean: f64,
    pub std_error: f64,
    pub count: usize,
}

impl Stat {
    /// Mean and standard error of `values` (NaN mean when empty).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Stat {
                mean: f64::NAN,
                std_error: f64::NAN,
                count: 0,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Stat {
            mean,
            std_error: (var / n as f64).sqrt(),
            count: n,
        }
    }
}

/// One method's scores over the images.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodScores {
    pub name: String,
    /// Relevance mass accuracy (↑).
    pub mass_accuracy: Stat,
    /// Pointing game hit rate (↑).
    pub pointing_game: Stat,
    /// Deletion AUC of the target probability (↓).
    pub deletion_auc: Stat,
    /// Insertion AUC (↑).
    pub insertion_auc: Stat,
    /// Infidelity (↓).
    pub infidelity: Stat,
    /// Max-sensitivity (↓), on the first `sensitivity_images`.
    pub max_sensitivity: Stat,
    /// Spearman ρ with the original map at each step of the cascading randomisation (top layer
    /// first; ↓ means the map depends on the weights), on the first `randomization_images`.
    pub randomization: Vec<(String, Stat)>,
    /// Mean wall-clock milliseconds of one map (while the other images run in parallel).
    pub milliseconds: f64,
}

/// The methods × metrics table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub rows: Vec<MethodScores>,
    /// Images scored, and the model's accuracy on them.
    pub images: usize,
    pub accuracy: f64,
    pub seconds: f64,
}

/// Per-image scores of one method.
struct ImageScores {
    mass: f64,
    pointing: f64,
    deletion: f64,
    insertion: f64,
    infidelity: f64,
    sensitivity: Option<f64>,
    randomization: Option<Vec<(String, f64)>>,
    milliseconds: f64,
}

/// Scores every method on the first `config.images` images of the stream.
pub fn method_table(
    model: &Model<f32>,
    methods: &[MethodSpec],
    config: &EvalConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Table> {
    check_model(model, &config.data)?;
    let start = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let per_image: Vec<(bool, Vec<ImageScores>)> = (0..config.images)
        .into_par_iter()
        .map(|i| {
            let sample = config.data.generate(config.seed, i as u64);
            let scores = methods
                .iter()
                .map(|m| score_image(model, m, &sample, i, config))
                .collect::<Result<Vec<_>>>()?;
            let logits = Explainer::new(model).logits(&sample.image)?;
            let correct = argmax(&logits) == sample.label;
            let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if k.is_multiple_of(10) || k == config.images {
                progress(&format!(
                    "table: {k}/{} images, {:.0} s",
                    config.images,
                    start.elapsed().as_secs_f64()
                ));
            }
            Ok((correct, scores))
        })
        .collect::<Result<_>>()?;
    let rows = methods
        .iter()
        .enumerate()
        .map(|(m, spec)| {
            let col = |f: &dyn Fn(&ImageScores) -> Option<f64>| {
                Stat::of(
                    &per_image
                        .iter()
                        .filter_map(|(_, s)| f(&s[m]))
                        .collect::<Vec<_>>(),
                )
            };
            let layers: Vec<String> = per_image
                .iter()
                .find_map(|(_, s)| s[m].randomization.as_ref())
                .map(|r| r.iter().map(|(l, _)| l.clone()).collect())
                .unwrap_or_default();
            let randomization = layers
                .iter()
                .enumerate()
                .map(|(k, l)| {
                    let rho = col(&|s| s.randomization.as_ref().map(|r| r[k].1));
                    (l.clone(), rho)
                })
                .collect();
            MethodScores {
                name: spec.name.clone(),
                mass_accuracy: col(&|s| Some(s.mass)),
                pointing_game: col(&|s| Some(s.pointing)),
                deletion_auc: col(&|s| Some(s.deletion)),
                insertion_auc: col(&|s| Some(s.insertion)),
                infidelity: col(&|s| Some(s.infidelity)),
                max_sensitivity: col(&|s| s.sensitivity),
                randomization,
                milliseconds: col(&|s| Some(s.milliseconds)).mean,
            }
        })
        .collect();
    let correct = per_image.iter().filter(|(c, _)| *c).count();
    Ok(Table {
        rows,
        images: config.images,
        accuracy: correct as f64 / config.images.max(1) as f64,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn check_model(model: &Model<f32>, data: &ShapesConfig) -> Result<()> {
    let want = [3, data.size, data.size];
    if model.input_dims() != want || model.output_dims() != [CLASSES.len()] {
        return Err(SaliencyError::Input(format!(
            "the model takes {:?} and gives {:?}; the benchmark needs {want:?} → [{}]",
            model.input_dims(),
            model.output_dims(),
            CLASSES.len()
        )));
    }
    Ok(())
}

fn score_image(
    model: &Model<f32>,
    method: &MethodSpec,
    sample: &Sample,
    index: usize,
    config: &EvalConfig,
) -> Result<ImageScores> {
    let (image, target) = (&sample.image, sample.label);
    let t = Instant::now();
    let map = method.explain(model, image, target)?;
    let milliseconds = t.elapsed().as_secs_f64() * 1e3;
    let order = pixel_order(&relevance(&map)?);
    let sensitivity = if index < config.sensitivity_images {
        let explain = |x: &Tensor<f32>| method.explain(model, x, target);
        Some(max_sensitivity(image, &map, explain, &config.sensitivity)?)
    } else {
        None
    };
    let randomization = if index < config.randomization_images {
        let explain = |m: &Model<f32>, x: &Tensor<f32>| method.explain(m, x, target);
        let steps = cascading_randomization(model, image, explain, 7)?;
        Some(steps.into_iter().map(|s| (s.layer, s.spearman)).collect())
    } else {
        None
    };
    Ok(ImageScores {
        mass: mass_accuracy(&map, &sample.mask)?,
        pointing: f64::from(u8::from(pointing_game(&map, &sample.mask)?)),
        deletion: deletion_curve(model, image, target, &order, &config.curve)?.auc,
        insertion: insertion_curve(model, image, target, &order, &config.curve)?.auc,
        infidelity: infidelity(model, image, target, &map, &config.infidelity)?,
        sensitivity,
        randomization,
        milliseconds,
    })
}

fn fmt_stat(s: &Stat, digits: usize) -> String {
    if s.count == 0 {
        "–".into()
    } else {
        format!("{:.*} ± {:.*}", digits, s.mean, digits, s.std_error)
    }
}

fn fmt_sci(s: &Stat) -> String {
    if s.count == 0 {
        "–".into()
    } else {
        format!("{:.3e} ± {:.1e}", s.mean, s.std_error)
    }
}

impl Table {
    /// The table in markdown: one row per method, mean ± standard error per metric, then the
    /// randomisation cascade per layer.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} images of the test stream (model accuracy on them {:.1}%), target = true class.\n",
            self.images,
            100.0 * self.accuracy
        );
        s.push_str(
            "| method | mass accuracy ↑ | pointing game ↑ | deletion AUC ↓ | insertion AUC ↑ | \
             infidelity ↓ | max-sensitivity ↓ | randomised ρ ↓ | ms / map |\n",
        );
        s.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let rho = r
                .randomization
                .last()
                .map_or("–".into(), |(_, st)| fmt_stat(st, 3));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
                r.name,
                fmt_stat(&r.mass_accuracy, 3),
                fmt_stat(&r.pointing_game, 3),
                fmt_stat(&r.deletion_auc, 3),
                fmt_stat(&r.insertion_auc, 3),
                fmt_sci(&r.infidelity),
                fmt_stat(&r.max_sensitivity, 3),
                rho,
                r.milliseconds
            );
        }
        if let Some(first) = self.rows.iter().find(|r| !r.randomization.is_empty()) {
            s.push_str(
                "\nCascading randomisation: Spearman ρ between the original map and the map \
                 with every layer from the top down to the named one re-initialised.\n\n",
            );
            let layers: Vec<&str> = first
                .randomization
                .iter()
                .map(|(l, _)| l.as_str())
                .collect();
            let _ = writeln!(s, "| method | {} |", layers.join(" | "));
            let _ = writeln!(s, "|---|{}", "---|".repeat(layers.len()));
            for r in self.rows.iter().filter(|r| !r.randomization.is_empty()) {
                let cells: Vec<String> = r
                    .randomization
                    .iter()
                    .map(|(_, st)| format!("{:.3}", st.mean))
                    .collect();
                let _ = writeln!(s, "| {} | {} |", r.name, cells.join(" | "));
            }
        }
        s
    }

    /// The table as CSV: one row per method, `<metric>_mean` and `<metric>_se` columns.
    pub fn to_csv(&self) -> String {
        let metrics = [
            "mass_accuracy",
            "pointing_game",
            "deletion_auc",
            "insertion_auc",
            "infidelity",
            "max_sensitivity",
        ];
        let layers: Vec<String> = self
            .rows
            .iter()
            .find(|r| !r.randomization.is_empty())
            .map(|r| r.randomization.iter().map(|(l, _)| l.clone()).collect())
            .unwrap_or_default();
        let mut s = String::from("method,images");
        for m in metrics {
            let _ = write!(s, ",{m}_mean,{m}_se");
        }
        for l in &layers {
            let _ = write!(s, ",randomized_to_{l}_rho");
        }
        s.push_str(",ms_per_map\n");
        for r in &self.rows {
            let _ = write!(s, "{},{}", r.name, r.mass_accuracy.count);
            for st in [
                &r.mass_accuracy,
                &r.pointing_game,
                &r.deletion_auc,
                &r.insertion_auc,
                &r.infidelity,
                &r.max_sensitivity,
            ] {
                let _ = write!(s, ",{},{}", st.mean, st.std_error);
            }
            for k in 0..layers.len() {
                let v = r.randomization.get(k).map_or(f64::NAN, |(_, st)| st.mean);
                let _ = write!(s, ",{v}");
            }
            let _ = writeln!(s, ",{:.3}", r.milliseconds);
        }
        s
    }
}

/// A figure of the first `count` images of the stream: the image, its mask, and the overlay
/// of each method's map.
pub fn examples_figure(
    model: &Model<f32>,
    methods: &[MethodSpec],
    config: &EvalConfig,
    count: usize,
    path: &Path,
) -> Result<()> {
    check_model(model, &config.data)?;
    let mut titles = vec!["image".to_string(), "mask".to_string()];
    // Titles wrap at spaces only.
    titles.extend(methods.iter().map(|m| m.name.replace('-', " ")));
    let rows = (0..count)
        .into_par_iter()
        .map(|i| {
            let sample = config.data.generate(config.seed, i as u64);
            let base = input_to_rgb(&sample.image)?;
            let s = config.data.size as u32;
            let mask = image::RgbImage::from_fn(s, s, |x, y| {
                let v = if sample.mask[(y * s + x) as usize] {
                    255
                } else {
                    0
                };
                image::Rgb([v, v, v])
            });
            let mut row = vec![base.clone(), mask];
            for m in methods {
                let map = m.explain(model, &sample.image, sample.label)?;
                row.push(overlay(&base, &grayscale(&map)?, Colormap::Inferno, 0.85)?);
            }
            Ok(row)
        })
        .collect::<Result<Vec<_>>>()?;
    crate::image_io::save_png(path, &grid(&titles, &rows, 3)?)
}

/// What [`run_evaluation`] produced.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub table: Table,
    pub noise: Sweep,
    pub samples: Sweep,
    /// Files written.
    pub files: Vec<PathBuf>,
    pub seconds: f64,
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, |w| std::io::Write::write_all(w, text.as_bytes()))
}

/// The whole study: the table over [`standard_methods`] and the model-independent edge map,
/// both sweeps and an examples figure, written into `out_dir` as `quality-table.md`,
/// `quality-table.csv`, `noise-sweep.{png,csv}`, `samples-sweep.{png,csv}` and `examples.png`.
pub fn run_evaluation(
    model: &Model<f32>,
    config: &EvalConfig,
    out_dir: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<EvalReport> {
    let start = Instant::now();
    std::fs::create_dir_all(out_dir).map_err(|source| SaliencyError::Io {
        action: "create",
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut methods = standard_methods(config);
    methods.push(MethodSpec {
        name: "edges (control)".into(),
        source: MapSource::Edges,
    });
    let mut files = Vec::new();
    let mut out = |name: &str| {
        let p = out_dir.join(name);
        files.push(p.clone());
        p
    };

    let table = method_table(model, &methods, config, progress)?;
    write_text(&out("quality-table.md"), &table.to_markdown())?;
    write_text(&out("quality-table.csv"), &table.to_csv())?;

    let noise = noise_sweep(model, config, progress)?;
    write_text(&out("noise-sweep.csv"), &noise.to_csv())?;
    plot_sweep(&noise, &out("noise-sweep.png"), false)?;

    let samples = samples_sweep(model, config, progress)?;
    write_text(&out("samples-sweep.csv"), &samples.to_csv())?;
    plot_sweep(&samples, &out("samples-sweep.png"), true)?;

    let shown: Vec<MethodSpec> = methods
        .iter()
        .filter(|m| m.name != "edges (control)")
        .cloned()
        .collect();
    examples_figure(model, &shown, config, 6, &out("examples.png"))?;
    Ok(EvalReport {
        table,
        noise,
        samples,
        files,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_of_a_step_are_on_the_step() {
        // A vertical step between columns 1 and 2 of a 1×3×4 image.
        let x = Tensor::from_vec(
            vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
            &[1, 3, 4],
        )
        .unwrap();
        let e = edge_map(&x).unwrap();
        let row = &e.as_slice()[4..8];
        assert_eq!(row, &[0.0, 4.0, 4.0, 0.0]);
    }

    #[test]
    fn stats_and_tables() {
        let s = Stat::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.mean, s.count), (2.0, 3));
        assert!((s.std_error - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let row = MethodScores {
            name: "m".into(),
            mass_accuracy: s,
            pointing_game: s,
            deletion_auc: s,
            insertion_auc: s,
            infidelity: s,
            max_sensitivity: Stat::of(&[]),
            randomization: vec![("fc".into(), s)],
            milliseconds: 1.0,
        };
        let t = Table {
            rows: vec![row],
            images: 3,
            accuracy: 1.0,
            seconds: 0.0,
        };
        let md = t.to_markdown();
        assert!(md.contains("| m | 2.000 ± 0.577 |") && md.contains("| method | fc |"));
        let csv = t.to_csv();
        assert_eq!(csv.lines().count(), 2);
        assert!(csv.starts_with("method,images,mass_accuracy_mean,mass_accuracy_se"));
    }
}
