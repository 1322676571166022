//! The tape: a list of recorded operations in execution order, and reverse-mode backward.
//!
//! A [`Var`] is a value plus, when it requires a gradient, the index of the node that made it.
//! Constants (model weights during explanation) are never recorded, so an op whose inputs are
//! all constants records nothing, and the backward of an op skips every input that is a
//! constant: a convolution with constant weights computes dX and never dW.

use crate::element::Float;
use crate::error::{Error, Result};
use crate::ops::{BackwardOptions, Op, Sink};
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_TAPE_ID: AtomicU64 = AtomicU64::new(1);

/// Where a variable sits on a tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeRef {
    pub tape: u64,
    pub index: usize,
}

/// A value in a computation: a tensor, and its node on a tape if it requires a gradient.
#[derive(Debug, Clone)]
pub struct Var<T: Float> {
    value: Tensor<T>,
    node: Option<NodeRef>,
}

impl<T: Float> Var<T> {
    /// A value that never requires a gradient (weights while explaining, data, targets).
    pub fn constant(value: Tensor<T>) -> Self {
        Var { value, node: None }
    }

    /// The value.
    pub fn value(&self) -> &Tensor<T> {
        &self.value
    }

    /// The dimensions of the value.
    pub fn dims(&self) -> &[usize] {
        self.value.dims()
    }

    /// Whether a gradient flows back to this value.
    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }

    /// The value, dropping the tape link.
    pub fn into_value(self) -> Tensor<T> {
        self.value
    }
}

pub(crate) struct Node<T: Float> {
    pub op: Op<T>,
    pub shape: Shape,
}

/// A record of differentiable operations, in execution order.
///
/// ```
/// use smoothgrad_autodiff::{Tape, Tensor, Var};
/// let mut tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3])?);
/// let w = Var::constant(Tensor::from_vec(vec![0.5, 0.5, 2.0], &[3])?);
/// let y = tape.mul(&x, &w)?;
/// let y = tape.relu(&y)?;
/// let loss = tape.sum(&y, &[0], false)?;
/// let grads = tape.backward(&loss)?;
/// // d/dx sum(relu(w*x)) = w where w*x > 0, else 0.
/// assert_eq!(grads.get(&x).unwrap().as_slice(), &[0.5, 0.0, 2.0]);
/// # Ok::<(), smoothgrad_autodiff::Error>(())
/// ```
pub struct Tape<T: Float> {
    id: u64,
    pub(crate) nodes: Vec<Node<T>>,
}

impl<T: Float> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Tape<T> {
    /// An empty tape.
    pub fn new() -> Self {
        Tape {
            id: NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed),
            nodes: Vec::new(),
        }
    }

    /// Number of recorded nodes (leaves included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Total elements of the values recorded so far: a measure of the memory a forward holds
    /// for its backward (used to size batches).
    pub fn recorded_elements(&self) -> usize {
        self.nodes.iter().map(|n| n.shape.numel()).sum()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A leaf that requires a gradient (the input image while explaining; weights while training).
    pub fn var(&mut self, value: Tensor<T>) -> Var<T> {
        self.push(Op::Leaf, value)
    }

    /// The node index of `v` on this tape, `None` for a constant.
    pub(crate) fn input(&self, v: &Var<T>) -> Result<Option<usize>> {
        match v.node {
            None => Ok(None),
            Some(r) if r.tape == self.id => Ok(Some(r.index)),
            Some(r) => Err(Error::ForeignVariable {
                expected: self.id,
                found: r.tape,
            }),
        }
    }

    /// Records `op` producing `value`.
    pub(crate) fn push(&mut self, op: Op<T>, value: Tensor<T>) -> Var<T> {
        let index = self.nodes.len();
        self.nodes.push(Node {
            op,
            shape: value.shape().clone(),
        });
        Var {
            value,
            node: Some(NodeRef {
                tape: self.id,
                index,
            }),
        }
    }

    /// Wraps an op's result: recorded when `any_input_tracked`, a constant otherwise.
    /// `make_op` is only called when the node is recorded, so saved tensors cost nothing
    /// on the constant path.
    pub(crate) fn result(
        &mut self,
        any_input_tracked: bool,
        value: Tensor<T>,
        make_op: impl FnOnce() -> Op<T>,
    ) -> Var<T> {
        if any_input_tracked {
            self.push(make_op(), value)
        } else {
            Var::constant(value)
        }
    }

    /// Backward from a scalar (one-element) output with seed 1.
    pub fn backward(&self, output: &Var<T>) -> Result<Grads<T>> {
        if output.value.numel() != 1 {
            return Err(Error::InvalidShape {
                op: "backward",
                shape: output.dims().to_vec(),
                reason: "backward() needs a one-element output; use backward_from with a seed"
                    .into(),
            });
        }
        let seed = Tensor::from_parts(output.value.shape().clone(), vec![T::one()]);
        self.backward_from(output, &seed)
    }

    /// Reverse-mode backward from `output` with upstream gradient `seed` (same shape as the
    /// output; a one-hot of the target class for saliency). Leaves' gradients are returned;
    /// intermediate gradients are freed as soon as they have been propagated.
    pub fn backward_from(&self, output: &Var<T>, seed: &Tensor<T>) -> Result<Grads<T>> {
        self.backward_with(output, seed, BackwardOptions::default())
    }

    /// [`backward_from`](Self::backward_from) with options (guided backpropagation).
    pub fn backward_with(
        &self,
        output: &Var<T>,
        seed: &Tensor<T>,
        options: BackwardOptions,
    ) -> Result<Grads<T>> {
        let start = self.input(output)?.ok_or(Error::NotDifferentiable)?;
        if seed.shape() != &self.nodes[start].shape {
            return Err(Error::ShapeMismatch {
                op: "backward_from (seed vs output)",
                lhs: seed.dims().to_vec(),
                rhs: self.nodes[start].shape.dims().to_vec(),
            });
        }
        let mut readers = vec![0usize; start + 1];
        for node in &self.nodes[..=start] {
            for i in node.op.inputs() {
                readers[i] += 1;
            }
        }
        let mut grads: Vec<Option<Tensor<T>>> = vec![None; start + 1];
        let mut squares: Vec<Option<Tensor<T>>> = vec![None; start + 1];
        grads[start] = Some(seed.clone());
        let mut log = KernelLog::default();
        for index in (0..=start).rev() {
            let Some(grad) = grads[index].take() else {
                continue;
            };
            let node = &self.nodes[index];
            if let Op::Leaf = node.op {
                grads[index] = Some(grad);
                continue;
            }
            let fuse_copies = match &node.op {
                Op::Conv2d { x: Some(xi), .. } | Op::Conv2dMaxPool2d { x: Some(xi), .. }
                    if readers[*xi] == 1 =>
                {
                    match &self.nodes[*xi].op {
                        Op::NoisyCopies { x, .. } => Some(*x),
                        _ => None,
                    }
                }
                _ => None,
            };
            let sink = Sink {
                grads: &mut grads,
                squares: &mut squares,
                log: &mut log,
                options,
                fuse_copies,
            };
            crate::ops::backward(&node.op, &node.shape, grad, sink)?;
        }
        Ok(Grads {
            tape: self.id,
            grads,
            squares,
            kernels: log.calls,
        })
    }
}

/// The kernels a backward pass ran, in order (to show, e.g., that no dW was computed).
#[derive(Default)]
pub(crate) struct KernelLog {
    pub calls: Vec<&'static str>,
}

impl KernelLog {
    pub fn record(&mut self, kernel: &'static str) {
        self.calls.push(kernel);
    }
}

/// Gradients of the leaves of a tape, from one backward pass.
#[derive(Debug)]
pub struct Grads<T: Float> {
    tape: u64,
    grads: Vec<Option<Tensor<T>>>,
    squares: Vec<Option<Tensor<T>>>,
    kernels: Vec<&'static str>,
}

impl<T: Float> Grads<T> {
    /// The gradient of a leaf; `None` for constants, variables of another tape, and leaves the
    /// output does not depend on.
    pub fn get(&self, v: &Var<T>) -> Option<&Tensor<T>> {
        let r = v.node?;
        if r.tape != self.tape {
            return None;
        }
        self.grads.get(r.index)?.as_ref()
    }

    /// Takes ownership of a leaf's gradient.
    pub fn take(&mut self, v: &Var<T>) -> Option<Tensor<T>> {
        let r = v.node?;
        if r.tape != self.tape {
            return None;
        }
        self.grads.get_mut(r.index)?.take()
    }

    /// For the input of a [`noisy_copies`](Tape::noisy_copies) op: the sum over copies of the
    /// squared per-copy gradients (the sum itself is [`get`](Self::get)).
    pub fn sum_of_squares(&self, v: &Var<T>) -> Option<&Tensor<T>> {
        let r = v.node?;
        if r.tape != self.tape {
            return None;
        }
        self.squares.get(r.index)?.as_ref()
    }

    /// Names of the backward kernels that ran, in order (`conv2d_bwd_input`, `linear_bwd_weight`, ...).
    pub fn kernels(&self) -> &[&'static str] {
        &self.kernels
    }
}

/// Adds `g` into the gradient slot `index` (accumulating when a value is used twice).
pub(crate) fn accumulate<T: Float>(grads: &mut [Option<Tensor<T>>], index: usize, g: Tensor<T>) {
    match &mut grads[index] {
        slot @ None => *slot = Some(g),
        Some(existing) => {
            for (e, v) in existing.data_mut().iter_mut().zip(g.as_slice()) {
                *e += *v;
            }
        }
    }
}
