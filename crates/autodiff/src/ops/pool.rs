//! Max pool (argmax saved), average pool and global average pool.

use super::{Input, Op};
use crate::backend::cpu::pool as kernels;
use crate::element::Float;
use crate::error::{Error, Result};
use crate::ops::geometry::{Pool2dGeometry, Pool2dParams};
use crate::shape::Shape;
use crate::tape::{KernelLog, Tape, Var, accumulate};
use crate::tensor::Tensor;

impl<T: Float> Tape<T> {
    /// Max pool over windows of `x[N, C, H, W]`; padding never wins; ties go to the first
    /// maximum in row-major order (as PyTorch on the CPU).
    pub fn max_pool2d(&mut self, x: &Var<T>, params: &Pool2dParams) -> Result<Var<T>> {
        let geometry = Pool2dGeometry::new("max_pool2d", x.dims(), params)?;
        let ix = self.input(x)?;
        let shape = Shape::new(&geometry.out_dims())?;
        // Every output and argmax is written by the kernel.
        let mut out = crate::buffers::stale(shape.numel());
        let mut argmax = vec![0u32; shape.numel()];
        if geometry.in_h * geometry.in_w > u32::MAX as usize {
            return Err(Error::InvalidShape {
                op: "max_pool2d",
                shape: x.dims().to_vec(),
                reason: "input planes must have fewer than 2^32 elements".into(),
            });
        }
        kernels::maxpool2d_fwd(&geometry, x.value().as_slice(), &mut out, &mut argmax);
        let value = Tensor::from_parts(shape, out);
        Ok(self.result(ix.is_some(), value, || Op::MaxPool2d {
            x: ix,
            geometry,
            argmax,
        }))
    }

    /// Average pool over windows of `x[N, C, H, W]` (PyTorch's divisor rules).
    pub fn avg_pool2d(&mut self, x: &Var<T>, params: &Pool2dParams) -> Result<Var<T>> {
        if params.dilation != [1, 1] {
            return Err(Error::InvalidArgument {
                op: "avg_pool2d",
                reason: format!("dilation must be 1, got {:?}", params.dilation),
            });
        }
        let geometry = Pool2dGeometry::new("avg_pool2d", x.dims(), params)?;
        let ix = self.input(x)?;
        let shape = Shape::new(&geometry.out_dims())?;
        let mut out = crate::buffers::stale(shape.numel());
        kernels::avgpool2d_fwd(&geometry, x.value().as_slice(), &mut out);
        let value = Tensor::from_parts(shape, out);
        Ok(self.result(ix.is_some(), value, || Op::AvgPool2d { x: ix, geometry }))
    }

    /// Mean over each whole plane: `[N, C, H, W]` to `[N, C, 1, 1]`.
    pub fn global_avg_pool2d(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let d = x.dims();
        if d.len() != 4 || d[2] * d[3] == 0 {
            return Err(Error::InvalidShape {
                op: "global_avg_pool2d",
                shape: d.to_vec(),
                reason: "input must be [N, C, H, W] with H, W > 0".into(),
            });
        }
        let ix = self.input(x)?;
        let plane = d[2] * d[3];
        let inv = T::one() / T::from_usize(plane);
        let out: Vec<T> = x
            .value()
            .as_slice()
            .chunks(plane)
            .map(|p| p.iter().copied().sum::<T>() * inv)
            .collect();
        let value = Tensor::from_vec(out, &[d[0], d[1], 1, 1])?;
        let x_shape = x.value().shape().clone();
        Ok(self.result(ix.is_some(), value, || Op::GlobalAvgPool { x: ix, x_shape }))
    }
}

pub(super) fn max_pool2d_backward<T: Float>(
    x: Input,
    g: &Pool2dGeometry,
    argmax: &[u32],
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
    log: &mut KernelLog,
) {
    if let Some(ix) = x {
        log.record("maxpool2d_bwd");
        let dims = g.in_dims();
        // The kernel zeroes each plane before scattering into it.
        let mut dx = crate::buffers::stale(dims.iter().product());
        kernels::maxpool2d_bwd(g, grad.as_slice(), argmax, &mut dx);
        accumulate(grads, ix, Tensor::from_parts(shape_of(&dims), dx));
    }
}

pub(super) fn avg_pool2d_backward<T: Float>(
    x: Input,
    g: &Pool2dGeometry,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
    log: &mut KernelLog,
) {
    if let Some(ix) = x {
        log.record("avgpool2d_bwd");
        let dims = g.in_dims();
        let mut dx = crate::buffers::zeros(dims.iter().product());
        kernels::avgpool2d_bwd(g, grad.as_slice(), &mut dx);
        accumulate(grads, ix, Tensor::from_parts(shape_of(&dims), dx));
    }
}

pub(super) fn global_avg_pool_backward<T: Float>(
    x: Input,
    x_shape: &Shape,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    if let Some(ix) = x {
        let d = x_shape.dims();
        let plane = d[2] * d[3];
        let inv = T::one() / T::from_usize(plane);
        let mut dx = crate::buffers::with_capacity(x_shape.numel());
        for &gv in grad.as_slice() {
            dx.extend(std::iter::repeat_n(gv * inv, plane));
        }
        accumulate(grads, ix, Tensor::from_parts(x_shape.clone(), dx));
    }
}

/// The shape of dimensions already validated by a geometry.
fn shape_of(dims: &[usize; 4]) -> Shape {
    Shape::new(dims).unwrap_or_default()
}
