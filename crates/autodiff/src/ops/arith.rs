//! Elementwise arithmetic with numpy broadcasting, scalar ops, exp and log.

use super::{Input, Op};
use crate::backend::cpu::elementwise::{broadcast_binary, sum_to_shape};
use crate::element::Float;
use crate::error::Result;
use crate::shape::Shape;
use crate::tape::{Tape, Var, accumulate};
use crate::tensor::Tensor;

impl<T: Float> Tape<T> {
    fn binary(
        &mut self,
        op_name: &'static str,
        a: &Var<T>,
        b: &Var<T>,
        f: impl Fn(T, T) -> T,
        make_op: impl FnOnce(Input, Input) -> Op<T>,
    ) -> Result<Var<T>> {
        let (ia, ib) = (self.input(a)?, self.input(b)?);
        let (sa, sb) = (a.value().shape(), b.value().shape());
        let out_shape = Shape::broadcast(op_name, sa, sb)?;
        let data = broadcast_binary(
            a.value().as_slice(),
            sa,
            b.value().as_slice(),
            sb,
            &out_shape,
            f,
        );
        let value = Tensor::from_parts(out_shape, data);
        Ok(self.result(ia.is_some() || ib.is_some(), value, || make_op(ia, ib)))
    }

    /// `a + b` with broadcasting.
    pub fn add(&mut self, a: &Var<T>, b: &Var<T>) -> Result<Var<T>> {
        let (a_shape, b_shape) = (a.value().shape().clone(), b.value().shape().clone());
        self.binary(
            "add",
            a,
            b,
            |x, y| x + y,
            |a, b| Op::Add {
                a,
                b,
                a_shape,
                b_shape,
            },
        )
    }

    /// `a - b` with broadcasting.
    pub fn sub(&mut self, a: &Var<T>, b: &Var<T>) -> Result<Var<T>> {
        let (a_shape, b_shape) = (a.value().shape().clone(), b.value().shape().clone());
        self.binary(
            "sub",
            a,
            b,
            |x, y| x - y,
            |a, b| Op::Sub {
                a,
                b,
                a_shape,
                b_shape,
            },
        )
    }

    /// `a * b` with broadcasting.
    pub fn mul(&mut self, a: &Var<T>, b: &Var<T>) -> Result<Var<T>> {
        let (a_val, b_val) = (a.value().clone(), b.value().clone());
        self.binary(
            "mul",
            a,
            b,
            |x, y| x * y,
            |a, b| Op::Mul { a, b, a_val, b_val },
        )
    }

    /// `a / b` with broadcasting.
    pub fn div(&mut self, a: &Var<T>, b: &Var<T>) -> Result<Var<T>> {
        let (a_val, b_val) = (a.value().clone(), b.value().clone());
        self.binary(
            "div",
            a,
            b,
            |x, y| x / y,
            |a, b| Op::Div { a, b, a_val, b_val },
        )
    }

    fn unary(
        &mut self,
        x: &Var<T>,
        f: impl Fn(T) -> T,
        make_op: impl FnOnce(Input, &Tensor<T>) -> Op<T>,
    ) -> Result<Var<T>> {
        let ix = self.input(x)?;
        let value = x.value().map(f);
        let op_value = value.clone();
        Ok(self.result(ix.is_some(), value, || make_op(ix, &op_value)))
    }

    /// `x + c`.
    pub fn add_scalar(&mut self, x: &Var<T>, c: f64) -> Result<Var<T>> {
        let c = T::from_f64(c);
        self.unary(x, |v| v + c, |x, _| Op::AddScalar { x })
    }

    /// `x * c`.
    pub fn mul_scalar(&mut self, x: &Var<T>, c: f64) -> Result<Var<T>> {
        let c = T::from_f64(c);
        self.unary(x, |v| v * c, |x, _| Op::MulScalar { x, c })
    }

    /// `x ^ p` elementwise.
    pub fn pow_scalar(&mut self, x: &Var<T>, p: f64) -> Result<Var<T>> {
        let p = T::from_f64(p);
        let x_val = x.value().clone();
        self.unary(x, |v| v.powf(p), |x, _| Op::PowScalar { x, p, x_val })
    }

    /// `exp(x)` elementwise.
    pub fn exp(&mut self, x: &Var<T>) -> Result<Var<T>> {
        self.unary(
            x,
            |v| v.exp(),
            |x, out| Op::Exp {
                x,
                out: out.clone(),
            },
        )
    }

    /// Natural logarithm elementwise.
    pub fn log(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let x_val = x.value().clone();
        self.unary(x, |v| v.ln(), |x, _| Op::Log { x, x_val })
    }
}

/// `grad` reduced to `shape` (the backward of broadcasting).
fn reduce_to<T: Float>(grad: &Tensor<T>, shape: &Shape) -> Tensor<T> {
    Tensor::from_parts(
        shape.clone(),
        sum_to_shape(grad.as_slice(), grad.shape(), shape),
    )
}

/// `g ⊙ other` (other broadcast to g's shape), reduced to `target`.
fn scaled_reduce<T: Float>(
    grad: &Tensor<T>,
    other: &Tensor<T>,
    target: &Shape,
    f: impl Fn(T, T) -> T,
) -> Tensor<T> {
    let prod = broadcast_binary(
        grad.as_slice(),
        grad.shape(),
        other.as_slice(),
        other.shape(),
        grad.shape(),
        f,
    );
    Tensor::from_parts(target.clone(), sum_to_shape(&prod, grad.shape(), target))
}

pub(super) fn add_backward<T: Float>(
    a: Input,
    b: Input,
    a_shape: &Shape,
    b_shape: &Shape,
    grad: &Tensor<T>,
    negate_b: bool,
    grads: &mut [Option<Tensor<T>>],
) {
    if let Some(a) = a {
        accumulate(grads, a, reduce_to(grad, a_shape));
    }
    if let Some(b) = b {
        let mut gb = reduce_to(grad, b_shape);
        if negate_b {
            gb.data_mut().iter_mut().for_each(|v| *v = -*v);
        }
        accumulate(grads, b, gb);
    }
}

pub(super) fn mul_backward<T: Float>(
    a: Input,
    b: Input,
    a_val: &Tensor<T>,
    b_val: &Tensor<T>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    if let Some(a) = a {
        accumulate(
            grads,
            a,
            scaled_reduce(grad, b_val, a_val.shape(), |g, y| g * y),
        );
    }
    if let Some(b) = b {
        accumulate(
            grads,
            b,
            scaled_reduce(grad, a_val, b_val.shape(), |g, x| g * x),
        );
    }
}

pub(super) fn div_backward<T: Float>(
    a: Input,
    b: Input,
    a_val: &Tensor<T>,
    b_val: &Tensor<T>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    if let Some(a) = a {
        accumulate(
            grads,
            a,
            scaled_reduce(grad, b_val, a_val.shape(), |g, y| g / y),
        );
    }
    if let Some(b) = b {
        // d(a/b)/db = -a / b^2, formed at the broadcast shape before reducing.
        let out_shape = grad.shape();
        let a_over_b2 = broadcast_binary(
            a_val.as_slice(),
            a_val.shape(),
            b_val.as_slice(),
            b_val.shape(),
            out_shape,
            |x, y| x / (y * y),
        );
        let prod: Vec<T> = grad
            .as_slice()
            .iter()
            .zip(&a_over_b2)
            .map(|(&g, &q)| -g * q)
            .collect();
        accumulate(
            grads,
            b,
            Tensor::from_parts(
                b_val.shape().clone(),
                sum_to_shape(&prod, out_shape, b_val.shape()),
            ),
        );
    }
}

pub(super) fn pass_through<T: Float>(x: Input, grad: Tensor<T>, grads: &mut [Option<Tensor<T>>]) {
    if let Some(x) = x {
        accumulate(grads, x, grad);
    }
}

pub(super) fn mul_scalar_backward<T: Float>(
    x: Input,
    c: T,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    if let Some(x) = x {
        accumulate(grads, x, grad.map(|g| g * c));
    }
}

fn zip_map<T: Float>(a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T) -> Tensor<T> {
    Tensor::from_parts(
        a.shape().clone(),
        a.as_slice()
            .iter()
            .zip(b.as_slice())
            .map(|(&x, &y)| f(x, y))
            .collect(),
    )
}

pub(super) fn pow_scalar_backward<T: Float>(
    x: Input,
    p: T,
    x_val: &Tensor<T>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    if let Some(x) = x {
        let pm1 = p - T::one();
        accumulate(grads, x, zip_map(grad, x_val, |g, v| g * p * v.powf(pm1)));
    }
}

pub(super) fn exp_backward<T: Float>(
    x: Input,
    out: &Tensor<T>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    if let Some(x) = x {
        accumulate(grads, x, zip_map(grad, out, |g, y| g * y));
    }
}

pub(super) fn log_backward<T: Float>(
    x: Input,
    x_val: &Tensor<T>,
    grad: &Tensor<T>,
    grads: &mut [Option<Tensor<T>>],
) {
    if let Some(x) = x {
        accumulate(grads, x, zip_map(grad, x_val, |g, v| g / v));
    }
}
