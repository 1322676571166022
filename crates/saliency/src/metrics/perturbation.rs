//! Metrics that perturb the input and ask the model again: deletion and insertion curves
//! (Petsiuk et al. 2018), infidelity and max-sensitivity (Yeh et al. 2019, as Captum defines
//! them). Perturbed inputs go through the model in batches.

use crate::error::{Result, SaliencyError};
use smoothgrad_autodiff::rng::{normal, philox4x32_10};
use smoothgrad_autodiff::{Tape, Tensor, Var};
use smoothgrad_layers::Model;

/// What removed pixels become (deletion) or what inserted pixels are drawn on (insertion).
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// Zeros (black for images in [0, 1]).
    Zeros,
    /// The image blurred by a Gaussian of this standard deviation in pixels (edges clamped).
    Blur { sigma: f32 },
    /// A given image of the input's shape.
    Given(Tensor<f32>),
}

impl Baseline {
    /// The baseline image for `image` `[C, H, W]`.
    pub fn image(&self, image: &Tensor<f32>) -> Result<Tensor<f32>> {
        let [c, h, w] = chw(image)?;
        match self {
            Baseline::Zeros => Ok(Tensor::zeros(image.dims())?),
            Baseline::Blur { sigma } => Ok(Tensor::from_vec(
                blur(image.as_slice(), c, h, w, *sigma),
                image.dims(),
            )?),
            Baseline::Given(b) if b.dims() == image.dims() => Ok(b.clone()),
            Baseline::Given(b) => Err(SaliencyError::Option {
                option: "baseline",
                reason: format!(
                    "shape {:?} does not match the image {:?}",
                    b.dims(),
                    image.dims()
                ),
            }),
        }
    }
}

fn chw(image: &Tensor<f32>) -> Result<[usize; 3]> {
    match image.dims() {
        &[c, h, w] => Ok([c, h, w]),
        d => Err(SaliencyError::Input(format!(
            "an image must be [C, H, W], got {d:?}"
        ))),
    }
}

/// Separable Gaussian blur of planes `[C, H, W]` with clamped edges.
// justified: `x` is a tensor's data of shape [c, h, w] (checked by `chw`), and every index is
// clamped into its plane.
#[allow(clippy::indexing_slicing)]
fn blur(x: &[f32], c: usize, h: usize, w: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 {
        return x.to_vec();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0; src.len()];
        for p in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let mut acc = 0.0;
                    for (j, k) in kernel.iter().enumerate() {
                        let d = j as isize - radius;
                        let (sy, sx) = if horizontal {
                            (y, (xx as isize + d).clamp(0, w as isize - 1) as usize)
                        } else {
                            ((y as isize + d).clamp(0, h as isize - 1) as usize, xx)
                        };
                        acc += k * src[(p * h + sy) * w + sx];
                    }
                    out[(p * h + y) * w + xx] = acc;
                }
            }
        }
        out
    };
    pass(&pass(x, true), false)
}

/// Pixels from most to least relevant (ties in index order).
pub fn pixel_order(relevance: &[f32]) -> Vec<usize> {
    let mut order: Vec<(usize, f32)> = relevance.iter().copied().enumerate().collect();
    // A stable sort keeps ties in index order.
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order.into_iter().map(|(i, _)| i).collect()
}

/// The area under a curve by the trapezoid rule.
pub fn trapezoid_auc(xs: &[f64], ys: &[f64]) -> f64 {
    xs.windows(2)
        .zip(ys.windows(2))
        .map(|pair| match pair {
            ([x0, x1], [y0, y1]) => (x1 - x0) * (y0 + y1) / 2.0,
            _ => 0.0,
        })
        .sum()
}

/// How a deletion or insertion curve is sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveConfig {
    /// Share of the pixels changed per step (default 0.02: 51 points from 0 to 1).
    pub step: f64,
    /// What replaces removed pixels (default zeros).
    pub baseline: Baseline,
    /// Perturbed images per forward pass (default 64).
    pub batch_size: usize,
}

impl Default for CurveConfig {
    fn default() -> Self {
        CurveConfig {
            step: 0.02,
            baseline: Baseline::Zeros,
            batch_size: 64,
        }
    }
}

/// The target's probability as pixels are deleted or inserted.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Share of the pixels changed at each point, 0 to 1.
    pub fractions: Vec<f64>,
    /// The target's softmax probability at each point.
    pub probabilities: Vec<f64>,
    /// Trapezoid area under the curve, in [0, 1].
    pub auc: f64,
}

/// Deletion: pixels (all channels) replaced by the baseline in `order`, most relevant first; a
/// faithful map makes the probability fall fast (low area).
pub fn deletion_curve(
    model: &Model<f32>,
    image: &Tensor<f32>,
    target: usize,
    order: &[usize],
    config: &CurveConfig,
) -> Result<Curve> {
    let baseline = config.baseline.image(image)?;
    perturbation_curve(model, image, &baseline, target, order, config)
}

/// Insertion: pixels of the image drawn onto the baseline in `order`; a faithful map makes
/// the probability rise fast (high area).
pub fn insertion_curve(
    model: &Model<f32>,
    image: &Tensor<f32>,
    target: usize,
    order: &[usize],
    config: &CurveConfig,
) -> Result<Curve> {
    let baseline = config.baseline.image(image)?;
    perturbation_curve(model, &baseline, image, target, order, config)
}

/// Starts from `from` and copies pixels of `to` in `order`.
fn perturbation_curve(
    model: &Model<f32>,
    from: &Tensor<f32>,
    to: &Tensor<f32>,
    target: usize,
    order: &[usize],
    config: &CurveConfig,
) -> Result<Curve> {
    let [c, h, w] = chw(from)?;
    let plane = h * w;
    if order.len() != plane {
        return Err(SaliencyError::Input(format!(
            "the order lists {} pixels, the image has {plane}",
            order.len()
        )));
    }
    if let Some(&p) = order.iter().find(|&&p| p >= plane) {
        return Err(SaliencyError::Input(format!(
            "the order lists pixel {p}, but the image has {plane} pixels"
        )));
    }
    if !(config.step > 0.0 && config.step <= 1.0) {
        return Err(SaliencyError::Option {
            option: "step",
            reason: format!("{} is not in (0, 1]", config.step),
        });
    }
    let points = (1.0 / config.step).ceil() as usize;
    let counts: Vec<usize> = (0..=points)
        .map(|j| ((j as f64 * config.step * plane as f64).round() as usize).min(plane))
        .collect();
    let (src, dst) = (from.as_slice(), to.as_slice());
    let mut current = src.to_vec();
    let mut done = 0;
    let mut images = Vec::with_capacity(counts.len() * current.len());
    for &k in &counts {
        for &p in order.get(done..k).unwrap_or_default() {
            let planes = current.chunks_mut(plane).zip(dst.chunks(plane)).take(c);
            for (cur, to) in planes {
                if let (Some(v), Some(&t)) = (cur.get_mut(p), to.get(p)) {
                    *v = t;
                }
            }
        }
        done = k;
        images.extend_from_slice(&current);
    }
    let probabilities =
        target_outputs(model, images, from.dims(), target, true, config.batch_size)?;
    let fractions: Vec<f64> = counts.iter().map(|&k| k as f64 / plane as f64).collect();
    let auc = trapezoid_auc(&fractions, &probabilities);
    Ok(Curve {
        fractions,
        probabilities,
        auc,
    })
}

/// The target's softmax probability (or logit) for each image of the stacked `images`.
fn target_outputs(
    model: &Model<f32>,
    images: Vec<f32>,
    sample_dims: &[usize],
    target: usize,
    probability: bool,
    batch_size: usize,
) -> Result<Vec<f64>> {
    let per: usize = sample_dims.iter().product::<usize>().max(1);
    let mut out = Vec::with_capacity(images.len() / per);
    for batch in images.chunks(per.saturating_mul(batch_size.max(1))) {
        let count = batch.len() / per;
        let dims = [&[count], sample_dims].concat();
        let chunk = Tensor::from_vec(batch.to_vec(), &dims)?;
        let mut tape = Tape::new();
        let logits = model.forward(&mut tape, &Var::constant(chunk))?;
        let classes = logits.dims().get(1).copied().unwrap_or(0);
        if target >= classes {
            return Err(SaliencyError::Option {
                option: "target",
                reason: format!("class {target} does not exist ({classes} classes)"),
            });
        }
        for row in logits.value().as_slice().chunks(classes) {
            let t = row.get(target).map_or(f64::NAN, |&v| v as f64);
            if probability {
                let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
                let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                out.push((t - max).exp() / z);
            } else {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// Infidelity's perturbations: I ~ N(0, σ²) per element, the input perturbed as x − I.
#[derive(Debug, Clone, PartialEq)]
pub struct InfidelityConfig {
    /// Number of perturbations (Captum's `n_perturb_samples`; default 50).
    pub samples: usize,
    /// Standard deviation of the perturbation in input units (default 0.02: small enough that
    /// the score measures how well the map predicts the model's local response).
    pub sigma: f64,
    /// Seed of the Philox draws.
    pub seed: u64,
    /// Scale the attribution by the least-squares β first (Captum's `normalize`, default
    /// false): the score then ignores the map's overall scale.
    pub normalize: bool,
    /// Perturbed inputs per forward pass (default 64).
    pub batch_size: usize,
}

impl Default for InfidelityConfig {
    fn default() -> Self {
        InfidelityConfig {
            samples: 50,
            sigma: 0.02,
            seed: 0,
            normalize: false,
            batch_size: 64,
        }
    }
}

/// Infidelity (Yeh et al. 2019): E[(Iᵀa − (f(x) − f(x − I)))²] over Gaussian perturbations I,
/// where f is the target's logit and a the attribution (`[C, H, W]`, the image's shape).
/// A map that is the gradient of a linear model scores 0.
pub fn infidelity(
    model: &Model<f32>,
    image: &Tensor<f32>,
    target: usize,
    attribution: &Tensor<f32>,
    config: &InfidelityConfig,
) -> Result<f64> {
    chw(image)?;
    if attribution.dims() != image.dims() {
        return Err(SaliencyError::Input(format!(
            "the attribution {:?} does not have the image's shape {:?}",
            attribution.dims(),
            image.dims()
        )));
    }
    if config.samples == 0 {
        return Err(SaliencyError::Option {
            option: "samples",
            reason: "infidelity needs at least one perturbation".into(),
        });
    }
    let (x, a) = (image.as_slice(), attribution.as_slice());
    let e = x.len();
    let mut images = Vec::with_capacity((config.samples + 1) * e);
    images.extend_from_slice(x);
    let mut dots = Vec::with_capacity(config.samples);
    for i in 0..config.samples {
        let mut dot = 0.0f64;
        for (k, (&xv, &av)) in x.iter().zip(a).enumerate() {
            let noise = config.sigma as f32 * normal(config.seed, i as u32, k as u64);
            dot += noise as f64 * av as f64;
            images.push(xv - noise);
        }
        dots.push(dot);
    }
    let f = target_outputs(
        model,
        images,
        image.dims(),
        target,
        false,
        config.batch_size,
    )?;
    let (f0, perturbed) = f.split_first().map_or((0.0, &[][..]), |(f0, r)| (*f0, r));
    let diffs: Vec<f64> = perturbed.iter().map(|v| f0 - v).collect();
    let n = config.samples as f64;
    let aa: f64 = dots.iter().map(|a| a * a).sum::<f64>() / n;
    let ab: f64 = dots.iter().zip(&diffs).map(|(a, b)| a * b).sum::<f64>() / n;
    let bb: f64 = diffs.iter().map(|b| b * b).sum::<f64>() / n;
    let beta = if !config.normalize {
        1.0
    } else if aa > 0.0 {
        ab / aa
    } else {
        0.0
    };
    Ok((beta * beta * aa - 2.0 * beta * ab + bb).max(0.0))
}

/// Max-sensitivity's perturbations: uniform in the L∞ ball of radius r.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityConfig {
    /// Number of perturbed inputs (Captum's `n_perturb_samples`, default 10).
    pub samples: usize,
    /// Radius of the ball in input units (Captum's `perturb_radius`, default 0.02).
    pub radius: f64,
    /// Seed of the Philox draws.
    pub seed: u64,
}

impl Default for SensitivityConfig {
    fn default() -> Self {
        SensitivityConfig {
            samples: 10,
            radius: 0.02,
            seed: 0,
        }
    }
}

/// Max-sensitivity (Yeh et al. 2019, Captum's `sensitivity_max`): the largest
/// ‖e(x + δ) − e(x)‖ / ‖e(x)‖ (Frobenius norms; unnormalised when ‖e(x)‖ = 0) over perturbations
/// δ uniform in [−r, r] per element, where `explain` recomputes the explanation for the same
/// target and `attribution` is e(x).
pub fn max_sensitivity(
    image: &Tensor<f32>,
    attribution: &Tensor<f32>,
    mut explain: impl FnMut(&Tensor<f32>) -> Result<Tensor<f32>>,
    config: &SensitivityConfig,
) -> Result<f64> {
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|d| d * d).sum::<f64>().sqrt();
    let base = norm(&mut attribution.as_slice().iter().map(|&v| v as f64));
    let mut worst = 0.0f64;
    for i in 0..config.samples {
        let x: Vec<f32> = image
            .as_slice()
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                v + (config.radius * uniform_sym(config.seed, i as u64, k as u64)) as f32
            })
            .collect();
        let e = explain(&Tensor::from_vec(x, image.dims())?)?;
        if e.numel() != attribution.numel() {
            return Err(SaliencyError::Input(format!(
                "the explanation of a perturbed input has shape {:?}, not {:?}",
                e.dims(),
                attribution.dims()
            )));
        }
        let diff = norm(
            &mut e
                .as_slice()
                .iter()
                .zip(attribution.as_slice())
                .map(|(&p, &q)| p as f64 - q as f64),
        );
        worst = worst.max(if base > 0.0 { diff / base } else { diff });
    }
    Ok(worst)
}

/// A uniform draw in [−1, 1) for element `k` of perturbation `i`: a pure function of the three.
fn uniform_sym(seed: u64, i: u64, k: u64) -> f64 {
    let r = philox4x32_10(
        [k as u32, (k >> 32) as u32, i as u32, 0x5E45_1717],
        [seed as u32, (seed >> 32) as u32],
    );
    let bits = ((r[0] as u64) << 21) ^ ((r[1] as u64) >> 11);
    2.0 * ((bits & ((1 << 53) - 1)) as f64 / (1u64 << 53) as f64) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoothgrad_layers::{Layer, Node};

    /// Two logits ±w·x on 1×4×4 images; w is zero on the left half.
    fn linear_model() -> (Model<f32>, Vec<f32>) {
        let w: Vec<f32> = (0..16)
            .map(|i| {
                if i % 4 < 2 {
                    0.0
                } else {
                    0.3 + 0.1 * (i / 4) as f32
                }
            })
            .collect();
        let weight: Vec<f32> = w
            .iter()
            .chain(w.iter())
            .enumerate()
            .map(|(i, &v)| if i < 16 { v } else { -v })
            .collect();
        let nodes = vec![
            Node {
                name: "flat".into(),
                layer: Layer::Flatten { start_dim: 1 },
                inputs: vec![0],
            },
            Node {
                name: "fc".into(),
                layer: Layer::Linear {
                    weight: Tensor::from_vec(weight, &[2, 16]).unwrap(),
                    bias: None,
                },
                inputs: vec![1],
            },
        ];
        (Model::new("linear", &[1, 4, 4], nodes, 2).unwrap(), w)
    }

    fn image() -> Tensor<f32> {
        Tensor::uniform(&[1, 4, 4], 0.2, 1.0, 3).unwrap()
    }

    #[test]
    fn deleting_an_irrelevant_region_changes_nothing() {
        let (model, w) = linear_model();
        // The zero-weight half first, then the rest.
        let order: Vec<usize> = (0..16)
            .filter(|i| w[*i] == 0.0)
            .chain((0..16).filter(|i| w[*i] != 0.0))
            .collect();
        let config = CurveConfig {
            step: 1.0 / 16.0,
            ..CurveConfig::default()
        };
        let curve = deletion_curve(&model, &image(), 0, &order, &config).unwrap();
        assert_eq!(curve.fractions.len(), 17);
        for k in 1..=8 {
            assert_eq!(curve.probabilities[k], curve.probabilities[0], "step {k}");
        }
        // All deleted: both logits 0, probability 1/2.
        assert!((curve.probabilities[16] - 0.5).abs() < 1e-7);
        assert!(curve.probabilities[9] < curve.probabilities[0]);
        // Insertion of the irrelevant half first leaves the baseline's probability.
        let ins = insertion_curve(&model, &image(), 0, &order, &config).unwrap();
        assert!(
            ins.probabilities[..=8]
                .iter()
                .all(|p| (p - 0.5).abs() < 1e-7)
        );
        assert!((ins.probabilities[16] - curve.probabilities[0]).abs() < 1e-7);
    }

    #[test]
    fn trapezoid_of_a_line() {
        assert!((trapezoid_auc(&[0.0, 0.5, 1.0], &[1.0, 0.5, 0.0]) - 0.5).abs() < 1e-15);
        assert_eq!(pixel_order(&[0.1, 0.9, 0.5, 0.9]), vec![1, 3, 2, 0]);
    }

    #[test]
    fn blur_keeps_constants_and_smooths() {
        let flat = vec![0.7f32; 2 * 5 * 6];
        assert!(
            blur(&flat, 2, 5, 6, 1.5)
                .iter()
                .all(|v| (v - 0.7).abs() < 1e-6)
        );
        let mut spike = vec![0.0f32; 25];
        spike[12] = 1.0;
        let b = blur(&spike, 1, 5, 5, 1.0);
        assert!(b[12] < 1.0 && b[12] > b[13] && b[13] > b[14] && b[14] > 0.0);
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 0.05);
    }

    #[test]
    fn the_gradient_of_a_linear_model_has_zero_infidelity() {
        let (model, w) = linear_model();
        let a = Tensor::from_vec(w.clone(), &[1, 4, 4]).unwrap();
        let config = InfidelityConfig {
            sigma: 0.1,
            ..InfidelityConfig::default()
        };
        for normalize in [false, true] {
            let config = InfidelityConfig {
                normalize,
                ..config.clone()
            };
            let v = infidelity(&model, &image(), 0, &a, &config).unwrap();
            assert!(v < 1e-9, "normalize {normalize}: {v}");
        }
        // Twice the gradient: wrong scale, fixed by normalisation only.
        let twice = a.map(|v| 2.0 * v);
        assert!(infidelity(&model, &image(), 0, &twice, &config).unwrap() > 1e-3);
        let config = InfidelityConfig {
            normalize: true,
            ..config
        };
        assert!(infidelity(&model, &image(), 0, &twice, &config).unwrap() < 1e-9);
        // Explaining the other half of the image: as bad as saying nothing.
        let wrong = Tensor::from_vec(w.iter().rev().copied().collect(), &[1, 4, 4]).unwrap();
        assert!(infidelity(&model, &image(), 0, &wrong, &config).unwrap() > 1e-3);
    }

    #[test]
    fn sensitivity_of_known_explanations() {
        let x = image();
        let cfg = SensitivityConfig::default();
        // A constant explanation (the gradient of a linear model) does not move.
        let w = Tensor::from_vec(vec![0.5f32; 16], &[1, 4, 4]).unwrap();
        let s = max_sensitivity(&x, &w, |_| Ok(w.clone()), &cfg).unwrap();
        assert_eq!(s, 0.0);
        // The input itself as explanation moves by ‖δ‖ / ‖x‖, with ‖δ‖ ≤ r·√n and E‖δ‖² = n r²/3.
        let s = max_sensitivity(&x, &x, |p| Ok(p.clone()), &cfg).unwrap();
        let norm_x = x
            .as_slice()
            .iter()
            .map(|v| (v * v) as f64)
            .sum::<f64>()
            .sqrt();
        let (hi, typical) = (
            cfg.radius * 4.0 / norm_x,
            cfg.radius * 4.0 / 3f64.sqrt() / norm_x,
        );
        assert!(s <= hi && s > 0.8 * typical, "{s} vs {typical}..{hi}");
    }
}
