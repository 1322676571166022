//! Sum and mean over axes.

use super::{Input, Op};
use crate::backend::cpu::elementwise::{broadcast_to, sum_to_shape};
use crate::element::Float;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tape::{Tape, Var, accumulate};
use crate::tensor::Tensor;

impl<T: Float> Tape<T> {
    /// Sum over `axes` (each at most once); `keepdim` keeps them as size 1.
    pub fn sum(&mut self, x: &Var<T>, axes: &[usize], keepdim: bool) -> Result<Var<T>> {
        self.sum_axes("sum", x, axes, keepdim, false)
    }

    /// Mean over `axes` (each at most once); `keepdim` keeps them as size 1.
    pub fn mean(&mut self, x: &Var<T>, axes: &[usize], keepdim: bool) -> Result<Var<T>> {
        self.sum_axes("mean", x, axes, keepdim, true)
    }

    fn sum_axes(
        &mut self,
        op: &'static str,
        x: &Var<T>,
        axes: &[usize],
        keepdim: bool,
        mean: bool,
    ) -> Result<Var<T>> {
        let ix = self.input(x)?;
        let dims = x.dims();
        let mut reduced = vec![false; dims.len()];
        for &a in axes {
            if a >= dims.len() {
                return Err(Error::InvalidAxis {
                    op,
                    axis: a,
                    rank: dims.len(),
                });
            }
            if reduced[a] {
                return Err(Error::InvalidArgument {
                    op,
                    reason: format!("axis {a} given twice"),
                });
            }
            reduced[a] = true;
        }
        let kept_dims: Vec<usize> = dims
            .iter()
            .zip(&reduced)
            .map(|(&d, &r)| if r { 1 } else { d })
            .collect();
        let kept = Shape::new(&kept_dims)?;
        let count: usize = axes.iter().map(|&a| dims[a]).product();
        if mean && count == 0 {
            return Err(Error::InvalidShape {
                op,
                shape: dims.to_vec(),
                reason: "mean over an empty axis".into(),
            });
        }
        let scale = if mean {
            T::one() / T::from_usize(count)
        } else {
            T::one()
        };
        let mut data = sum_to_shape(x.value().as_slice(), x.value().shape(), &kept);
        if mean {
            data.iter_mut().for_each(|v| *v *= scale);
        }
        let out_dims: Vec<usize> = if keepdim {
            kept_dims
        } else {
            dims.iter()
                .zip(&reduced)
                .filter(|(_, r)| !**r)
                .map(|(&d, _)| d)
                .collect()
        };
        let value = Tensor::from_parts(Shape::new(&out_dims)?, data);
        let x_shape = x.value().shape().clone();
        Ok(self.result(ix.is_some(), value, || Op::SumAxes {
            x: ix,
            x_shape,
            kept,
            scale,
        }))
    }
}

pub(super) fn sum_axes_backward<T: Float>(
    x: Input,
    x_shape: &Shape,
    kept: &Shape,
    scale: T,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    if let Some(x) = x {
        let mut data = broadcast_to(grad.as_slice(), kept, x_shape);
        if scale != T::one() {
            data.iter_mut().for_each(|v| *v *= scale);
        }
        accumulate(grads, x, Tensor::from_parts(x_shape.clone(), data));
    }
}
