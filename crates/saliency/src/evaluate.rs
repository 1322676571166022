//! The quality study on the shapes benchmark ([`dataset`](crate::dataset)): a table of
//! methods × metrics ([`metrics`](crate::metrics)), and the SmoothGrad paper's two sweeps —
//! quality as the noise level grows and as the number of samples grows — written as markdown,
//! CSV and PNG plots by [`run_evaluation`].
//!
//! Images are evaluated in parallel (rayon); every map, perturbation and noise draw is seeded, so
//! a run is reproducible. The target of every map is the image's true class.

mod plot;
mod sweep;
mod table;

pub use plot::plot_sweep;
pub use sweep::{Series, Sweep, noise_sweep, samples_sweep};
pub use table::{MethodScores, Stat, Table, method_table};

use crate::dataset::{CLASSES, ShapesConfig, TEST_SEED};
use crate::error::{Result, SaliencyError};
use crate::explain::Explainer;
use crate::method::{Aggregate, IgConfig, Method, NoiseLevel, Smoothing};
use crate::metrics::{CurveConfig, InfidelityConfig, SensitivityConfig};
use crate::npy::write_atomically;
use crate::visualize::{Colormap, grayscale, grid, input_to_rgb, overlay};
use rayon::prelude::*;
use smoothgrad_autodiff::Tensor;
use smoothgrad_layers::Model;
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

/// Fails unless `model` takes the benchmark's images and gives one logit per class.
pub(crate) fn check_model(model: &Model<f32>, data: &ShapesConfig) -> Result<()> {
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
}
