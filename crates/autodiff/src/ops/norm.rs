//! Batch normalisation in inference form: `y = (x - mean) / sqrt(var + eps) · γ + β` per channel.

use super::{Input, Op};
use crate::element::Float;
use crate::error::{Error, Result};
use crate::tape::{Tape, Var, accumulate};
use crate::tensor::Tensor;

impl<T: Float> Tape<T> {
    /// Batch norm with running statistics (`model.eval()`), channels on axis 1 of `x[N, C, ...]`.
    /// `gamma` and `beta` may require gradients (training); `mean` and `var` are buffers.
    pub fn batch_norm(
        &mut self,
        x: &Var<T>,
        gamma: &Var<T>,
        beta: &Var<T>,
        mean: &Tensor<T>,
        var: &Tensor<T>,
        eps: f64,
    ) -> Result<Var<T>> {
        let op = "batch_norm";
        let d = x.dims();
        if d.len() < 2 {
            return Err(Error::InvalidShape {
                op,
                shape: d.to_vec(),
                reason: "input must be [N, C, ...]".into(),
            });
        }
        let c = d[1];
        for (name, t) in [
            ("weight", gamma.dims()),
            ("bias", beta.dims()),
            ("running_mean", mean.dims()),
            ("running_var", var.dims()),
        ] {
            if t != [c] {
                return Err(Error::InvalidArgument {
                    op,
                    reason: format!("{name} has shape {t:?}, expected [{c}] for input {d:?}"),
                });
            }
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("eps must be non-negative, got {eps}"),
            });
        }
        let (ix, ig, ib) = (self.input(x)?, self.input(gamma)?, self.input(beta)?);
        let eps = T::from_f64(eps);
        let inv_std: Vec<T> = var
            .as_slice()
            .iter()
            .map(|&v| T::one() / (v + eps).sqrt())
            .collect();
        let scale: Vec<T> = inv_std
            .iter()
            .zip(gamma.value().as_slice())
            .map(|(&s, &g)| s * g)
            .collect();
        let (mu, b) = (mean.as_slice(), beta.value().as_slice());
        let inner: usize = d[2..].iter().product();
        let xs = x.value().as_slice();
        let mut out = crate::buffers::zeros(xs.len());
        let mut x_hat = ig.map(|_| crate::buffers::zeros(xs.len()));
        for (k, (o, xv)) in out
            .chunks_mut(inner.max(1))
            .zip(xs.chunks(inner.max(1)))
            .enumerate()
        {
            let ch = k % c;
            for (i, (o, &v)) in o.iter_mut().zip(xv).enumerate() {
                let normalised = (v - mu[ch]) * inv_std[ch];
                *o = normalised * gamma.value().as_slice()[ch] + b[ch];
                if let Some(h) = x_hat.as_mut() {
                    h[k * inner + i] = normalised;
                }
            }
        }
        let value = Tensor::from_vec(out, d)?;
        let x_hat = match x_hat {
            Some(h) => Some(Tensor::from_vec(h, d)?),
            None => None,
        };
        let tracked = ix.is_some() || ig.is_some() || ib.is_some();
        Ok(self.result(tracked, value, || Op::BatchNorm {
            x: ix,
            gamma: ig,
            beta: ib,
            scale,
            x_hat,
        }))
    }
}

pub(super) fn batch_norm_backward<T: Float>(
    x: Input,
    gamma: Input,
    beta: Input,
    scale: &[T],
    x_hat: &Option<Tensor<T>>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    let d = grad.dims();
    let c = d[1];
    let inner: usize = d[2..].iter().product::<usize>().max(1);
    let g = grad.as_slice();
    if let Some(ix) = x {
        let mut dx = g.to_vec();
        for (k, chunk) in dx.chunks_mut(inner).enumerate() {
            let s = scale[k % c];
            chunk.iter_mut().for_each(|v| *v *= s);
        }
        accumulate(grads, ix, Tensor::from_parts(grad.shape().clone(), dx));
    }
    if let (Some(ig), Some(h)) = (gamma, x_hat) {
        let mut dg = crate::buffers::zeros(c);
        for (k, (gc, hc)) in g.chunks(inner).zip(h.as_slice().chunks(inner)).enumerate() {
            dg[k % c] += gc.iter().zip(hc).map(|(&a, &b)| a * b).sum::<T>();
        }
        accumulate(grads, ig, Tensor::from_parts(scale_shape(c), dg));
    }
    if let Some(ib) = beta {
        let mut db = crate::buffers::zeros(c);
        for (k, gc) in g.chunks(inner).enumerate() {
            db[k % c] += gc.iter().copied().sum::<T>();
        }
        accumulate(grads, ib, Tensor::from_parts(scale_shape(c), db));
    }
}

fn scale_shape(c: usize) -> crate::shape::Shape {
    crate::shape::Shape::new(&[c]).unwrap_or_default()
}
