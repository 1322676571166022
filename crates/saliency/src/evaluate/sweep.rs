//! The SmoothGrad paper's two sweeps on the benchmark: explanation quality (relevance mass
//! accuracy) as the noise level grows at fixed n, and as n grows at a fixed noise level, for
//! SmoothGrad, SmoothGrad² and VarGrad, with the plain gradient as reference.

use super::{EvalConfig, Stat, check_model};
use crate::error::Result;
use crate::explain::Explainer;
use crate::method::{Aggregate, Method, NoiseLevel, Smoothing};
use crate::metrics::mass_accuracy;
use rayon::prelude::*;
use smoothgrad_autodiff::Tensor;
use smoothgrad_layers::Model;
use std::fmt::Write as _;
use std::time::Instant;

/// One line of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// Mean over images at each x.
    pub values: Vec<f64>,
    /// Standard error of each mean.
    pub std_errors: Vec<f64>,
}

/// A metric as one parameter varies.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub title: String,
    /// The varied parameter (x axis) and the metric (y axis).
    pub parameter: String,
    pub metric: String,
    pub xs: Vec<f64>,
    pub series: Vec<Series>,
    /// Images per point.
    pub images: usize,
    pub seconds: f64,
}

impl Sweep {
    /// `x,<series>_mean,<series>_se,...` rows.
    pub fn to_csv(&self) -> String {
        let mut s = self.parameter.replace([' ', ','], "_");
        for series in &self.series {
            let _ = write!(s, ",{0}_mean,{0}_se", series.name);
        }
        s.push('\n');
        for (i, x) in self.xs.iter().enumerate() {
            let _ = write!(s, "{x}");
            for series in &self.series {
                let _ = write!(s, ",{},{}", series.values[i], series.std_errors[i]);
            }
            s.push('\n');
        }
        s
    }
}

const SERIES: [&str; 4] = ["smoothgrad", "smoothgrad-sq", "vargrad", "gradient"];

/// Mass accuracy of SmoothGrad, SmoothGrad² and VarGrad for one image at (n, level). VarGrad is
/// formed from the other two (mean of squares minus squared mean, as the explainer does), and is
/// NaN where it is identically zero (n = 1 or no noise).
fn smoothed_scores(
    model: &Model<f32>,
    image: &Tensor<f32>,
    mask: &[bool],
    target: usize,
    samples: usize,
    level: f64,
    seed: u64,
) -> Result<[f64; 3]> {
    let explainer = Explainer::new(model);
    let map = |aggregate| -> Result<Tensor<f32>> {
        let smoothing = Smoothing {
            samples,
            noise: NoiseLevel::Relative(level),
            seed,
            given_noise: None,
            aggregate,
        };
        Ok(explainer
            .explain(image, Some(target), &Method::Gradient, Some(&smoothing))?
            .attribution)
    };
    let (mean, squares) = (map(Aggregate::Mean)?, map(Aggregate::MeanOfSquares)?);
    // Without noise or with one copy the variance is zero: its map is undefined (NaN), not
    // the rounding residue of q − m².
    let vargrad = if samples < 2 || level == 0.0 {
        f64::NAN
    } else {
        let var: Vec<f32> = mean
            .as_slice()
            .iter()
            .zip(squares.as_slice())
            .map(|(&m, &q)| q - m * m)
            .collect();
        mass_accuracy(&Tensor::from_vec(var, image.dims())?, mask)?
    };
    Ok([
        mass_accuracy(&mean, mask)?,
        mass_accuracy(&squares, mask)?,
        vargrad,
    ])
}

/// Runs `points` (n, level) over the sweep images and gathers the four series.
fn sweep(
    model: &Model<f32>,
    config: &EvalConfig,
    points: &[(usize, f64)],
    name: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Series>> {
    check_model(model, &config.data)?;
    let start = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    // scores[image][point] = [sg, sg², vargrad, gradient]
    let scores: Vec<Vec<[f64; 4]>> = (0..config.sweep_images)
        .into_par_iter()
        .map(|i| {
            let sample = config.data.generate(config.seed, i as u64);
            let (image, target) = (&sample.image, sample.label);
            let gradient = Explainer::new(model)
                .explain(image, Some(target), &Method::Gradient, None)?
                .attribution;
            let g = mass_accuracy(&gradient, &sample.mask)?;
            let row = points
                .iter()
                .map(|&(n, level)| {
                    let [a, b, c] = smoothed_scores(
                        model,
                        image,
                        &sample.mask,
                        target,
                        n,
                        level,
                        config.noise_seed,
                    )?;
                    Ok([a, b, c, g])
                })
                .collect::<Result<Vec<_>>>()?;
            let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if k.is_multiple_of(10) || k == config.sweep_images {
                progress(&format!(
                    "{name} sweep: {k}/{} images, {:.0} s",
                    config.sweep_images,
                    start.elapsed().as_secs_f64()
                ));
            }
            Ok(row)
        })
        .collect::<Result<_>>()?;
    Ok(SERIES
        .iter()
        .enumerate()
        .map(|(s, name)| {
            let stats: Vec<Stat> = (0..points.len())
                .map(|p| Stat::of(&scores.iter().map(|r| r[p][s]).collect::<Vec<_>>()))
                .collect();
            Series {
                name: name.to_string(),
                values: stats.iter().map(|st| st.mean).collect(),
                std_errors: stats.iter().map(|st| st.std_error).collect(),
            }
        })
        .collect())
}

/// Mass accuracy as the relative noise level takes the values of `config.sweep_noise`, with
/// n = `config.samples`.
pub fn noise_sweep(
    model: &Model<f32>,
    config: &EvalConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Sweep> {
    let start = Instant::now();
    let points: Vec<(usize, f64)> = config
        .sweep_noise
        .iter()
        .map(|&l| (config.samples, l))
        .collect();
    let series = sweep(model, config, &points, "noise", progress)?;
    Ok(Sweep {
        title: format!("Mass accuracy vs noise level (n = {})", config.samples),
        parameter: "noise level σ / (max − min)".into(),
        metric: "relevance mass accuracy".into(),
        xs: config.sweep_noise.clone(),
        series,
        images: config.sweep_images,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Mass accuracy as n takes the values of `config.sweep_samples`, at noise `config.noise`.
pub fn samples_sweep(
    model: &Model<f32>,
    config: &EvalConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Sweep> {
    let start = Instant::now();
    let points: Vec<(usize, f64)> = config
        .sweep_samples
        .iter()
        .map(|&n| (n, config.noise))
        .collect();
    let series = sweep(model, config, &points, "samples", progress)?;
    Ok(Sweep {
        title: format!(
            "Mass accuracy vs samples n (noise {:.0}%)",
            100.0 * config.noise
        ),
        parameter: "samples n".into(),
        metric: "relevance mass accuracy".into(),
        xs: config.sweep_samples.iter().map(|&n| n as f64).collect(),
        series,
        images: config.sweep_images,
        seconds: start.elapsed().as_secs_f64(),
    })
}
