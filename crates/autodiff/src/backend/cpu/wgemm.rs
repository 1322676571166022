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

/// The shapes and strides of one batch of GEMMs `M[ξ] = U[ξ] · V[ξ]`, ξ < `xi_n`.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    /// Rows of M (output channels) K, depth C, columns of V and M (tiles) T.
    pub k: usize,
    pub c: usize,
    pub xi_n: usize,
    pub nt: usize,
    /// V: row c of ξ starts at `ξ·v_xi + c·vs`.
    pub vs: usize,
    pub v_xi: usize,
    /// M: row k of ξ starts at `k·ms + ξ·m_xi`.
    pub ms: usize,
    pub m_xi: usize,
}

/// `m[k·ms + ξ·m_xi + j] = Σ_c up[ξ][k / KR][c][k % KR] · v[ξ·v_xi + c·vs + j]` for every ξ,
/// k < K and j < T. The kernels work in whole vectors: they read V's rows and write M's rows
/// up to T rounded up to a vector, which must lie inside each row (`vs`, `m_xi` when there are
/// several ξ, and `ms`). With `parallel`, the panels of rows are spread over the rayon pool.
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
    if s.k == 0 || s.nt == 0 || s.xi_n == 0 {
        return;
    }
    let end = s.nt.div_ceil(lanes::<T>()) * lanes::<T>();
    let m_row = (s.xi_n - 1) * s.m_xi + end;
    assert!(
        end <= s.vs && m_row <= s.ms && (s.xi_n == 1 || end <= s.m_xi),
        "wgemm: rows too short for whole vectors over {} columns",
        s.nt
    );
    assert!(up.len() >= packed_len(s.k, s.c, s.xi_n), "wgemm: packed U");
    assert!(
        s.c == 0 || v.len() >= (s.xi_n - 1) * s.v_xi + (s.c - 1) * s.vs + end,
        "wgemm: V"
    );
    assert!(m.len() >= (s.k - 1) * s.ms + m_row, "wgemm: M");
    let m = &mut m[..(s.k - 1) * s.ms + m_row];
    let n_panels = s.k.div_ceil(KR);
    if parallel && n_panels > 1 {
        m.par_chunks_mut(KR * s.ms)
            .enumerate()
            .for_each(|(p, m_p)| panels(kernel, &s, up, v, m_p, p..p + 1));
    } else {
        panels(kernel, &s, up, v, m, 0..n_panels);
    }
}

/// Which register kernel runs: AVX-512 or AVX2 intrinsics for f32, or the portable loops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kernel {
    Avx512,
    Avx2,
    Portable,
}

impl Kernel {
    pub(super) fn pick<T: Float>() -> Kernel {
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

/// The rows of the output-channel panels `range` (M from the first one's first row, `m_p`)
/// for every ξ.
fn panels<T: Float>(
    kernel: Kernel,
    s: &Shape,
    up: &[T],
    v: &[T],
    m_p: &mut [T],
    range: std::ops::Range<usize>,
) {
    let panel_len = KR * s.c;
    let per_xi = s.k.div_ceil(KR) * panel_len;
    let end = s.nt.div_ceil(lanes::<T>()) * lanes::<T>();
    for xi in 0..s.xi_n {
        let up_r = &up[xi * per_xi + range.start * panel_len..][..range.len() * panel_len];
        let v_xi = &v[xi * s.v_xi..];
        let m_xi = &mut m_p[xi * s.m_xi..];
        let g = Geometry {
            c: s.c,
            vs: s.vs,
            nt: s.nt,
            ms: s.ms,
            rows: (s.k - range.start * KR).min(range.len() * KR),
        };
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 | Kernel::Avx2 => {
                // SAFETY: T is f32 (`Kernel::pick`), so the casts reinterpret f32 slices as
                // themselves; the CPU has the kernel's extensions (checked in `pick`); the
                // kernels check their bounds against `g`.
                unsafe {
                    let cast =
                        |a: &[T]| std::slice::from_raw_parts(a.as_ptr().cast::<f32>(), a.len());
                    let (up_r, v_xi) = (cast(up_r), cast(v_xi));
                    let m_xi =
                        std::slice::from_raw_parts_mut(m_xi.as_mut_ptr().cast::<f32>(), m_xi.len());
                    if kernel == Kernel::Avx512 {
                        x86::panels_avx512(up_r, v_xi, m_xi, &g);
                    } else {
                        x86::panels_avx2(up_r, v_xi, m_xi, &g);
                    }
                }
            }
            _ => portable(up_r, v_xi, m_xi, &g, end),
        }
    }
}

/// What a kernel needs of a run of panels: depth, V's row stride, columns, M's row stride,
/// and the rows of M the panels cover (the last panel may have fewer than KR).
pub(super) struct Geometry {
    c: usize,
    vs: usize,
    nt: usize,
    ms: usize,
    rows: usize,
}

impl Geometry {
    /// Panics unless `up`, `v` and `m` hold what the panels read and write with whole
    /// vectors of `vec` lanes.
    fn check<T>(&self, up: &[T], v: &[T], m: &[T], vec: usize) {
        let end = self.nt.div_ceil(vec) * vec;
        assert!(
            up.len() >= self.rows.div_ceil(KR) * self.c * KR,
            "wgemm panels: U"
        );
        assert!(
            self.c == 0 || v.len() >= (self.c - 1) * self.vs + end,
            "wgemm panels: V"
        );
        assert!(
            self.rows == 0 || m.len() >= (self.rows - 1) * self.ms + end,
            "wgemm panels: M"
        );
    }
}

multiversion! {
    /// The portable kernel: one row of output channels at a time over vectors of tiles.
    fn portable = portable_impl(up_p: &[T], v: &[T], m: &mut [T], g: &Geometry, end: usize)
}

#[inline(always)]
fn portable_impl<T: Float>(up: &[T], v: &[T], m: &mut [T], g: &Geometry, end: usize) {
    g.check(up, v, m, end.max(1));
    for r in 0..g.rows {
        let u = &up[r / KR * KR * g.c..][..KR * g.c];
        let out = &mut m[r * g.ms..][..end];
        out.fill(T::zero());
        for ci in 0..g.c {
            let w = u[ci * KR + r % KR];
            for (o, &x) in out.iter_mut().zip(&v[ci * g.vs..][..end]) {
                *o = w.mul_add(x, *o);
            }
        }
    }
}

/// The f32 register kernels: KR rows of M times NV vectors of tiles in registers through all
/// input channels, each channel one vector load of V per vector and one broadcast of U per row.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Geometry, KR};
    use std::arch::x86_64::*;

    /// The panels over all tiles: three vectors (48 tiles) at a time, then the remaining one
    /// or two; for each such strip of V (in L1) every panel in turn.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panels_avx512(up: &[f32], v: &[f32], m: &mut [f32], g: &Geometry) {
        g.check(up, v, m, 16);
        let mut j0 = 0;
        while j0 < g.nt {
            let nv = (g.nt - j0).div_ceil(16).min(3);
            // Each panel's KR rows in halves of HALF: 3·HALF accumulators with 3 loads and
            // HALF broadcasts per input channel ran 2–4% faster on `small`'s block shapes than
            // all KR rows at once (24 accumulators) in isolation; inside `small`'s explanation,
            // where V comes from L2, 107.3 → 108.0 GFLOP/s per thread (six alternations).
            for p in 0..g.rows.div_ceil(KR) {
                let rows = (g.rows - p * KR).min(KR);
                for h in (0..rows).step_by(HALF) {
                    let (u, out) = (&up[p * KR * g.c + h..], &mut m[(p * KR + h) * g.ms..]);
                    let rows = (rows - h).min(HALF);
                    // SAFETY: tiles j0 .. j0 + 16·nv ≤ nt rounded up to 16, rows p·KR + h +
                    // rows ≤ g.rows: inside what `check` bounded.
                    unsafe {
                        match nv {
                            1 => block512::<1>(u, v, out, g, j0, rows),
                            2 => block512::<2>(u, v, out, g, j0, rows),
                            _ => block512::<3>(u, v, out, g, j0, rows),
                        }
                    }
                }
            }
            j0 += 16 * nv;
        }
    }

    /// Rows of a panel the AVX-512 kernel keeps in registers at a time.
    const HALF: usize = KR / 2;

    /// Columns j0 .. j0 + 16·NV of `rows` ≤ HALF rows of M from `m`, whose multipliers for
    /// input channel ci are `up[ci·KR ..]` (a panel's, from the first of these rows).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block512<const NV: usize>(
        up: &[f32],
        v: &[f32],
        m: &mut [f32],
        g: &Geometry,
        j0: usize,
        rows: usize,
    ) {
        // SAFETY: the caller bounds every row read and written (see `panels_avx512`).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; HALF];
            let (u, x) = (up.as_ptr(), v.as_ptr().add(j0));
            for ci in 0..g.c {
                // (Loops, not closures: a closure would be compiled without AVX-512.)
                let mut xs = [_mm512_setzero_ps(); NV];
                for (q, xq) in xs.iter_mut().enumerate() {
                    *xq = _mm512_loadu_ps(x.add(ci * g.vs + 16 * q));
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*u.add(ci * KR + r));
                    for (a, &xq) in acc_r.iter_mut().zip(&xs) {
                        *a = _mm512_fmadd_ps(w, xq, *a);
                    }
                }
            }
            let out = m.as_mut_ptr().add(j0);
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                for (q, &a) in acc_r.iter().enumerate() {
                    _mm512_storeu_ps(out.add(r * g.ms + 16 * q), a);
                }
            }
        }
    }

    /// The same with AVX2 + FMA: one vector (8 tiles) per step, so that the KR accumulators,
    /// the loaded vector and the broadcast fit in 16 registers.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panels_avx2(up: &[f32], v: &[f32], m: &mut [f32], g: &Geometry) {
        g.check(up, v, m, 8);
        for j0 in (0..g.nt).step_by(8) {
            for p in 0..g.rows.div_ceil(KR) {
                let rows = (g.rows - p * KR).min(KR);
                // SAFETY: tiles j0 .. j0 + 8 ≤ nt rounded up to 8, rows inside g.rows
                // (checked).
                unsafe {
                    let u = up.as_ptr().add(p * KR * g.c);
                    let mut acc = [_mm256_setzero_ps(); KR];
                    let x = v.as_ptr().add(j0);
                    for ci in 0..g.c {
                        let xv = _mm256_loadu_ps(x.add(ci * g.vs));
                        for (r, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(_mm256_set1_ps(*u.add(ci * KR + r)), xv, *a);
                        }
                    }
                    let out = m.as_mut_ptr().add(p * KR * g.ms + j0);
                    for (r, &a) in acc.iter().enumerate().take(rows) {
                        _mm256_storeu_ps(out.add(r * g.ms), a);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    /// The layout of a Winograd block: V[ξ][c][j], M[k][ξ][j], rows of `ts`.
    fn winograd_shape(k: usize, c: usize, xi_n: usize, nt: usize, ts: usize) -> Shape {
        Shape {
            k,
            c,
            xi_n,
            nt,
            vs: ts,
            v_xi: c * ts,
            ms: xi_n * ts,
            m_xi: ts,
        }
    }

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
            let s = winograd_shape(k, c, xi_n, nt, ts);
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
        let s = winograd_shape(k, c, xi_n, nt, ts);
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
