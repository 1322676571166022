//! Operations. Each file holds the tape API of a family of ops (forward, recording) and their
//! backward, calling CPU kernels; this file holds the `Op` enum and the one backward `match`,
//! so an op without a backward does not compile.

pub mod activation;
pub mod arith;
pub mod conv;
pub mod copies;
pub mod geometry;
pub mod linalg;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod shape_ops;
pub mod softmax;

use crate::backend::cpu::conv::ConvPoolPath;
use crate::element::Float;
use crate::error::Result;
use crate::ops::activation::BitMask;
use crate::ops::geometry::{Conv2dGeometry, Pool2dGeometry};
use crate::shape::Shape;
use crate::tape::KernelLog;
use crate::tensor::Tensor;

/// Node index of an input on the tape, `None` when the input is a constant.
pub(crate) type Input = Option<usize>;

/// A recorded operation: its tracked inputs and what its backward needs, nothing more.
pub(crate) enum Op<T: Float> {
    Leaf,
    Add {
        a: Input,
        b: Input,
        a_shape: Shape,
        b_shape: Shape,
    },
    Sub {
        a: Input,
        b: Input,
        a_shape: Shape,
        b_shape: Shape,
    },
    /// Saves each operand only when the other one needs its gradient.
    Mul {
        a: Input,
        b: Input,
        a_val: Tensor<T>,
        b_val: Tensor<T>,
    },
    Div {
        a: Input,
        b: Input,
        a_val: Tensor<T>,
        b_val: Tensor<T>,
    },
    AddScalar {
        x: Input,
    },
    MulScalar {
        x: Input,
        c: T,
    },
    PowScalar {
        x: Input,
        p: T,
        x_val: Tensor<T>,
    },
    Exp {
        x: Input,
        out: Tensor<T>,
    },
    Log {
        x: Input,
        x_val: Tensor<T>,
    },
    Relu {
        x: Input,
        mask: BitMask,
    },
    Clamp {
        x: Input,
        mask: BitMask,
    },
    Reshape {
        x: Input,
        from: Shape,
    },
    Concat {
        parts: Vec<(Input, usize)>,
        axis: usize,
        outer: usize,
        inner: usize,
    },
    /// Sum (scale 1) or mean (scale 1/count) over axes; `kept` has 1 on reduced axes.
    SumAxes {
        x: Input,
        x_shape: Shape,
        kept: Shape,
        scale: T,
    },
    Softmax {
        x: Input,
        axis: usize,
        out: Tensor<T>,
    },
    LogSoftmax {
        x: Input,
        axis: usize,
        out: Tensor<T>,
    },
    CrossEntropy {
        logits: Input,
        probs: Tensor<T>,
        targets: Vec<usize>,
    },
    Matmul {
        a: Input,
        b: Input,
        a_shape: Shape,
        b_shape: Shape,
        a_val: Option<Tensor<T>>,
        b_val: Option<Tensor<T>>,
    },
    Linear {
        x: Input,
        w: Input,
        b: Input,
        x_val: Option<Tensor<T>>,
        w_val: Option<Tensor<T>>,
    },
    Conv2d {
        x: Input,
        w: Input,
        b: Input,
        geometry: Conv2dGeometry,
        x_val: Option<Tensor<T>>,
        w_val: Option<Tensor<T>>,
    },
    MaxPool2d {
        x: Input,
        geometry: Pool2dGeometry,
        argmax: Vec<u32>,
    },
    /// A convolution with constant weights and the max pool over its output, fused.
    Conv2dMaxPool2d {
        x: Input,
        conv: Conv2dGeometry,
        pool: Pool2dGeometry,
        /// How the forward ran (what `argmax` means).
        path: ConvPoolPath,
        argmax: Vec<u32>,
        w_val: Option<Tensor<T>>,
    },
    AvgPool2d {
        x: Input,
        geometry: Pool2dGeometry,
    },
    GlobalAvgPool {
        x: Input,
        x_shape: Shape,
    },
    BatchNorm {
        x: Input,
        gamma: Input,
        beta: Input,
        scale: Vec<T>,
        x_hat: Option<Tensor<T>>,
    },
    NoisyCopies {
        x: Input,
        x_shape: Shape,
    },
}

impl<T: Float> Op<T> {
    /// The tracked inputs of this node.
    pub(crate) fn inputs(&self) -> Vec<usize> {
        let list: Vec<Input> = match self {
            Op::Leaf => vec![],
            Op::Add { a, b, .. }
            | Op::Sub { a, b, .. }
            | Op::Mul { a, b, .. }
            | Op::Div { a, b, .. }
            | Op::Matmul { a, b, .. } => vec![*a, *b],
            Op::AddScalar { x }
            | Op::MulScalar { x, .. }
            | Op::PowScalar { x, .. }
            | Op::Exp { x, .. }
            | Op::Log { x, .. }
            | Op::Relu { x, .. }
            | Op::Clamp { x, .. }
            | Op::Reshape { x, .. }
            | Op::SumAxes { x, .. }
            | Op::Softmax { x, .. }
            | Op::LogSoftmax { x, .. }
            | Op::MaxPool2d { x, .. }
            | Op::Conv2dMaxPool2d { x, .. }
            | Op::AvgPool2d { x, .. }
            | Op::GlobalAvgPool { x, .. }
            | Op::NoisyCopies { x, .. } => vec![*x],
            Op::CrossEntropy { logits, .. } => vec![*logits],
            Op::Concat { parts, .. } => parts.iter().map(|(i, _)| *i).collect(),
            Op::Linear { x, w, b, .. } | Op::Conv2d { x, w, b, .. } => vec![*x, *w, *b],
            Op::BatchNorm { x, gamma, beta, .. } => vec![*x, *gamma, *beta],
        };
        list.into_iter().flatten().collect()
    }
}

/// Options of one backward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackwardOptions {
    /// Guided backpropagation (Springenberg et al. 2015): ReLU (and clamp) pass a gradient only
    /// where both the forward input was in range and the incoming gradient is positive.
    pub guided: bool,
    /// Noisy copies reduce to the sum of their gradients only, without the sum of squares
    /// ([`Grads::sum_of_squares`](crate::Grads::sum_of_squares) is then `None` for them) — all
    /// SmoothGrad's mean needs. A convolution that alone reads the copies then sums its output
    /// gradient over the copies and runs its input gradient once (it is linear in dY): the
    /// first layer's backward costs one sample instead of n, rounded differently.
    pub sums_only: bool,
}

/// Where one backward step writes: gradients, sums of squares over noisy copies, the kernel log.
pub(crate) struct Sink<'a, T: Float> {
    pub grads: &'a mut [Option<Tensor<T>>],
    pub squares: &'a mut [Option<Tensor<T>>],
    pub log: &'a mut KernelLog,
    pub options: BackwardOptions,
    /// For a convolution whose input is a batch of noisy copies read by nothing else: the
    /// copies node's input, whose sum and sum of squares the fused kernel writes directly.
    pub fuse_copies: Option<Input>,
}

/// Propagates `grad` (the gradient of this node's output, shaped `out_shape`) to the inputs.
pub(crate) fn backward<T: Float>(
    op: &Op<T>,
    out_shape: &Shape,
    grad: Tensor<T>,
    sink: Sink<'_, T>,
) -> Result<()> {
    let Sink {
        grads,
        squares,
        log,
        options,
        fuse_copies,
    } = sink;
    match op {
        Op::Leaf => {}
        Op::Add {
            a,
            b,
            a_shape,
            b_shape,
        } => arith::add_backward(*a, *b, a_shape, b_shape, &grad, false, grads),
        Op::Sub {
            a,
            b,
            a_shape,
            b_shape,
        } => arith::add_backward(*a, *b, a_shape, b_shape, &grad, true, grads),
        Op::Mul { a, b, a_val, b_val } => arith::mul_backward(*a, *b, a_val, b_val, &grad, grads),
        Op::Div { a, b, a_val, b_val } => arith::div_backward(*a, *b, a_val, b_val, &grad, grads),
        Op::AddScalar { x } => arith::pass_through(*x, grad, grads),
        Op::MulScalar { x, c } => arith::mul_scalar_backward(*x, *c, &grad, grads),
        Op::PowScalar { x, p, x_val } => arith::pow_scalar_backward(*x, *p, x_val, &grad, grads),
        Op::Exp { x, out } => arith::exp_backward(*x, out, &grad, grads),
        Op::Log { x, x_val } => arith::log_backward(*x, x_val, &grad, grads),
        Op::Relu { x, mask } => {
            activation::mask_backward(*x, mask, grad, options.guided, grads, log, "relu_bwd")
        }
        Op::Clamp { x, mask } => {
            activation::mask_backward(*x, mask, grad, options.guided, grads, log, "clamp_bwd")
        }
        Op::Reshape { x, from } => shape_ops::reshape_backward(*x, from, grad, grads)?,
        Op::Concat {
            parts,
            axis,
            outer,
            inner,
        } => shape_ops::concat_backward(parts, *axis, *outer, *inner, out_shape, &grad, grads)?,
        Op::SumAxes {
            x,
            x_shape,
            kept,
            scale,
        } => reduce::sum_axes_backward(*x, x_shape, kept, *scale, &grad, grads),
        Op::Softmax { x, axis, out } => softmax::softmax_backward(*x, *axis, out, &grad, grads),
        Op::LogSoftmax { x, axis, out } => {
            softmax::log_softmax_backward(*x, *axis, out, &grad, grads)
        }
        Op::CrossEntropy {
            logits,
            probs,
            targets,
        } => softmax::cross_entropy_backward(*logits, probs, targets, &grad, grads),
        Op::Matmul {
            a,
            b,
            a_shape,
            b_shape,
            a_val,
            b_val,
        } => linalg::matmul_backward(*a, *b, a_shape, b_shape, a_val, b_val, &grad, grads, log)?,
        Op::Linear {
            x,
            w,
            b,
            x_val,
            w_val,
        } => linalg::linear_backward(*x, *w, *b, x_val, w_val, &grad, grads, log)?,
        Op::Conv2d {
            x,
            w,
            b,
            geometry,
            x_val,
            w_val,
        } => match (fuse_copies, w_val) {
            (Some(target), Some(wv)) => {
                let squares = (!options.sums_only).then_some(&mut squares[..]);
                conv::conv2d_bwd_input_into_copies(
                    target, geometry, wv, &grad, grads, squares, log,
                )?;
                conv::conv2d_backward(None, *w, *b, geometry, x_val, w_val, &grad, grads, log)?
            }
            _ => conv::conv2d_backward(*x, *w, *b, geometry, x_val, w_val, &grad, grads, log)?,
        },
        Op::MaxPool2d {
            x,
            geometry,
            argmax,
        } => pool::max_pool2d_backward(*x, geometry, argmax, &grad, grads, log),
        Op::Conv2dMaxPool2d {
            x,
            conv,
            pool,
            path,
            argmax,
            w_val,
        } => {
            let squares = (!options.sums_only).then_some(&mut squares[..]);
            let copies = fuse_copies.map(|target| (target, squares));
            let fused = conv::Fused {
                conv,
                pool,
                path: *path,
                argmax,
            };
            conv::conv2d_max_pool2d_backward(*x, copies, &fused, w_val, &grad, grads, log)?
        }
        Op::AvgPool2d { x, geometry } => pool::avg_pool2d_backward(*x, geometry, &grad, grads, log),
        Op::GlobalAvgPool { x, x_shape } => {
            pool::global_avg_pool_backward(*x, x_shape, &grad, grads)
        }
        Op::BatchNorm {
            x,
            gamma,
            beta,
            scale,
            x_hat,
        } => norm::batch_norm_backward(*x, *gamma, *beta, scale, x_hat, &grad, grads),
        Op::NoisyCopies { x, x_shape } => {
            let squares = (!options.sums_only).then_some(&mut squares[..]);
            log.record(if squares.is_some() {
                "reduce_copies"
            } else {
                "sum_copies"
            });
            copies::noisy_copies_backward(*x, x_shape, &grad, grads, squares)
        }
    }
    Ok(())
}
