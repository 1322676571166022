//! Batched matrix multiply and the fully connected layer (`y = x·Wᵀ + b`, PyTorch's `Linear`).

use super::{Input, Op};
use crate::backend::cpu::gemm::{MatRef, Threads, linear_product, matmul};
use crate::backend::cpu::pinned;
use crate::element::Float;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tape::{KernelLog, Tape, Var, accumulate};
use crate::tensor::Tensor;

/// Sizes of `a[..., M, K] @ b[..., K, N]`: batches, whether each operand steps per batch.
#[derive(Debug, Clone, Copy)]
struct MatmulDims {
    batches: usize,
    m: usize,
    k: usize,
    n: usize,
    a_batched: bool,
    b_batched: bool,
}

fn matmul_dims(a: &[usize], b: &[usize]) -> Result<(MatmulDims, Vec<usize>)> {
    let op = "matmul";
    for d in [a, b] {
        if d.len() < 2 {
            return Err(Error::InvalidShape {
                op,
                shape: d.to_vec(),
                reason: "operands need at least 2 dimensions".into(),
            });
        }
    }
    let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 || !(ba == bb || ba.is_empty() || bb.is_empty()) {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.to_vec(),
            rhs: b.to_vec(),
        });
    }
    let batch_dims = if ba.is_empty() { bb } else { ba };
    let mut out = batch_dims.to_vec();
    out.extend([m, n]);
    let batches: usize = batch_dims.iter().product();
    let dims = if bb.is_empty() {
        // A batch of left operands against one right operand is one tall multiply.
        MatmulDims {
            batches: 1,
            m: m * batches,
            k,
            n,
            a_batched: false,
            b_batched: false,
        }
    } else {
        MatmulDims {
            batches,
            m,
            k,
            n,
            a_batched: !ba.is_empty(),
            b_batched: true,
        }
    };
    Ok((dims, out))
}

impl<T: Float> Tape<T> {
    /// `a @ b` over the last two axes; leading (batch) axes must be equal, or absent on one side.
    pub fn matmul(&mut self, a: &Var<T>, b: &Var<T>) -> Result<Var<T>> {
        let (ia, ib) = (self.input(a)?, self.input(b)?);
        let (d, out_dims) = matmul_dims(a.dims(), b.dims())?;
        let shape = Shape::new(&out_dims)?;
        let mut out = crate::buffers::stale(shape.numel());
        let (av, bv) = (a.value().as_slice(), b.value().as_slice());
        for i in 0..d.batches {
            let a_off = if d.a_batched { i * d.m * d.k } else { 0 };
            let b_off = if d.b_batched { i * d.k * d.n } else { 0 };
            matmul(
                d.m,
                d.n,
                d.k,
                MatRef::row_major(av, a_off, d.k),
                MatRef::row_major(bv, b_off, d.n),
                &mut out,
                i * d.m * d.n,
                d.n,
                false,
                Threads::Pool,
            );
        }
        let value = Tensor::from_parts(shape, out);
        let a_val = ib.map(|_| a.value().clone());
        let b_val = ia.map(|_| b.value().clone());
        let (a_shape, b_shape) = (a.value().shape().clone(), b.value().shape().clone());
        Ok(
            self.result(ia.is_some() || ib.is_some(), value, || Op::Matmul {
                a: ia,
                b: ib,
                a_shape,
                b_shape,
                a_val,
                b_val,
            }),
        )
    }

    /// `x·Wᵀ + b` for `x[..., in]`, `w[out, in]`, `b[out]` (PyTorch's `nn.Linear` layout).
    pub fn linear(&mut self, x: &Var<T>, w: &Var<T>, b: Option<&Var<T>>) -> Result<Var<T>> {
        let op = "linear";
        let (xd, wd) = (x.dims(), w.dims());
        if wd.len() != 2 || xd.is_empty() || xd[xd.len() - 1] != wd[1] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: xd.to_vec(),
                rhs: wd.to_vec(),
            });
        }
        let (out_f, in_f) = (wd[0], wd[1]);
        if let Some(b) = b
            && b.dims() != [out_f]
        {
            return Err(Error::ShapeMismatch {
                op: "linear (bias)",
                lhs: b.dims().to_vec(),
                rhs: vec![out_f],
            });
        }
        let (ix, iw) = (self.input(x)?, self.input(w)?);
        let ib = match b {
            Some(b) => self.input(b)?,
            None => None,
        };
        let rows = x.value().numel() / in_f.max(1);
        let mut out_dims = xd.to_vec();
        *out_dims.last_mut().unwrap_or(&mut 0) = out_f;
        let shape = Shape::new(&out_dims)?;
        // Every output is written (`linear_product` overwrites).
        let mut out = crate::buffers::stale(shape.numel());
        pinned(w.value(), || {
            linear_product(
                rows,
                out_f,
                in_f,
                x.value().as_slice(),
                w.value().as_slice(),
                &mut out,
                Threads::Pool,
            )
        });
        if let Some(b) = b {
            for row in out.chunks_mut(out_f.max(1)) {
                for (o, &bv) in row.iter_mut().zip(b.value().as_slice()) {
                    *o += bv;
                }
            }
        }
        let value = Tensor::from_parts(shape, out);
        let x_val = iw.map(|_| x.value().clone());
        let w_val = ix.map(|_| w.value().clone());
        let tracked = ix.is_some() || iw.is_some() || ib.is_some();
        Ok(self.result(tracked, value, || Op::Linear {
            x: ix,
            w: iw,
            b: ib,
            x_val,
            w_val,
        }))
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_backward<T: Float>(
    a: Input,
    b: Input,
    a_shape: &Shape,
    b_shape: &Shape,
    a_val: &Option<Tensor<T>>,
    b_val: &Option<Tensor<T>>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
    log: &mut KernelLog,
) -> Result<()> {
    let g = grad.as_slice();
    let (d, _) = matmul_dims(a_shape.dims(), b_shape.dims())?;
    if let (Some(ia), Some(bv)) = (a, b_val) {
        log.record("matmul_bwd_lhs");
        let mut da = crate::buffers::zeros(a_shape.numel());
        for i in 0..d.batches {
            let a_off = if d.a_batched { i * d.m * d.k } else { 0 };
            let b_off = if d.b_batched { i * d.k * d.n } else { 0 };
            // dA_i (+)= G_i · B_iᵀ
            matmul(
                d.m,
                d.k,
                d.n,
                MatRef::row_major(g, i * d.m * d.n, d.n),
                MatRef::transposed(bv.as_slice(), b_off, d.n),
                &mut da,
                a_off,
                d.k,
                !d.a_batched && i > 0,
                Threads::Pool,
            );
        }
        accumulate(grads, ia, Tensor::from_parts(a_shape.clone(), da));
    }
    if let (Some(ib), Some(av)) = (b, a_val) {
        log.record("matmul_bwd_rhs");
        let mut db = crate::buffers::zeros(b_shape.numel());
        for i in 0..d.batches {
            let a_off = if d.a_batched { i * d.m * d.k } else { 0 };
            let b_off = if d.b_batched { i * d.k * d.n } else { 0 };
            // dB_i (+)= A_iᵀ · G_i
            matmul(
                d.k,
                d.n,
                d.m,
                MatRef::transposed(av.as_slice(), a_off, d.k),
                MatRef::row_major(g, i * d.m * d.n, d.n),
                &mut db,
                b_off,
                d.n,
                !d.b_batched && i > 0,
                Threads::Pool,
            );
        }
        accumulate(grads, ib, Tensor::from_parts(b_shape.clone(), db));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn linear_backward<T: Float>(
    x: Input,
    w: Input,
    b: Input,
    x_val: &Option<Tensor<T>>,
    w_val: &Option<Tensor<T>>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
    log: &mut KernelLog,
) -> Result<()> {
    let g = grad.as_slice();
    let out_f = grad.dims()[grad.dims().len() - 1];
    let rows = g.len() / out_f.max(1);
    if let (Some(ix), Some(wv)) = (x, w_val) {
        log.record("linear_bwd_input");
        let in_f = wv.dims()[1];
        // dX[rows, in] = G[rows, out] · W[out, in]
        let mut dx = crate::buffers::zeros(rows * in_f);
        matmul(
            rows,
            in_f,
            out_f,
            MatRef::row_major(g, 0, out_f),
            MatRef::row_major(wv.as_slice(), 0, in_f),
            &mut dx,
            0,
            in_f,
            false,
            Threads::Pool,
        );
        let mut dims = grad.dims().to_vec();
        *dims.last_mut().unwrap_or(&mut 0) = in_f;
        accumulate(grads, ix, Tensor::from_vec(dx, &dims)?);
    }
    if let (Some(iw), Some(xv)) = (w, x_val) {
        log.record("linear_bwd_weight");
        let in_f = xv.dims()[xv.dims().len() - 1];
        // dW[out, in] = Gᵀ[out, rows] · X[rows, in]
        let mut dw = crate::buffers::zeros(out_f * in_f);
        matmul(
            out_f,
            in_f,
            rows,
            MatRef::transposed(g, 0, out_f),
            MatRef::row_major(xv.as_slice(), 0, in_f),
            &mut dw,
            0,
            in_f,
            false,
            Threads::Pool,
        );
        accumulate(grads, iw, Tensor::from_vec(dw, &[out_f, in_f])?);
    }
    if let Some(ib) = b {
        log.record("linear_bwd_bias");
        let mut db = crate::buffers::zeros(out_f);
        for row in g.chunks(out_f.max(1)) {
            for (d, &v) in db.iter_mut().zip(row) {
                *d += v;
            }
        }
        accumulate(grads, ib, Tensor::from_vec(db, &[out_f])?);
    }
    Ok(())
}
