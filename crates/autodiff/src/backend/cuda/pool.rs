//! Pooling launchers (maxpool2d.ptx, avgpool2d.ptx), with the CPU's geometry and semantics.

use super::args::PoolArgs;
use super::kernels as k;
use super::{CudaContext, CudaIndices, CudaTensor, grid_1d, launch};
use crate::error::{Error, Result};
use crate::ops::geometry::Pool2dGeometry;
use crate::shape::Shape;

fn check(op: &'static str, what: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("{what} has shape {got:?}, the geometry needs {want:?}"),
        });
    }
    Ok(())
}

impl CudaContext {
    /// Max pool and its argmax (index inside the input plane; `u32::MAX` for a window with no
    /// input element, whose output is -inf): the CPU's `maxpool2d_fwd`, ties and NaN included.
    pub fn maxpool2d_fwd(
        &self,
        g: &Pool2dGeometry,
        x: &CudaTensor,
    ) -> Result<(CudaTensor, CudaIndices)> {
        let op = "maxpool2d_fwd";
        check(op, "input", x.dims(), &g.in_dims())?;
        let args = PoolArgs::new(op, g)?;
        let y = self.new_tensor(Shape::new(&g.out_dims())?)?;
        let argmax = CudaIndices {
            data: self.alloc_zeros(y.numel())?,
            len: y.numel(),
        };
        if y.numel() > 0 {
            launch!(
                self,
                k::MAXPOOL2D_FWD,
                grid_1d(y.numel()),
                &x.ptr(self),
                &y.ptr(self),
                &argmax.ptr(self),
                &args
            )?;
        }
        Ok((y, argmax))
    }

    /// dx = each dy added at its argmax: the CPU's `maxpool2d_bwd`, as a gather.
    pub fn maxpool2d_bwd(
        &self,
        g: &Pool2dGeometry,
        dy: &CudaTensor,
        argmax: &CudaIndices,
    ) -> Result<CudaTensor> {
        let op = "maxpool2d_bwd";
        check(op, "output gradient", dy.dims(), &g.out_dims())?;
        if argmax.len() != dy.numel() {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("{} argmax indices for {} outputs", argmax.len(), dy.numel()),
            });
        }
        let args = PoolArgs::new(op, g)?;
        let dx = self.new_tensor(Shape::new(&g.in_dims())?)?;
        if dx.numel() > 0 {
            launch!(
                self,
                k::MAXPOOL2D_BWD,
                grid_1d(dx.numel()),
                &dy.ptr(self),
                &argmax.ptr(self),
                &dx.ptr(self),
                &args
            )?;
        }
        Ok(dx)
    }

    /// Average pool with PyTorch's divisor rules: the CPU's `avgpool2d_fwd`.
    pub fn avgpool2d_fwd(&self, g: &Pool2dGeometry, x: &CudaTensor) -> Result<CudaTensor> {
        let op = "avgpool2d_fwd";
        check(op, "input", x.dims(), &g.in_dims())?;
        check_no_dilation(op, g)?;
        let args = PoolArgs::new(op, g)?;
        let y = self.new_tensor(Shape::new(&g.out_dims())?)?;
        if y.numel() > 0 {
            launch!(
                self,
                k::AVGPOOL2D_FWD,
                grid_1d(y.numel()),
                &x.ptr(self),
                &y.ptr(self),
                &args
            )?;
        }
        Ok(y)
    }

    /// dx = each dy spread evenly over its window: the CPU's `avgpool2d_bwd`, as a gather.
    pub fn avgpool2d_bwd(&self, g: &Pool2dGeometry, dy: &CudaTensor) -> Result<CudaTensor> {
        let op = "avgpool2d_bwd";
        check(op, "output gradient", dy.dims(), &g.out_dims())?;
        check_no_dilation(op, g)?;
        let args = PoolArgs::new(op, g)?;
        let dx = self.new_tensor(Shape::new(&g.in_dims())?)?;
        if dx.numel() > 0 {
            launch!(
                self,
                k::AVGPOOL2D_BWD,
                grid_1d(dx.numel()),
                &dy.ptr(self),
                &dx.ptr(self),
                &args
            )?;
        }
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
