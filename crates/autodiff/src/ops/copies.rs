//! The batch of noisy copies as an op of the tape: `x[1, ...] → x + σ·ε` for copies
//! `first..first + count`. Its backward sums the incoming gradient over copies and also the
//! squares (for SmoothGrad² and VarGrad).

use super::{Input, Op};
use crate::backend::cpu::copies::{NoiseSource, noisy_copies_fwd, reduce_copies, sum_copies};
use crate::element::Float;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tape::{Tape, Var, accumulate};
use crate::tensor::Tensor;

/// Which noisy copies to make, and from what noise.
#[derive(Debug, Clone)]
pub struct NoiseSpec<T: Float> {
    /// Standard deviation of the noise, in input units.
    pub sigma: f64,
    /// Index of the first copy to make (copies of one explanation are numbered 0..n across all
    /// chunks, so the noise does not depend on how the batch is split).
    pub first: usize,
    /// Number of copies to make.
    pub count: usize,
    /// Where the draws come from.
    pub source: NoiseSource<T>,
}

impl<T: Float> Tape<T> {
    /// `count` noisy copies of `x[1, ...]`: `[count, ...]`. With `x` tracked, the backward gives
    /// `x` the sum of the copies' gradients and records the sum of their squares
    /// ([`Grads::sum_of_squares`](crate::Grads::sum_of_squares)).
    pub fn noisy_copies(&mut self, x: &Var<T>, spec: &NoiseSpec<T>) -> Result<Var<T>> {
        let op = "noisy_copies";
        let d = x.dims();
        if d.first() != Some(&1) {
            return Err(Error::InvalidShape {
                op,
                shape: d.to_vec(),
                reason: "input must be one sample [1, ...]".into(),
            });
        }
        if spec.count == 0 {
            return Err(Error::InvalidArgument {
                op,
                reason: "the number of copies must be positive".into(),
            });
        }
        if !spec.sigma.is_finite() || spec.sigma < 0.0 {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("sigma must be finite and non-negative, got {}", spec.sigma),
            });
        }
        let e = x.value().numel();
        if let NoiseSource::Given(t) = &spec.source {
            let needed = (spec.first + spec.count).checked_mul(e);
            if t.dims().len() != d.len()
                || t.dims()[1..] != d[1..]
                || needed.is_none_or(|n| n > t.numel())
            {
                return Err(Error::ShapeMismatch {
                    op: "noisy_copies (given noise)",
                    lhs: t.dims().to_vec(),
                    rhs: [&[spec.first + spec.count], &d[1..]].concat(),
                });
            }
        }
        let mut dims = d.to_vec();
        dims[0] = spec.count;
        let shape = Shape::new(&dims)?;
        let mut out = crate::buffers::stale(shape.numel());
        noisy_copies_fwd(
            x.value().as_slice(),
            &spec.source,
            T::from_f64(spec.sigma),
            spec.first,
            &mut out,
        );
        let ix = self.input(x)?;
        let value = Tensor::from_parts(shape, out);
        Ok(self.result(ix.is_some(), value, || Op::NoisyCopies {
            x: ix,
            x_shape: x.value().shape().clone(),
        }))
    }
}

pub(super) fn noisy_copies_backward<T: Float>(
    x: Input,
    x_shape: &Shape,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
    squares: Option<&mut [Option<Tensor<T>>]>,
) {
    if let Some(ix) = x {
        let e = x_shape.numel();
        let mut sum = crate::buffers::zeros(e);
        match squares {
            Some(squares) => {
                let mut sumsq = crate::buffers::zeros(e);
                reduce_copies(grad.as_slice(), &mut sum, &mut sumsq);
                accumulate(squares, ix, Tensor::from_parts(x_shape.clone(), sumsq));
            }
            None => sum_copies(grad.as_slice(), &mut sum),
        }
        accumulate(grads, ix, Tensor::from_parts(x_shape.clone(), sum));
    }
}
