//! The WebGPU backend (feature `wgpu`): the smoothgrad kernels in WGSL (`kernels/wgsl/`), run
//! through wgpu on Vulkan, Metal, DX12 — or Mesa's lavapipe on a machine with no GPU.
//!
//! A [`WgpuContext`] owns the device, its queue, every compute pipeline (built on first use and
//! cached by entry-point name) and a pool of storage buffers reused by size class. Values live
//! on the device as [`GpuTensor`] (f32), [`GpuMask`] (1 bit per element, ReLU's saved state)
//! and [`GpuIndices`] (max-pool argmax). Kernel methods have the CPU kernels' semantics and
//! take the same geometry structs ([`Conv2dGeometry`](crate::Conv2dGeometry),
//! [`Pool2dGeometry`](crate::Pool2dGeometry)); they record into one command encoder that the
//! next download, `submit` or `sync` sends, so a forward/backward pass is one submission.
//!
//! ```no_run
//! use smoothgrad_autodiff::backend::wgpu::WgpuContext;
//! use smoothgrad_autodiff::{Conv2dGeometry, Conv2dParams, NoiseSource, NoiseSpec, Tensor};
//! let ctx = WgpuContext::new()?; // Error::Device when there is no adapter
//! let x = ctx.upload(&Tensor::<f32>::uniform(&[1, 3, 8, 8], 0.0, 1.0, 1)?)?;
//! let w = ctx.upload(&Tensor::<f32>::uniform(&[4, 3, 3, 3], -1.0, 1.0, 2)?)?;
//! let spec = NoiseSpec { sigma: 0.15, first: 0, count: 8, source: NoiseSource::Philox { seed: 3 } };
//! let copies = ctx.noisy_copies(&x, &spec)?; // [8, 3, 8, 8], noise made in the kernel
//! let g = Conv2dGeometry::new(copies.dims(), w.dims(), &Conv2dParams::new().padding(1))?;
//! let (y, mask) = ctx.conv2d_fwd_relu(&g, &copies, &w, None)?;
//! let dy = ctx.relu_bwd(&y, &mask, false)?; // stand-in for the rest of the backward
//! let (mut sum, mut sumsq) = (ctx.zeros(&[1, 3, 8, 8])?, ctx.zeros(&[1, 3, 8, 8])?);
//! ctx.conv2d_bwd_input_reduce_copies(&g, &dy, &w, &mut sum, &mut sumsq)?;
//! let smoothgrad = ctx.download(&sum)?; // one submission for all of the above
//! # Ok::<(), smoothgrad_autodiff::Error>(())
//! ```

mod attribution;
mod concat;
mod context;
mod conv;
mod copies;
mod elementwise;
pub mod kernels;
mod linear;
mod pool;
mod tensor;
mod transfer;

/// The wgpu crate this backend is built on (for [`wgpu::AdapterInfo`] and the like).
pub use ::wgpu;
pub use attribution::{IgPath, IgPoints};
pub use context::WgpuContext;
pub use tensor::{GpuIndices, GpuMask, GpuTensor, Precision};
