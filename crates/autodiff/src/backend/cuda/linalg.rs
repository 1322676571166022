//! Matrix products on matmul.ptx's strided kernel (FP32 FMA, or TF32 tensor cores under
//! [`Math::Tf32`](super::Math)): `Tape::matmul`'s batched product and the
//! three products of a fully connected layer (`y = x·Wᵀ + b`, `dX = G·W`, `dW = Gᵀ·X`).

use super::args::{MatmulArgs, size};
use super::kernels as k;
use super::{CudaContext, CudaTensor, grid_3d, launch};
use crate::error::{Error, Result};
use crate::shape::Shape;

/// One operand view: element (i, j) of batch z at `z·batch + i·row + j·col`.
#[derive(Clone, Copy)]
struct View {
    row: usize,
    col: usize,
    batch: usize,
}

impl View {
    fn row_major(cols: usize) -> Self {
        View {
            row: cols,
            col: 1,
            batch: 0,
        }
    }
    fn transposed(cols: usize) -> Self {
        View {
            row: 1,
            col: cols,
            batch: 0,
        }
    }
    fn batched(self, stride: usize) -> Self {
        View {
            batch: stride,
            ..self
        }
    }
}

impl CudaContext {
    /// `c[z] = a[z] (view) · b[z] (view) (+ bias) (+ c)` for z < batches.
    #[allow(clippy::too_many_arguments)]
    fn matmul_views(
        &self,
        op: &'static str,
        (m, n, kk, batches): (usize, usize, usize, usize),
        a: (&CudaTensor, View),
        b: (&CudaTensor, View),
        bias: Option<&CudaTensor>,
        c: &CudaTensor,
        accumulate: bool,
    ) -> Result<()> {
        for t in [a.0, b.0, c] {
            size(op, "elements", t.numel())?;
        }
        if m == 0 || n == 0 || batches == 0 {
            return Ok(());
        }
        let args = MatmulArgs {
            m: size(op, "m", m)?,
            n: size(op, "n", n)?,
            k: size(op, "k", kk)?,
            a_row_stride: a.1.row as u32,
            a_col_stride: a.1.col as u32,
            b_row_stride: b.1.row as u32,
            b_col_stride: b.1.col as u32,
            a_batch_stride: a.1.batch as u32,
            b_batch_stride: b.1.batch as u32,
            c_batch_stride: size(op, "batch stride", m * n)?,
            accumulate: accumulate as u32,
        };
        let cfg = grid_3d(op, n.div_ceil(64), m.div_ceil(64), batches)?;
        let bias_ptr = bias.map_or(0, |t| t.ptr(self));
        launch!(
            self,
            k::MATMUL_FWD,
            cfg,
            &a.0.ptr(self),
            &b.0.ptr(self),
            &bias_ptr,
            &c.ptr(self),
            &args,
            &self.math().flag()
        )
    }

    /// `a @ b` over the last two axes, leading axes equal or absent on one side (as
    /// `Tape::matmul`).
    pub fn matmul(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        let (ad, bd) = (a.dims(), b.dims());
        let mismatch = || Error::ShapeMismatch {
            op: "matmul",
            lhs: ad.to_vec(),
            rhs: bd.to_vec(),
        };
        if ad.len() < 2 || bd.len() < 2 {
            return Err(mismatch());
        }
        let (ba, bb) = (&ad[..ad.len() - 2], &bd[..bd.len() - 2]);
        let (m, kk, n) = (ad[ad.len() - 2], ad[ad.len() - 1], bd[bd.len() - 1]);
        if bd[bd.len() - 2] != kk || !(ba == bb || ba.is_empty() || bb.is_empty()) {
            return Err(mismatch());
        }
        let lead = if ba.is_empty() { bb } else { ba };
        let batches: usize = lead.iter().product();
        let mut out = lead.to_vec();
        out.extend([m, n]);
        let c = self.new_tensor(Shape::new(&out)?)?;
        let av = View::row_major(kk).batched(if ba.is_empty() { 0 } else { m * kk });
        let bv = View::row_major(n).batched(if bb.is_empty() { 0 } else { kk * n });
        self.matmul_views(
            "matmul",
            (m, n, kk, batches),
            (a, av),
            (b, bv),
            None,
            &c,
            false,
        )?;
        Ok(c)
    }

    /// `x[..., in] · w[out, in]ᵀ + b[out]` (PyTorch's `Linear`).
    pub fn linear_fwd(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        let (xd, wd) = (x.dims(), w.dims());
        if wd.len() != 2 || xd.is_empty() || xd[xd.len() - 1] != wd[1] {
            return Err(Error::ShapeMismatch {
                op: "linear",
                lhs: xd.to_vec(),
                rhs: wd.to_vec(),
            });
        }
        let (out_f, in_f) = (wd[0], wd[1]);
        if let Some(b) = bias
            && b.dims() != [out_f]
        {
            return Err(Error::ShapeMismatch {
                op: "linear (bias)",
                lhs: b.dims().to_vec(),
                rhs: vec![out_f],
            });
        }
        let rows = x.numel() / in_f.max(1);
        let mut dims = xd.to_vec();
        *dims.last_mut().unwrap_or(&mut 0) = out_f;
        let y = self.new_tensor(Shape::new(&dims)?)?;
        let (xv, wv) = (View::row_major(in_f), View::transposed(in_f));
        self.matmul_views(
            "linear",
            (rows, out_f, in_f, 1),
            (x, xv),
            (w, wv),
            bias,
            &y,
            false,
        )?;
        Ok(y)
    }

    /// `dX[..., in] = G[..., out] · W[out, in]`.
    pub fn linear_bwd_input(&self, g: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        let (gd, wd) = (g.dims(), w.dims());
        if wd.len() != 2 || gd.is_empty() || gd[gd.len() - 1] != wd[0] {
            return Err(Error::ShapeMismatch {
                op: "linear_bwd_input",
                lhs: gd.to_vec(),
                rhs: wd.to_vec(),
            });
        }
        let (out_f, in_f) = (wd[0], wd[1]);
        let rows = g.numel() / out_f.max(1);
        let mut dims = gd.to_vec();
        *dims.last_mut().unwrap_or(&mut 0) = in_f;
        let dx = self.new_tensor(Shape::new(&dims)?)?;
        let (gv, wv) = (View::row_major(out_f), View::row_major(in_f));
        self.matmul_views(
            "linear_bwd_input",
            (rows, in_f, out_f, 1),
            (g, gv),
            (w, wv),
            None,
            &dx,
            false,
        )?;
        Ok(dx)
    }

    /// `dW[out, in] = Gᵀ · X` over all leading rows.
    pub fn linear_bwd_weight(&self, g: &CudaTensor, x: &CudaTensor) -> Result<CudaTensor> {
        let (gd, xd) = (g.dims(), x.dims());
        if gd.is_empty() || xd.len() != gd.len() || xd[..xd.len() - 1] != gd[..gd.len() - 1] {
            return Err(Error::ShapeMismatch {
                op: "linear_bwd_weight",
                lhs: gd.to_vec(),
                rhs: xd.to_vec(),
            });
        }
        let (out_f, in_f) = (gd[gd.len() - 1], xd[xd.len() - 1]);
        let rows = g.numel() / out_f.max(1);
        let dw = self.new_tensor(Shape::new(&[out_f, in_f])?)?;
        let (gv, xv) = (View::transposed(out_f), View::row_major(in_f));
        self.matmul_views(
            "linear_bwd_weight",
            (out_f, in_f, rows, 1),
            (g, gv),
            (x, xv),
            None,
            &dw,
            false,
        )?;
        Ok(dw)
    }

    /// `db[out] = Σ over rows of G[row, out]`, rows added in order (`sum_batch_f32`).
    pub fn linear_bwd_bias(&self, g: &CudaTensor) -> Result<CudaTensor> {
        let gd = g.dims();
        let Some(&out_f) = gd.last() else {
            return Err(Error::InvalidShape {
                op: "linear_bwd_bias",
                shape: vec![],
                reason: "needs a feature axis".into(),
            });
        };
        let rows = g.numel() / out_f.max(1);
        let db = self.new_tensor(Shape::new(&[out_f])?)?;
        self.sum_batch_into(&g.data, rows, out_f, &db.data, false)?;
        Ok(db)
    }
}
