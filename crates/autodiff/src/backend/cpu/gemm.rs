//! Strided matrix multiply on the packed, SIMD (AVX2/AVX-512/NEON) kernels of the `gemm` crate.

use crate::element::Float;

/// A read-only matrix view: element (i, j) is at `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major matrix with `cols` columns starting at `offset`.
    pub fn row_major(data: &'a [T], offset: usize, cols: usize) -> Self {
        MatRef {
            data,
            offset,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns (no copy).
    pub fn transposed(data: &'a [T], offset: usize, cols: usize) -> Self {
        MatRef {
            data,
            offset,
            row_stride: 1,
            col_stride: cols,
        }
    }
}

/// Whether and how many threads one multiply may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// Run on the calling thread (the caller already parallelises around the multiply).
    Single,
    /// Use the rayon pool.
    Pool,
}

/// `c[m×n] (row-major, leading dimension ldc, at c_offset) = beta·c + a[m×k]·b[k×n]`
/// where `beta` is 1 when `accumulate` and 0 otherwise.
///
/// # Panics
/// When a view reaches past its slice (an internal bug: callers size the buffers).
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    c_offset: usize,
    ldc: usize,
    accumulate: bool,
    threads: Threads,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[c_offset + i * ldc..c_offset + i * ldc + n].fill(T::zero());
            }
        }
        return;
    }
    let last = |v: &MatRef<'_, T>, rows: usize, cols: usize| {
        v.offset + (rows - 1) * v.row_stride + (cols - 1) * v.col_stride
    };
    assert!(
        last(&a, m, k) < a.data.len(),
        "matmul: lhs view out of bounds"
    );
    assert!(
        last(&b, k, n) < b.data.len(),
        "matmul: rhs view out of bounds"
    );
    assert!(
        c_offset + (m - 1) * ldc + n - 1 < c.len(),
        "matmul: output out of bounds"
    );
    let parallelism = match threads {
        Threads::Single => gemm::Parallelism::None,
        Threads::Pool if crate::parallel::is_serial() => gemm::Parallelism::None,
        Threads::Pool => gemm::Parallelism::Rayon(0),
    };
    // SAFETY: the three asserts above bound every element the views address; `c` is borrowed
    // mutably and cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr().add(c_offset),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_views_multiply_like_the_definition() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.11).cos()).collect(); // [n, k]
        let mut c = vec![1.0; m * n];
        matmul(
            m,
            n,
            k,
            MatRef::row_major(&a, 0, k),
            MatRef::transposed(&bt, 0, k),
            &mut c,
            0,
            n,
            true,
            Threads::Pool,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f64 = 1.0 + (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum::<f64>();
                assert!((c[i * n + j] - want).abs() < 1e-12);
            }
        }
    }
}
