//! Compute backends. The CPU backend is always built; GPU backends come behind cargo features.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "wgpu")]
pub mod wgpu;
