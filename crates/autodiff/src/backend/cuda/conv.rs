//! Convolution launchers: implicit-GEMM kernels (conv2d.ptx) for groups with several input
//! channels, direct kernels (conv2d_depthwise.ptx) for one input channel per group, as the CPU
//! backend splits them, and SmoothGrad's fused input gradient reduced over the copies.

use super::args::{ConvArgs, size};
use super::kernels as k;
use super::{CudaContext, CudaMask, CudaTensor, grid_1d, grid_3d, launch};
use crate::error::{Error, Result};
use crate::ops::geometry::Conv2dGeometry;
use crate::shape::Shape;

/// Blocks that keep every SM of a large GPU busy (2 per SM of a 132-SM H100/H200).
const TARGET_BLOCKS: usize = 264;

fn check(op: &'static str, what: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("{what} has shape {got:?}, the geometry needs {want:?}"),
        });
    }
    Ok(())
}

fn tiles(n: usize) -> usize {
    n.div_ceil(64)
}

impl CudaContext {
    /// `y[N,O,OH,OW] = conv(x, w) + bias`: the CPU's `conv2d_fwd` (on tensor cores with
    /// [`Math::Tf32`](super::Math), except depthwise layers).
    pub fn conv2d_fwd(
        &self,
        g: &Conv2dGeometry,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        Ok(self.conv2d_fwd_fused(g, x, w, bias, false)?.0)
    }

    /// `relu(conv(x, w) + bias)` and the mask of positive pre-activations, in one kernel.
    pub fn conv2d_fwd_relu(
        &self,
        g: &Conv2dGeometry,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
    ) -> Result<(CudaTensor, CudaMask)> {
        let (y, mask) = self.conv2d_fwd_fused(g, x, w, bias, true)?;
        let mask = mask.ok_or_else(|| Error::Device {
            device: "cuda",
            reason: "conv2d_fwd_relu: the fused kernel returned no mask".into(),
        })?;
        Ok((y, mask))
    }

    fn conv2d_fwd_fused(
        &self,
        g: &Conv2dGeometry,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
        relu: bool,
    ) -> Result<(CudaTensor, Option<CudaMask>)> {
        let op = "conv2d_fwd";
        check(op, "input", x.dims(), &g.in_dims())?;
        check(op, "weight", w.dims(), &g.weight_dims())?;
        if let Some(b) = bias {
            check(op, "bias", b.dims(), &[g.out_channels])?;
        }
        let mut args = ConvArgs::new(op, g)?;
        args.fuse_relu = relu as u32;
        let y = self.new_tensor(Shape::new(&g.out_dims())?)?;
        let mask = if relu {
            Some(self.new_mask(y.numel())?)
        } else {
            None
        };
        if y.numel() == 0 {
            return Ok((y, mask));
        }
        let bias_ptr = bias.map_or(0, |b| b.ptr(self));
        let mask_ptr = mask.as_ref().map_or(0, |m| m.ptr(self));
        if args.group_in == 1 {
            launch!(
                self,
                k::DEPTHWISE_FWD,
                grid_1d(y.numel()),
                &x.ptr(self),
                &w.ptr(self),
                &bias_ptr,
                &y.ptr(self),
                &mask_ptr,
                &args
            )?;
        } else {
            let pixels = g.batch * g.out_h * g.out_w;
            let cfg = grid_3d(
                op,
                tiles(pixels),
                tiles(g.out_channels / g.groups),
                g.groups,
            )?;
            launch!(
                self,
                k::CONV2D_FWD,
                cfg,
                &x.ptr(self),
                &w.ptr(self),
                &bias_ptr,
                &y.ptr(self),
                &mask_ptr,
                &args,
                &self.math().flag()
            )?;
        }
        Ok((y, mask))
    }

    /// `dx[N,C,H,W]`, the input gradient given `dy`: the CPU's `conv2d_bwd_input` (on tensor
    /// cores with [`Math::Tf32`](super::Math), except depthwise layers).
    pub fn conv2d_bwd_input(
        &self,
        g: &Conv2dGeometry,
        dy: &CudaTensor,
        w: &CudaTensor,
    ) -> Result<CudaTensor> {
        let op = "conv2d_bwd_input";
        check(op, "output gradient", dy.dims(), &g.out_dims())?;
        check(op, "weight", w.dims(), &g.weight_dims())?;
        let args = ConvArgs::new(op, g)?;
        let dx = self.new_tensor(Shape::new(&g.in_dims())?)?;
        if dx.numel() == 0 {
            return Ok(dx);
        }
        if args.group_in == 1 {
            launch!(
                self,
                k::DEPTHWISE_BWD_INPUT,
                grid_1d(dx.numel()),
                &dy.ptr(self),
                &w.ptr(self),
                &dx.ptr(self),
                &args
            )?;
        } else {
            let pixels = g.batch * g.in_h * g.in_w;
            let cfg = grid_3d(op, tiles(pixels), tiles(g.in_channels / g.groups), g.groups)?;
            launch!(
                self,
                k::CONV2D_BWD_INPUT,
                cfg,
                &dy.ptr(self),
                &w.ptr(self),
                &dx.ptr(self),
                &args,
                &self.math().flag()
            )?;
        }
        Ok(dx)
    }

    /// `dw[O,C/g,kh,kw]`, the weight gradient given `dy` and `x`: the CPU's
    /// `conv2d_bwd_weight`. Large reductions are split over blocks, then the splits are summed
    /// in order by a second kernel (deterministic, no atomics).
    pub fn conv2d_bwd_weight(
        &self,
        g: &Conv2dGeometry,
        dy: &CudaTensor,
        x: &CudaTensor,
    ) -> Result<CudaTensor> {
        let op = "conv2d_bwd_weight";
        check(op, "output gradient", dy.dims(), &g.out_dims())?;
        check(op, "input", x.dims(), &g.in_dims())?;
        let mut args = ConvArgs::new(op, g)?;
        let dw = self.new_tensor(Shape::new(&g.weight_dims())?)?;
        if dw.numel() == 0 {
            return Ok(dw);
        }
        if args.group_in == 1 {
            let blocks = g.out_channels * g.kernel_h * g.kernel_w;
            launch!(
                self,
                k::DEPTHWISE_BWD_WEIGHT,
                grid_1d(blocks * super::BLOCK as usize),
                &dy.ptr(self),
                &x.ptr(self),
                &dw.ptr(self),
                &args
            )?;
            return Ok(dw);
        }
        let columns = (g.in_channels / g.groups) * g.kernel_h * g.kernel_w;
        let og = g.out_channels / g.groups;
        let pixels = g.batch * g.out_h * g.out_w;
        let output_tiles = tiles(columns) * tiles(og) * g.groups;
        let splits = (TARGET_BLOCKS / output_tiles)
            .clamp(1, pixels.div_ceil(256).max(1))
            .min(65_535 / g.groups);
        let split_len = pixels.div_ceil(splits.max(1)).div_ceil(16).max(1) * 16;
        let splits = pixels.div_ceil(split_len).max(1);
        args.splits = size(op, "splits", splits)?;
        args.split_len = size(op, "split length", split_len)?;
        let cfg = grid_3d(op, tiles(columns), tiles(og), g.groups * splits)?;
        if splits == 1 {
            launch!(
                self,
                k::CONV2D_BWD_WEIGHT,
                cfg,
                &dy.ptr(self),
                &x.ptr(self),
                &dw.ptr(self),
                &args
            )?;
        } else {
            size(op, "partial sums", splits * dw.numel())?;
            let partial = self.alloc_zeros::<f32>(splits * dw.numel())?;
            let partial_ptr = super::address(&partial, self.stream());
            launch!(
                self,
                k::CONV2D_BWD_WEIGHT,
                cfg,
                &dy.ptr(self),
                &x.ptr(self),
                &partial_ptr,
                &args
            )?;
            self.sum_batch_into(&partial, splits, dw.numel(), &dw.data, false)?;
        }
        Ok(dw)
    }

    /// `db[O]`, the sum of `dy` over N, OH, OW: the CPU's `conv2d_bwd_bias`.
    pub fn conv2d_bwd_bias(&self, g: &Conv2dGeometry, dy: &CudaTensor) -> Result<CudaTensor> {
        let op = "conv2d_bwd_bias";
        check(op, "output gradient", dy.dims(), &g.out_dims())?;
        ConvArgs::new(op, g)?;
        let db = self.new_tensor(Shape::new(&[g.out_channels])?)?;
        if g.out_channels == 0 {
            return Ok(db);
        }
        let (batch, channels) = (g.batch as u32, g.out_channels as u32);
        let plane = (g.out_h * g.out_w) as u32;
        launch!(
            self,
            k::CONV2D_BWD_BIAS,
            grid_1d(g.out_channels * super::BLOCK as usize),
            &dy.ptr(self),
            &db.ptr(self),
            &batch,
            &channels,
            &plane
        )?;
        Ok(db)
    }

    /// SmoothGrad's fused step: with `dy[n, O, OH, OW]` the output gradient of the first
    /// convolution over n noisy copies of one image, adds `Σᵢ dxᵢ` into `sum` and `Σᵢ dxᵢ²` into
    /// `sumsq` (both `[1, C, H, W]`) without forming any `dxᵢ` in memory: the CPU's
    /// `conv2d_bwd_input_reduce_copies`.
    pub fn conv2d_bwd_input_reduce_copies(
        &self,
        g: &Conv2dGeometry,
        dy: &CudaTensor,
        w: &CudaTensor,
        sum: &mut CudaTensor,
        sumsq: &mut CudaTensor,
    ) -> Result<()> {
        let op = "conv2d_bwd_input_reduce_copies";
        check(op, "output gradient", dy.dims(), &g.out_dims())?;
        check(op, "weight", w.dims(), &g.weight_dims())?;
        let one = [1, g.in_channels, g.in_h, g.in_w];
        check(op, "sum", sum.dims(), &one)?;
        check(op, "sum of squares", sumsq.dims(), &one)?;
        let args = ConvArgs::new(op, g)?;
        if sum.numel() == 0 || g.out_channels == 0 || g.batch == 0 {
            return Ok(()); // every per-copy gradient is zero, or there are no copies
        }
        launch!(
            self,
            k::CONV2D_BWD_INPUT_REDUCE_COPIES,
            grid_1d(sum.numel()),
            &dy.ptr(self),
            &w.ptr(self),
            &sum.ptr(self),
            &sumsq.ptr(self),
            &args
        )
    }
}
