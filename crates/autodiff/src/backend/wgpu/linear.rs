//! Matrix multiply and the fully connected layer on the device: every product is one launch of
//! the strided, batched, tiled GEMM of `matmul.wgsl`, transposes being strides.

use super::context::{Grid, WgpuContext, precision_of, to_u32};
use super::conv::expect_dims;
use super::kernels;
use super::tensor::GpuTensor;
use crate::error::{Error, Result};

/// A matrix operand seen through strides: element (i, k) of batch z is at
/// `z·batch + i·row + k·col`.
#[derive(Clone, Copy)]
struct View<'a> {
    t: &'a GpuTensor,
    row: usize,
    col: usize,
    batch: usize,
}

impl<'a> View<'a> {
    /// Row-major matrices of `cols` columns, `rows·cols` apart (batch stride 0 when `batched`
    /// is false).
    fn row_major(t: &'a GpuTensor, rows: usize, cols: usize, batched: bool) -> Self {
        View {
            t,
            row: cols,
            col: 1,
            batch: if batched { rows * cols } else { 0 },
        }
    }
    /// The transposes of row-major matrices of `cols` columns.
    fn transposed(t: &'a GpuTensor, rows: usize, cols: usize, batched: bool) -> Self {
        View {
            t,
            row: 1,
            col: cols,
            batch: if batched { rows * cols } else { 0 },
        }
    }
}

/// Sizes of `a[..., M, K] @ b[..., K, N]` (the CPU's rules: equal batch dimensions, or none on
/// one side; a batch against one right operand is one tall multiply).
struct MatmulDims {
    batches: usize,
    m: usize,
    k: usize,
    n: usize,
    a_batched: bool,
    b_batched: bool,
    out: Vec<usize>,
}

fn matmul_dims(a: &[usize], b: &[usize]) -> Result<MatmulDims> {
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
    Ok(if bb.is_empty() {
        MatmulDims {
            batches: 1,
            m: m * batches,
            k,
            n,
            a_batched: false,
            b_batched: false,
            out,
        }
    } else {
        MatmulDims {
            batches,
            m,
            k,
            n,
            a_batched: !ba.is_empty(),
            b_batched: true,
            out,
        }
    })
}

impl WgpuContext {
    /// `c[z] = a[z]·b[z] (+ bias)` for `batches` products of `m×k` by `k×n`, into a new tensor
    /// of dimensions `out` (row-major `[batches, m, n]`).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        op: &'static str,
        (m, n, k, batches): (usize, usize, usize, usize),
        a: View<'_>,
        b: View<'_>,
        bias: Option<&GpuTensor>,
        out: &[usize],
    ) -> Result<GpuTensor> {
        let mut operands = vec![a.t, b.t];
        operands.extend(bias);
        let prec = precision_of(op, &operands)?;
        let c = self.tensor_as(out, prec)?;
        if c.numel() == 0 {
            return Ok(c);
        }
        let params: Vec<u32> = [
            m,
            n,
            k,
            bias.is_some() as usize,
            a.row,
            a.col,
            a.batch,
            b.row,
            b.col,
            b.batch,
            0,
            0,
        ]
        .iter()
        .map(|&v| to_u32(v, op))
        .collect::<Result<_>>()?;
        let bias = bias.map_or(self.placeholder(), |t| t.raw());
        let bindings = [(1, a.t.raw()), (2, b.t.raw()), (3, bias), (4, c.raw())];
        let grid = Grid::Tiled {
            x: n.div_ceil(64) as u64,
            y: m.div_ceil(64) as u64,
            z: batches as u64,
            z_base: 10,
        };
        self.launch(kernels::MATMUL_FWD.with(prec), &params, &bindings, grid)?;
        Ok(c)
    }

    /// `a @ b` over the last two axes of `a[..., M, K]` and `b[..., K, N]`; leading (batch) axes
    /// are equal, or absent on one side (as [`Tape::matmul`](crate::Tape::matmul)).
    pub fn matmul_fwd(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        let d = matmul_dims(a.dims(), b.dims())?;
        self.gemm(
            "matmul_fwd",
            (d.m, d.n, d.k, d.batches),
            View::row_major(a, d.m, d.k, d.a_batched),
            View::row_major(b, d.k, d.n, d.b_batched),
            None,
            &d.out,
        )
    }

    /// The gradient of `a @ b` with respect to `a` (of dimensions `a_dims`): `g·bᵀ` per batch,
    /// summed over the batch when `a` has none.
    pub fn matmul_bwd_lhs(
        &self,
        grad: &GpuTensor,
        b: &GpuTensor,
        a_dims: &[usize],
    ) -> Result<GpuTensor> {
        let op = "matmul_bwd_lhs";
        let d = matmul_dims(a_dims, b.dims())?;
        expect_dims(op, grad, &d.out)?;
        let g = View::row_major(grad, d.m, d.n, true);
        let bt = View::transposed(b, d.k, d.n, d.b_batched);
        if d.batches > 1 && !d.a_batched {
            let per = self.gemm(
                op,
                (d.m, d.k, d.n, d.batches),
                g,
                bt,
                None,
                &[d.batches, d.m * d.k],
            )?;
            return self.sum_batch(&per)?.reshape(a_dims);
        }
        self.gemm(op, (d.m, d.k, d.n, d.batches), g, bt, None, a_dims)
    }

    /// The gradient of `a @ b` with respect to `b` (of dimensions `b_dims`): `aᵀ·g` per batch
    /// (a batch against one `b` is one tall product).
    pub fn matmul_bwd_rhs(
        &self,
        a: &GpuTensor,
        grad: &GpuTensor,
        b_dims: &[usize],
    ) -> Result<GpuTensor> {
        let op = "matmul_bwd_rhs";
        let d = matmul_dims(a.dims(), b_dims)?;
        expect_dims(op, grad, &d.out)?;
        let at = View::transposed(a, d.m, d.k, d.a_batched);
        let g = View::row_major(grad, d.m, d.n, true);
        self.gemm(op, (d.k, d.n, d.m, d.batches), at, g, None, b_dims)
    }

    /// `y = x·Wᵀ + b` for `x[..., in]`, `w[out, in]`, `b[out]` (PyTorch's `nn.Linear`).
    pub fn linear_fwd(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        let (rows, in_f, out_f) = linear_dims("linear_fwd", x.dims(), w.dims())?;
        if let Some(b) = bias {
            expect_dims("linear_fwd (bias)", b, &[out_f])?;
        }
        let mut out = x.dims().to_vec();
        if let Some(last) = out.last_mut() {
            // `linear_dims` checked the rank (≥ 1).
            *last = out_f;
        }
        self.gemm(
            "linear_fwd",
            (rows, out_f, in_f, 1),
            View::row_major(x, rows, in_f, false),
            View::transposed(w, out_f, in_f, false),
            bias,
            &out,
        )
    }

    /// `dx[..., in] = dy[..., out]·W`.
    pub fn linear_bwd_input(&self, dy: &GpuTensor, w: &GpuTensor) -> Result<GpuTensor> {
        let op = "linear_bwd_input";
        let out_f = *dy.dims().last().unwrap_or(&0);
        if w.dims().len() != 2 || w.dims()[0] != out_f {
            return Err(Error::ShapeMismatch {
                op,
                lhs: dy.dims().to_vec(),
                rhs: w.dims().to_vec(),
            });
        }
        let in_f = w.dims()[1];
        let rows = dy.numel() / out_f.max(1);
        let mut out = dy.dims().to_vec();
        *out.last_mut().unwrap_or(&mut 0) = in_f;
        self.gemm(
            op,
            (rows, in_f, out_f, 1),
            View::row_major(dy, rows, out_f, false),
            View::row_major(w, out_f, in_f, false),
            None,
            &out,
        )
    }

    /// `dW[out, in] = dyᵀ·x`, summed over every leading axis.
    pub fn linear_bwd_weight(&self, dy: &GpuTensor, x: &GpuTensor) -> Result<GpuTensor> {
        let op = "linear_bwd_weight";
        let (xd, gd) = (x.dims(), dy.dims());
        if xd.is_empty() || gd.len() != xd.len() || gd[..gd.len() - 1] != xd[..xd.len() - 1] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: gd.to_vec(),
                rhs: xd.to_vec(),
            });
        }
        let (out_f, in_f) = (gd[gd.len() - 1], xd[xd.len() - 1]);
        let rows = x.numel() / in_f.max(1);
        self.gemm(
            op,
            (out_f, in_f, rows, 1),
            View::transposed(dy, rows, out_f, false),
            View::row_major(x, rows, in_f, false),
            None,
            &[out_f, in_f],
        )
    }

    /// `db[out] = Σ dy` over every leading axis.
    pub fn linear_bwd_bias(&self, dy: &GpuTensor) -> Result<GpuTensor> {
        let d = dy.dims();
        if d.is_empty() {
            return Err(Error::InvalidShape {
                op: "linear_bwd_bias",
                shape: vec![],
                reason: "dy needs a feature axis".into(),
            });
        }
        let out_f = d[d.len() - 1];
        let rows = dy.numel() / out_f.max(1);
        self.sum_rows(dy, rows, out_f)
    }
}

/// (rows, in features, out features) of `x[..., in]` against `w[out, in]`.
fn linear_dims(op: &'static str, x: &[usize], w: &[usize]) -> Result<(usize, usize, usize)> {
    if w.len() != 2 || x.is_empty() || x[x.len() - 1] != w[1] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.to_vec(),
            rhs: w.to_vec(),
        });
    }
    let rows = x.iter().product::<usize>() / w[1].max(1);
    Ok((rows, w[1], w[0]))
}
