//! The cascading model-randomisation sanity check (Adebayo et al. 2018): re-initialise the
//! layers with weights from the top down, one more at each step, and compare each map with the
//! original by Spearman rank correlation. A map that explains the model changes (the
//! correlation falls); one that does not depend on the model (an edge detector) stays put.

use super::relevance;
use crate::error::Result;
use smoothgrad_autodiff::Tensor;
use smoothgrad_layers::Model;

/// One step of the cascade: every layer with weights from the top down to `layer` is random.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomizationStep {
    /// The lowest randomised layer at this step.
    pub layer: String,
    /// Spearman correlation between the relevance of the original and of this step's map.
    pub spearman: f64,
}

/// Runs the cascade for one image. `explain(model, image)` returns the map (same target every
/// time); correlations compare per-pixel relevance (the sum over channels of |a|), as Adebayo et
/// al.'s absolute-value maps. Randomised weights are He-normal (seeded by `seed` and the
/// tensor's position), biases zero, batch-norm scales standard normal.
pub fn cascading_randomization(
    model: &Model<f32>,
    image: &Tensor<f32>,
    mut explain: impl FnMut(&Model<f32>, &Tensor<f32>) -> Result<Tensor<f32>>,
    seed: u64,
) -> Result<Vec<RandomizationStep>> {
    let original = relevance(&explain(model, image)?)?;
    let layers: Vec<String> = model
        .nodes()
        .iter()
        .rev()
        .filter(|n| !n.layer.parameters().is_empty())
        .map(|n| n.name.clone())
        .collect();
    let mut params: Vec<(String, Tensor<f32>)> = model.parameters();
    let mut randomized = model.clone();
    let mut steps = Vec::with_capacity(layers.len());
    for layer in layers {
        let prefix = format!("{layer}.");
        for (k, (name, t)) in params.iter_mut().enumerate() {
            if !name.starts_with(&prefix) {
                continue;
            }
            let key = seed
                .wrapping_mul(0x2545_F491_4F6C_DD1D)
                .wrapping_add(k as u64);
            *t = if name.ends_with(".bias") {
                Tensor::zeros(t.dims())?
            } else if t.dims().len() == 1 {
                Tensor::randn(t.dims(), key)?
            } else {
                let fan_in: usize = t.dims().iter().skip(1).product();
                let std = (2.0 / fan_in.max(1) as f32).sqrt();
                Tensor::randn(t.dims(), key)?.map(|v| v * std)
            };
        }
        let values: Vec<Tensor<f32>> = params.iter().map(|(_, t)| t.clone()).collect();
        randomized.set_parameters(&values)?;
        let map = relevance(&explain(&randomized, image)?)?;
        steps.push(RandomizationStep {
            layer,
            spearman: spearman(&original, &map),
        });
    }
    Ok(steps)
}

/// Spearman's rank correlation (ties get their average rank); 0 when either side is constant.
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len().min(rb.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// 1-based ranks, ties averaged.
fn ranks(v: &[f32]) -> Vec<f64> {
    let mut sorted: Vec<(usize, f32)> = v.iter().copied().enumerate().collect();
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut r = vec![0.0; v.len()];
    let mut rest = sorted.as_slice();
    let mut start = 0;
    while let Some(&(_, value)) = rest.first() {
        let tied = rest.iter().take_while(|(_, x)| *x == value).count().max(1);
        let (group, after) = rest.split_at(tied.min(rest.len()));
        let mean = (2 * start + tied + 1) as f64 / 2.0;
        for &(i, _) in group {
            if let Some(slot) = r.get_mut(i) {
                *slot = mean;
            }
        }
        start += tied;
        rest = after;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_known_orders() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[3.0, 2.0, 1.0]), 0.0);
        // Monotone transforms do not matter; ties average: ranks [1.5, 1.5, 3] vs [1, 2, 3].
        let r = spearman(&[5.0, 5.0, 9.0], &[0.1, 0.2, 0.3]);
        assert!((r - 0.866_025_403_784_438_6).abs() < 1e-12, "{r}");
        assert_eq!(ranks(&[0.3, 0.1, 0.3, 0.2]), vec![3.5, 1.0, 3.5, 2.0]);
    }
}
