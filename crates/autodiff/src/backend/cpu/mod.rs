//! The CPU backend: the reference every other backend is checked against, and what an embedded
//! user runs. Kernels work on plain slices with sizes from a validated geometry.

pub mod conv;
pub mod copies;
mod derived;
pub(crate) use derived::pinned;
mod direct;
pub mod elementwise;
mod flatcol;
pub mod gemm;
pub mod pool;
pub(crate) mod simd;
mod wgemm;
mod winograd;
