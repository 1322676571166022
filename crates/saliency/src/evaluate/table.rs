//! The methods × metrics table: every method scored on every image (in parallel), summarised
//! as mean ± standard error, written as markdown and CSV.

use super::{EvalConfig, MethodSpec, check_model};
use crate::dataset::Sample;
use crate::error::Result;
use crate::explain::Explainer;
use crate::metrics::{
    cascading_randomization, deletion_curve, infidelity, insertion_curve, mass_accuracy,
    max_sensitivity, pixel_order, pointing_game, relevance,
};
use rayon::prelude::*;
use smoothgrad_autodiff::Tensor;
use smoothgrad_layers::Model;
use std::fmt::Write as _;
use std::time::Instant;

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

#[cfg(test)]
mod tests {
    use super::*;

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
