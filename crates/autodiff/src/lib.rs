//! Tape-based reverse-mode automatic differentiation with a fast CPU backend.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod backend;
pub mod buffers;
pub mod element;
pub mod error;
pub mod ops;
pub mod parallel;
pub mod rng;
pub mod shape;
pub mod tape;
pub mod tensor;

pub use backend::cpu::copies::NoiseSource;
pub use element::{DType, Float};
pub use error::{Error, Result};
pub use ops::BackwardOptions;
pub use ops::copies::NoiseSpec;
pub use ops::geometry::{Conv2dGeometry, Conv2dParams, Pool2dGeometry, Pool2dParams};
pub use shape::Shape;
pub use tape::{Grads, Tape, Var};
pub use tensor::Tensor;
