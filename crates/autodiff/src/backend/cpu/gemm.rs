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
    if skinny(m, n, k, a, b, &mut c[c_offset..], ldc, accumulate, threads) {
        return;
    }
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

/// Products with contiguous rows of B, few rows of A and whole vectors of columns run on the
/// Winograd GEMM's register kernel (`wgemm`) instead: B is read in place (the `gemm` crate
/// would pack it on every call, which costs as much as the product when B is a layer's weights
/// or an im2col matrix multiplied once), A is packed into panels of 8 rows. Taken for f32 on
/// AVX-512 only (where that kernel runs at the FMA peak); false when not taken.
#[allow(clippy::too_many_arguments)]
fn skinny<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    threads: Threads,
) -> bool {
    use super::wgemm::{self, KR, Shape};
    if accumulate || b.col_stride != 1 || !skinny_applies::<T>(m, n) {
        return false;
    }
    // A as panels [m / KR][k][KR], rows past m zero.
    let mut up = vec![T::zero(); m.div_ceil(KR) * KR * k];
    for (p, panel) in up.chunks_exact_mut(KR * k).enumerate() {
        for r in 0..KR.min(m - p * KR) {
            let row = a.offset + (p * KR + r) * a.row_stride;
            for (kk, slot) in panel.iter_mut().skip(r).step_by(KR).enumerate() {
                *slot = a.data[row + kk * a.col_stride];
            }
        }
    }
    let shape = Shape {
        k: m,
        c: k,
        xi_n: 1,
        nt: n,
        vs: b.row_stride,
        v_xi: 0,
        ms: ldc,
        m_xi: 0,
    };
    let parallel = threads == Threads::Pool && !crate::parallel::is_serial();
    wgemm::multiply(shape, &up, &b.data[b.offset..], c, parallel);
    true
}

/// Most rows of A for [`skinny`]: its packed copy is made on every call.
const SKINNY_ROWS: usize = 256;

/// Whether [`skinny`] takes an `m × n` product (given contiguous rows of B, no accumulation).
fn skinny_applies<T: Float>(m: usize, n: usize) -> bool {
    super::wgemm::Kernel::pick::<T>() == super::wgemm::Kernel::Avx512
        && n.is_multiple_of(16)
        && n >= 32
        && m <= SKINNY_ROWS
}

/// `out[rows × out_f] = x[rows × in_f] · wᵀ` for row-major `x` and `w[out_f × in_f]` (a fully
/// connected layer's forward); `out` is overwritten. Where [`skinny`] applies, it multiplies by
/// Wᵀ kept transposed between calls (`derived`), so that neither this call nor the `gemm`
/// crate rearranges the weights; otherwise (or when the cache is full) the `gemm` crate reads
/// W transposed in place.
#[allow(clippy::too_many_arguments)]
pub fn linear_product<T: Float>(
    rows: usize,
    out_f: usize,
    in_f: usize,
    x: &[T],
    w: &[T],
    out: &mut [T],
    threads: Threads,
) {
    use super::derived::{self, Key};
    if skinny_applies::<T>(rows, out_f) && in_f > 0 {
        let key = Key::Transposed {
            rows: out_f,
            cols: in_f,
        };
        let w = &w[..out_f * in_f];
        let wt = derived::find(key, w).or_else(|| {
            derived::has_room(w, w.len()).then(|| {
                let mut wt = vec![T::zero(); w.len()];
                for (o, row) in w.chunks_exact(in_f).enumerate() {
                    for (i, &v) in row.iter().enumerate() {
                        wt[i * out_f + o] = v;
                    }
                }
                derived::keep(key, w, wt)
            })
        });
        if let Some(wt) = wt {
            let (a, b) = (
                MatRef::row_major(x, 0, in_f),
                MatRef::row_major(&wt, 0, out_f),
            );
            return matmul(rows, out_f, in_f, a, b, out, 0, out_f, false, threads);
        }
    }
    let (a, b) = (
        MatRef::row_major(x, 0, in_f),
        MatRef::transposed(w, 0, in_f),
    );
    matmul(rows, out_f, in_f, a, b, out, 0, out_f, false, threads);
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

    /// f32 products that take the skinny path on AVX-512 (and the `gemm` crate elsewhere):
    /// strided A, an output offset and a leading dimension past n, partial row panels; and
    /// the fully connected product with its cached transpose, twice, then with new weights.
    #[test]
    fn skinny_products_match_the_definition() {
        let near = |got: f32, want: f64| (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs());
        for &(m, n, k) in &[
            (1usize, 32usize, 1usize),
            (13, 48, 27),
            (25, 256, 300),
            (8, 64, 5),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..k * (n + 3))
                .map(|i| ((i * 5 % 19) as f32 - 9.0) / 5.0)
                .collect();
            let (ldc, off) = (n + 5, 3);
            let mut c = vec![f32::NAN; off + m * ldc];
            // A read transposed from a [k, m] buffer; B rows n + 3 apart.
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let a_view = MatRef::transposed(&at, 0, m);
            let b_view = MatRef::row_major(&b, 0, n + 3);
            matmul(
                m,
                n,
                k,
                a_view,
                b_view,
                &mut c,
                off,
                ldc,
                false,
                Threads::Single,
            );
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * b[p * (n + 3) + j] as f64)
                        .sum();
                    assert!(near(c[off + i * ldc + j], want), "{m}x{n}x{k} ({i},{j})");
                }
            }
        }
        let (rows, out_f, in_f) = (25, 64, 40);
        let x: Vec<f32> = (0..rows * in_f)
            .map(|i| ((i * 3 % 17) as f32 - 8.0) / 4.0)
            .collect();
        let mut w: Vec<f32> = (0..out_f * in_f)
            .map(|i| ((i * 11 % 29) as f32 - 14.0) / 9.0)
            .collect();
        for round in 0..3 {
            let mut y = vec![f32::NAN; rows * out_f];
            linear_product(rows, out_f, in_f, &x, &w, &mut y, Threads::Pool);
            for r in 0..rows {
                for o in 0..out_f {
                    let want: f64 = (0..in_f)
                        .map(|i| x[r * in_f + i] as f64 * w[o * in_f + i] as f64)
                        .sum();
                    assert!(near(y[r * out_f + o], want), "round {round} ({r},{o})");
                }
            }
            if round == 1 {
                w.iter_mut().for_each(|v| *v = 1.5 - *v);
            }
        }
    }
}
