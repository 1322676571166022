//! Reshape, flatten and concatenation.

use super::{Input, Op};
use crate::element::Float;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tape::{Tape, Var, accumulate};
use crate::tensor::Tensor;

impl<T: Float> Tape<T> {
    /// The same values under a new shape with the same element count.
    pub fn reshape(&mut self, x: &Var<T>, dims: &[usize]) -> Result<Var<T>> {
        let ix = self.input(x)?;
        let value = x.value().reshape(dims)?;
        let from = x.value().shape().clone();
        Ok(self.result(ix.is_some(), value, || Op::Reshape { x: ix, from }))
    }

    /// Collapses every dimension from `start_dim` on into one (PyTorch's `flatten(x, start_dim)`).
    pub fn flatten(&mut self, x: &Var<T>, start_dim: usize) -> Result<Var<T>> {
        let dims = x.dims();
        if start_dim >= dims.len().max(1) {
            return Err(Error::InvalidAxis {
                op: "flatten",
                axis: start_dim,
                rank: dims.len(),
            });
        }
        let mut new_dims = dims[..start_dim].to_vec();
        new_dims.push(dims[start_dim..].iter().product());
        self.reshape(x, &new_dims)
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    pub fn concat(&mut self, xs: &[&Var<T>], axis: usize) -> Result<Var<T>> {
        let first = xs.first().ok_or_else(|| Error::InvalidArgument {
            op: "concat",
            reason: "needs at least one input".into(),
        })?;
        let rank = first.dims().len();
        if axis >= rank {
            return Err(Error::InvalidAxis {
                op: "concat",
                axis,
                rank,
            });
        }
        let mut out_dims = first.dims().to_vec();
        out_dims[axis] = 0;
        let mut parts = Vec::with_capacity(xs.len());
        for x in xs {
            let d = x.dims();
            let agrees = d.len() == rank && (0..rank).all(|i| i == axis || d[i] == first.dims()[i]);
            if !agrees {
                return Err(Error::ShapeMismatch {
                    op: "concat",
                    lhs: first.dims().to_vec(),
                    rhs: d.to_vec(),
                });
            }
            out_dims[axis] += d[axis];
            parts.push((self.input(x)?, d[axis]));
        }
        let shape = Shape::new(&out_dims)?;
        let outer: usize = out_dims[..axis].iter().product();
        let inner: usize = out_dims[axis + 1..].iter().product();
        let mut data = crate::buffers::with_capacity(shape.numel());
        for o in 0..outer {
            for x in xs {
                let chunk = x.dims()[axis] * inner;
                data.extend_from_slice(&x.value().as_slice()[o * chunk..(o + 1) * chunk]);
            }
        }
        let tracked = parts.iter().any(|(i, _)| i.is_some());
        let value = Tensor::from_parts(shape, data);
        Ok(self.result(tracked, value, || Op::Concat {
            parts,
            axis,
            outer,
            inner,
        }))
    }
}

pub(super) fn reshape_backward<T: Float>(
    x: Input,
    from: &Shape,
    grad: Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) -> Result<()> {
    if let Some(x) = x {
        accumulate(grads, x, grad.reshape(from.dims())?);
    }
    Ok(())
}

pub(super) fn concat_backward<T: Float>(
    parts: &[(Input, usize)],
    axis: usize,
    outer: usize,
    inner: usize,
    out_shape: &Shape,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) -> Result<()> {
    let total = out_shape.dims()[axis];
    let g = grad.as_slice();
    let mut start = 0;
    for &(input, len) in parts {
        if let Some(i) = input {
            let mut data = crate::buffers::with_capacity(outer * len * inner);
            for o in 0..outer {
                let base = (o * total + start) * inner;
                data.extend_from_slice(&g[base..base + len * inner]);
            }
            let mut dims = out_shape.dims().to_vec();
            dims[axis] = len;
            accumulate(grads, i, Tensor::from_vec(data, &dims)?);
        }
        start += len;
    }
    Ok(())
}
