//! The Winograd input and output transforms for f32 on AVX-512, one pass each.
//!
//! The portable transforms (in `winograd.rs`) stream each channel through five passes over
//! scratch (padded rows, column phases, horizontal Bᵀ, vertical Bᵀ, a move per tile row into
//! V) so that plain loops vectorise. Here the tiles of one tile row sit in the 16 lanes of a
//! register: for 16 tiles, each of the A padded input rows is loaded straight from the input
//! plane (masked loads stand in for the zero padding), split into its A patch columns with
//! lane permutations, transformed horizontally, then vertically, and the A² results are
//! stored into V with masked stores — no scratch. The output transform likewise loads the A²
//! GEMM results of 16 tiles, applies Aᵀ both ways, adds the bias, interleaves each output row's
//! M columns per tile with permutations and stores it into the output with masked stores.
//!
//! Arithmetic is the portable path's, in the same order, through [`Lane`] (no fused
//! multiply-adds): both paths give the same bits (test `x86_transforms_match_portable`).

use super::{Lane, OutPtr, Problem, Tiles, Variant};
use std::arch::x86_64::*;

/// 16 f32 lanes.
#[derive(Clone, Copy)]
pub(super) struct Z(__m512);

impl std::ops::Add for Z {
    type Output = Z;
    #[inline(always)]
    fn add(self, o: Z) -> Z {
        // SAFETY: only reached from the `avx512f` functions of this module (Z is private to
        // it), whose callers checked the CPU.
        Z(unsafe { _mm512_add_ps(self.0, o.0) })
    }
}

impl std::ops::Sub for Z {
    type Output = Z;
    #[inline(always)]
    fn sub(self, o: Z) -> Z {
        // SAFETY: as `add`.
        Z(unsafe { _mm512_sub_ps(self.0, o.0) })
    }
}

impl std::ops::Mul for Z {
    type Output = Z;
    #[inline(always)]
    fn mul(self, o: Z) -> Z {
        // SAFETY: as `add`.
        Z(unsafe { _mm512_mul_ps(self.0, o.0) })
    }
}

impl Lane for Z {
    #[inline(always)]
    fn splat(v: f64) -> Z {
        // SAFETY: as `add`.
        Z(unsafe { _mm512_set1_ps(v as f32) })
    }
}

/// Whether this CPU runs the kernels of this module.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// Lanes l < 16 with 0 ≤ start + l < len, as a mask.
#[inline(always)]
fn in_range(start: isize, len: usize) -> u16 {
    let lo = (-start).clamp(0, 16);
    let hi = (len as isize - start).clamp(0, 16);
    if hi <= lo {
        0
    } else {
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
    }
}

/// The first `n` (≤ 16) lanes.
#[inline(always)]
fn first(n: usize) -> u16 {
    ((1u32 << n.min(16)) - 1) as u16
}

/// Lane indices 0, s, 2s, … (16 of them) plus `add`, for two-source permutations.
#[inline(always)]
unsafe fn stride_index(s: i32, add: i32) -> __m512i {
    let i: [i32; 16] = std::array::from_fn(|k| k as i32 * s + add);
    // SAFETY: register setup; only reached from this module's AVX-512 functions.
    unsafe {
        _mm512_setr_epi32(
            i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7], i[8], i[9], i[10], i[11], i[12], i[13],
            i[14], i[15],
        )
    }
}

/// The lanes lo … hi − 1.
#[inline(always)]
fn lanes(lo: usize, hi: usize) -> u16 {
    (((1u32 << hi.min(16)) - 1) & !((1u32 << lo.min(16)) - 1)) as u16
}

/// Up to 16 tiles in lanes: `groups` tile rows side by side, each `per` tiles (lane g·per + t
/// is tile t of group g), starting at tile column `tx0` (nonzero only with one group).
#[derive(Clone, Copy)]
struct Lanes {
    groups: usize,
    per: usize,
    tx0: usize,
}

impl Lanes {
    /// The lanes in use.
    #[inline(always)]
    fn mask(&self) -> u16 {
        first(self.groups * self.per)
    }
}

/// One masked load of a stream vector: lanes `mask` from `x[off + ci·h·w + lane]`.
#[derive(Clone, Copy, Default)]
struct Load {
    mask: u16,
    off: isize,
}

/// The loads of every stream vector of a block, in the order the input transform takes them
/// (lane group, padded row offset r, stream, vector): `counts[i]` pieces each, consecutive in
/// `loads`.
#[derive(Default)]
struct Plan {
    loads: Vec<Load>,
    counts: Vec<u8>,
}

impl Plan {
    /// Appends the loads of padded row offset r of the lanes `l` (tile rows `i0 …` of the
    /// block), for channel 0: group g's M·per elements from its row's column M·tx0 − pad_l (+ M
    /// for the second stream) sit at stream positions M·g·per …; parts outside the input plane
    /// (padding) are not loaded (zeros).
    fn push_row<const M: usize>(&mut self, p: &Problem, t: &Tiles, l: &Lanes, i0: usize, r: usize) {
        let seg = M * l.per;
        for si in 0..2 {
            for q in 0..M {
                let (v_lo, v_hi) = (16 * q, 16 * q + 16);
                let mut count = 0u8;
                for g in 0..l.groups {
                    let (s_lo, s_hi) = (g * seg, g * seg + seg);
                    let row = t.rows.start + i0 + g;
                    let (n, ty) = (row / t.th, row % t.th);
                    let iy = (ty * M + r) as isize - p.pad_t as isize;
                    if s_hi <= v_lo || s_lo >= v_hi || iy < 0 || iy as usize >= p.h {
                        continue;
                    }
                    let row_off = ((n * p.c * p.h) as isize + iy) * p.w as isize;
                    let col = (M * (l.tx0 + si)) as isize - p.pad_l as isize;
                    // Lane x of this vector holds the row's column base + x.
                    let base = col + v_lo as isize - s_lo as isize;
                    let mask =
                        lanes(s_lo.max(v_lo) - v_lo, s_hi.min(v_hi) - v_lo) & in_range(base, p.w);
                    if mask != 0 {
                        self.loads.push(Load {
                            mask,
                            off: row_off + base,
                        });
                        count += 1;
                    }
                }
                self.counts.push(count);
            }
        }
    }
}

/// Lane t of the result is element M·t + ρ of the stream `s` (16·M elements).
#[inline(always)]
fn phase<const M: usize>(s: &[__m512; M], rho: usize) -> Z {
    // SAFETY: register permutations; only reached from this module's AVX-512 functions.
    unsafe {
        let idx = stride_index(M as i32, rho as i32);
        if M == 2 {
            Z(_mm512_permutex2var_ps(s[0], idx, s[1]))
        } else {
            // Elements 4t + ρ of 64: lanes 0–7 of two permutations of 32 each, joined.
            let a = _mm512_permutex2var_ps(s[0], idx, s[1]);
            let b = _mm512_permutex2var_ps(s[2], idx, s[3]);
            Z(_mm512_shuffle_f32x4::<0x44>(a, b))
        }
    }
}

/// The block's tiles as lane groups, with the first tile (V and M column) of each: several
/// whole tile rows side by side when they are short (≤ 8 tiles), else one row in runs of 16.
fn lane_groups(t: &Tiles) -> impl Iterator<Item = (Lanes, usize)> + '_ {
    let tw = t.tw;
    let (per_vec, run) = if tw <= 8 { (16 / tw, tw) } else { (1, 16) };
    let n_rows = t.rows.len();
    (0..n_rows).step_by(per_vec).flat_map(move |i0| {
        (0..tw).step_by(run).map(move |tx0| {
            let l = Lanes {
                groups: per_vec.min(n_rows - i0),
                per: if per_vec > 1 { tw } else { run.min(tw - tx0) },
                tx0,
            };
            (l, i0 * tw + tx0)
        })
    })
}

/// V[ξ][c][j] for every channel c and tile j of the block (see `input_transform_v`).
///
/// # Safety
/// The CPU has AVX-512F ([`available`]); `x` and `v` are the block's input and V with the
/// lengths `run` and `block` check.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_transform<V: Variant<M, A>, const M: usize, const A: usize>(
    p: &Problem,
    t: &Tiles,
    x: &[f32],
    v: &mut [f32],
) {
    let (tw, nts, hw) = (t.tw, t.nts, p.h * p.w);
    assert!(x.len() >= p.batch * p.c * hw, "winograd x86: input");
    let vs = super::v_stride(p.c, nts);
    assert!(v.len() >= A * A * vs, "winograd x86: V");
    // Every lane group's loads, planned once for all channels.
    let groups: Vec<(Lanes, usize)> = lane_groups(t).collect();
    let mut plan = Plan::default();
    for &(l, j0) in &groups {
        for r in 0..A {
            plan.push_row::<M>(p, t, &l, j0 / tw, r);
        }
    }
    // Channel by channel, so that each of V's A² rows of the channel is written front to
    // back (they stay in L1) and the channel's plane is read front to back.
    for ci in 0..p.c {
        let x_c = x.as_ptr().wrapping_add(ci * hw);
        let (mut loads, mut counts) = (plan.loads.iter(), plan.counts.iter());
        for &(l, j0) in &groups {
            // (Built with from_fn: a zeroed array of this size would be a memset per tile
            // group.)
            let h: [[Z; A]; A] = std::array::from_fn(|_| {
                let mut streams = [[_mm512_setzero_ps(); M]; 2];
                for stream in streams.iter_mut() {
                    for vq in stream.iter_mut() {
                        let count = counts.next().copied().unwrap_or(0);
                        for piece in loads.by_ref().take(count as usize) {
                            // SAFETY: the piece's lanes are elements of one row of plane
                            // (n, ci) inside its w columns (`Plan::push_row`); the pointer
                            // arithmetic wraps and is dereferenced only there.
                            *vq = unsafe {
                                _mm512_mask_loadu_ps(
                                    *vq,
                                    piece.mask,
                                    x_c.wrapping_offset(piece.off),
                                )
                            };
                        }
                    }
                }
                // Patch columns ρ < M from the first stream, M + ρ from the second.
                V::bt1(std::array::from_fn(|b| {
                    if b < M {
                        phase(&streams[0], b)
                    } else {
                        phase(&streams[1], b - M)
                    }
                }))
            });
            // Vertical Bᵀ per patch column, stored as V rows ξ = r'·A + b: the groups' tiles
            // are consecutive in V (tile rows in order), one masked store each.
            for b in 0..A {
                let mut col = [Z::splat(0.0); A];
                for (c, h_r) in col.iter_mut().zip(&h) {
                    *c = h_r[b];
                }
                let o = V::bt1(col);
                for (r2, val) in o.iter().enumerate() {
                    let at = (r2 * A + b) * vs + ci * nts + j0;
                    // SAFETY: the lanes in use are tiles j0 … < nt of row ξ, inside V.
                    unsafe {
                        _mm512_mask_storeu_ps(v.as_mut_ptr().add(at).cast(), l.mask(), val.0)
                    };
                }
            }
        }
    }
}

/// out = Aᵀ M A (+ bias) for every output channel and tile of the block (see
/// `output_transform_v`).
///
/// # Safety
/// The CPU has AVX-512F ([`available`]); `m` is the block's M with the length `block` checks
/// and `out` the output with the length `run` checks.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_transform<V: Variant<M, A>, const M: usize, const A: usize>(
    p: &Problem,
    t: &Tiles,
    m: &[f32],
    bias: Option<&[f32]>,
    out: OutPtr<f32>,
) {
    let (tw, nts) = (t.tw, t.nts);
    assert!(m.len() >= p.k * A * A * nts, "winograd x86: M");
    // Every lane group's stores, planned once for all output channels: for each group and
    // output row a of its tiles, the pieces of the interleaved rows, `counts` of them each.
    let groups: Vec<(Lanes, usize)> = lane_groups(t).collect();
    let (mut stores, mut counts) = (Vec::new(), Vec::new());
    for &(l, j0) in &groups {
        for a in 0..M {
            let mut count = 0u8;
            for g in 0..l.groups {
                let row = t.rows.start + j0 / tw + g;
                let (n, ty) = (row / t.th, row % t.th);
                let oy = ty * M + a;
                if oy >= p.oh {
                    continue;
                }
                let ox = M * l.tx0;
                // Stream elements from … end of the interleaved row are this group's columns
                // ox … (up to ow) of output row oy.
                let at = ((n * p.k * p.oh + oy) * p.ow + ox) as isize;
                let from = g * M * l.per;
                let end = from + (M * l.per).min(p.ow - ox);
                for q in 0..M {
                    let (v_lo, v_hi) = (16 * q, 16 * q + 16);
                    if end <= v_lo || from >= v_hi {
                        continue;
                    }
                    stores.push(Store {
                        part: q as u8,
                        mask: lanes(from.max(v_lo) - v_lo, end.min(v_hi) - v_lo),
                        off: at + v_lo as isize - from as isize,
                    });
                    count += 1;
                }
            }
            counts.push(count);
        }
    }
    let plane = (p.oh * p.ow) as isize;
    for ki in 0..p.k {
        let add = bias.map_or(Z::splat(0.0), |b| Z(_mm512_set1_ps(b[ki])));
        let m_k = &m[ki * A * A * nts..][..A * A * nts];
        let out_k = out.0.wrapping_offset(ki as isize * plane);
        let (mut pieces, mut counts) = (stores.iter(), counts.iter());
        for &(_, j0) in &groups {
            // The A² GEMM results of these tiles (lanes past them read the next tiles or the
            // row's slack: computed, never stored).
            let row = |xi: usize| {
                // SAFETY: j0 + 16 ≤ nt + 15 < nts: inside row ξ of M.
                Z(unsafe { _mm512_loadu_ps(m_k.as_ptr().add(xi * nts + j0).cast()) })
            };
            // Aᵀ along r (s[a][b]), then along b (y[a][c]) and the bias.
            let cols: [[Z; M]; A] =
                std::array::from_fn(|b| V::at1(std::array::from_fn(|r| row(r * A + b))));
            let s: [[Z; A]; M] = std::array::from_fn(|a| std::array::from_fn(|b| cols[b][a]));
            for s_a in s {
                let y = V::at1(s_a);
                let y: [Z; M] = std::array::from_fn(|c| y[c] + add);
                let parts = interleave::<M>(&y);
                let count = counts.next().copied().unwrap_or(0);
                for st in pieces.by_ref().take(count as usize) {
                    // SAFETY: the lanes stored are one group's columns (below ow) of one
                    // output row of this block's tiles, which only this block writes (see
                    // `OutPtr`); the pointer arithmetic wraps and is dereferenced only there.
                    unsafe {
                        _mm512_mask_storeu_ps(
                            out_k.wrapping_offset(st.off).cast(),
                            st.mask,
                            parts[st.part as usize],
                        )
                    };
                }
            }
        }
    }
}

/// One masked store of an interleaved output row: lanes `mask` of part `part` to
/// `out[off + k·oh·ow + lane]` for output channel k.
#[derive(Clone, Copy)]
struct Store {
    part: u8,
    mask: u16,
    off: isize,
}

/// The M·16 values y[c][t] as the stream element M·t + c, in M vectors.
#[target_feature(enable = "avx512f")]
#[inline]
fn interleave<const M: usize>(y: &[Z; M]) -> [__m512; 4] {
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    if M == 2 {
        let zero = _mm512_setzero_ps();
        [
            _mm512_permutex2var_ps(y[0].0, lo, y[1].0),
            _mm512_permutex2var_ps(y[0].0, hi, y[1].0),
            zero,
            zero,
        ]
    } else {
        // Pairs (y0, y1) and (y2, y3) interleaved, then those pairs as 64-bit elements.
        let p01 = [
            _mm512_permutex2var_ps(y[0].0, lo, y[1].0),
            _mm512_permutex2var_ps(y[0].0, hi, y[1].0),
        ];
        let p23 = [
            _mm512_permutex2var_ps(y[2].0, lo, y[3].0),
            _mm512_permutex2var_ps(y[2].0, hi, y[3].0),
        ];
        let q_lo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
        let q_hi = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
        let pd = |a: __m512, i: __m512i, b: __m512| {
            _mm512_castpd_ps(_mm512_permutex2var_pd(
                _mm512_castps_pd(a),
                i,
                _mm512_castps_pd(b),
            ))
        };
        [
            pd(p01[0], q_lo, p23[0]),
            pd(p01[0], q_hi, p23[0]),
            pd(p01[1], q_lo, p23[1]),
            pd(p01[1], q_hi, p23[1]),
        ]
    }
}
