//! SmoothGrad (Smilkov et al. 2017) and its family of input-gradient explanations, on any
//! [`Model`](smoothgrad_layers::Model): vanilla gradient, SmoothGrad, SmoothGrad², VarGrad,
//! Grad×Input, Integrated Gradients and Guided Backprop — and any of them smoothed with noise.
//!
//! All noisy copies of an image go through one batched forward and one backward per chunk
//! (chunks sized from a memory budget), computing input gradients only; the noise comes from a
//! counter-based RNG keyed by (seed, copy, element), so the map does not depend on the chunking.
//!
//! See [`Explainer`] for a runnable example.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "cuda")]
pub mod cuda_explain;
pub mod error;
pub mod explain;
pub mod image_io;
pub mod limits;
pub mod method;
pub mod npy;
pub mod visualize;
#[cfg(feature = "wgpu")]
pub mod wgpu_explain;

#[cfg(feature = "cuda")]
pub use cuda_explain::CudaExplainer;
pub use error::{Result, SaliencyError};
pub use explain::{DEFAULT_GPU_MEMORY_BUDGET, DEFAULT_MEMORY_BUDGET, Explainer, SaliencyMap};
pub use image_io::{ImageOptions, load_image, normalize};
pub use limits::{Cost, Limit, Limits};
pub use method::{Aggregate, IgConfig, IgRule, Method, NoiseLevel, Output, Smoothing};
pub use npy::{NpyProblem, read_npy, write_npy};
pub use visualize::{Colormap, Heatmap, diverging, grayscale};
#[cfg(feature = "wgpu")]
pub use wgpu_explain::WgpuExplainer;
pub mod dataset;
pub mod evaluate;
pub mod metrics;
