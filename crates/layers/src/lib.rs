//! Layers and model graphs for smoothgrad, and loaders for the files users already have:
//! PyTorch weights as safetensors plus a small JSON architecture, and ONNX (feature `onnx`).
//!
//! A [`Model`] is a small DAG of [`Layer`]s (residual adds and channel concats included) run on
//! an autodiff tape. Weights are constants, so a backward pass computes input gradients only.
//!
//! ```
//! use smoothgrad_autodiff::{Conv2dParams, Tape, Tensor};
//! use smoothgrad_layers::{Layer, Model, Node};
//!
//! // conv 3x3 (1 -> 2 channels) -> ReLU -> global average pool -> flatten: logits of 2 classes.
//! let w = Tensor::<f32>::randn(&[2, 1, 3, 3], 7)?;
//! let nodes = vec![
//!     Node { name: "conv".into(), layer: Layer::Conv2d { weight: w, bias: None, params: Conv2dParams::new().padding(1) }, inputs: vec![0] },
//!     Node { name: "relu".into(), layer: Layer::Relu, inputs: vec![1] },
//!     Node { name: "pool".into(), layer: Layer::GlobalAvgPool, inputs: vec![2] },
//!     Node { name: "flat".into(), layer: Layer::Flatten { start_dim: 1 }, inputs: vec![3] },
//! ];
//! let model = Model::new("example", &[1, 8, 8], nodes, 4)?;
//! assert_eq!(model.output_dims(), &[2]);
//!
//! let mut tape = Tape::new();
//! let x = tape.var(Tensor::randn(&[1, 1, 8, 8], 1)?);
//! let logits = model.forward(&mut tape, &x)?;
//! let grads = tape.backward_from(&logits, &Tensor::from_vec(vec![1.0, 0.0], &[1, 2])?)?;
//! assert_eq!(grads.get(&x).unwrap().dims(), &[1, 1, 8, 8]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Models come from files users send, so nothing here may panic on them: unwrap, expect and
//! panic are denied crate-wide, indexing in the loaders, and every size a file declares is
//! checked against [`LoadLimits`] before it is used (see `docs/reliability.md`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod arch;
pub mod error;
pub mod limits;
pub mod model;
#[cfg(feature = "onnx")]
pub mod onnx;

pub use arch::{
    build_safetensors_model, build_safetensors_model_with_limits, load_safetensors_model,
    load_safetensors_model_with_limits,
};
pub use error::{LayersError, Result};
pub use limits::LoadLimits;
pub use model::{FlopCount, Layer, Model, Node};
pub mod train;
