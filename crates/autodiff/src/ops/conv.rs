//! 2-D convolution (stride, padding, dilation, groups): forward, and `conv2d_bwd_input` /
//! `conv2d_bwd_weight` as separate kernels, each run only when its gradient is needed.

use super::{Input, Op};
use crate::backend::cpu::conv::{self as kernels, ConvPoolPath};
use crate::backend::cpu::copies::{
    conv2d_bwd_input_reduce_copies, conv2d_bwd_input_sum_copies,
    conv2d_max_pool2d_bwd_input_reduce_copies,
};
use crate::backend::cpu::pinned;
use crate::element::Float;
use crate::error::{Error, Result};
use crate::ops::geometry::{Conv2dGeometry, Conv2dParams, Pool2dGeometry, Pool2dParams};
use crate::shape::Shape;
use crate::tape::{KernelLog, Tape, Var, accumulate};
use crate::tensor::Tensor;

impl<T: Float> Tape<T> {
    /// Convolution of `x[N, C, H, W]` with `w[O, C/groups, kH, kW]` plus optional `bias[O]`
    /// (PyTorch's `F.conv2d`, cross-correlation).
    pub fn conv2d(
        &mut self,
        x: &Var<T>,
        w: &Var<T>,
        bias: Option<&Var<T>>,
        params: &Conv2dParams,
    ) -> Result<Var<T>> {
        let geometry = Conv2dGeometry::new(x.dims(), w.dims(), params)?;
        if let Some(b) = bias
            && b.dims() != [geometry.out_channels]
        {
            return Err(Error::ShapeMismatch {
                op: "conv2d (bias)",
                lhs: b.dims().to_vec(),
                rhs: vec![geometry.out_channels],
            });
        }
        let (ix, iw) = (self.input(x)?, self.input(w)?);
        let ib = match bias {
            Some(b) => self.input(b)?,
            None => None,
        };
        let shape = Shape::new(&geometry.out_dims())?;
        // Every output is written by the kernel (GEMMs with β = 0, direct loops from the bias).
        let mut out = crate::buffers::stale(shape.numel());
        pinned(w.value(), || {
            kernels::conv2d_fwd(
                &geometry,
                x.value().as_slice(),
                w.value().as_slice(),
                bias.map(|b| b.value().as_slice()),
                &mut out,
            )
        });
        let value = Tensor::from_parts(shape, out);
        // dX needs the weights; dW needs the input. Save each only if the other is tracked.
        let x_val = iw.map(|_| x.value().clone());
        let w_val = ix.map(|_| w.value().clone());
        let tracked = ix.is_some() || iw.is_some() || ib.is_some();
        Ok(self.result(tracked, value, || Op::Conv2d {
            x: ix,
            w: iw,
            b: ib,
            geometry,
            x_val,
            w_val,
        }))
    }
}

impl<T: Float> Tape<T> {
    /// `max_pool2d(conv2d(x, w, bias), pool)` as one op where the CPU kernels fuse them (see
    /// [`conv2d_max_pool2d_fuses`](crate::backend::cpu::conv::conv2d_max_pool2d_fuses)): the
    /// convolution's output is pooled as it is computed and never stored, and the input
    /// gradient scatters the pooled gradient straight into the convolution's padded planes.
    /// Values and input gradients are bit-identical to the two separate ops, which this records
    /// instead when the geometries do not fuse or the weights or bias take a gradient (the
    /// fused op computes input gradients only).
    pub fn conv2d_max_pool2d(
        &mut self,
        x: &Var<T>,
        w: &Var<T>,
        bias: Option<&Var<T>>,
        conv: &Conv2dParams,
        pool: &Pool2dParams,
    ) -> Result<Var<T>> {
        let geometry = Conv2dGeometry::new(x.dims(), w.dims(), conv)?;
        let pool_geometry = Pool2dGeometry::new("max_pool2d", &geometry.out_dims(), pool)?;
        let weights_tracked = self.input(w)?.is_some()
            || match bias {
                Some(b) => self.input(b)?.is_some(),
                None => false,
            };
        let bias_fits = bias.is_none_or(|b| b.dims() == [geometry.out_channels]);
        let path = kernels::conv2d_max_pool2d_path::<T>(&geometry, &pool_geometry);
        let Some(path) = path.filter(|_| !weights_tracked && bias_fits) else {
            let y = self.conv2d(x, w, bias, conv)?;
            return self.max_pool2d(&y, pool);
        };
        let ix = self.input(x)?;
        let shape = Shape::new(&pool_geometry.out_dims())?;
        // Every output and argmax is written by the kernel.
        let mut out = crate::buffers::stale(shape.numel());
        let mut argmax = vec![0u32; shape.numel()];
        pinned(w.value(), || {
            kernels::conv2d_max_pool2d_fwd(
                path,
                &geometry,
                &pool_geometry,
                x.value().as_slice(),
                w.value().as_slice(),
                bias.map(|b| b.value().as_slice()),
                &mut out,
                &mut argmax,
            )
        });
        let value = Tensor::from_parts(shape, out);
        let w_val = ix.map(|_| w.value().clone());
        Ok(self.result(ix.is_some(), value, || Op::Conv2dMaxPool2d {
            x: ix,
            conv: geometry,
            pool: pool_geometry,
            path,
            argmax,
            w_val,
        }))
    }
}

/// Where the sums of squares over noisy copies go, or `None` when the backward sums only.
type Squares<'a, T> = Option<&'a mut [Option<Tensor<T>>]>;

/// What the forward of a [`Tape::conv2d_max_pool2d`] op kept for its backward.
pub(super) struct Fused<'a> {
    pub conv: &'a Conv2dGeometry,
    pub pool: &'a Pool2dGeometry,
    pub path: ConvPoolPath,
    pub argmax: &'a [u32],
}

/// The input gradient of a [`Tape::conv2d_max_pool2d`] op (its weights are constants), or, with
/// `copies` (`(target, squares)`: its input is noisy copies read by nothing else), the sum and
/// (with `squares`) the sum of squares over copies written into the copies' source.
pub(super) fn conv2d_max_pool2d_backward<T: Float>(
    x: Input,
    copies: Option<(Input, Squares<'_, T>)>,
    fused: &Fused<'_>,
    w_val: &Option<Tensor<T>>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
    log: &mut KernelLog,
) -> Result<()> {
    let Some(wv) = w_val else { return Ok(()) };
    // Every kernel below reads these weights: pinned once for the op (see `derived::pinned`).
    pinned(wv, || {
        conv2d_max_pool2d_backward_pinned(x, copies, fused, wv, grad, grads, log)
    })
}

fn conv2d_max_pool2d_backward_pinned<T: Float>(
    x: Input,
    copies: Option<(Input, Squares<'_, T>)>,
    fused: &Fused<'_>,
    wv: &Tensor<T>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
    log: &mut KernelLog,
) -> Result<()> {
    let &Fused {
        conv: g,
        pool: pg,
        path,
        argmax,
    } = fused;
    match copies {
        Some((Some(ix), None)) => {
            log.record("conv2d_max_pool2d_bwd_input_sum");
            let dims = [1, g.in_channels, g.in_h, g.in_w];
            // Every element of dx is written.
            let mut sum = crate::buffers::stale(dims.iter().product());
            kernels::conv2d_max_pool2d_bwd_input_sum(
                path,
                g,
                pg,
                grad.as_slice(),
                argmax,
                wv.as_slice(),
                &mut sum,
            );
            accumulate(grads, ix, Tensor::from_vec(sum, &dims)?);
        }
        Some((Some(ix), Some(squares))) => {
            log.record("conv2d_max_pool2d_bwd_input_reduce_copies");
            let dims = [1, g.in_channels, g.in_h, g.in_w];
            let e = dims.iter().product();
            let (mut sum, mut sumsq) = (crate::buffers::zeros(e), crate::buffers::zeros(e));
            conv2d_max_pool2d_bwd_input_reduce_copies(
                path,
                g,
                pg,
                grad.as_slice(),
                argmax,
                wv.as_slice(),
                &mut sum,
                &mut sumsq,
            );
            accumulate(grads, ix, Tensor::from_vec(sum, &dims)?);
            accumulate(squares, ix, Tensor::from_vec(sumsq, &dims)?);
        }
        Some((None, _)) => {}
        None => {
            if let Some(ix) = x {
                log.record("conv2d_max_pool2d_bwd_input");
                // Every element of dx is written.
                let mut dx = crate::buffers::stale(g.in_dims().iter().product());
                kernels::conv2d_max_pool2d_bwd_input(
                    path,
                    g,
                    pg,
                    grad.as_slice(),
                    argmax,
                    wv.as_slice(),
                    &mut dx,
                );
                accumulate(grads, ix, Tensor::from_vec(dx, &g.in_dims())?);
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_backward<T: Float>(
    x: Input,
    w: Input,
    b: Input,
    g: &Conv2dGeometry,
    x_val: &Option<Tensor<T>>,
    w_val: &Option<Tensor<T>>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
    log: &mut KernelLog,
) -> Result<()> {
    let dy = grad.as_slice();
    if let (Some(ix), Some(wv)) = (x, w_val) {
        log.record("conv2d_bwd_input");
        // Every path writes all of dx (col2im and the direct loops zero it first).
        let mut dx = crate::buffers::stale(g.in_dims().iter().product());
        pinned(wv, || {
            kernels::conv2d_bwd_input(g, dy, wv.as_slice(), &mut dx)
        });
        accumulate(grads, ix, Tensor::from_vec(dx, &g.in_dims())?);
    }
    if let (Some(iw), Some(xv)) = (w, x_val) {
        log.record("conv2d_bwd_weight");
        let mut dw = crate::buffers::zeros(g.weight_dims().iter().product());
        kernels::conv2d_bwd_weight(g, dy, xv.as_slice(), &mut dw);
        accumulate(grads, iw, Tensor::from_vec(dw, &g.weight_dims())?);
    }
    if let Some(ib) = b {
        log.record("conv2d_bwd_bias");
        let mut db = crate::buffers::zeros(g.out_channels);
        kernels::conv2d_bwd_bias(g, dy, &mut db);
        accumulate(grads, ib, Tensor::from_vec(db, &[g.out_channels])?);
    }
    Ok(())
}

/// The fused input gradient of a first convolution over noisy copies: writes the sum and (with
/// `squares`) the sum of squares over copies into the copies' source, never forming the
/// per-copy gradients of the whole batch (without `squares`, never any).
pub(super) fn conv2d_bwd_input_into_copies<T: Float>(
    target: Input,
    g: &Conv2dGeometry,
    w_val: &Tensor<T>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
    squares: Squares<'_, T>,
    log: &mut KernelLog,
) -> Result<()> {
    let Some(ix) = target else { return Ok(()) };
    let dims = [1, g.in_channels, g.in_h, g.in_w];
    let e = dims.iter().product();
    let mut sum = crate::buffers::zeros(e);
    match squares {
        Some(squares) => {
            log.record("conv2d_bwd_input_reduce_copies");
            let mut sumsq = crate::buffers::zeros(e);
            conv2d_bwd_input_reduce_copies(
                g,
                grad.as_slice(),
                w_val.as_slice(),
                &mut sum,
                &mut sumsq,
            );
            accumulate(squares, ix, Tensor::from_vec(sumsq, &dims)?);
        }
        None => {
            log.record("conv2d_bwd_input_sum_copies");
            conv2d_bwd_input_sum_copies(g, grad.as_slice(), w_val.as_slice(), &mut sum);
        }
    }
    accumulate(grads, ix, Tensor::from_vec(sum, &dims)?);
    Ok(())
}
