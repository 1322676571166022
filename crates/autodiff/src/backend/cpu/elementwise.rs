//! Broadcasting elementwise kernels and reductions to a broadcast-compatible shape.

use crate::element::Float;
use crate::shape::Shape;

/// Calls `f(out_index, a_offset, b_offset)` for every element of `out` in row-major order, where
/// the offsets follow the (broadcast, possibly zero) strides `sa` and `sb`.
#[inline]
pub fn for_each_broadcast(
    out: &Shape,
    sa: &[usize],
    sb: &[usize],
    mut f: impl FnMut(usize, usize, usize),
) {
    let dims = out.dims();
    let rank = dims.len();
    if rank == 0 {
        f(0, 0, 0);
        return;
    }
    let inner = dims[rank - 1];
    let numel = out.numel();
    if inner == 0 || numel == 0 {
        return;
    }
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut index = vec![0usize; rank - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    for outer in 0..numel / inner {
        let base = outer * inner;
        for j in 0..inner {
            f(base + j, oa + j * ia, ob + j * ib);
        }
        for d in (0..rank - 1).rev() {
            index[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if index[d] < dims[d] {
                break;
            }
            oa -= sa[d] * dims[d];
            ob -= sb[d] * dims[d];
            index[d] = 0;
        }
    }
}

/// `f(a, b)` elementwise with numpy broadcasting; `out_shape` is the broadcast of both shapes.
pub fn broadcast_binary<T: Float>(
    a: &[T],
    a_shape: &Shape,
    b: &[T],
    b_shape: &Shape,
    out_shape: &Shape,
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    if a_shape == out_shape && b_shape == out_shape {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    if b.len() == 1 && a_shape == out_shape {
        let y = b[0];
        return a.iter().map(|&x| f(x, y)).collect();
    }
    if a.len() == 1 && b_shape == out_shape {
        let x = a[0];
        return b.iter().map(|&y| f(x, y)).collect();
    }
    let sa = a_shape.broadcast_strides(out_shape);
    let sb = b_shape.broadcast_strides(out_shape);
    let mut out = vec![T::zero(); out_shape.numel()];
    for_each_broadcast(out_shape, &sa, &sb, |o, ia, ib| out[o] = f(a[ia], b[ib]));
    out
}

/// Sums `g` (of shape `g_shape`) down to `target`, a shape that broadcasts to `g_shape`: the
/// backward of broadcasting, and the forward of `sum` over axes.
pub fn sum_to_shape<T: Float>(g: &[T], g_shape: &Shape, target: &Shape) -> Vec<T> {
    if g_shape == target {
        return g.to_vec();
    }
    let st = target.broadcast_strides(g_shape);
    let zeros = vec![0; g_shape.rank()];
    let mut out = vec![T::zero(); target.numel()];
    for_each_broadcast(g_shape, &st, &zeros, |o, it, _| out[it] += g[o]);
    out
}

/// Repeats `src` (of a shape that broadcasts to `out_shape`) to fill `out_shape`.
pub fn broadcast_to<T: Float>(src: &[T], src_shape: &Shape, out_shape: &Shape) -> Vec<T> {
    if src_shape == out_shape {
        return src.to_vec();
    }
    let ss = src_shape.broadcast_strides(out_shape);
    let zeros = vec![0; out_shape.rank()];
    let mut out = vec![T::zero(); out_shape.numel()];
    for_each_broadcast(out_shape, &ss, &zeros, |o, is, _| out[o] = src[is]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_adds_rows_and_columns() {
        let a = Shape::new(&[2, 1]).unwrap();
        let b = Shape::new(&[3]).unwrap();
        let out = Shape::new(&[2, 3]).unwrap();
        let r = broadcast_binary(&[10.0, 20.0], &a, &[1.0, 2.0, 3.0], &b, &out, |x, y| x + y);
        assert_eq!(r, vec![11.0, 12.0, 13.0, 21.0, 22.0, 23.0]);
        assert_eq!(sum_to_shape(&r, &out, &a), vec![36.0, 66.0]);
        assert_eq!(sum_to_shape(&r, &out, &b), vec![32.0, 34.0, 36.0]);
        assert_eq!(
            broadcast_to(&[1.0, 2.0], &a, &out),
            vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
    }
}
