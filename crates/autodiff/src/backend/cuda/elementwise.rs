//! Elementwise and row-wise kernels: ReLU and clamp with their bit masks, add, the sum over the
//! batch axis, inference batch norm, softmax over the last axis, global average pooling.

use super::args::size;
use super::kernels as k;
use super::{CudaContext, CudaMask, CudaTensor, grid_1d, launch};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

fn same_len(op: &'static str, a: &[usize], b: &[usize]) -> Result<()> {
    if a != b {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.to_vec(),
            rhs: b.to_vec(),
        });
    }
    Ok(())
}

/// Batch-norm parameters on the device, prepared as the CPU's `batch_norm` prepares them:
/// `inv_std = 1 / sqrt(var + eps)` and `scale = inv_std · γ` in f32.
pub struct CudaBatchNorm {
    mean: CudaTensor,
    inv_std: CudaTensor,
    gamma: CudaTensor,
    beta: CudaTensor,
    scale: CudaTensor,
}

impl CudaBatchNorm {
    /// Uploads γ, β and the running statistics, all of shape [C].
    pub fn new(
        ctx: &CudaContext,
        gamma: &Tensor<f32>,
        beta: &Tensor<f32>,
        mean: &Tensor<f32>,
        var: &Tensor<f32>,
        eps: f64,
    ) -> Result<Self> {
        let c = gamma.numel();
        for t in [beta, mean, var] {
            same_len("batch_norm", gamma.dims(), t.dims())?;
        }
        let eps = eps as f32;
        let inv_std: Vec<f32> = var
            .as_slice()
            .iter()
            .map(|&v| 1.0 / (v + eps).sqrt())
            .collect();
        let scale: Vec<f32> = inv_std
            .iter()
            .zip(gamma.as_slice())
            .map(|(&s, &g)| s * g)
            .collect();
        Ok(CudaBatchNorm {
            mean: ctx.upload(mean)?,
            inv_std: ctx.upload_vec(&inv_std, &[c])?,
            gamma: ctx.upload(gamma)?,
            beta: ctx.upload(beta)?,
            scale: ctx.upload_vec(&scale, &[c])?,
        })
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.mean.numel()
    }
}

impl CudaContext {
    /// `max(x, 0)` (NaN passes) and the mask `x > 0`: `relu_fwd_f32`.
    pub fn relu_fwd(&self, x: &CudaTensor) -> Result<(CudaTensor, CudaMask)> {
        let len = size("relu", "elements", x.numel())?;
        let y = self.new_tensor(x.shape.clone())?;
        let mask = self.new_mask(x.numel())?;
        if len > 0 {
            launch!(
                self,
                k::RELU_FWD,
                grid_1d(x.numel()),
                &x.ptr(self),
                &y.ptr(self),
                &mask.ptr(self),
                &len
            )?;
        }
        Ok((y, mask))
    }

    /// `max(x, 0)` without a mask (an untracked input).
    pub fn relu(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let len = size("relu", "elements", x.numel())?;
        let y = self.new_tensor(x.shape.clone())?;
        if len > 0 {
            launch!(
                self,
                k::RELU_FWD,
                grid_1d(x.numel()),
                &x.ptr(self),
                &y.ptr(self),
                &0u64,
                &len
            )?;
        }
        Ok(y)
    }

    /// `min(max(x, low), high)` and the mask `low < x < high`: `clamp_fwd_f32`.
    pub fn clamp_fwd(&self, x: &CudaTensor, low: f32, high: f32) -> Result<(CudaTensor, CudaMask)> {
        if low.is_nan() || high.is_nan() || low > high {
            return Err(Error::InvalidArgument {
                op: "clamp",
                reason: format!("bounds must satisfy low <= high, got [{low}, {high}]"),
            });
        }
        let len = size("clamp", "elements", x.numel())?;
        let y = self.new_tensor(x.shape.clone())?;
        let mask = self.new_mask(x.numel())?;
        if len > 0 {
            launch!(
                self,
                k::CLAMP_FWD,
                grid_1d(x.numel()),
                &x.ptr(self),
                &y.ptr(self),
                &mask.ptr(self),
                &len,
                &low,
                &high
            )?;
        }
        Ok((y, mask))
    }

    /// `dy` where the mask is set (and, when `guided`, `dy > 0`), else 0: ReLU's and clamp's
    /// backward, `relu_bwd_f32`.
    pub fn relu_bwd(&self, dy: &CudaTensor, mask: &CudaMask, guided: bool) -> Result<CudaTensor> {
        if mask.len() != dy.numel() {
            return Err(Error::ShapeMismatch {
                op: "relu_bwd",
                lhs: dy.dims().to_vec(),
                rhs: vec![mask.len()],
            });
        }
        let len = size("relu_bwd", "elements", dy.numel())?;
        let dx = self.new_tensor(dy.shape.clone())?;
        if len > 0 {
            launch!(
                self,
                k::RELU_BWD,
                grid_1d(dy.numel()),
                &dy.ptr(self),
                &mask.ptr(self),
                &dx.ptr(self),
                &len,
                &(guided as u32)
            )?;
        }
        Ok(dx)
    }

    /// `a + b` for tensors of one shape: `add_fwd_f32`. (The backward passes `dy` to both.)
    pub fn add(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        same_len("add", a.dims(), b.dims())?;
        let len = size("add", "elements", a.numel())?;
        let y = self.new_tensor(a.shape.clone())?;
        if len > 0 {
            launch!(
                self,
                k::ADD_FWD,
                grid_1d(a.numel()),
                &a.ptr(self),
                &b.ptr(self),
                &y.ptr(self),
                &len
            )?;
        }
        Ok(y)
    }

    /// The sum over axis 0: `x[B, ...]` to `[1, ...]`, samples added in order (`sum_batch_f32`).
    pub fn sum_batch(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let dims = x.dims();
        if dims.is_empty() {
            return Err(Error::InvalidShape {
                op: "sum_batch",
                shape: vec![],
                reason: "needs a batch axis".into(),
            });
        }
        let mut out_dims = dims.to_vec();
        out_dims[0] = 1;
        let y = self.new_tensor(Shape::new(&out_dims)?)?;
        self.sum_batch_into(&x.data, dims[0], y.numel(), &y.data, false)?;
        Ok(y)
    }

    /// `y[e] (+)= Σ_b x[b, e]` over raw buffers of `batch · per` and `per` elements.
    pub(crate) fn sum_batch_into(
        &self,
        x: &cudarc::driver::CudaSlice<f32>,
        batch: usize,
        per: usize,
        y: &cudarc::driver::CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        size("sum_batch", "elements", batch * per)?;
        let (b, p) = (batch as u32, per as u32);
        if per == 0 {
            return Ok(());
        }
        let (xp, yp) = (
            super::address(x, self.stream()),
            super::address(y, self.stream()),
        );
        launch!(
            self,
            k::SUM_BATCH,
            grid_1d(per),
            &xp,
            &yp,
            &b,
            &p,
            &(accumulate as u32)
        )
    }

    /// Inference batch norm of `x[N, C, ...]`: `batch_norm_fwd_f32`.
    pub fn batch_norm_fwd(&self, x: &CudaTensor, bn: &CudaBatchNorm) -> Result<CudaTensor> {
        let (len, channels, inner) = self.channel_layout("batch_norm", x.dims(), bn.channels())?;
        let y = self.new_tensor(x.shape.clone())?;
        if len > 0 {
            launch!(
                self,
                k::BATCH_NORM_FWD,
                grid_1d(x.numel()),
                &x.ptr(self),
                &y.ptr(self),
                &bn.mean.ptr(self),
                &bn.inv_std.ptr(self),
                &bn.gamma.ptr(self),
                &bn.beta.ptr(self),
                &len,
                &channels,
                &inner
            )?;
        }
        Ok(y)
    }

    /// The input gradient of inference batch norm: `dy · scale[c]` (`batch_norm_bwd_f32`).
    pub fn batch_norm_bwd(&self, dy: &CudaTensor, bn: &CudaBatchNorm) -> Result<CudaTensor> {
        let (len, channels, inner) = self.channel_layout("batch_norm", dy.dims(), bn.channels())?;
        let dx = self.new_tensor(dy.shape.clone())?;
        if len > 0 {
            launch!(
                self,
                k::BATCH_NORM_BWD,
                grid_1d(dy.numel()),
                &dy.ptr(self),
                &bn.scale.ptr(self),
                &dx.ptr(self),
                &len,
                &channels,
                &inner
            )?;
        }
        Ok(dx)
    }

    fn channel_layout(&self, op: &'static str, d: &[usize], c: usize) -> Result<(u32, u32, u32)> {
        if d.len() < 2 || d[1] != c {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("input {d:?} does not have {c} channels on axis 1"),
            });
        }
        let inner: usize = d[2..].iter().product();
        Ok((
            size(op, "elements", d.iter().product())?,
            size(op, "channels", c)?,
            size(op, "inner", inner.max(1))?,
        ))
    }

    /// Softmax over the last axis of `x[rows, len]` (any leading dims): `softmax_fwd_f32`.
    pub fn softmax_fwd(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let (rows, len) = rows_of("softmax", x.dims())?;
        let y = self.new_tensor(x.shape.clone())?;
        if rows > 0 && len > 0 {
            launch!(
                self,
                k::SOFTMAX_FWD,
                grid_1d(rows as usize * 32),
                &x.ptr(self),
                &y.ptr(self),
                &rows,
                &len
            )?;
        }
        Ok(y)
    }

    /// The input gradient of softmax from its output `y`: `y · (dy - Σ dy·y)` per row.
    pub fn softmax_bwd(&self, y: &CudaTensor, dy: &CudaTensor) -> Result<CudaTensor> {
        same_len("softmax_bwd", y.dims(), dy.dims())?;
        let (rows, len) = rows_of("softmax", y.dims())?;
        let dx = self.new_tensor(y.shape.clone())?;
        if rows > 0 && len > 0 {
            launch!(
                self,
                k::SOFTMAX_BWD,
                grid_1d(rows as usize * 32),
                &y.ptr(self),
                &dy.ptr(self),
                &dx.ptr(self),
                &rows,
                &len
            )?;
        }
        Ok(dx)
    }

    /// Mean over each plane: `[N, C, H, W]` to `[N, C, 1, 1]` (`global_avg_pool_fwd_f32`).
    pub fn global_avg_pool_fwd(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let d = x.dims();
        if d.len() != 4 || d[2] * d[3] == 0 {
            return Err(Error::InvalidShape {
                op: "global_avg_pool2d",
                shape: d.to_vec(),
                reason: "input must be [N, C, H, W] with H, W > 0".into(),
            });
        }
        size("global_avg_pool2d", "elements", x.numel())?;
        let (planes, plane) = ((d[0] * d[1]) as u32, (d[2] * d[3]) as u32);
        let inv = 1.0f32 / plane as f32;
        let y = self.new_tensor(Shape::new(&[d[0], d[1], 1, 1])?)?;
        if planes > 0 {
            launch!(
                self,
                k::GLOBAL_AVG_POOL_FWD,
                grid_1d(planes as usize * 32),
                &x.ptr(self),
                &y.ptr(self),
                &planes,
                &plane,
                &inv
            )?;
        }
        Ok(y)
    }

    /// The input gradient of the global average pool for an input of dimensions `x_dims`.
    pub fn global_avg_pool_bwd(&self, dy: &CudaTensor, x_dims: &[usize]) -> Result<CudaTensor> {
        if x_dims.len() != 4
            || dy.dims() != [x_dims[0], x_dims[1], 1, 1]
            || x_dims[2] * x_dims[3] == 0
        {
            return Err(Error::ShapeMismatch {
                op: "global_avg_pool2d (backward)",
                lhs: dy.dims().to_vec(),
                rhs: x_dims.to_vec(),
            });
        }
        let shape = Shape::new(x_dims)?;
        let len = size("global_avg_pool2d", "elements", shape.numel())?;
        let plane = (x_dims[2] * x_dims[3]) as u32;
        let inv = 1.0f32 / plane as f32;
        let dx = self.new_tensor(shape)?;
        if len > 0 {
            launch!(
                self,
                k::GLOBAL_AVG_POOL_BWD,
                grid_1d(len as usize),
                &dy.ptr(self),
                &dx.ptr(self),
                &len,
                &plane,
                &inv
            )?;
        }
        Ok(dx)
    }
}

/// (rows, row length) of a tensor whose last axis is the softmax axis.
fn rows_of(op: &'static str, d: &[usize]) -> Result<(u32, u32)> {
    let Some((&len, lead)) = d.split_last() else {
        return Err(Error::InvalidShape {
            op,
            shape: vec![],
            reason: "needs at least one axis".into(),
        });
    };
    let rows: usize = lead.iter().product();
    size(op, "elements", rows * len)?;
    Ok((rows as u32, len as u32))
}
