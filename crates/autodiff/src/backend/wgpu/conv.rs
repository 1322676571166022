//! 2-D convolution on the device, with the CPU kernels' semantics and geometry
//! ([`Conv2dGeometry`]): implicit-GEMM kernels (`conv2d.wgsl`) in general, direct ones
//! (`conv2d_depthwise.wgsl`) when each group has one input channel, as the CPU backend.

use super::context::{Grid, WgpuContext, flat_groups, precision_of, to_u32};
use super::kernels;
use super::tensor::{GpuMask, GpuTensor};
use crate::error::{Error, Result};
use crate::ops::geometry::Conv2dGeometry;

/// Side of the square output tile of the GEMM kernels.
const TILE: usize = 64;

/// Index of `z_base` in the convolution parameters.
const Z_BASE: usize = 16;

/// The `Params` struct shared by the convolution kernels.
pub(crate) fn conv_params(
    g: &Conv2dGeometry,
    has_bias: bool,
    op: &'static str,
) -> Result<Vec<u32>> {
    let fields = [
        g.batch,
        g.in_channels,
        g.in_h,
        g.in_w,
        g.out_channels,
        g.kernel_h,
        g.kernel_w,
        g.out_h,
        g.out_w,
        g.stride[0],
        g.stride[1],
        g.pad[0],
        g.pad[1],
        g.dilation[0],
        g.dilation[1],
        g.groups,
        0,
        has_bias as usize,
        0,
        0,
    ];
    fields.iter().map(|&v| to_u32(v, op)).collect()
}

/// Checks that `t` has dimensions `want`.
pub(crate) fn expect_dims(op: &'static str, t: &GpuTensor, want: &[usize]) -> Result<()> {
    if t.dims() != want {
        return Err(Error::ShapeMismatch {
            op,
            lhs: t.dims().to_vec(),
            rhs: want.to_vec(),
        });
    }
    Ok(())
}

/// One input channel per group: the direct kernels run.
fn is_direct(g: &Conv2dGeometry) -> bool {
    g.in_channels / g.groups == 1
}

fn tiles(n: usize) -> u64 {
    n.div_ceil(TILE) as u64
}

impl WgpuContext {
    /// `out[N, O, OH, OW] = conv(x[N, C, H, W], w[O, C/g, kh, kw]) + bias[O]` (PyTorch's
    /// `F.conv2d`).
    pub fn conv2d_fwd(
        &self,
        g: &Conv2dGeometry,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        self.conv2d_forward(g, x, w, bias, false).map(|(y, _)| y)
    }

    /// [`conv2d_fwd`](Self::conv2d_fwd) followed by ReLU in the same kernel, with ReLU's mask:
    /// bit e set where the convolution's output e is strictly positive.
    pub fn conv2d_fwd_relu(
        &self,
        g: &Conv2dGeometry,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
    ) -> Result<(GpuTensor, GpuMask)> {
        let (y, mask) = self.conv2d_forward(g, x, w, bias, true)?;
        let mask = mask.ok_or_else(|| Error::Device {
            device: "wgpu",
            reason: "conv2d_fwd_relu: the fused kernel returned no mask".into(),
        })?;
        Ok((y, mask))
    }

    fn conv2d_forward(
        &self,
        g: &Conv2dGeometry,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        relu: bool,
    ) -> Result<(GpuTensor, Option<GpuMask>)> {
        let op = "conv2d_fwd";
        expect_dims(op, x, &g.in_dims())?;
        expect_dims(op, w, &g.weight_dims())?;
        if let Some(b) = bias {
            expect_dims(op, b, &[g.out_channels])?;
        }
        let mut operands = vec![x, w];
        operands.extend(bias);
        let prec = precision_of(op, &operands)?;
        let params = conv_params(g, bias.is_some(), op)?;
        let y = self.tensor_as(&g.out_dims(), prec)?;
        let mask = if relu {
            Some(self.mask(y.numel())?)
        } else {
            None
        };
        if y.numel() == 0 {
            return Ok((y, mask));
        }
        let bias = bias.map_or(self.placeholder(), |b| b.raw());
        let mut bindings = vec![(1, x.raw()), (2, w.raw()), (3, bias), (5, y.raw())];
        if is_direct(g) {
            if let Some(m) = &mask {
                bindings.push((6, m.raw()));
            }
            let kernel = if relu {
                kernels::DEPTHWISE_FWD_RELU
            } else {
                kernels::DEPTHWISE_FWD
            };
            self.launch(
                kernel.with(prec),
                &params,
                &bindings,
                flat_groups(y.numel()),
            )?;
        } else {
            bindings.push((4, self.placeholder()));
            let kernel = match &mask {
                Some(m) => {
                    // Bits are OR-ed in by tiles that do not own whole words.
                    self.clear(m.raw());
                    bindings.push((6, m.raw()));
                    kernels::CONV2D_FWD_RELU
                }
                None => kernels::CONV2D_FWD,
            };
            let grid = Grid::Tiled {
                x: tiles(g.out_h * g.out_w),
                y: tiles(g.out_channels / g.groups),
                z: (g.batch * g.groups) as u64,
                z_base: Z_BASE,
            };
            self.launch(kernel.with(prec), &params, &bindings, grid)?;
        }
        Ok((y, mask))
    }

    /// `dx[N, C, H, W]`, the gradient with respect to the input, given `dy[N, O, OH, OW]`.
    pub fn conv2d_bwd_input(
        &self,
        g: &Conv2dGeometry,
        dy: &GpuTensor,
        w: &GpuTensor,
    ) -> Result<GpuTensor> {
        let op = "conv2d_bwd_input";
        expect_dims(op, dy, &g.out_dims())?;
        expect_dims(op, w, &g.weight_dims())?;
        let prec = precision_of(op, &[dy, w])?;
        let params = conv_params(g, false, op)?;
        let dx = self.tensor_as(&g.in_dims(), prec)?;
        if dx.numel() == 0 {
            return Ok(dx);
        }
        if is_direct(g) {
            let bindings = [(2, w.raw()), (4, dy.raw()), (5, dx.raw())];
            self.launch(
                kernels::DEPTHWISE_BWD_INPUT.with(prec),
                &params,
                &bindings,
                flat_groups(dx.numel()),
            )?;
        } else {
            let bindings = [
                (1, self.placeholder()),
                (2, w.raw()),
                (4, dy.raw()),
                (5, dx.raw()),
            ];
            let grid = Grid::Tiled {
                x: tiles(g.in_h * g.in_w),
                y: tiles(g.in_channels / g.groups),
                z: (g.batch * g.groups) as u64,
                z_base: Z_BASE,
            };
            self.launch(
                kernels::CONV2D_BWD_INPUT.with(prec),
                &params,
                &bindings,
                grid,
            )?;
        }
        Ok(dx)
    }

    /// `dw[O, C/g, kh, kw]`, the gradient with respect to the weight, given `dy` and `x`
    /// (summed over the batch).
    pub fn conv2d_bwd_weight(
        &self,
        g: &Conv2dGeometry,
        dy: &GpuTensor,
        x: &GpuTensor,
    ) -> Result<GpuTensor> {
        let op = "conv2d_bwd_weight";
        expect_dims(op, dy, &g.out_dims())?;
        expect_dims(op, x, &g.in_dims())?;
        let prec = precision_of(op, &[dy, x])?;
        let params = conv_params(g, false, op)?;
        let dw = self.tensor_as(&g.weight_dims(), prec)?;
        if dw.numel() == 0 {
            return Ok(dw);
        }
        if is_direct(g) {
            let bindings = [(1, x.raw()), (4, dy.raw()), (5, dw.raw())];
            // One workgroup per weight element.
            let grid = Grid::Flat(dw.numel() as u64);
            self.launch(
                kernels::DEPTHWISE_BWD_WEIGHT.with(prec),
                &params,
                &bindings,
                grid,
            )?;
        } else {
            let bindings = [
                (1, x.raw()),
                (2, self.placeholder()),
                (4, dy.raw()),
                (5, dw.raw()),
            ];
            let k = (g.in_channels / g.groups) * g.kernel_h * g.kernel_w;
            let grid = Grid::Tiled {
                x: tiles(k),
                y: tiles(g.out_channels / g.groups),
                z: g.groups as u64,
                z_base: Z_BASE,
            };
            self.launch(
                kernels::CONV2D_BWD_WEIGHT.with(prec),
                &params,
                &bindings,
                grid,
            )?;
        }
        Ok(dw)
    }

    /// `db[O]`: dy summed over batch and output pixels.
    pub fn conv2d_bwd_bias(&self, g: &Conv2dGeometry, dy: &GpuTensor) -> Result<GpuTensor> {
        let op = "conv2d_bwd_bias";
        expect_dims(op, dy, &g.out_dims())?;
        let prec = dy.precision();
        let params = conv_params(g, false, op)?;
        let db = self.tensor_as(&[g.out_channels], prec)?;
        let bindings = [(4, dy.raw()), (5, db.raw())];
        // One workgroup per output channel.
        let grid = Grid::Flat(g.out_channels as u64);
        self.launch(
            kernels::CONV2D_BWD_BIAS.with(prec),
            &params,
            &bindings,
            grid,
        )?;
        Ok(db)
    }
}
