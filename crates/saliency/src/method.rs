//! What to explain and how: the base attribution, optional noise smoothing, and the
//! integration rules of Integrated Gradients.

use smoothgrad_autodiff::{Float, Tensor};

/// The attribution computed for one (possibly noisy) input.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// ∂ output / ∂ input (vanilla saliency, Simonyan et al. 2014).
    Gradient,
    /// input ⊙ gradient.
    GradXInput,
    /// (x − baseline) ⊙ ∫₀¹ ∇f(baseline + α(x − baseline)) dα (Sundararajan et al. 2017).
    IntegratedGradients(IgConfig),
    /// The gradient with ReLUs passing only positive gradients (Springenberg et al. 2015).
    GuidedBackprop,
}

impl Method {
    /// The CLI name of the method.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Gradient => "gradient",
            Method::GradXInput => "grad-x-input",
            Method::IntegratedGradients(_) => "integrated-gradients",
            Method::GuidedBackprop => "guided-backprop",
        }
    }
}

/// How Integrated Gradients integrates along the path.
#[derive(Debug, Clone, PartialEq)]
pub struct IgConfig {
    /// Number of points on the path (Captum's `n_steps`, default 50).
    pub steps: usize,
    /// The quadrature rule (default Gauss–Legendre, as Captum).
    pub rule: IgRule,
    /// The baseline; `None` is all zeros.
    pub baseline: Option<Tensor<f32>>,
}

impl Default for IgConfig {
    fn default() -> Self {
        IgConfig {
            steps: 50,
            rule: IgRule::GaussLegendre,
            baseline: None,
        }
    }
}

/// Quadrature rules on [0, 1], with Captum's conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgRule {
    RiemannLeft,
    RiemannRight,
    RiemannMiddle,
    RiemannTrapezoid,
    GaussLegendre,
}

impl IgRule {
    /// Points α and weights on [0, 1] for `n` steps, exactly as Captum's
    /// `approximation_parameters` (trapezoid: weights 1/n with both ends halved).
    pub fn points(self, n: usize) -> (Vec<f64>, Vec<f64>) {
        let nf = n as f64;
        let linspace = |a: f64, b: f64| -> Vec<f64> {
            if n == 1 {
                return vec![a];
            }
            (0..n)
                .map(|i| a + (b - a) * i as f64 / (nf - 1.0))
                .collect()
        };
        match self {
            IgRule::GaussLegendre => {
                let (x, w) = gauss_legendre(n);
                (
                    x.iter().map(|v| 0.5 * (1.0 + v)).collect(),
                    w.iter().map(|v| 0.5 * v).collect(),
                )
            }
            rule => {
                let alphas = match rule {
                    IgRule::RiemannLeft => linspace(0.0, 1.0 - 1.0 / nf),
                    IgRule::RiemannRight => linspace(1.0 / nf, 1.0),
                    IgRule::RiemannMiddle => linspace(0.5 / nf, 1.0 - 0.5 / nf),
                    _ => linspace(0.0, 1.0),
                };
                let mut w = vec![1.0 / nf; n];
                if rule == IgRule::RiemannTrapezoid && n > 0 {
                    w[0] /= 2.0;
                    w[n - 1] /= 2.0;
                }
                (alphas, w)
            }
        }
    }

    /// The CLI name of the rule.
    pub fn name(self) -> &'static str {
        match self {
            IgRule::RiemannLeft => "riemann-left",
            IgRule::RiemannRight => "riemann-right",
            IgRule::RiemannMiddle => "riemann-middle",
            IgRule::RiemannTrapezoid => "riemann-trapezoid",
            IgRule::GaussLegendre => "gauss-legendre",
        }
    }
}

/// Nodes and weights of n-point Gauss–Legendre quadrature on [-1, 1] (ascending nodes), by
/// Newton's method on the Legendre recurrence; accurate to ~1e-15.
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    for i in 0..n.div_ceil(2) {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            // p1 = P_n(z), p2 = P_{n-1}(z) by the three-term recurrence.
            let (mut p1, mut p2) = (1.0, 0.0);
            for j in 0..n {
                let p3 = p2;
                p2 = p1;
                p1 = ((2 * j + 1) as f64 * z * p2 - j as f64 * p3) / (j + 1) as f64;
            }
            dp = n as f64 * (z * p1 - p2) / (z * z - 1.0);
            let step = p1 / dp;
            z -= step;
            if step.abs() < 1e-16 {
                break;
            }
        }
        x[i] = -z;
        x[n - 1 - i] = z;
        w[i] = 2.0 / ((1.0 - z * z) * dp * dp);
        w[n - 1 - i] = w[i];
    }
    (x, w)
}

/// How the noise level is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseLevel {
    /// σ = level · (max(x) − min(x)) of the image, as the SmoothGrad paper defines it.
    Relative(f64),
    /// σ in input units (Captum's `stdevs`).
    Absolute(f64),
}

/// How per-copy attributions are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Mean over copies (SmoothGrad).
    Mean,
    /// Mean of squares (SmoothGrad²).
    MeanOfSquares,
    /// Mean of squares minus squared mean (VarGrad), as Captum computes it.
    Variance,
}

/// Averaging a base method over noisy copies of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Smoothing<T: Float = f32> {
    /// Number of noisy copies n (default 50).
    pub samples: usize,
    /// Noise level (default 15% of the input's range).
    pub noise: NoiseLevel,
    /// Seed of the Philox noise.
    pub seed: u64,
    /// Standard normal draws `[n, C, H, W]` to use instead of Philox (scaled by σ).
    pub given_noise: Option<Tensor<T>>,
    /// How copies are combined.
    pub aggregate: Aggregate,
}

impl<T: Float> Default for Smoothing<T> {
    fn default() -> Self {
        Smoothing {
            samples: 50,
            noise: NoiseLevel::Relative(0.15),
            seed: 0,
            given_noise: None,
            aggregate: Aggregate::Mean,
        }
    }
}

/// What is differentiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// The target's logit (default).
    #[default]
    Logit,
    /// The target's softmax probability.
    Probability,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_integrates_polynomials_exactly() {
        for n in [1, 2, 5, 50] {
            let (x, w) = gauss_legendre(n);
            // Exact for degree <= 2n - 1: ∫ x^k over [-1, 1].
            for k in 0..(2 * n).min(12) {
                let q: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(k as i32)).sum();
                let exact = if k % 2 == 1 {
                    0.0
                } else {
                    2.0 / (k as f64 + 1.0)
                };
                assert!((q - exact).abs() < 1e-13, "n={n} k={k}: {q} vs {exact}");
            }
            assert!(x.windows(2).all(|p| p[0] < p[1]));
        }
    }

    #[test]
    fn captum_rules() {
        let (a, w) = IgRule::RiemannTrapezoid.points(5);
        assert_eq!(a, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(w, vec![0.1, 0.2, 0.2, 0.2, 0.1]);
        let (a, _) = IgRule::RiemannMiddle.points(4);
        assert_eq!(a, vec![0.125, 0.375, 0.625, 0.875]);
        let (a, w) = IgRule::GaussLegendre.points(3);
        assert!((a[1] - 0.5).abs() < 1e-15 && (w.iter().sum::<f64>() - 1.0).abs() < 1e-14);
    }
}
