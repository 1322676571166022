//! Softmax and log-softmax over an axis, and cross-entropy on logits.

use super::{Input, Op};
use crate::element::Float;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tape::{Tape, Var, accumulate};
use crate::tensor::Tensor;

/// (outer, len, inner) of `dims` around `axis`: element (o, i, j) is at (o*len + i)*inner + j.
fn split_axis(op: &'static str, dims: &[usize], axis: usize) -> Result<(usize, usize, usize)> {
    if axis >= dims.len() {
        return Err(Error::InvalidAxis {
            op,
            axis,
            rank: dims.len(),
        });
    }
    Ok((
        dims[..axis].iter().product(),
        dims[axis],
        dims[axis + 1..].iter().product(),
    ))
}

/// Calls `f` with the strided positions of every line along the axis.
fn for_each_line(outer: usize, len: usize, inner: usize, mut f: impl FnMut(&[usize])) {
    let mut idx = vec![0usize; len];
    for o in 0..outer {
        for j in 0..inner {
            for (i, slot) in idx.iter_mut().enumerate() {
                *slot = (o * len + i) * inner + j;
            }
            f(&idx);
        }
    }
}

/// Numerically stable softmax (`log == false`) or log-softmax (`log == true`) along an axis.
fn softmax_fwd<T: Float>(x: &[T], dims: &[usize], axis: usize, log: bool) -> Result<Vec<T>> {
    let (outer, len, inner) = split_axis(if log { "log_softmax" } else { "softmax" }, dims, axis)?;
    let mut out = crate::buffers::zeros(x.len());
    for_each_line(outer, len, inner, |idx| {
        let max = idx
            .iter()
            .map(|&k| x[k])
            .fold(T::neg_infinity(), |m, v| if v > m { v } else { m });
        let sum: T = idx.iter().map(|&k| (x[k] - max).exp()).sum();
        if log {
            let lse = sum.ln();
            for &k in idx {
                out[k] = x[k] - max - lse;
            }
        } else {
            for &k in idx {
                out[k] = (x[k] - max).exp() / sum;
            }
        }
    });
    Ok(out)
}

impl<T: Float> Tape<T> {
    /// `exp(x) / sum(exp(x))` along `axis`.
    pub fn softmax(&mut self, x: &Var<T>, axis: usize) -> Result<Var<T>> {
        let ix = self.input(x)?;
        let data = softmax_fwd(x.value().as_slice(), x.dims(), axis, false)?;
        let value = Tensor::from_parts(x.value().shape().clone(), data);
        let out = value.clone();
        Ok(self.result(ix.is_some(), value, || Op::Softmax { x: ix, axis, out }))
    }

    /// `x - log(sum(exp(x)))` along `axis`, computed stably.
    pub fn log_softmax(&mut self, x: &Var<T>, axis: usize) -> Result<Var<T>> {
        let ix = self.input(x)?;
        let data = softmax_fwd(x.value().as_slice(), x.dims(), axis, true)?;
        let value = Tensor::from_parts(x.value().shape().clone(), data);
        let out = value.clone();
        Ok(self.result(ix.is_some(), value, || Op::LogSoftmax { x: ix, axis, out }))
    }

    /// Mean cross-entropy of logits `[N, C]` against class indices (PyTorch's
    /// `F.cross_entropy` with mean reduction).
    pub fn cross_entropy(&mut self, logits: &Var<T>, targets: &[usize]) -> Result<Var<T>> {
        let op = "cross_entropy";
        let dims = logits.dims();
        if dims.len() != 2 || dims[0] == 0 {
            return Err(Error::InvalidShape {
                op,
                shape: dims.to_vec(),
                reason: "logits must be [N, C] with N > 0".into(),
            });
        }
        let (n, c) = (dims[0], dims[1]);
        if targets.len() != n {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("{} targets for a batch of {n}", targets.len()),
            });
        }
        if let Some(&bad) = targets.iter().find(|&&t| t >= c) {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("target class {bad} is out of range for {c} classes"),
            });
        }
        let il = self.input(logits)?;
        let logp = softmax_fwd(logits.value().as_slice(), dims, 1, true)?;
        let total: T = targets
            .iter()
            .enumerate()
            .map(|(i, &t)| -logp[i * c + t])
            .sum();
        let value = Tensor::scalar(total / T::from_usize(n));
        let probs = Tensor::from_parts(
            logits.value().shape().clone(),
            logp.iter().map(|v| v.exp()).collect(),
        );
        let targets = targets.to_vec();
        Ok(self.result(il.is_some(), value, || Op::CrossEntropy {
            logits: il,
            probs,
            targets,
        }))
    }
}

pub(super) fn softmax_backward<T: Float>(
    x: Input,
    axis: usize,
    out: &Tensor<T>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    let Some(x) = x else { return };
    let (y, g) = (out.as_slice(), grad.as_slice());
    let (outer, len, inner) = dims3(out.shape(), axis);
    let mut dx = crate::buffers::zeros(y.len());
    // dx = y * (g - sum(g * y)) along the axis.
    for_each_line(outer, len, inner, |idx| {
        let dot: T = idx.iter().map(|&k| g[k] * y[k]).sum();
        for &k in idx {
            dx[k] = y[k] * (g[k] - dot);
        }
    });
    accumulate(grads, x, Tensor::from_parts(out.shape().clone(), dx));
}

pub(super) fn log_softmax_backward<T: Float>(
    x: Input,
    axis: usize,
    out: &Tensor<T>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    let Some(x) = x else { return };
    let (y, g) = (out.as_slice(), grad.as_slice());
    let (outer, len, inner) = dims3(out.shape(), axis);
    let mut dx = crate::buffers::zeros(y.len());
    // dx = g - exp(y) * sum(g) along the axis.
    for_each_line(outer, len, inner, |idx| {
        let sum: T = idx.iter().map(|&k| g[k]).sum();
        for &k in idx {
            dx[k] = g[k] - y[k].exp() * sum;
        }
    });
    accumulate(grads, x, Tensor::from_parts(out.shape().clone(), dx));
}

fn dims3(shape: &Shape, axis: usize) -> (usize, usize, usize) {
    let d = shape.dims();
    (
        d[..axis].iter().product(),
        d[axis],
        d[axis + 1..].iter().product(),
    )
}

pub(super) fn cross_entropy_backward<T: Float>(
    logits: Input,
    probs: &Tensor<T>,
    targets: &[usize],
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    let Some(l) = logits else { return };
    let n = targets.len();
    let c = probs.dims()[1];
    let scale = grad.as_slice()[0] / T::from_usize(n);
    let mut dx: Vec<T> = probs.as_slice().iter().map(|&p| p * scale).collect();
    for (i, &t) in targets.iter().enumerate() {
        dx[i * c + t] -= scale;
    }
    accumulate(grads, l, Tensor::from_parts(probs.shape().clone(), dx));
}
