//! Elementwise kernels and small reductions on the device: ReLU and clamp with their bit masks,
//! add, batch-norm (inference), softmax over the last axis, and the sum over the batch axis.

use super::context::{Grid, WgpuContext, flat_groups, precision_of, to_u32};
use super::conv::expect_dims;
use super::kernels;
use super::tensor::{GpuMask, GpuTensor};
use crate::error::{Error, Result};

impl WgpuContext {
    /// `max(x, 0)` (NaN passes, as PyTorch) and its mask: bit e set where `x[e] > 0`.
    pub fn relu_fwd(&self, x: &GpuTensor) -> Result<(GpuTensor, GpuMask)> {
        self.masked_fwd(kernels::RELU_FWD, x, 0.0, 0.0)
    }

    /// `min(max(x, low), high)` (ReLU6 is `clamp(x, 0, 6)`) and its mask: bit e set where
    /// `low < x[e] < high`, the only places a gradient passes (PyTorch's `hardtanh`).
    pub fn clamp_fwd(&self, x: &GpuTensor, low: f32, high: f32) -> Result<(GpuTensor, GpuMask)> {
        if low.is_nan() || high.is_nan() || low > high {
            return Err(Error::InvalidArgument {
                op: "clamp",
                reason: format!("bounds must satisfy low <= high, got [{low}, {high}]"),
            });
        }
        self.masked_fwd(kernels::CLAMP_FWD, x, low, high)
    }

    fn masked_fwd(
        &self,
        kernel: kernels::Kernel,
        x: &GpuTensor,
        low: f32,
        high: f32,
    ) -> Result<(GpuTensor, GpuMask)> {
        let len = to_u32(x.numel(), kernel.entry)?;
        let y = self.tensor_as(x.dims(), x.precision())?;
        let mask = self.mask(x.numel())?;
        let params = [len, 0, low.to_bits(), high.to_bits()];
        let bindings = [(1, x.raw()), (2, y.raw()), (3, mask.raw())];
        self.launch(
            kernel.with(x.precision()),
            &params,
            &bindings,
            flat_groups(x.numel()),
        )?;
        Ok((y, mask))
    }

    /// ReLU's backward: `dy` where the mask bit is set, 0 elsewhere; with `guided`, also 0 where
    /// `dy <= 0` (guided backpropagation).
    pub fn relu_bwd(&self, dy: &GpuTensor, mask: &GpuMask, guided: bool) -> Result<GpuTensor> {
        if mask.len() != dy.numel() {
            return Err(Error::ShapeMismatch {
                op: "relu_bwd",
                lhs: dy.dims().to_vec(),
                rhs: vec![mask.len()],
            });
        }
        let len = to_u32(dy.numel(), "relu_bwd")?;
        let dx = self.tensor_as(dy.dims(), dy.precision())?;
        let params = [len, guided as u32, 0, 0];
        let bindings = [(2, dx.raw()), (4, mask.raw()), (5, dy.raw())];
        self.launch(
            kernels::RELU_BWD.with(dy.precision()),
            &params,
            &bindings,
            flat_groups(dy.numel()),
        )?;
        Ok(dx)
    }

    /// Clamp's backward: the same masked pass as [`relu_bwd`](Self::relu_bwd).
    pub fn clamp_bwd(&self, dy: &GpuTensor, mask: &GpuMask, guided: bool) -> Result<GpuTensor> {
        self.relu_bwd(dy, mask, guided)
    }

    /// `a + b` for tensors of the same dimensions.
    pub fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        expect_dims("add", b, a.dims())?;
        let prec = precision_of("add", &[a, b])?;
        let out = self.tensor_as(a.dims(), prec)?;
        let params = [to_u32(a.numel(), "add")?, 0, 0, 0];
        let bindings = [(1, a.raw()), (2, b.raw()), (3, out.raw())];
        self.launch(
            kernels::ADD_FWD.with(prec),
            &params,
            &bindings,
            flat_groups(a.numel()),
        )?;
        Ok(out)
    }

    /// The sum over the first axis: `x[N, ...]` to `[...]`, in batch order.
    pub fn sum_batch(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let d = x.dims();
        if d.is_empty() {
            return Err(Error::InvalidShape {
                op: "sum_batch",
                shape: vec![],
                reason: "input needs a batch axis".into(),
            });
        }
        let cols = d[1..].iter().product();
        self.sum_rows(x, d[0], cols)?.reshape(&d[1..])
    }

    /// Column sums of `x` seen as `[rows, cols]`: a `[cols]` tensor.
    pub(crate) fn sum_rows(&self, x: &GpuTensor, rows: usize, cols: usize) -> Result<GpuTensor> {
        let out = self.tensor_as(&[cols], x.precision())?;
        let params = [to_u32(cols, "sum_batch")?, to_u32(rows, "sum_batch")?, 0, 0];
        let bindings = [(1, x.raw()), (3, out.raw())];
        self.launch(
            kernels::SUM_BATCH_FWD.with(x.precision()),
            &params,
            &bindings,
            flat_groups(cols),
        )?;
        Ok(out)
    }

    /// Batch norm with running statistics, channels on axis 1 of `x[N, C, ...]`:
    /// `(x − mean) / sqrt(var + eps) · γ + β`.
    pub fn batch_norm_fwd(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        mean: &GpuTensor,
        var: &GpuTensor,
        eps: f32,
    ) -> Result<GpuTensor> {
        let op = "batch_norm_fwd";
        let params = self.batch_norm_params(op, x, &[gamma, beta, mean, var], eps)?;
        let prec = precision_of(op, &[x, gamma, beta, mean, var])?;
        let y = self.tensor_as(x.dims(), prec)?;
        let bindings = [
            (1, x.raw()),
            (2, gamma.raw()),
            (3, beta.raw()),
            (4, mean.raw()),
            (5, var.raw()),
            (6, y.raw()),
        ];
        self.launch(
            kernels::BATCH_NORM_FWD.with(prec),
            &params,
            &bindings,
            flat_groups(x.numel()),
        )?;
        Ok(y)
    }

    /// Batch norm's input gradient: `dy · γ / sqrt(var + eps)` per channel.
    pub fn batch_norm_bwd(
        &self,
        dy: &GpuTensor,
        gamma: &GpuTensor,
        var: &GpuTensor,
        eps: f32,
    ) -> Result<GpuTensor> {
        let op = "batch_norm_bwd";
        let params = self.batch_norm_params(op, dy, &[gamma, var], eps)?;
        let prec = precision_of(op, &[dy, gamma, var])?;
        let dx = self.tensor_as(dy.dims(), prec)?;
        let bindings = [
            (1, dy.raw()),
            (2, gamma.raw()),
            (5, var.raw()),
            (6, dx.raw()),
        ];
        self.launch(
            kernels::BATCH_NORM_BWD.with(prec),
            &params,
            &bindings,
            flat_groups(dy.numel()),
        )?;
        Ok(dx)
    }

    fn batch_norm_params(
        &self,
        op: &'static str,
        x: &GpuTensor,
        per_channel: &[&GpuTensor],
        eps: f32,
    ) -> Result<[u32; 4]> {
        let d = x.dims();
        if d.len() < 2 {
            return Err(Error::InvalidShape {
                op,
                shape: d.to_vec(),
                reason: "input must be [N, C, ...]".into(),
            });
        }
        for t in per_channel {
            expect_dims(op, t, &[d[1]])?;
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("eps must be non-negative, got {eps}"),
            });
        }
        let inner: usize = d[2..].iter().product();
        Ok([
            to_u32(x.numel(), op)?,
            to_u32(d[1], op)?,
            to_u32(inner.max(1), op)?,
            eps.to_bits(),
        ])
    }

    /// Softmax over the last axis of `x[..., K]` (stable: `exp(x − max) / Σ`).
    pub fn softmax_fwd(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let (rows, len) = softmax_rows("softmax_fwd", x)?;
        let y = self.tensor_as(x.dims(), x.precision())?;
        let params = [
            to_u32(rows, "softmax_fwd")?,
            to_u32(len, "softmax_fwd")?,
            0,
            0,
        ];
        let bindings = [(1, x.raw()), (3, y.raw())];
        self.launch(
            kernels::SOFTMAX_FWD.with(x.precision()),
            &params,
            &bindings,
            Grid::Flat(rows as u64),
        )?;
        Ok(y)
    }

    /// Softmax's backward over the last axis: `dx = y · (dy − Σ dy·y)`, from the forward output.
    pub fn softmax_bwd(&self, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        expect_dims("softmax_bwd", dy, y.dims())?;
        let (rows, len) = softmax_rows("softmax_bwd", y)?;
        let prec = precision_of("softmax_bwd", &[y, dy])?;
        let dx = self.tensor_as(y.dims(), prec)?;
        let params = [
            to_u32(rows, "softmax_bwd")?,
            to_u32(len, "softmax_bwd")?,
            0,
            0,
        ];
        let bindings = [(1, y.raw()), (2, dy.raw()), (3, dx.raw())];
        self.launch(
            kernels::SOFTMAX_BWD.with(prec),
            &params,
            &bindings,
            Grid::Flat(rows as u64),
        )?;
        Ok(dx)
    }
}

/// (rows, row length) of a softmax over the last axis.
fn softmax_rows(op: &'static str, x: &GpuTensor) -> Result<(usize, usize)> {
    let Some(&len) = x.dims().last() else {
        return Err(Error::InvalidAxis {
            op,
            axis: 0,
            rank: 0,
        });
    };
    Ok((x.numel() / len.max(1), len))
}
