//! Scores of an explanation: against a ground-truth mask (relevance mass accuracy, pointing
//! game), against the model (deletion and insertion curves, infidelity), against itself under
//! small input changes (max-sensitivity), and the cascading model-randomisation sanity check.
//!
//! A map's *relevance* at a pixel is the sum over channels of |attribution|; pixel orders and
//! the mask scores use it. Each metric is tested on a case with a known answer.
//!
//! ```
//! use smoothgrad_autodiff::Tensor;
//! use smoothgrad_saliency::metrics::{mass_accuracy, pointing_game};
//!
//! // A 1×2×2 map with three quarters of its mass on the masked pixel.
//! let map = Tensor::from_vec(vec![3.0f32, -1.0, 0.0, 0.0], &[1, 2, 2])?;
//! let mask = [true, false, false, false];
//! assert_eq!(mass_accuracy(&map, &mask)?, 0.75);
//! assert!(pointing_game(&map, &mask)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(clippy::indexing_slicing)]

mod perturbation;
mod randomization;

pub use perturbation::{
    Baseline, Curve, CurveConfig, InfidelityConfig, SensitivityConfig, deletion_curve, infidelity,
    insertion_curve, max_sensitivity, pixel_order, trapezoid_auc,
};
pub use randomization::{RandomizationStep, cascading_randomization, spearman};

use crate::error::{Result, SaliencyError};
use smoothgrad_autodiff::Tensor;

/// Per-pixel relevance (H·W values, row-major): the sum over channels of |a| for a map
/// `[C, H, W]`, or |a| for a map `[H, W]`.
pub fn relevance(attribution: &Tensor<f32>) -> Result<Vec<f32>> {
    let (c, plane) = match attribution.dims() {
        [c, h, w] => (*c, h * w),
        [h, w] => (1, h * w),
        d => {
            return Err(SaliencyError::Input(format!(
                "a map must be [C, H, W] or [H, W], got {d:?}"
            )));
        }
    };
    let mut r = vec![0.0f32; plane];
    for channel in attribution.as_slice().chunks(plane.max(1)).take(c) {
        for (acc, v) in r.iter_mut().zip(channel) {
            *acc += v.abs();
        }
    }
    Ok(r)
}

fn check_mask(relevance: &[f32], mask: &[bool]) -> Result<()> {
    if relevance.len() != mask.len() {
        return Err(SaliencyError::Input(format!(
            "the map has {} pixels but the mask {}",
            relevance.len(),
            mask.len()
        )));
    }
    Ok(())
}

/// Relevance mass accuracy (Arras et al. 2022): the share of the map's relevance that falls
/// inside the mask. 1 when all of it does; 0 for a map without relevance.
pub fn mass_accuracy(attribution: &Tensor<f32>, mask: &[bool]) -> Result<f64> {
    let r = relevance(attribution)?;
    check_mask(&r, mask)?;
    let total: f64 = r.iter().map(|&v| v as f64).sum();
    let inside: f64 = r
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(&v, _)| v as f64)
        .sum();
    Ok(if total > 0.0 { inside / total } else { 0.0 })
}

/// Pointing game (Zhang et al. 2016): whether the most relevant pixel (the first in row-major
/// order on ties) lies inside the mask. A map without relevance misses.
pub fn pointing_game(attribution: &Tensor<f32>, mask: &[bool]) -> Result<bool> {
    let r = relevance(attribution)?;
    check_mask(&r, mask)?;
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in r.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    Ok(best.is_some_and(|(i, v)| v > 0.0 && mask.get(i).copied().unwrap_or(false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_itself_is_a_perfect_explanation() {
        let mask: Vec<bool> = (0..16).map(|i| i % 5 == 1).collect();
        let map = Tensor::from_vec(
            mask.iter().map(|&m| if m { -1.0 } else { 0.0 }).collect(),
            &[4, 4],
        )
        .unwrap();
        assert_eq!(mass_accuracy(&map, &mask).unwrap(), 1.0);
        assert!(pointing_game(&map, &mask).unwrap());
        let flipped: Vec<bool> = mask.iter().map(|m| !m).collect();
        assert_eq!(mass_accuracy(&map, &flipped).unwrap(), 0.0);
        assert!(!pointing_game(&map, &flipped).unwrap());
    }

    #[test]
    fn relevance_sums_absolute_values_over_channels() {
        let map = Tensor::from_vec(vec![1.0, -2.0, -3.0, 0.5], &[2, 1, 2]).unwrap();
        assert_eq!(relevance(&map).unwrap(), vec![4.0, 2.5]);
        // A uniform map scores the mask's share of the pixels.
        let uniform = Tensor::from_vec(vec![1.0; 4], &[1, 2, 2]).unwrap();
        assert_eq!(
            mass_accuracy(&uniform, &[true, false, false, false]).unwrap(),
            0.25
        );
        let zero = Tensor::from_vec(vec![0.0; 4], &[1, 2, 2]).unwrap();
        assert!(!pointing_game(&zero, &[true; 4]).unwrap());
        assert!(mass_accuracy(&zero, &[true; 3]).is_err());
    }
}
