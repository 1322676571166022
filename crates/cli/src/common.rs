//! What `explain` and `demo` share: the method names, the model loader, the prediction table
//! and the picture of a map.

use crate::exit::{bad_input, usage};
use anyhow::{Context, Result};
use clap::ValueEnum;
use image::RgbImage;
use smoothgrad_autodiff::Tensor;
use smoothgrad_layers::Model;
use smoothgrad_saliency::visualize::{self, Colormap, Heatmap};
use smoothgrad_saliency::{Aggregate, IgConfig, IgRule, Method, Smoothing};
use std::path::Path;

/// The CPU convolution algorithm, by its command-line name (`--conv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConvChoice {
    /// im2col + GEMM both ways: PyTorch's summation-order class (the last digit).
    Im2col,
    /// im2col forward, Winograd F(4×4,3×3) input gradient: the same ReLU decisions as im2col.
    WinogradBackward,
    /// Winograd F(2×2,3×3) forward (rounding close to im2col's), F(4×4,3×3) input gradient.
    Winograd,
    /// Winograd forward too: fastest, but its rounding flips near-zero ReLUs.
    Fastest,
}

impl ConvChoice {
    /// Sets it for this process.
    pub fn apply(self) {
        use smoothgrad_autodiff::backend::cpu::conv::{ConvAlgorithm, set_conv_algorithm};
        set_conv_algorithm(match self {
            ConvChoice::Im2col => ConvAlgorithm::Im2col,
            ConvChoice::WinogradBackward => ConvAlgorithm::WinogradBackward,
            ConvChoice::Winograd => ConvAlgorithm::Winograd,
            ConvChoice::Fastest => ConvAlgorithm::Fastest,
        });
    }
}

/// The explanation methods, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodName {
    /// The plain input gradient.
    Gradient,
    /// The gradient averaged over noisy copies.
    Smoothgrad,
    /// The mean of the squared gradients over noisy copies.
    SmoothgradSq,
    /// The variance of the gradients over noisy copies.
    Vargrad,
    /// Input times gradient.
    GradXInput,
    /// Integrated Gradients from an all-zero baseline.
    IntegratedGradients,
    /// Guided Backpropagation.
    GuidedBackprop,
}

impl MethodName {
    /// The base method and, for the smoothed ones, how copies are combined.
    pub fn base(self, ig: &IgConfig) -> (Method, Option<Aggregate>) {
        match self {
            MethodName::Gradient => (Method::Gradient, None),
            MethodName::Smoothgrad => (Method::Gradient, Some(Aggregate::Mean)),
            MethodName::SmoothgradSq => (Method::Gradient, Some(Aggregate::MeanOfSquares)),
            MethodName::Vargrad => (Method::Gradient, Some(Aggregate::Variance)),
            MethodName::GradXInput => (Method::GradXInput, None),
            MethodName::IntegratedGradients => (Method::IntegratedGradients(ig.clone()), None),
            MethodName::GuidedBackprop => (Method::GuidedBackprop, None),
        }
    }

    /// The name as typed on the command line.
    pub fn cli_name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// The integration rules of Integrated Gradients, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IgRuleName {
    GaussLegendre,
    RiemannLeft,
    RiemannRight,
    RiemannMiddle,
    RiemannTrapezoid,
}

impl From<IgRuleName> for IgRule {
    fn from(r: IgRuleName) -> Self {
        match r {
            IgRuleName::GaussLegendre => IgRule::GaussLegendre,
            IgRuleName::RiemannLeft => IgRule::RiemannLeft,
            IgRuleName::RiemannRight => IgRule::RiemannRight,
            IgRuleName::RiemannMiddle => IgRule::RiemannMiddle,
            IgRuleName::RiemannTrapezoid => IgRule::RiemannTrapezoid,
        }
    }
}

/// A full description of what is computed for each input.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub method: Method,
    pub smoothing: Option<Smoothing>,
}

impl Recipe {
    /// "smoothgrad (n = 50, noise 15% of the range)" and the like.
    pub fn describe(&self, name: &str) -> String {
        match &self.smoothing {
            None => name.to_string(),
            Some(s) => {
                let noise = match s.noise {
                    smoothgrad_saliency::NoiseLevel::Relative(l) => {
                        format!("noise {}% of the input range", l * 100.0)
                    }
                    smoothgrad_saliency::NoiseLevel::Absolute(sigma) => format!("σ = {sigma}"),
                };
                format!("{name} (n = {}, {noise}, seed {})", s.samples, s.seed)
            }
        }
    }
}

/// Loads an `.onnx` model, or a `.safetensors` model with its JSON architecture.
pub fn load_model(model: &Path, arch: Option<&Path>) -> Result<Model<f32>> {
    let extension = model
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let loaded = match (extension.as_deref(), arch) {
        (Some("onnx"), None) => smoothgrad_layers::onnx::load_onnx_model(model)?,
        (Some("onnx"), Some(_)) => {
            return Err(usage(
                "--arch is for .safetensors models; an .onnx model describes its own layers",
            ));
        }
        (Some("safetensors"), Some(arch)) => {
            smoothgrad_layers::load_safetensors_model(model, arch)?
        }
        (Some("safetensors"), None) => {
            return Err(usage(format!(
                "{}: a .safetensors model needs its architecture: add --arch MODEL.json",
                model.display()
            )));
        }
        _ => {
            return Err(bad_input(format!(
                "{}: cannot tell the model format; give an .onnx file, or a .safetensors file with --arch",
                model.display()
            )));
        }
    };
    let dims = loaded.input_dims();
    if dims.len() != 3 {
        return Err(bad_input(format!(
            "{}: the model takes inputs of shape {dims:?}; only image models [C, H, W] are explained",
            model.display()
        )));
    }
    Ok(loaded)
}

/// The top-`k` classes by logit with their softmax probabilities, best first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32, f64)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order
        .into_iter()
        .take(k)
        .map(|c| (c, logits[c], exps[c] / total))
        .collect()
}

/// The prediction table printed for each input.
pub fn prediction_table(logits: &[f32]) -> String {
    let mut out = String::from("  class      logit  probability\n");
    for (class, logit, p) in top_k(logits, 5) {
        out.push_str(&format!("  {class:>5} {logit:>10.4} {p:>12.6}\n"));
    }
    out
}

/// How a map is drawn.
#[derive(Debug, Clone, Copy)]
pub struct Drawing {
    /// Signed blue–white–red instead of |attribution|.
    pub diverging: bool,
    /// Over the input instead of alone.
    pub overlay: bool,
    pub colormap: Colormap,
}

/// Opacity of the map over the picture.
pub const OVERLAY_ALPHA: f32 = 0.6;

impl Drawing {
    /// The colour map when none is asked for: red-blue for signed maps, inferno over the
    /// picture, gray alone (as the SmoothGrad paper shows maps).
    pub fn new(diverging: bool, overlay: bool, colormap: Option<Colormap>) -> Self {
        let colormap = colormap.unwrap_or(match (diverging, overlay) {
            (true, _) => Colormap::RedBlue,
            (false, true) => Colormap::Inferno,
            (false, false) => Colormap::Gray,
        });
        Drawing {
            diverging,
            overlay,
            colormap,
        }
    }

    /// The picture of `attribution` (at the input's resolution).
    pub fn draw(&self, attribution: &Tensor<f32>, input: &Tensor<f32>) -> Result<RgbImage> {
        let heat: Heatmap = if self.diverging {
            visualize::diverging(attribution)?
        } else {
            visualize::grayscale(attribution)?
        };
        Ok(if self.overlay {
            let base = visualize::input_to_rgb(input).context("drawing the input under the map")?;
            visualize::overlay(&base, &heat, self.colormap, OVERLAY_ALPHA)?
        } else {
            heat.to_rgb(self.colormap)
        })
    }
}

/// Parses `--colormap`.
pub fn parse_colormap(s: &str) -> std::result::Result<Colormap, String> {
    s.parse()
        .map_err(|e: smoothgrad_saliency::SaliencyError| e.to_string())
}

/// The nearest-neighbour factor that makes a `side`-pixel picture about 256 pixels.
pub fn auto_scale(side: usize) -> u32 {
    (256 / side.max(1)).clamp(1, 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_sorts_and_normalises() {
        let t = top_k(&[0.0, 2.0, 1.0], 2);
        assert_eq!(t.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2]);
        let total: f64 = top_k(&[0.0, 2.0, 1.0], 5).iter().map(|r| r.2).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn method_names_match_the_library() {
        let ig = IgConfig::default();
        for m in MethodName::value_variants() {
            let (method, aggregate) = m.base(&ig);
            if aggregate.is_none() {
                assert_eq!(method.name(), m.cli_name());
            }
        }
        assert_eq!(MethodName::SmoothgradSq.cli_name(), "smoothgrad-sq");
    }
}
