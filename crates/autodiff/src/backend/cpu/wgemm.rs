//! The GEMMs of a Winograd block: `M[ξ] (K×T) = U[ξ] (K×C) · V[ξ] (C×T)` for every patch
//! element ξ, on a register-blocked kernel made for their shape.
//!
//! The general `gemm` crate packs both operands on every call. Here neither needs it: V comes
//! out of the input transform already as C rows of contiguous tiles per ξ (`v[(ξ·C + c)·ts +
//! j]`), which is the layout a kernel that keeps tiles in vector lanes reads anyway; and U is
//! packed once per convolution into panels of [`KR`] output channels, `up[ξ][panel][c][r]`, so
//! that a panel's multipliers for one input channel are [`KR`] consecutive values to
//! broadcast. The kernel keeps a `KR × L` block of M (L tiles: three vectors) in registers
//! while it runs over all C input channels — per channel, L/lanes vector loads of V and KR
//! broadcasts of U feed KR·L/lanes fused multiply-adds — and stores the block once. Its depth
//! (32–128 input channels on the benchmark models) is the whole reduction, so nothing is
//! accumulated through memory.
//!
//! Loop order: ξ, then panels of L tiles (the C×L slice of V stays in L1 across every panel of
//! output channels), then the panels of output channels (U[ξ] is C·K values, in L1/L2).
//!
//! Summation order per element: input channels ascending, each a fused multiply-add.

use super::simd::multiversion;
use crate::element::{DType, Float};
use rayon::prelude::*;

/// Output channels per register block.
pub(super) const KR: usize = 8;

/// Lanes of one vector of `T` at 512 bits.
fn lanes<T>() -> usize {
    64 / std::mem::size_of::<T>().max(1)
}

/// Length of the packed weights for `k` output channels, `c` input channels and `xi_n` patch
/// elements.
pub(super) fn packed_len(k: usize, c: usize, xi_n: usize) -> usize {
    xi_n * k.div_ceil(KR) * KR * c
}

/// Packs `u[k][ξ][c]` (row k holds `xi_n·c` values) into `up[ξ][panel][c][r]` with output
/// channel `panel·KR + r`; the rows past `k` in the last panel are zero.
pub(super) fn pack_u<T: Float>(u: &[T], k: usize, c: usize, xi_n: usize, up: &mut [T]) {
    let panels = k.div_ceil(KR);
    let up = &mut up[..packed_len(k, c, xi_n)];
    up.par_chunks_mut(panels * KR * c)
        .enumerate()
        .for_each(|(xi, up_xi)| {
            for (p, panel) in up_xi.chunks_exact_mut(KR * c).enumerate() {
                for (ci, lane) in panel.chunks_exact_mut(KR).enumerate() {
                    for (r, slot) in lane.iter_mut().enumerate() {
                        let row = p * KR + r;
                        *slot = if row < k {
                            u[(row * xi_n + xi) * c + ci]
                        } else {
                            T::zero()
                        };
                    }
                }
            }
        });
}

/// The shapes of one block's GEMMs.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    /// Output channels K, input channels C, patch elements A².
    pub k: usize,
    pub c: usize,
    pub xi_n: usize,
    /// Tiles of the block T, and the row stride of V and M (≥ T rounded up to a whole vector).
    pub nt: usize,
    pub ts: usize,
}

/// `m[k][ξ][j] = Σ_c up[ξ][k / KR][c][k % KR] · v[ξ][c][j]` for every ξ, k < K and j < T (M's
/// rows are `xi_n·ts` long; the kernel also writes its columns T … T rounded up to a vector,
/// inside each row's stride). With `parallel`, the panels of output channels are spread over
/// the rayon pool.
pub(super) fn multiply<T: Float>(s: Shape, up: &[T], v: &[T], m: &mut [T], parallel: bool) {
    multiply_with(Kernel::pick::<T>(), s, up, v, m, parallel);
}

fn multiply_with<T: Float>(
    kernel: Kernel,
    s: Shape,
    up: &[T],
    v: &[T],
    m: &mut [T],
    parallel: bool,
) {
    let vec = lanes::<T>();
    assert!(
        s.nt.div_ceil(vec) * vec <= s.ts,
        "wgemm: row stride {} leaves no room for whole vectors over {} tiles",
        s.ts,
        s.nt
    );
    assert!(up.len() >= packed_len(s.k, s.c, s.xi_n), "wgemm: packed U");
    assert!(v.len() >= s.xi_n * s.c * s.ts, "wgemm: V");
    assert!(m.len() >= s.k * s.xi_n * s.ts, "wgemm: M");
    let m = &mut m[..s.k * s.xi_n * s.ts];
    let rows = KR * s.xi_n * s.ts;
    if parallel && s.k > KR {
        m.par_chunks_mut(rows)
            .enumerate()
            .for_each(|(p, m_p)| panels(kernel, &s, up, v, m_p, p));
    } else {
        for (p, m_p) in m.chunks_mut(rows).enumerate() {
            panels(kernel, &s, up, v, m_p, p);
        }
    }
}

/// Which register kernel runs: AVX-512 or AVX2 intrinsics for f32, or the portable loops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    Avx512,
    Avx2,
    Portable,
}

impl Kernel {
    fn pick<T: Float>() -> Kernel {
        if T::DTYPE != DType::F32 {
            return Kernel::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// The block of output-channel panel `p` (its rows `m_p`, up to KR of them) for every ξ.
fn panels<T: Float>(kernel: Kernel, s: &Shape, up: &[T], v: &[T], m_p: &mut [T], p: usize) {
    let row = s.xi_n * s.ts;
    let k_rows = m_p.len() / row;
    let panel_len = KR * s.c;
    let per_xi = s.k.div_ceil(KR) * panel_len;
    // The last column a kernel may write in a row: T rounded up to its widest step's vectors.
    let end = s.nt.div_ceil(lanes::<T>()) * lanes::<T>();
    for xi in 0..s.xi_n {
        let up_p = &up[xi * per_xi + p * panel_len..][..panel_len];
        let v_xi = &v[xi * s.c * s.ts..][..s.c * s.ts];
        let m_xi = &mut m_p[xi * s.ts..];
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 | Kernel::Avx2 => {
                // SAFETY: T is f32 (`Kernel::pick`), so the casts reinterpret f32 slices as
                // themselves; the CPU has the kernel's extensions (checked in `pick`); every
                // access stays inside the slices: V rows are `ts` long and read up to `end` ≤ ts
                // (asserted in `multiply`), M rows likewise, `k_rows` rows of `row` each.
                unsafe {
                    let cast =
                        |a: &[T]| std::slice::from_raw_parts(a.as_ptr().cast::<f32>(), a.len());
                    let (up_p, v_xi) = (cast(up_p), cast(v_xi));
                    let m_xi =
                        std::slice::from_raw_parts_mut(m_xi.as_mut_ptr().cast::<f32>(), m_xi.len());
                    if kernel == Kernel::Avx512 {
                        x86::panel_avx512(up_p, v_xi, s.c, s.ts, s.nt, m_xi, row, k_rows);
                    } else {
                        x86::panel_avx2(up_p, v_xi, s.c, s.ts, s.nt, m_xi, row, k_rows);
                    }
                }
            }
            _ => portable(up_p, v_xi, s.c, s.ts, end, m_xi, row, k_rows),
        }
    }
}

multiversion! {
    /// The portable kernel: one row of output channels at a time over vectors of tiles.
    fn portable = portable_impl(
        up_p: &[T],
        v_xi: &[T],
        c: usize,
        ts: usize,
        end: usize,
        m_xi: &mut [T],
        row: usize,
        k_rows: usize,
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn portable_impl<T: Float>(
    up_p: &[T],
    v_xi: &[T],
    c: usize,
    ts: usize,
    end: usize,
    m_xi: &mut [T],
    row: usize,
    k_rows: usize,
) {
    for r in 0..k_rows {
        let out = &mut m_xi[r * row..][..end];
        out.fill(T::zero());
        for (ci, v_c) in v_xi.chunks_exact(ts).take(c).enumerate() {
            let w = up_p[ci * KR + r];
            for (o, &x) in out.iter_mut().zip(&v_c[..end]) {
                *o = w.mul_add(x, *o);
            }
        }
    }
}

/// The f32 register kernels: KR rows of M times NV vectors of tiles in registers through all
/// input channels, each channel one vector load of V per vector and one broadcast of U per row.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::KR;
    use std::arch::x86_64::*;

    /// One output-channel panel over all tiles: three vectors (48 tiles) at a time, then the
    /// remaining one or two.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `v` holds `c` rows of `ts` and `m` `k_rows` rows of `row` from
    /// its start, with `nt` rounded up to 16 ≤ `ts` and ≤ `row`; `up` holds `c·KR` values.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panel_avx512(
        up: &[f32],
        v: &[f32],
        c: usize,
        ts: usize,
        nt: usize,
        m: &mut [f32],
        row: usize,
        k_rows: usize,
    ) {
        assert!(up.len() >= c * KR && v.len() >= c.saturating_sub(1) * ts + nt.div_ceil(16) * 16);
        assert!(k_rows <= KR && m.len() >= k_rows.saturating_sub(1) * row + nt.div_ceil(16) * 16);
        let mut j0 = 0;
        while j0 < nt {
            // SAFETY: tiles j0 .. j0 + 16·NV ≤ nt rounded up to 16 (the asserts above bound
            // every row read and written).
            unsafe {
                j0 += match (nt - j0).div_ceil(16) {
                    1 => block512::<1>(up, v, c, ts, j0, m, row, k_rows),
                    2 => block512::<2>(up, v, c, ts, j0, m, row, k_rows),
                    _ => block512::<3>(up, v, c, ts, j0, m, row, k_rows),
                };
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block512<const NV: usize>(
        up: &[f32],
        v: &[f32],
        c: usize,
        ts: usize,
        j0: usize,
        m: &mut [f32],
        row: usize,
        k_rows: usize,
    ) -> usize {
        // SAFETY: the caller bounds every row read and written (see `panel_avx512`).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; KR];
            let (u, x) = (up.as_ptr(), v.as_ptr().add(j0));
            for ci in 0..c {
                // (Loops, not closures: a closure would be compiled without AVX-512.)
                let mut xs = [_mm512_setzero_ps(); NV];
                for (q, xq) in xs.iter_mut().enumerate() {
                    *xq = _mm512_loadu_ps(x.add(ci * ts + 16 * q));
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*u.add(ci * KR + r));
                    for (a, &xq) in acc_r.iter_mut().zip(&xs) {
                        *a = _mm512_fmadd_ps(w, xq, *a);
                    }
                }
            }
            let out = m.as_mut_ptr().add(j0);
            for (r, acc_r) in acc.iter().enumerate().take(k_rows) {
                for (q, &a) in acc_r.iter().enumerate() {
                    _mm512_storeu_ps(out.add(r * row + 16 * q), a);
                }
            }
        }
        16 * NV
    }

    /// The same with AVX2 + FMA: one vector (8 tiles) per step, so that the KR accumulators,
    /// the loaded vector and the broadcast fit in 16 registers.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; sizes as [`panel_avx512`] with 8 for 16.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panel_avx2(
        up: &[f32],
        v: &[f32],
        c: usize,
        ts: usize,
        nt: usize,
        m: &mut [f32],
        row: usize,
        k_rows: usize,
    ) {
        assert!(up.len() >= c * KR && v.len() >= c.saturating_sub(1) * ts + nt.div_ceil(8) * 8);
        assert!(k_rows <= KR && m.len() >= k_rows.saturating_sub(1) * row + nt.div_ceil(8) * 8);
        let u = up.as_ptr();
        for j0 in (0..nt).step_by(8) {
            // SAFETY: tiles j0 .. j0 + 8 ≤ nt rounded up to 8 (asserted above).
            unsafe {
                let mut acc = [_mm256_setzero_ps(); KR];
                let x = v.as_ptr().add(j0);
                for ci in 0..c {
                    let xv = _mm256_loadu_ps(x.add(ci * ts));
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_set1_ps(*u.add(ci * KR + r)), xv, *a);
                    }
                }
                let out = m.as_mut_ptr().add(j0);
                for (r, &a) in acc.iter().enumerate().take(k_rows) {
                    _mm256_storeu_ps(out.add(r * row), a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn data(len: usize, seed: u64) -> Vec<f64> {
        Tensor::<f64>::randn(&[len], seed).unwrap().into_vec()
    }

    /// Every output element against the definition, for channel counts that leave a partial
    /// panel and tile counts that leave one or two vectors, serial and parallel.
    #[test]
    fn multiply_matches_the_definition() {
        for &(k, c, xi_n, nt) in &[
            (8usize, 1usize, 1usize, 1usize),
            (13, 5, 4, 37),
            (32, 32, 16, 256),
            (20, 7, 36, 50),
            (3, 64, 16, 9),
        ] {
            let ts = nt.div_ceil(16) * 16 + 16;
            let u = data(k * xi_n * c, 1);
            let v = data(xi_n * c * ts, 2);
            let mut up = vec![f64::NAN; packed_len(k, c, xi_n)];
            pack_u(&u, k, c, xi_n, &mut up);
            let s = Shape { k, c, xi_n, nt, ts };
            for parallel in [false, true] {
                let mut m = vec![f64::NAN; k * xi_n * ts];
                multiply(s, &up, &v, &mut m, parallel);
                for ki in 0..k {
                    for xi in 0..xi_n {
                        for j in 0..nt {
                            let want: f64 = (0..c)
                                .map(|ci| u[(ki * xi_n + xi) * c + ci] * v[(xi * c + ci) * ts + j])
                                .sum();
                            let got = m[(ki * xi_n + xi) * ts + j];
                            assert!(
                                (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                                "k={k} c={c} ξ={xi_n} nt={nt}: ({ki},{xi},{j}) {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// f32: every kernel this CPU can run gives an f64 product's values within the rounding of
    /// C fused steps.
    #[test]
    fn multiply_f32_is_close_to_f64() {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                kernels.push(Kernel::Avx2);
            }
        }
        assert_eq!(Kernel::pick::<f64>(), Kernel::Portable);
        for kernel in kernels {
            f32_kernel_is_close_to_f64(kernel);
        }
    }

    fn f32_kernel_is_close_to_f64(kernel: Kernel) {
        let (k, c, xi_n, nt) = (24, 48, 16, 100);
        let ts = nt + 16 + 16;
        let u = data(k * xi_n * c, 3);
        let v = data(xi_n * c * ts, 4);
        let (u32s, v32s): (Vec<f32>, Vec<f32>) = (
            u.iter().map(|&a| a as f32).collect(),
            v.iter().map(|&a| a as f32).collect(),
        );
        let mut up = vec![0.0f32; packed_len(k, c, xi_n)];
        pack_u(&u32s, k, c, xi_n, &mut up);
        let mut m = vec![f32::NAN; k * xi_n * ts];
        let s = Shape { k, c, xi_n, nt, ts };
        multiply_with(kernel, s, &up, &v32s, &mut m, false);
        for ki in 0..k {
            for xi in 0..xi_n {
                for j in 0..nt {
                    let want: f64 = (0..c)
                        .map(|ci| {
                            u32s[(ki * xi_n + xi) * c + ci] as f64
                                * v32s[(xi * c + ci) * ts + j] as f64
                        })
                        .sum();
                    let got = m[(ki * xi_n + xi) * ts + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{kernel:?} ({ki},{xi},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
