//! Max, average and global average pooling on the device, with the CPU kernels' semantics
//! (PyTorch's ties, NaN and divisor rules) and geometry ([`Pool2dGeometry`]). Backward passes
//! gather per input element instead of scattering, so no kernel needs float atomics.

use super::context::{Grid, WgpuContext, flat_groups, to_u32};
use super::conv::expect_dims;
use super::kernels;
use super::tensor::{GpuIndices, GpuTensor};
use crate::error::{Error, Result};
use crate::ops::geometry::Pool2dGeometry;

/// The `Params` struct of the pooling kernels.
fn pool_params(g: &Pool2dGeometry, op: &'static str) -> Result<Vec<u32>> {
    let fields = [
        g.batch,
        g.channels,
        g.in_h,
        g.in_w,
        g.out_h,
        g.out_w,
        g.kernel[0],
        g.kernel[1],
        g.stride[0],
        g.stride[1],
        g.pad[0],
        g.pad[1],
        g.dilation[0],
        g.dilation[1],
        g.count_include_pad as usize,
    ];
    let mut words: Vec<u32> = fields
        .iter()
        .map(|&v| to_u32(v, op))
        .collect::<Result<_>>()?;
    words.push(0);
    Ok(words)
}

impl WgpuContext {
    /// Max pool: `out[N, C, OH, OW]` and the argmax (index `ih·W + iw` in the input plane;
    /// `u32::MAX` for a window with no input element, whose output is -inf). Padding is never
    /// selected; the first maximum wins ties; NaN is selected.
    pub fn maxpool2d_fwd(
        &self,
        g: &Pool2dGeometry,
        x: &GpuTensor,
    ) -> Result<(GpuTensor, GpuIndices)> {
        let op = "maxpool2d_fwd";
        expect_dims(op, x, &g.in_dims())?;
        if g.in_h * g.in_w >= u32::MAX as usize {
            return Err(Error::InvalidShape {
                op,
                shape: x.dims().to_vec(),
                reason: "input planes must have fewer than 2^32 - 1 elements".into(),
            });
        }
        let params = pool_params(g, op)?;
        let y = self.tensor_as(&g.out_dims(), x.precision())?;
        let argmax = self.indices(&g.out_dims())?;
        let bindings = [(1, x.raw()), (2, y.raw()), (3, argmax.raw())];
        self.launch(
            kernels::MAXPOOL2D_FWD.with(x.precision()),
            &params,
            &bindings,
            flat_groups(y.numel()),
        )?;
        Ok((y, argmax))
    }

    /// Max pool's backward: `dx[N, C, H, W]`, each element the sum of the `dy` of the windows
    /// whose argmax it is.
    pub fn maxpool2d_bwd(
        &self,
        g: &Pool2dGeometry,
        dy: &GpuTensor,
        argmax: &GpuIndices,
    ) -> Result<GpuTensor> {
        let op = "maxpool2d_bwd";
        expect_dims(op, dy, &g.out_dims())?;
        if argmax.dims() != g.out_dims() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: argmax.dims().to_vec(),
                rhs: g.out_dims().to_vec(),
            });
        }
        let params = pool_params(g, op)?;
        let dx = self.tensor_as(&g.in_dims(), dy.precision())?;
        let bindings = [(2, dx.raw()), (4, argmax.raw()), (5, dy.raw())];
        self.launch(
            kernels::MAXPOOL2D_BWD.with(dy.precision()),
            &params,
            &bindings,
            flat_groups(dx.numel()),
        )?;
        Ok(dx)
    }

    /// Average pool with PyTorch's divisor rules (`ceil_mode`, `count_include_pad`); the
    /// geometry's dilation must be 1.
    pub fn avgpool2d_fwd(&self, g: &Pool2dGeometry, x: &GpuTensor) -> Result<GpuTensor> {
        let op = "avgpool2d_fwd";
        expect_dims(op, x, &g.in_dims())?;
        check_no_dilation(op, g)?;
        let params = pool_params(g, op)?;
        let y = self.tensor_as(&g.out_dims(), x.precision())?;
        let bindings = [(1, x.raw()), (2, y.raw())];
        self.launch(
            kernels::AVGPOOL2D_FWD.with(x.precision()),
            &params,
            &bindings,
            flat_groups(y.numel()),
        )?;
        Ok(y)
    }

    /// Average pool's backward: each `dy` spread over its window by the forward's divisor.
    pub fn avgpool2d_bwd(&self, g: &Pool2dGeometry, dy: &GpuTensor) -> Result<GpuTensor> {
        let op = "avgpool2d_bwd";
        expect_dims(op, dy, &g.out_dims())?;
        check_no_dilation(op, g)?;
        let params = pool_params(g, op)?;
        let dx = self.tensor_as(&g.in_dims(), dy.precision())?;
        let bindings = [(2, dx.raw()), (5, dy.raw())];
        self.launch(
            kernels::AVGPOOL2D_BWD.with(dy.precision()),
            &params,
            &bindings,
            flat_groups(dx.numel()),
        )?;
        Ok(dx)
    }

    /// Mean over each plane: `x[N, C, H, W]` to `[N, C, 1, 1]`.
    pub fn global_avgpool2d_fwd(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let op = "global_avgpool2d_fwd";
        let params = global_params(op, x.dims())?;
        let d = x.dims();
        let y = self.tensor_as(&[d[0], d[1], 1, 1], x.precision())?;
        let bindings = [(1, x.raw()), (2, y.raw())];
        // One workgroup per plane.
        self.launch(
            kernels::GLOBAL_AVGPOOL2D_FWD.with(x.precision()),
            &params,
            &bindings,
            Grid::Flat((d[0] * d[1]) as u64),
        )?;
        Ok(y)
    }

    /// Global average pool's backward: `dy[N, C, 1, 1]` spread evenly over planes of
    /// dimensions `x_dims`.
    pub fn global_avgpool2d_bwd(&self, dy: &GpuTensor, x_dims: &[usize]) -> Result<GpuTensor> {
        let op = "global_avgpool2d_bwd";
        let params = global_params(op, x_dims)?;
        expect_dims(op, dy, &[x_dims[0], x_dims[1], 1, 1])?;
        let dx = self.tensor_as(x_dims, dy.precision())?;
        let bindings = [(2, dx.raw()), (5, dy.raw())];
        self.launch(
            kernels::GLOBAL_AVGPOOL2D_BWD.with(dy.precision()),
            &params,
            &bindings,
            flat_groups(dx.numel()),
        )?;
        Ok(dx)
    }
}

fn check_no_dilation(op: &'static str, g: &Pool2dGeometry) -> Result<()> {
    if g.dilation != [1, 1] {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("dilation must be 1, got {:?}", g.dilation),
        });
    }
    Ok(())
}

/// Pool parameters for a global average over `x[N, C, H, W]`, with 1/(H·W) rounded as the CPU.
fn global_params(op: &'static str, d: &[usize]) -> Result<Vec<u32>> {
    if d.len() != 4 || d[2] * d[3] == 0 {
        return Err(Error::InvalidShape {
            op,
            shape: d.to_vec(),
            reason: "input must be [N, C, H, W] with H, W > 0".into(),
        });
    }
    let inv = 1.0f32 / (d[2] * d[3]) as f32;
    let mut words = vec![0u32; 16];
    words[0] = to_u32(d[0], op)?;
    words[1] = to_u32(d[1], op)?;
    words[2] = to_u32(d[2], op)?;
    words[3] = to_u32(d[3], op)?;
    words[15] = inv.to_bits();
    Ok(words)
}
