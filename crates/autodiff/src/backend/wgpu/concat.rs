//! Concatenation along one axis on the device, and its backward (the slices of dY), with the
//! CPU's semantics ([`Tape::concat`](crate::Tape::concat)): one strided block copy per part.

use super::context::{WgpuContext, flat_groups, precision_of, to_u32};
use super::kernels;
use super::tensor::GpuTensor;
use crate::error::{Error, Result};

/// (outer, inner) of `dims` around `axis`: the products of the dimensions before and after it.
fn around(dims: &[usize], axis: usize) -> (usize, usize) {
    (
        dims[..axis].iter().product(),
        dims[axis + 1..].iter().product(),
    )
}

impl WgpuContext {
    /// Joins `parts` along `axis`; every other dimension must agree.
    pub fn concat_fwd(&self, parts: &[&GpuTensor], axis: usize) -> Result<GpuTensor> {
        let op = "concat_fwd";
        let first = parts.first().ok_or_else(|| Error::InvalidArgument {
            op,
            reason: "needs at least one input".into(),
        })?;
        let rank = first.dims().len();
        if axis >= rank {
            return Err(Error::InvalidAxis { op, axis, rank });
        }
        let prec = precision_of(op, parts)?;
        let mut out_dims = first.dims().to_vec();
        out_dims[axis] = 0;
        for part in parts {
            let d = part.dims();
            if d.len() != rank || (0..rank).any(|i| i != axis && d[i] != first.dims()[i]) {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: first.dims().to_vec(),
                    rhs: d.to_vec(),
                });
            }
            out_dims[axis] += d[axis];
        }
        let out = self.tensor_as(&out_dims, prec)?;
        let (_, inner) = around(&out_dims, axis);
        let total = out_dims[axis] * inner;
        let mut offset = 0;
        for part in parts {
            let block = part.dims()[axis] * inner;
            self.block_copy(kernels::CONCAT_FWD, part, &out, (block, total, offset))?;
            offset += block;
        }
        Ok(out)
    }

    /// Concat's backward: the slices of `dy` along `axis` of lengths `lengths` (the parts'
    /// lengths on the axis), in order.
    pub fn concat_bwd(
        &self,
        dy: &GpuTensor,
        axis: usize,
        lengths: &[usize],
    ) -> Result<Vec<GpuTensor>> {
        let op = "concat_bwd";
        let d = dy.dims();
        if axis >= d.len() {
            return Err(Error::InvalidAxis {
                op,
                axis,
                rank: d.len(),
            });
        }
        if lengths.iter().sum::<usize>() != d[axis] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: d.to_vec(),
                rhs: lengths.to_vec(),
            });
        }
        let (_, inner) = around(d, axis);
        let total = d[axis] * inner;
        let mut offset = 0;
        let mut parts = Vec::with_capacity(lengths.len());
        for &len in lengths {
            let mut dims = d.to_vec();
            dims[axis] = len;
            let part = self.tensor_as(&dims, dy.precision())?;
            let block = len * inner;
            self.block_copy(kernels::CONCAT_BWD, dy, &part, (block, total, offset))?;
            offset += block;
            parts.push(part);
        }
        Ok(parts)
    }

    /// One launch of a concat kernel, one invocation per element of the part.
    fn block_copy(
        &self,
        kernel: kernels::Kernel,
        src: &GpuTensor,
        dst: &GpuTensor,
        (block, total, offset): (usize, usize, usize),
    ) -> Result<()> {
        let op = kernel.entry;
        let len = if kernel == kernels::CONCAT_FWD {
            src.numel()
        } else {
            dst.numel()
        };
        let params = [
            to_u32(len, op)?,
            to_u32(block, op)?,
            to_u32(total, op)?,
            to_u32(offset, op)?,
        ];
        let bindings = [(1, src.raw()), (2, dst.raw())];
        self.launch(
            kernel.with(src.precision()),
            &params,
            &bindings,
            flat_groups(len),
        )
    }
}
