//! Winograd F(4×4, 3×3) convolution: 3×3, stride-1 convolutions with 2.25× … 4× fewer
//! multiplications than the im2col GEMM, for the forward pass and for the input gradient (which,
//! for a stride-1 3×3 convolution, is itself a stride-1 3×3 convolution of dY with the weights
//! flipped and transposed).
//!
//! Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). Each 4×4 output
//! tile is `Aᵀ [ Σ_c (G g_kc Gᵀ) ⊙ (Bᵀ d_c B) ] A` where `d_c` is the 6×6 input patch of channel
//! c. The sum over channels of the 36 element-wise products is 36 independent GEMMs,
//! `M[ξ] (K×T) = U[ξ] (K×C) · V[ξ] (C×T)` over the T tiles of a block, run on the packed
//! `gemm` kernels. Per 4×4 tile and channel pair that is 36 multiply-adds instead of 144.
//!
//! Layout and vectorisation: a block is a run of consecutive tile rows (a tile row is 4 output
//! rows of one sample). The input transform copies the 6 input rows of a tile row into four
//! "phase" arrays (padded column `4i + p` goes to `phase[p][i]`), so that both 1-D transforms
//! run on contiguous vectors over the tiles of the row; the output transform does the same in
//! reverse. Blocks run in parallel on the rayon pool, each with its own scratch.
//!
//! Accuracy (f32): the transforms scale values by up to 8 (A) and 5 (B), so rounding errors
//! are larger than the direct sum's. Measured against an f64 direct convolution on random
//! N(0,1) data, C = K = 64 … 256: max |error| / max |y| ≈ 1e-6, relative L2 ≈ 3e-7 (test
//! `winograd_f32_error_is_small`); im2col's own f32 error is ≈ 1e-7. Only f32 uses this path
//! (the f64 reference path stays exact-order im2col).

use super::conv::{Slot, with_scratch, with_scratch_in};
use super::gemm::{MatRef, Threads, matmul};
use super::simd::multiversion;
use crate::element::Float;
use crate::ops::geometry::Conv2dGeometry;
use rayon::prelude::*;

/// Output tile side (m) and input patch side (m + 2).
const M: usize = 4;
const A: usize = 6;
const XI: usize = A * A;

/// Tiles per block (GEMM width) the planner aims at.
const TARGET_TILES: usize = 144;

/// Whether the forward convolution of `g` should take the Winograd path.
pub(super) fn fits_fwd(g: &Conv2dGeometry) -> bool {
    shape_fits(g)
        && g.in_channels >= 16
        && g.out_channels >= 16
        && enough_tiles(g.batch, g.out_h, g.out_w)
}

/// Whether the input gradient of `g` should take the Winograd path.
pub(super) fn fits_bwd_input(g: &Conv2dGeometry) -> bool {
    shape_fits(g)
        && g.in_channels >= 16
        && g.out_channels >= 16
        && g.pad[0] <= 2
        && g.pad[1] <= 2
        && enough_tiles(g.batch, g.in_h, g.in_w)
}

fn shape_fits(g: &Conv2dGeometry) -> bool {
    g.kernel_h == 3
        && g.kernel_w == 3
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.out_h > 0
        && g.out_w > 0
        && g.in_h > 0
        && g.in_w > 0
}

/// Small planes waste most of a tile's outputs, and few tiles make thin GEMMs: im2col wins.
fn enough_tiles(batch: usize, h: usize, w: usize) -> bool {
    let tiles = batch * h.div_ceil(M) * w.div_ceil(M);
    let useful = (h * w) as f64 / ((h.div_ceil(M) * M) * (w.div_ceil(M) * M)) as f64;
    tiles >= 48 && useful >= 0.7
}

/// out[N,K,OH,OW] = conv3×3(x[N,C,H,W], w[K,C,3,3]) + bias, stride 1. `out` is overwritten.
pub(super) fn conv3x3_fwd<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let (k, c) = (g.out_channels, g.in_channels);
    let p = Problem {
        batch: g.batch,
        c,
        h: g.in_h,
        w: g.in_w,
        k,
        oh: g.out_h,
        ow: g.out_w,
        pad_t: g.pad[0] as isize,
        pad_l: g.pad[1] as isize,
    };
    with_scratch_in(Slot::Weights, k * XI * c, |u: &mut [T]| {
        transform_weights(w, k, c, false, u);
        run(&p, x, u, bias, out);
    });
}

/// dx[N,C,H,W] from dy[N,K,OH,OW] for a 3×3 stride-1 convolution. `dx` is overwritten.
///
/// dx[c][i][j] = Σ_k Σ_{a,b} w[k][c][a][b] · dy[k][i + pt − a][j + pl − b]: a stride-1 3×3
/// convolution of dy with w'[c][k][a][b] = w[k][c][2−a][2−b] and padding 2 − pt, 2 − pl.
pub(super) fn conv3x3_bwd_input<T: Float>(g: &Conv2dGeometry, dy: &[T], w: &[T], dx: &mut [T]) {
    let (k, c) = (g.out_channels, g.in_channels);
    let p = Problem {
        batch: g.batch,
        c: k,
        h: g.out_h,
        w: g.out_w,
        k: c,
        oh: g.in_h,
        ow: g.in_w,
        pad_t: 2 - g.pad[0] as isize,
        pad_l: 2 - g.pad[1] as isize,
    };
    with_scratch_in(Slot::Weights, k * XI * c, |u: &mut [T]| {
        transform_weights(w, k, c, true, u);
        run(&p, dy, u, None, dx);
    });
}

/// One stride-1 3×3 convolution as the Winograd kernel sees it.
struct Problem {
    batch: usize,
    /// Input channels, height, width.
    c: usize,
    h: usize,
    w: usize,
    /// Output channels, height, width.
    k: usize,
    oh: usize,
    ow: usize,
    /// Padding before the first row / column (may be 0, 1 or 2).
    pad_t: isize,
    pad_l: isize,
}

/// U[k][ξ][c] = (G g Gᵀ)[ξ] for each kernel g = w[k][c]; with `flip`, U[c][ξ][k] for the
/// flipped and transposed kernel w'[c][k] = w[k][c] rotated 180°. Row r of the GEMM operand
/// for ξ is then at `r·36·cols + ξ·cols` (see `block`).
fn transform_weights<T: Float>(w: &[T], k: usize, c: usize, flip: bool, u: &mut [T]) {
    let cols = if flip { k } else { c };
    u.par_chunks_mut(XI * cols)
        .enumerate()
        .for_each(|(row, u_row)| {
            for col in 0..cols {
                let (ki, ci) = if flip { (col, row) } else { (row, col) };
                let g = &w[(ki * c + ci) * 9..][..9];
                let tap = |a: usize, b: usize| {
                    if flip {
                        g[(2 - a) * 3 + (2 - b)]
                    } else {
                        g[a * 3 + b]
                    }
                };
                // t = G · kern (6×3), then t · Gᵀ (6×6).
                let cols_g: [[T; A]; 3] =
                    std::array::from_fn(|b| g_transform([tap(0, b), tap(1, b), tap(2, b)]));
                for a in 0..A {
                    let row_g = g_transform([cols_g[0][a], cols_g[1][a], cols_g[2][a]]);
                    for (b, &v) in row_g.iter().enumerate() {
                        u_row[(a * A + b) * cols + col] = v;
                    }
                }
            }
        });
}

/// G · g for one 3-vector.
#[inline(always)]
fn g_transform<T: Float>(g: [T; 3]) -> [T; A] {
    let [g0, g1, g2] = g;
    let (quarter, sixth, twelfth, f24) = (
        T::from_f64(0.25),
        T::from_f64(1.0 / 6.0),
        T::from_f64(1.0 / 12.0),
        T::from_f64(1.0 / 24.0),
    );
    [
        g0 * quarter,
        -(g0 + g1 + g2) * sixth,
        -(g0 - g1 + g2) * sixth,
        g0 * f24 + g1 * twelfth + g2 * sixth,
        g0 * f24 - g1 * twelfth + g2 * sixth,
        g2,
    ]
}

/// A raw pointer to the output that blocks write through: every block writes a disjoint set
/// of (sample, channel, row) segments, so the writes never overlap.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: blocks write disjoint elements (see `OutPtr`); T is a plain float.
unsafe impl<T: Send> Send for OutPtr<T> {}
unsafe impl<T: Sync> Sync for OutPtr<T> {}

fn run<T: Float>(p: &Problem, x: &[T], u: &[T], bias: Option<&[T]>, out: &mut [T]) {
    assert_eq!(x.len(), p.batch * p.c * p.h * p.w, "winograd: input length");
    assert_eq!(
        out.len(),
        p.batch * p.k * p.oh * p.ow,
        "winograd: output length"
    );
    assert_eq!(u.len(), p.k * XI * p.c, "winograd: weight length");
    let th = p.oh.div_ceil(M);
    let tw = p.ow.div_ceil(M);
    let rows = p.batch * th;
    let threads = crate::parallel::threads().max(1);
    // Rows per block: about TARGET_TILES tiles, but at least 2 blocks per thread when possible.
    let mut per_block = TARGET_TILES.div_ceil(tw).max(1);
    while per_block > 1 && rows.div_ceil(per_block) < 2 * threads {
        per_block = per_block.div_ceil(2);
        if per_block * tw < 32 {
            break;
        }
    }
    let blocks = rows.div_ceil(per_block);
    let gemm_threads = if blocks < threads {
        Threads::Pool
    } else {
        Threads::Single
    };
    let ptr = OutPtr(out.as_mut_ptr());
    let body = |b: usize| {
        let first = b * per_block;
        let last = (first + per_block).min(rows);
        block(p, x, u, bias, ptr, first..last, tw, gemm_threads);
    };
    if gemm_threads == Threads::Pool {
        (0..blocks).for_each(body);
    } else {
        (0..blocks).into_par_iter().for_each(body);
    }
}

/// One block: tile rows `rows` (flattened over samples and tile rows).
#[allow(clippy::too_many_arguments)]
fn block<T: Float>(
    p: &Problem,
    x: &[T],
    u: &[T],
    bias: Option<&[T]>,
    out: OutPtr<T>,
    rows: std::ops::Range<usize>,
    tw: usize,
    threads: Threads,
) {
    let nt = rows.len() * tw;
    let v_len = XI * p.c * nt;
    let m_len = XI * p.k * nt;
    // Transform scratch: 6×6 rows of nt for the deinterleaved patches and as many for the
    // half-transformed ones, plus one padded input / output row.
    let t_len = 2 * XI * nt + M * tw + M;
    with_scratch(v_len + m_len + t_len, |buf: &mut [T]| {
        let (v, rest) = buf.split_at_mut(v_len);
        let (m, scratch) = rest.split_at_mut(m_len);
        let t = Tiles {
            rows: rows.clone(),
            th: p.oh.div_ceil(M),
            tw,
            nt,
        };
        input_transform(p, &t, x, v, scratch);
        // 36 GEMMs: M[ξ] (K×nt) = U[ξ] (K×C) · V[ξ] (C×nt); U[ξ]'s row k is at k·36·C + ξ·C.
        for xi in 0..XI {
            let a = MatRef {
                data: u,
                offset: xi * p.c,
                row_stride: XI * p.c,
                col_stride: 1,
            };
            let b = MatRef::row_major(&*v, xi * p.c * nt, nt);
            matmul(p.k, nt, p.c, a, b, m, xi * p.k * nt, nt, false, threads);
        }
        output_transform(p, &t, m, scratch, bias, out);
    });
}

/// The tile rows of one block.
struct Tiles {
    /// Tile rows, flattened over (sample, tile row).
    rows: std::ops::Range<usize>,
    /// Tile rows per sample, tiles per tile row.
    th: usize,
    tw: usize,
    /// Tiles in the block (GEMM width); tile `j = i·tw + tx` is tile tx of the block's i-th row.
    nt: usize,
}

multiversion! {
    /// V[ξ][c][j] for every channel c and tile j of the block.
    fn input_transform = input_transform_impl(
        p: &Problem,
        t: &Tiles,
        x: &[T],
        v: &mut [T],
        scratch: &mut [T],
    )
}

/// Per channel: gather the block's 6×6 patches as 36 flat vectors over the tiles,
/// q[r][b][j] = padded input at row 4ty + r, column 4tx + b of tile j; then Bᵀ along b
/// (h[r][b'][j]) and Bᵀ along r straight into the rows of V. Every vector op runs over all
/// nt tiles of the block, so the loops are long enough to vectorise whatever the width.
#[inline(always)]
fn input_transform_impl<T: Float>(p: &Problem, t: &Tiles, x: &[T], v: &mut [T], scratch: &mut [T]) {
    let (nt, tw) = (t.nt, t.tw);
    let (q, rest) = scratch.split_at_mut(XI * nt);
    let (h, rest) = rest.split_at_mut(XI * nt);
    let padded = &mut rest[..M * tw + M];
    let pad_l = p.pad_l as usize;
    // Input columns that land in the padded row 0 .. 4tw + 2.
    let copy = p.w.min(M * tw + 2 - pad_l);
    padded.fill(T::zero());
    for ci in 0..p.c {
        for (i, row) in t.rows.clone().enumerate() {
            let (n, ty) = (row / t.th, row % t.th);
            let plane = &x[(n * p.c + ci) * p.h * p.w..][..p.h * p.w];
            for r in 0..A {
                let iy = (ty * M + r) as isize - p.pad_t;
                let q_r = rows6(&mut q[r * A * nt + i * tw..], tw, nt);
                if iy >= 0 && (iy as usize) < p.h {
                    // Only the copied columns change: the padding columns stay zero.
                    let src = &plane[iy as usize * p.w..][..copy];
                    padded[pad_l..pad_l + copy].copy_from_slice(src);
                    deinterleave(padded, q_r);
                } else {
                    for q_rb in q_r {
                        q_rb.fill(T::zero());
                    }
                }
            }
        }
        for r in 0..A {
            let q_r = &q[r * A * nt..][..A * nt];
            bt(segs6(q_r, 0, nt, nt), rows6(&mut h[r * A * nt..], nt, nt));
        }
        let h: &[T] = h;
        let stride = p.c * nt;
        for b in 0..A {
            bt(
                segs6(h, b * nt, A * nt, nt),
                rows6(&mut v[b * stride + ci * nt..], nt, A * stride),
            );
        }
    }
}

multiversion! {
    /// out = Aᵀ M A (+ bias) for every output channel and tile of the block.
    fn output_transform = output_transform_impl(
        p: &Problem,
        t: &Tiles,
        m: &[T],
        scratch: &mut [T],
        bias: Option<&[T]>,
        out: OutPtr<T>,
    )
}

/// Per output channel: Aᵀ along r over the block's flat tile vectors (s[a][b][j]), Aᵀ along b
/// (y[a][c][j]), then each output row is interleaved (column 4tx + c) and stored.
#[inline(always)]
fn output_transform_impl<T: Float>(
    p: &Problem,
    t: &Tiles,
    m: &[T],
    scratch: &mut [T],
    bias: Option<&[T]>,
    out: OutPtr<T>,
) {
    let (nt, tw) = (t.nt, t.tw);
    let (s, rest) = scratch.split_at_mut(M * A * nt);
    let (y, rest) = rest.split_at_mut(M * M * nt);
    let line = &mut rest[..M * tw];
    let stride = p.k * nt;
    for ki in 0..p.k {
        let add = bias.map_or(T::zero(), |b| b[ki]);
        for b in 0..A {
            at(
                segs6(m, b * stride + ki * nt, A * stride, nt),
                rows4(&mut s[b * nt..], nt, A * nt),
            );
        }
        for a in 0..M {
            let s_a = &s[a * A * nt..][..A * nt];
            at(segs6(s_a, 0, nt, nt), rows4(&mut y[a * M * nt..], nt, nt));
        }
        for (i, row) in t.rows.clone().enumerate() {
            let (n, ty) = (row / t.th, row % t.th);
            let plane = (n * p.k + ki) * p.oh * p.ow;
            for a in 0..M.min(p.oh - ty * M) {
                let y_a = &y[a * M * nt..][..M * nt];
                let (y0, y1) = (seg(y_a, i * tw, tw), seg(y_a, nt + i * tw, tw));
                let (y2, y3) = (seg(y_a, 2 * nt + i * tw, tw), seg(y_a, 3 * nt + i * tw, tw));
                for (tx, cols) in line.chunks_exact_mut(M).enumerate() {
                    cols[0] = y0[tx] + add;
                    cols[1] = y1[tx] + add;
                    cols[2] = y2[tx] + add;
                    cols[3] = y3[tx] + add;
                }
                let at = plane + (ty * M + a) * p.ow;
                // SAFETY: the ow elements at `at` are one output row of this block's tile row:
                // inside `out` (lengths checked in `run`) and written by no other block.
                unsafe {
                    std::ptr::copy_nonoverlapping(line.as_ptr(), out.0.add(at), p.ow);
                }
            }
        }
    }
}

/// Bᵀ d for six vectors d0..d5 (element-wise).
#[inline(always)]
fn bt<T: Float>(d: [&[T]; A], out: [&mut [T]; A]) {
    let [d0, d1, d2, d3, d4, d5] = d;
    let [o0, o1, o2, o3, o4, o5] = out;
    let n = o0.len();
    let (d0, d1, d2, d3, d4, d5) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n], &d4[..n], &d5[..n]);
    let (o1, o2, o3, o4, o5) = (
        &mut o1[..n],
        &mut o2[..n],
        &mut o3[..n],
        &mut o4[..n],
        &mut o5[..n],
    );
    let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
    for i in 0..n {
        let (a0, a1, a2, a3, a4, a5) = (d0[i], d1[i], d2[i], d3[i], d4[i], d5[i]);
        o0[i] = four * a0 - five * a2 + a4;
        o1[i] = a3 + a4 - four * (a1 + a2);
        o2[i] = four * (a1 - a2) - a3 + a4;
        o3[i] = two * (a3 - a1) - a2 + a4;
        o4[i] = two * (a1 - a3) - a2 + a4;
        o5[i] = four * a1 - five * a3 + a5;
    }
}

/// q_b[tx] = padded[4·tx + b] for the six columns b of each tile (one pass, so that the
/// stride-4 loads vectorise as an interleaved group).
#[inline(always)]
fn deinterleave<T: Float>(padded: &[T], q: [&mut [T]; A]) {
    let [q0, q1, q2, q3, q4, q5] = q;
    let tw = q0.len();
    let (q1, q2, q3, q4, q5) = (
        &mut q1[..tw],
        &mut q2[..tw],
        &mut q3[..tw],
        &mut q4[..tw],
        &mut q5[..tw],
    );
    // Windows of columns 4tx .. 4tx + 4 and 4tx + 4 .. 4tx + 6 (the padded row has 4tw + 4).
    let cur = padded[..M * tw].chunks_exact(M);
    let next = padded[M..M * tw + M].chunks_exact(M);
    for (tx, (c, n)) in cur.zip(next).enumerate() {
        q0[tx] = c[0];
        q1[tx] = c[1];
        q2[tx] = c[2];
        q3[tx] = c[3];
        q4[tx] = n[0];
        q5[tx] = n[1];
    }
}

/// `len` elements at `at`.
#[inline(always)]
fn seg<T>(buf: &[T], at: usize, len: usize) -> &[T] {
    &buf[at..at + len]
}

/// Six runs of `len` elements of `buf`, run i starting at `first + i·stride`.
#[inline(always)]
fn segs6<T>(buf: &[T], first: usize, stride: usize, len: usize) -> [&[T]; 6] {
    [
        seg(buf, first, len),
        seg(buf, first + stride, len),
        seg(buf, first + 2 * stride, len),
        seg(buf, first + 3 * stride, len),
        seg(buf, first + 4 * stride, len),
        seg(buf, first + 5 * stride, len),
    ]
}

/// Six rows of `len` elements of `buf`, row i starting at `i·stride`.
#[inline(always)]
fn rows6<T>(buf: &mut [T], len: usize, stride: usize) -> [&mut [T]; 6] {
    let (r0, b) = buf.split_at_mut(stride);
    let (r1, b) = b.split_at_mut(stride);
    let (r2, b) = b.split_at_mut(stride);
    let (r3, b) = b.split_at_mut(stride);
    let (r4, r5) = b.split_at_mut(stride);
    [
        &mut r0[..len],
        &mut r1[..len],
        &mut r2[..len],
        &mut r3[..len],
        &mut r4[..len],
        &mut r5[..len],
    ]
}

/// Four rows of `len` elements of `buf`, row i starting at `i·stride`.
#[inline(always)]
fn rows4<T>(buf: &mut [T], len: usize, stride: usize) -> [&mut [T]; 4] {
    let (r0, b) = buf.split_at_mut(stride);
    let (r1, b) = b.split_at_mut(stride);
    let (r2, r3) = b.split_at_mut(stride);
    [
        &mut r0[..len],
        &mut r1[..len],
        &mut r2[..len],
        &mut r3[..len],
    ]
}

/// Aᵀ m for six vectors (element-wise): four outputs.
#[inline(always)]
fn at<T: Float>(m: [&[T]; A], out: [&mut [T]; M]) {
    let [m0, m1, m2, m3, m4, m5] = m;
    let [o0, o1, o2, o3] = out;
    let n = o0.len();
    let (m0, m1, m2, m3, m4, m5) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &m4[..n], &m5[..n]);
    let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    for i in 0..n {
        let (s12, d12) = (m1[i] + m2[i], m1[i] - m2[i]);
        let (s34, d34) = (m3[i] + m4[i], m3[i] - m4[i]);
        o0[i] = m0[i] + s12 + s34;
        o1[i] = d12 + two * d34;
        o2[i] = s12 + four * s34;
        o3[i] = d12 + eight * d34 + m5[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::conv;
    use crate::ops::geometry::Conv2dParams;
    use crate::tensor::Tensor;

    fn data(len: usize, seed: u64) -> Vec<f64> {
        Tensor::<f64>::randn(&[len], seed).unwrap().into_vec()
    }

    fn geometry(x: [usize; 4], k: usize, pad: [usize; 4]) -> Conv2dGeometry {
        let p = Conv2dParams {
            stride: [1, 1],
            padding: pad,
            dilation: [1, 1],
            groups: 1,
        };
        Conv2dGeometry::new(&x, &[k, x[1], 3, 3], &p).unwrap()
    }

    fn cases() -> Vec<Conv2dGeometry> {
        vec![
            geometry([2, 5, 9, 11], 7, [1, 1, 1, 1]),
            geometry([1, 3, 8, 8], 4, [0, 0, 0, 0]),
            geometry([3, 4, 7, 13], 6, [2, 1, 0, 2]),
            geometry([1, 16, 17, 5], 9, [1, 2, 2, 1]),
            geometry([2, 2, 4, 4], 3, [2, 2, 2, 2]),
            geometry([1, 1, 3, 3], 1, [0, 0, 0, 0]),
        ]
    }

    fn max_rel(got: &[f64], want: &[f64]) -> f64 {
        let scale = want.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        got.iter()
            .zip(want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() / scale))
    }

    #[test]
    fn winograd_matches_im2col_in_f64() {
        for (i, g) in cases().into_iter().enumerate() {
            let seed = 100 + i as u64;
            let x = data(g.batch * g.in_channels * g.in_h * g.in_w, seed);
            let w = data(g.out_channels * g.in_channels * 9, seed + 1);
            let b = data(g.out_channels, seed + 2);
            let dy = data(g.batch * g.out_channels * g.out_h * g.out_w, seed + 3);
            let mut want = vec![0.0; dy.len()];
            conv::conv2d_fwd(&g, &x, &w, Some(&b), &mut want);
            let mut got = vec![f64::NAN; dy.len()];
            conv3x3_fwd(&g, &x, &w, Some(&b), &mut got);
            assert!(
                max_rel(&got, &want) < 1e-13,
                "fwd case {i}: {:e}",
                max_rel(&got, &want)
            );
            if g.pad[0] <= 2 && g.pad[1] <= 2 {
                let mut want = vec![0.0; x.len()];
                conv::conv2d_bwd_input(&g, &dy, &w, &mut want);
                let mut got = vec![f64::NAN; x.len()];
                conv3x3_bwd_input(&g, &dy, &w, &mut got);
                assert!(
                    max_rel(&got, &want) < 1e-13,
                    "bwd case {i}: {:e}",
                    max_rel(&got, &want)
                );
            }
        }
    }

    #[test]
    fn winograd_f32_error_is_small() {
        for (i, &(c, k, hw)) in [(64usize, 64usize, 28usize), (128, 128, 14), (256, 64, 12)]
            .iter()
            .enumerate()
        {
            let g = geometry([2, c, hw, hw], k, [1, 1, 1, 1]);
            let seed = 7 + i as u64;
            let x = data(g.batch * c * hw * hw, seed);
            let w: Vec<f64> = data(k * c * 9, seed + 1)
                .iter()
                .map(|v| v / (9.0 * c as f64).sqrt())
                .collect();
            let mut want = vec![0.0; g.batch * k * g.out_h * g.out_w];
            conv::conv2d_fwd(&g, &x, &w, None, &mut want);
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            let mut got = vec![f32::NAN; want.len()];
            conv3x3_fwd(&g, &x32, &w32, None, &mut got);
            let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
            let err = max_rel(&got, &want);
            let num: f64 = got.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum();
            let den: f64 = want.iter().map(|b| b * b).sum();
            let l2 = (num / den).sqrt();
            eprintln!("winograd f32 C={c} K={k} {hw}²: max rel {err:.2e}, rel L2 {l2:.2e}");
            assert!(
                err < 2e-5 && l2 < 5e-6,
                "C={c} K={k}: max {err:e}, L2 {l2:e}"
            );
        }
    }
}

#[cfg(test)]
mod batched_tests {
    use super::*;
    use crate::backend::cpu::conv;
    use crate::ops::geometry::Conv2dParams;
    use crate::tensor::Tensor;

    /// The `small` benchmark model's 3×3 layers at a 25-copy chunk (blocks spanning samples,
    /// 2-tile rows): Winograd against the f64 im2col reference, forward and input gradient.
    #[test]
    fn winograd_small_model_layers_at_chunk_25() {
        for &(c, k, hw) in &[
            (32usize, 32usize, 32usize),
            (32, 64, 16),
            (64, 64, 16),
            (64, 128, 8),
        ] {
            let p = Conv2dParams::new().padding(1);
            let g = Conv2dGeometry::new(&[25, c, hw, hw], &[k, c, 3, 3], &p).unwrap();
            let x = Tensor::<f64>::randn(&g.in_dims(), 1).unwrap().into_vec();
            let w: Vec<f64> = Tensor::<f64>::randn(&g.weight_dims(), 2)
                .unwrap()
                .into_vec()
                .iter()
                .map(|v| v / (9.0 * c as f64).sqrt())
                .collect();
            let dy = Tensor::<f64>::randn(&g.out_dims(), 3).unwrap().into_vec();
            let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            let rel = |got: &[f32], want: &[f64]| {
                let num: f64 = got
                    .iter()
                    .zip(want)
                    .map(|(&a, &b)| (a as f64 - b).powi(2))
                    .sum();
                let den: f64 = want.iter().map(|b| b * b).sum();
                (num / den).sqrt()
            };
            let mut want = vec![0.0; dy.len()];
            conv::conv2d_fwd(&g, &x, &w, None, &mut want);
            let mut got = vec![f32::NAN; dy.len()];
            conv3x3_fwd(&g, &f32s(&x), &f32s(&w), None, &mut got);
            let e = rel(&got, &want);
            assert!(e < 5e-6, "fwd C={c} K={k} {hw}²: rel L2 {e:e}");
            let mut want = vec![0.0; x.len()];
            conv::conv2d_bwd_input(&g, &dy, &w, &mut want);
            let mut got = vec![f32::NAN; x.len()];
            conv3x3_bwd_input(&g, &f32s(&dy), &f32s(&w), &mut got);
            let e = rel(&got, &want);
            assert!(e < 5e-6, "bwd C={c} K={k} {hw}²: rel L2 {e:e}");
        }
    }
}
