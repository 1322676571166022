//! Direct convolution with one input channel per group at stride 1 (the first layer of a
//! grayscale model, depthwise layers): every tap is one long vectorised `y += w·x` over a
//! zero-padded copy of the plane.
//!
//! Shape of the work: a task takes one input plane (sample n, channel c) and the `og` output
//! planes of its group. Its padded copy has rows of `Wp = W + kw − 1` elements (stride 1), and
//! an output computed on that padded width — `y[oh·Wp + ow]` — reads the tap (i, j) at
//! `x_pad[(oh + i)·Wp + ow + j]`: the same offset `i·Wp + j` for every output, so a tap is a
//! single contiguous axpy over the whole plane instead of one short row at a time with edge
//! cases. The `kw − 1` extra columns per row are computed and dropped. The outputs are taken in
//! blocks of [`BLOCK`] that stay in registers while every tap (and, for the input gradient,
//! every output channel of the group) is added: one load per tap and output, no round trip of
//! the partial sums through memory.
//!
//! Summation order per output is the one of the row-by-row loop it replaces (forward: bias,
//! then taps in (i, j) order; input gradient: output channels in order, for each taps with i
//! descending and j ascending), so results are bit-identical; taps that fall on the padding
//! add w·0.

use super::conv::with_scratch;
use super::pool::{Pool2x2Scratch, pool_plane_2x2};
use super::simd::{copy_short, multiversion};
use crate::element::Float;
use crate::ops::geometry::{Conv2dGeometry, Pool2dGeometry};
use crate::parallel::{for_each_chunk, for_each_chunk_pair};

/// Whether [`fwd`] and [`bwd_input`] apply: one input channel per group, on a
/// [`padded_stride_1`] geometry.
pub(super) fn applies(g: &Conv2dGeometry) -> bool {
    g.in_channels == g.groups && padded_stride_1(g)
}

/// Stride 1, no dilation, and padding below the kernel size (so the input gradient's padding
/// is ≥ 0): every output is a whole-kernel correlation of a zero-padded plane.
fn padded_stride_1(g: &Conv2dGeometry) -> bool {
    g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.kernel_h > 0
        && g.kernel_w > 0
        && g.pad[0] < g.kernel_h
        && g.pad[1] < g.kernel_w
        // The end padding (out + k − 1 − in − start pad) is below the kernel size too.
        && g.out_h <= g.in_h + g.pad[0]
        && g.out_w <= g.in_w + g.pad[1]
}

/// Most kernel taps over all input channels (C·kh·kw) for which [`fwd_channels`] and
/// [`bwd_input_channels`] beat im2col + GEMM: there a GEMM's depth is short, and the column
/// matrix (C·kh·kw times the plane) costs as much to build as the products.
const CHANNEL_TAPS: usize = 72;

/// Whether [`fwd_channels`] and [`bwd_input_channels`] apply: one group of 2 or more input
/// channels with few taps in all (at most [`CHANNEL_TAPS`]) and at most 16 output channels,
/// on a [`padded_stride_1`] geometry — `tiny`'s second convolution (8 → 16,
/// 3×3: 15% less CPU per `tiny` map than im2col + GEMM). With 32 output channels (`small`'s
/// first layer, 3 → 32) the GEMM's width pays for its column matrix: 11% more CPU per `small`
/// map through this path, measured.
pub(super) fn applies_channels(g: &Conv2dGeometry) -> bool {
    g.groups == 1
        && g.in_channels > 1
        && g.in_channels * g.kernel_h * g.kernel_w <= CHANNEL_TAPS
        && g.out_channels <= 16
        && padded_stride_1(g)
}

/// Flat outputs on a padded width `wp` of an `h × w` plane: the last one is (h − 1)·wp + w − 1;
/// rounded up to whole [`TAIL`] blocks, so that every output runs in registers (the extra ones
/// are computed from the zeroed slack after the planes and dropped).
fn flat_blocks(h: usize, w: usize, wp: usize) -> usize {
    if h == 0 || w == 0 {
        0
    } else {
        ((h - 1) * wp + w).div_ceil(TAIL) * TAIL
    }
}

/// Forward of a convolution with `C` input channels in one group: out[n, o] = bias[o] +
/// Σ_c Σ_(i, j) w[o, c, i, j]·x_pad[n, c] shifted, in (c, i, j) order per output; one task per
/// sample, its C padded planes shared by all output channels.
pub(super) fn fwd_channels<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let p = g.out_h * g.out_w;
    for_each_chunk(out, (g.out_channels * p).max(1), |n, out_n| {
        fwd_sample(g, n, x, w, bias, |o, y, wp| {
            unpad_rows(y, wp, g.out_w, &mut out_n[o * p..][..p]);
        });
    });
}

/// Runs `item(i, emit)` for every item (input plane or sample) of a fused forward, a few tasks
/// per thread: each of the `planes` output planes item i emits (`emit(k, y, wp)`, on the padded
/// width) is pooled into its place in `pooled` and `argmax`.
fn pool_items<T: Float>(
    g: &Conv2dGeometry,
    pg: &Pool2dGeometry,
    planes: usize,
    pooled: &mut [T],
    argmax: &mut [u32],
    item: impl Fn(usize, &mut dyn FnMut(usize, &[T], usize)) + Sync,
) {
    let pool = padded_pool(g, pg);
    let pp = pool.out_h * pool.out_w;
    let per_item = (planes * pp).max(1);
    let items = pooled.len() / per_item;
    // A few tasks per thread, so that the pool scratch is made once per task, not per item.
    let per_task = per_item * items.div_ceil(4 * crate::parallel::threads()).max(1);
    for_each_chunk_pair(pooled, per_task, argmax, per_task, |t, out_t, arg_t| {
        let mut scratch = Pool2x2Scratch::new(&pool);
        let in_task = out_t.chunks_mut(per_item).zip(arg_t.chunks_mut(per_item));
        for (k, (out_i, arg_i)) in in_task.enumerate() {
            item(t * per_task / per_item + k, &mut |o, y, _| {
                let (out_o, arg_o) = (&mut out_i[o * pp..][..pp], &mut arg_i[o * pp..][..pp]);
                pool_padded(&pool, y, out_o, arg_o, &mut scratch);
            });
        }
    });
}

/// The output planes of sample `n` of [`fwd_channels`], each handed to `emit(o, y, wp)` as
/// computed on the padded width `wp` (`y[oh·wp + ow]`).
fn fwd_sample<T: Float>(
    g: &Conv2dGeometry,
    n: usize,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    mut emit: impl FnMut(usize, &[T], usize),
) {
    let (c_n, k_n) = (g.in_channels, g.out_channels);
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let (hp, wp) = (g.out_h + kh - 1, g.out_w + kw - 1);
    let hw = g.in_h * g.in_w;
    let flat = flat_blocks(g.out_h, g.out_w, wp);
    let taps = c_n * kh * kw;
    let geometry = Taps {
        plane: hp * wp,
        kh,
        kw,
        wp,
    };
    let bias_of = |o: usize| bias.map_or(T::zero(), |b| b[o]);
    // C padded planes, the slack the last block reads past them, two output planes.
    let slack = BLOCK;
    with_scratch(c_n * hp * wp + slack + 2 * flat, |buf: &mut [T]| {
        let (xp, y) = buf.split_at_mut(c_n * hp * wp + slack);
        let x_n = &x[n * c_n * hw..][..c_n * hw];
        pad_planes(x_n, [g.in_h, g.in_w], [g.pad[0], g.pad[1]], [hp, wp], xp);
        // Output channels two at a time (each x load feeds both), the last one alone.
        for o0 in (0..k_n).step_by(2) {
            let o1 = (o0 + 1).min(k_n - 1);
            let (w0, w1) = (&w[o0 * taps..][..taps], &w[o1 * taps..][..taps]);
            let (b0, b1) = (bias_of(o0), bias_of(o1));
            fwd_pair(xp, &geometry, c_n, [w0, w1], [b0, b1], y);
            emit(o0, &y[..flat], wp);
            if o1 != o0 {
                emit(o1, &y[flat..], wp);
            }
        }
    });
}

/// The pool geometry of a 2×2, stride-2 max pool `pg` over one output plane of `g` kept on its
/// padded width `out_w + kw − 1`: the same windows, rows that far apart, so its argmax indices
/// are positions on the padded width (`oh·wp + ow`).
fn padded_pool(g: &Conv2dGeometry, pg: &Pool2dGeometry) -> Pool2dGeometry {
    Pool2dGeometry {
        batch: 1,
        channels: 1,
        in_h: g.out_h,
        in_w: g.out_w + g.kernel_w - 1,
        ..*pg
    }
}

multiversion! {
    /// One pooled plane from a convolution output plane on its padded width (see
    /// [`padded_pool`]).
    fn pool_padded = pool_padded_impl(
        pool: &Pool2dGeometry,
        y: &[T],
        out: &mut [T],
        argmax: &mut [u32],
        scratch: &mut Pool2x2Scratch<T>,
    )
}

#[inline(always)]
fn pool_padded_impl<T: Float>(
    pool: &Pool2dGeometry,
    y: &[T],
    out: &mut [T],
    argmax: &mut [u32],
    scratch: &mut Pool2x2Scratch<T>,
) {
    pool_plane_2x2(pool, y, out, argmax, scratch);
}

/// Where the input-gradient kernels take dY from.
#[derive(Clone, Copy)]
enum Dy<'a, T> {
    /// The convolution's output gradient, `[N, O, out_h, out_w]`.
    Plain(&'a [T]),
    /// The output gradient of a fused 2×2 max pool, `[N, O, out_h / 2, out_w / 2]`, and its
    /// windows' winners as positions on the forward's padded width ([`padded_pool`]), which is
    /// the input gradient's padded width too (the fused path requires out_w = in_w).
    Pooled { dy: &'a [T], argmax: &'a [u32] },
    /// [`Dy::Pooled`] for `copies` samples, summed over them: the kernels run on one sample
    /// (`N = 1`) whose dY plane `o` is Σᵢ of copy `i`'s pooled gradient scattered to its
    /// winners (copy `i`'s planes start at plane `i·O` of `dy` and `argmax`).
    PooledSum {
        dy: &'a [T],
        argmax: &'a [u32],
        copies: usize,
    },
}

impl<T: Float> Dy<'_, T> {
    /// The dY planes `first .. first + count` (over N·O), zero-padded: each `hp × wp` with the
    /// plane at row `top`, column `left`; `dyp` after them is zeroed. A pooled dY is scattered
    /// to its windows' winners (the windows do not overlap).
    fn pad(
        &self,
        g: &Conv2dGeometry,
        [first, count]: [usize; 2],
        [top, left]: [usize; 2],
        [hp, wp]: [usize; 2],
        dyp: &mut [T],
    ) {
        match *self {
            Dy::Plain(dy) => {
                let p = g.out_h * g.out_w;
                let planes = &dy[first * p..][..count * p];
                pad_planes(planes, [g.out_h, g.out_w], [top, left], [hp, wp], dyp);
            }
            Dy::Pooled { dy, argmax } => {
                let pp = (g.out_h / 2) * (g.out_w / 2);
                let (dy, argmax) = (&dy[first * pp..][..count * pp], &argmax[first * pp..]);
                dyp.fill(T::zero());
                let at = top * wp + left;
                let planes = dy.chunks_exact(pp.max(1)).zip(argmax.chunks(pp.max(1)));
                for (k, (dy_k, arg_k)) in planes.enumerate() {
                    let plane = &mut dyp[k * hp * wp + at..];
                    for (&v, &a) in dy_k.iter().zip(arg_k) {
                        // Stored, not added to the zero: bit-identical downstream (the input
                        // gradient's sums start from +0, so a −0 here adds the same as a +0).
                        plane[a as usize] = v;
                    }
                }
            }
            Dy::PooledSum { dy, argmax, copies } => {
                let pp = (g.out_h / 2) * (g.out_w / 2);
                dyp.fill(T::zero());
                let at = top * wp + left;
                for i in 0..copies {
                    let start = (i * g.out_channels + first) * pp;
                    let (dy, argmax) = (&dy[start..][..count * pp], &argmax[start..][..count * pp]);
                    let planes = dy.chunks_exact(pp.max(1)).zip(argmax.chunks(pp.max(1)));
                    for (k, (dy_k, arg_k)) in planes.enumerate() {
                        let plane = &mut dyp[k * hp * wp + at..];
                        for (&v, &a) in dy_k.iter().zip(arg_k) {
                            plane[a as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Input gradient of a convolution with `C` input channels in one group: dx[n, c] = Σ_o
/// Σ_(i, j) w[o, c, i, j]·dy_pad[n, o] at the transposed offsets (as [`bwd_input`], output
/// channels in order, for each the taps with i descending and j ascending); one task per
/// sample, its K padded dY planes shared by all input channels.
pub(super) fn bwd_input_channels<T: Float>(g: &Conv2dGeometry, dy: &[T], w: &[T], dx: &mut [T]) {
    bwd_input_channels_from(g, Dy::Plain(dy), w, dx);
}

fn bwd_input_channels_from<T: Float>(g: &Conv2dGeometry, dy: Dy<T>, w: &[T], dx: &mut [T]) {
    let (c_n, k_n) = (g.in_channels, g.out_channels);
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let (hp, wp) = (g.in_h + kh - 1, g.in_w + kw - 1);
    let (top, left) = (kh - 1 - g.pad[0], kw - 1 - g.pad[1]);
    let hw = g.in_h * g.in_w;
    let flat = flat_blocks(g.in_h, g.in_w, wp);
    let taps = kh * kw;
    let geometry = Taps {
        plane: hp * wp,
        kh,
        kw,
        wp,
    };
    for_each_chunk(dx, (c_n * hw).max(1), |n, dx_n| {
        // K padded dY planes, their slack, one channel's kernels [K, kh, kw], one input plane.
        let planes = k_n * hp * wp + BLOCK;
        with_scratch(planes + 2 * k_n * taps + 2 * flat, |buf: &mut [T]| {
            let (dyp, rest) = buf.split_at_mut(planes);
            let (w_c, acc) = rest.split_at_mut(2 * k_n * taps);
            dy.pad(g, [n * k_n, k_n], [top, left], [hp, wp], dyp);
            // Input channels two at a time (each dY load feeds both), the last one alone; their
            // kernels side by side as [2, K, kh, kw].
            for c0 in (0..c_n).step_by(2) {
                let c1 = (c0 + 1).min(c_n - 1);
                for (k, &c) in [c0, c1].iter().enumerate() {
                    let w_k = &mut w_c[k * k_n * taps..][..k_n * taps];
                    for (o, w_co) in w_k.chunks_exact_mut(taps).enumerate() {
                        w_co.copy_from_slice(&w[(o * c_n + c) * taps..][..taps]);
                    }
                }
                let (w0, w1) = w_c.split_at(k_n * taps);
                bwd_pair(dyp, &geometry, [w0, w1], k_n, acc);
                for (c, a_c) in [(c0, &acc[..flat]), (c1, &acc[flat..])] {
                    let dx_c = &mut dx_n[c * hw..][..hw];
                    unpad_rows(a_c, wp, g.in_w, dx_c);
                }
            }
        });
    });
}

/// Where the taps of [`fwd_pair`] and [`bwd_pair`] read: padded planes `plane` apart, rows of
/// `wp`, a `kh × kw` kernel.
struct Taps {
    plane: usize,
    kh: usize,
    kw: usize,
    wp: usize,
}

multiversion! {
    /// Two output planes of [`fwd_channels`] (`y`: two planes of whole blocks, side by side)
    /// from `cg` padded input planes, the two channels' kernels `w` ([cg, kh, kw] each) and
    /// biases `b`.
    fn fwd_pair = fwd_pair_impl(xp: &[T], t: &Taps, cg: usize, w: [&[T]; 2], b: [T; 2], y: &mut [T])
}

#[inline(always)]
fn fwd_pair_impl<T: Float>(xp: &[T], t: &Taps, cg: usize, w: [&[T]; 2], b: [T; 2], y: &mut [T]) {
    let (y0, y1) = y.split_at_mut(y.len() / 2);
    let full = y0.len() / BLOCK * BLOCK;
    let ((y0, y0_tail), (y1, y1_tail)) = (y0.split_at_mut(full), y1.split_at_mut(full));
    for (k, (y0_b, y1_b)) in y0
        .chunks_exact_mut(BLOCK)
        .zip(y1.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        fwd_pair_block::<T, BLOCK>(xp, t, cg, w, b, k * BLOCK, [y0_b, y1_b]);
    }
    for (k, (y0_b, y1_b)) in y0_tail
        .chunks_exact_mut(TAIL)
        .zip(y1_tail.chunks_exact_mut(TAIL))
        .enumerate()
    {
        fwd_pair_block::<T, TAIL>(xp, t, cg, w, b, full + k * TAIL, [y0_b, y1_b]);
    }
}

/// `B` outputs of both planes of [`fwd_pair`] from output `at` on, in registers.
#[inline(always)]
fn fwd_pair_block<T: Float, const B: usize>(
    xp: &[T],
    t: &Taps,
    cg: usize,
    w: [&[T]; 2],
    b: [T; 2],
    at: usize,
    [y0_b, y1_b]: [&mut [T]; 2],
) {
    let (mut a0, mut a1) = ([b[0]; B], [b[1]; B]);
    for c in 0..cg {
        for i in 0..t.kh {
            for j in 0..t.kw {
                let tap = (c * t.kh + i) * t.kw + j;
                let src = &xp[c * t.plane + i * t.wp + j + at..][..B];
                fma_pair(&mut a0, &mut a1, w[0][tap], w[1][tap], src);
            }
        }
    }
    y0_b.copy_from_slice(&a0);
    y1_b.copy_from_slice(&a1);
}

multiversion! {
    /// Two input planes of [`bwd_input_channels`] (`acc`: two planes of whole blocks, side by
    /// side) from the `og` padded dY planes and the two channels' kernels `w` ([og, kh, kw]).
    fn bwd_pair = bwd_pair_impl(dyp: &[T], t: &Taps, w: [&[T]; 2], og: usize, acc: &mut [T])
}

#[inline(always)]
fn bwd_pair_impl<T: Float>(dyp: &[T], t: &Taps, w: [&[T]; 2], og: usize, acc: &mut [T]) {
    let (y0, y1) = acc.split_at_mut(acc.len() / 2);
    let full = y0.len() / BLOCK * BLOCK;
    let ((y0, y0_tail), (y1, y1_tail)) = (y0.split_at_mut(full), y1.split_at_mut(full));
    for (k, (y0_b, y1_b)) in y0
        .chunks_exact_mut(BLOCK)
        .zip(y1.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        bwd_pair_block::<T, BLOCK>(dyp, t, w, og, k * BLOCK, [y0_b, y1_b]);
    }
    for (k, (y0_b, y1_b)) in y0_tail
        .chunks_exact_mut(TAIL)
        .zip(y1_tail.chunks_exact_mut(TAIL))
        .enumerate()
    {
        bwd_pair_block::<T, TAIL>(dyp, t, w, og, full + k * TAIL, [y0_b, y1_b]);
    }
}

/// `B` elements of both planes of [`bwd_pair`] from element `at` on, in registers.
#[inline(always)]
fn bwd_pair_block<T: Float, const B: usize>(
    dyp: &[T],
    t: &Taps,
    w: [&[T]; 2],
    og: usize,
    at: usize,
    [y0_b, y1_b]: [&mut [T]; 2],
) {
    let (mut a0, mut a1) = ([T::zero(); B], [T::zero(); B]);
    for o in 0..og {
        for i in (0..t.kh).rev() {
            for j in 0..t.kw {
                let tap = (o * t.kh + i) * t.kw + j;
                let from = o * t.plane + (t.kh - 1 - i) * t.wp + (t.kw - 1 - j) + at;
                fma_pair(&mut a0, &mut a1, w[0][tap], w[1][tap], &dyp[from..][..B]);
            }
        }
    }
    y0_b.copy_from_slice(&a0);
    y1_b.copy_from_slice(&a1);
}

/// a0 += w0·src, a1 += w1·src, fused multiply-adds.
#[inline(always)]
fn fma_pair<T: Float, const B: usize>(a0: &mut [T; B], a1: &mut [T; B], w0: T, w1: T, src: &[T]) {
    let src = &src[..B];
    for k in 0..B {
        a0[k] = w0.mul_add(src[k], a0[k]);
        a1[k] = w1.mul_add(src[k], a1[k]);
    }
}

/// The plane `dst` (rows of `w`) from its rows computed on the padded width `wp` in `src`.
fn unpad_rows<T: Float>(src: &[T], wp: usize, w: usize, dst: &mut [T]) {
    for (r, row) in dst.chunks_exact_mut(w.max(1)).enumerate() {
        copy_short(row, &src[r * wp..][..w]);
    }
}

/// Copies the consecutive `h × w` planes of `src` into consecutive `hp × wp` planes of `dst`
/// (zeroed first) at row `top`, column `left` of each; the rest of `dst` after them is zeroed.
fn pad_planes<T: Float>(
    src: &[T],
    [h, w]: [usize; 2],
    [top, left]: [usize; 2],
    [hp, wp]: [usize; 2],
    dst: &mut [T],
) {
    let planes = src.len() / (h * w).max(1);
    let (padded, rest) = dst.split_at_mut(planes * hp * wp);
    for (s, d) in src
        .chunks_exact((h * w).max(1))
        .zip(padded.chunks_exact_mut(hp * wp))
    {
        pad_into(s, h, w, top, left, wp, d);
    }
    rest.fill(T::zero());
}

/// Copies the `h × w` plane `src` into `dst` (`hp × wp`, zeroed first) at row `top`, column
/// `left`.
fn pad_into<T: Float>(
    src: &[T],
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    wp: usize,
    dst: &mut [T],
) {
    dst.fill(T::zero());
    for (r, row) in src.chunks_exact(w).take(h).enumerate() {
        copy_short(&mut dst[(top + r) * wp + left..][..w], row);
    }
}

/// Forward: `out[n, o] = bias[o] + Σ_(i, j) w[o, 0, i, j]·x_pad[n, o / og]` shifted.
pub(super) fn fwd<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let og = g.out_channels / g.groups;
    let p = g.out_h * g.out_w;
    for_each_chunk(out, og * p, |plane, out_c| {
        fwd_group(g, plane, x, w, bias, |k, y, wp| {
            unpad_rows(y, wp, g.out_w, &mut out_c[k * p..][..p]);
        });
    });
}

/// [`fwd`] (one input channel per group) or [`fwd_channels`] followed by the 2×2, stride-2
/// max pool `pg` over its output, fused: each output plane is pooled from the scratch it was
/// computed in on the padded width (never stored whole), into `pooled` and `argmax` — the
/// windows' winners as positions on that padded width (see [`padded_pool`];
/// [`bwd_input_pooled`] scatters from them). Values are bit-identical to the separate
/// convolution and max pool.
pub(super) fn fwd_pooled<T: Float>(
    g: &Conv2dGeometry,
    pg: &Pool2dGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    pooled: &mut [T],
    argmax: &mut [u32],
) {
    if g.in_channels == g.groups {
        let og = g.out_channels / g.groups;
        pool_items(g, pg, og, pooled, argmax, |plane, emit| {
            fwd_group(g, plane, x, w, bias, emit);
        });
    } else {
        pool_items(g, pg, g.out_channels, pooled, argmax, |n, emit| {
            fwd_sample(g, n, x, w, bias, emit);
        });
    }
}

/// The output planes of [`fwd`] made from input plane `plane` (n·C + c), each handed to
/// `emit(k, y, wp)` (k-th of the group) as computed on the padded width `wp`.
fn fwd_group<T: Float>(
    g: &Conv2dGeometry,
    plane: usize,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    mut emit: impl FnMut(usize, &[T], usize),
) {
    let og = g.out_channels / g.groups;
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    // Start padding before the input, end padding after it (it only shapes the output).
    let (hp, wp) = (g.out_h + kh - 1, g.out_w + kw - 1);
    let hw = g.in_h * g.in_w;
    let flat = flat_blocks(g.out_h, g.out_w, wp);
    let (n, c) = (plane / g.in_channels, plane % g.in_channels);
    let x_c = &x[(n * g.in_channels + c) * hw..][..hw];
    // The padded plane, the zeros the last block reads past it, two output planes on the
    // padded width, in this thread's scratch.
    with_scratch(hp * wp + TAIL + 2 * flat, |buf: &mut [T]| {
        let (xp, y) = buf.split_at_mut(hp * wp + TAIL);
        pad_planes(x_c, [g.in_h, g.in_w], [g.pad[0], g.pad[1]], [hp, wp], xp);
        let (w_of, b_of) = (
            |k: usize| &w[(c * og + k) * kh * kw..][..kh * kw],
            |k: usize| bias.map_or(T::zero(), |b| b[c * og + k]),
        );
        // Output planes two at a time (each x load feeds both), the last one alone.
        for k0 in (0..og).step_by(2) {
            let k1 = (k0 + 1).min(og - 1);
            fwd_planes2(
                xp,
                [w_of(k0), w_of(k1)],
                [b_of(k0), b_of(k1)],
                [kh, kw],
                wp,
                y,
            );
            emit(k0, &y[..flat], wp);
            if k1 != k0 {
                emit(k1, &y[flat..], wp);
            }
        }
    });
}

multiversion! {
    /// Two output planes of [`fwd`] from the same padded input plane, on the padded width (`y`:
    /// the two side by side), each output summed as [`fwd_planes2_block`] does.
    fn fwd_planes2 = fwd_planes2_impl(
        xp: &[T],
        w: [&[T]; 2],
        b: [T; 2],
        k: [usize; 2],
        wp: usize,
        y: &mut [T],
    )
}

#[inline(always)]
fn fwd_planes2_impl<T: Float>(
    xp: &[T],
    w: [&[T]; 2],
    b: [T; 2],
    k: [usize; 2],
    wp: usize,
    y: &mut [T],
) {
    // Whole blocks in registers, then whole tail blocks (the planes are whole tail blocks long).
    let (y0, y1) = y.split_at_mut(y.len() / 2);
    let full = y0.len() / BLOCK * BLOCK;
    let ((y0, y0_tail), (y1, y1_tail)) = (y0.split_at_mut(full), y1.split_at_mut(full));
    for (n, (y0_b, y1_b)) in y0
        .chunks_exact_mut(BLOCK)
        .zip(y1.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        fwd_planes2_block::<T, BLOCK>(xp, w, b, k, wp, n * BLOCK, [y0_b, y1_b]);
    }
    for (n, (y0_b, y1_b)) in y0_tail
        .chunks_exact_mut(TAIL)
        .zip(y1_tail.chunks_exact_mut(TAIL))
        .enumerate()
    {
        fwd_planes2_block::<T, TAIL>(xp, w, b, k, wp, full + n * TAIL, [y0_b, y1_b]);
    }
}

/// `B` outputs of both planes of [`fwd_planes2`] from output `at` on, in registers: per
/// output the bias, then the taps in (i, j) order, a multiply then an add (no fused
/// multiply-add: the bits of the row-by-row loop).
#[inline(always)]
fn fwd_planes2_block<T: Float, const B: usize>(
    xp: &[T],
    w: [&[T]; 2],
    b: [T; 2],
    [kh, kw]: [usize; 2],
    wp: usize,
    at: usize,
    [y0_b, y1_b]: [&mut [T]; 2],
) {
    let (mut a0, mut a1) = ([b[0]; B], [b[1]; B]);
    for i in 0..kh {
        for j in 0..kw {
            let (w0, w1) = (w[0][i * kw + j], w[1][i * kw + j]);
            let src = &xp[i * wp + j + at..][..B];
            for l in 0..B {
                a0[l] += w0 * src[l];
                a1[l] += w1 * src[l];
            }
        }
    }
    y0_b.copy_from_slice(&a0);
    y1_b.copy_from_slice(&a1);
}

/// Outputs a block of [`fwd_planes2`] and the pair kernels keeps in registers while it runs through the taps.
const BLOCK: usize = 128;

/// Outputs of the pair kernels' blocks after the last whole [`BLOCK`] (a plane's flat length
/// is rounded up to these, not to a whole `BLOCK`: `tiny`'s 14 × 14 planes on their padded
/// width 16 are 222 outputs, 224 computed instead of 256).
const TAIL: usize = 32;

/// Input gradient: `dx[n, c] = Σ_(o in c's group) Σ_(i, j) w[o, 0, i, j]·dy[n, o]` at the
/// transposed offsets, over `dy` padded by `kh − 1 − ph` rows above and `kw − 1 − pw` columns
/// left (the full correlation with the flipped kernel).
pub(super) fn bwd_input<T: Float>(g: &Conv2dGeometry, dy: &[T], w: &[T], dx: &mut [T]) {
    bwd_input_from(g, Dy::Plain(dy), w, dx);
}

/// [`bwd_input`] or [`bwd_input_channels`] of a convolution followed by a fused 2×2 max pool
/// ([`fwd_pooled`]): `dy` is the pool's output gradient, `argmax` its winners.
pub(super) fn bwd_input_pooled<T: Float>(
    g: &Conv2dGeometry,
    dy: &[T],
    argmax: &[u32],
    w: &[T],
    dx: &mut [T],
) {
    bwd_input_dy(g, Dy::Pooled { dy, argmax }, w, dx);
}

/// [`bwd_input_pooled`] summed over the batch of `g` (`dx` is one sample): the input gradient
/// is linear in dY, so the copies' scattered pooled gradients are summed into one set of padded
/// dY planes and the kernels run once.
pub(super) fn bwd_input_pooled_sum<T: Float>(
    g: &Conv2dGeometry,
    dy: &[T],
    argmax: &[u32],
    w: &[T],
    dx: &mut [T],
) {
    let dy = Dy::PooledSum {
        dy,
        argmax,
        copies: g.batch,
    };
    bwd_input_dy(&Conv2dGeometry { batch: 1, ..*g }, dy, w, dx);
}

/// The direct input gradient of `g` (one input channel per group, or a few) from `dy`.
fn bwd_input_dy<T: Float>(g: &Conv2dGeometry, dy: Dy<T>, w: &[T], dx: &mut [T]) {
    if g.in_channels == g.groups {
        bwd_input_from(g, dy, w, dx);
    } else {
        bwd_input_channels_from(g, dy, w, dx);
    }
}

fn bwd_input_from<T: Float>(g: &Conv2dGeometry, dy: Dy<T>, w: &[T], dx: &mut [T]) {
    let og = g.out_channels / g.groups;
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let (hp, wp) = (g.in_h + kh - 1, g.in_w + kw - 1);
    let (top, left) = (kh - 1 - g.pad[0], kw - 1 - g.pad[1]);
    let hw = g.in_h * g.in_w;
    let flat = flat_blocks(g.in_h, g.in_w, wp);
    for_each_chunk(dx, hw.max(1), |plane, dx_c| {
        let (n, c) = (plane / g.in_channels, plane % g.in_channels);
        // The group's padded dY planes, the zeros the last block reads past them, and the
        // accumulated input plane, in this thread's scratch.
        with_scratch(og * hp * wp + TAIL + flat, |buf: &mut [T]| {
            let (dyp, acc) = buf.split_at_mut(og * hp * wp + TAIL);
            dy.pad(
                g,
                [n * g.out_channels + c * og, og],
                [top, left],
                [hp, wp],
                dyp,
            );
            let w_c = &w[c * og * kh * kw..][..og * kh * kw];
            bwd_plane(dyp, w_c, og, [hp, wp], [kh, kw], acc);
            unpad_rows(acc, wp, g.in_w, dx_c);
        });
    });
}

multiversion! {
    /// An input plane of [`bwd_input`] on the padded width (`acc`, whole tail blocks) from its
    /// group's `og` padded dY planes (`dyp`, each `hp × wp`, zeros after them) and their
    /// kernels (`w_c`).
    fn bwd_plane = bwd_plane_impl(
        dyp: &[T],
        w_c: &[T],
        og: usize,
        padded: [usize; 2],
        k: [usize; 2],
        acc: &mut [T],
    )
}

#[inline(always)]
fn bwd_plane_impl<T: Float>(
    dyp: &[T],
    w_c: &[T],
    og: usize,
    padded: [usize; 2],
    k: [usize; 2],
    acc: &mut [T],
) {
    // Whole blocks in registers, then whole tail blocks.
    let full = acc.len() / BLOCK * BLOCK;
    let (acc, tail) = acc.split_at_mut(full);
    for (n, acc_b) in acc.chunks_exact_mut(BLOCK).enumerate() {
        bwd_plane_block::<T, BLOCK>(dyp, w_c, og, padded, k, n * BLOCK, acc_b);
    }
    for (n, acc_b) in tail.chunks_exact_mut(TAIL).enumerate() {
        bwd_plane_block::<T, TAIL>(dyp, w_c, og, padded, k, full + n * TAIL, acc_b);
    }
}

/// `B` elements of [`bwd_plane`] from element `at` on, in registers: per element from 0,
/// `Σ_o Σ_(i, j) w_c[o, i, j]·dyp[o][(kh − 1 − i)·wp + kw − 1 − j + at]`, output channels in
/// order, for each the taps with i descending and j ascending, a multiply then an add.
#[inline(always)]
fn bwd_plane_block<T: Float, const B: usize>(
    dyp: &[T],
    w_c: &[T],
    og: usize,
    [hp, wp]: [usize; 2],
    [kh, kw]: [usize; 2],
    at: usize,
    out: &mut [T],
) {
    let mut a = [T::zero(); B];
    for o in 0..og {
        let w_o = &w_c[o * kh * kw..][..kh * kw];
        for i in (0..kh).rev() {
            for j in 0..kw {
                let wv = w_o[i * kw + j];
                let src = &dyp[o * hp * wp + (kh - 1 - i) * wp + (kw - 1 - j) + at..][..B];
                for l in 0..B {
                    a[l] += wv * src[l];
                }
            }
        }
    }
    out.copy_from_slice(&a);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::geometry::Conv2dParams;
    use crate::tensor::Tensor;

    fn run<T: Float>(g: &Conv2dGeometry, seed: u64) {
        let x: Vec<T> =
            Tensor::<T>::uniform(&[g.batch, g.in_channels, g.in_h, g.in_w], -1.0, 1.0, seed)
                .unwrap()
                .into_vec();
        let taps = g.kernel_h * g.kernel_w;
        let w: Vec<T> = Tensor::<T>::uniform(
            &[g.out_channels, 1, g.kernel_h, g.kernel_w],
            -1.0,
            1.0,
            seed + 1,
        )
        .unwrap()
        .into_vec();
        assert_eq!(w.len(), g.out_channels * taps);
        let b: Vec<T> = Tensor::<T>::uniform(&[g.out_channels], -1.0, 1.0, seed + 2)
            .unwrap()
            .into_vec();
        let dy: Vec<T> = Tensor::<T>::uniform(
            &[g.batch, g.out_channels, g.out_h, g.out_w],
            -1.0,
            1.0,
            seed + 3,
        )
        .unwrap()
        .into_vec();
        let d = super::super::conv::test_dims(g);
        let mut fast = vec![T::nan(); dy.len()];
        let mut rows = vec![T::nan(); dy.len()];
        fwd(g, &x, &w, Some(&b), &mut fast);
        super::super::conv::direct_fwd_rows(g, &d, &x, &w, Some(&b), &mut rows);
        assert_eq!(fast, rows, "forward {g:?}");
        let mut fast = vec![T::nan(); x.len()];
        let mut rows = vec![T::nan(); x.len()];
        bwd_input(g, &dy, &w, &mut fast);
        super::super::conv::direct_bwd_input_rows(g, &d, &dy, &w, &mut rows);
        assert_eq!(fast, rows, "input gradient {g:?}");
    }

    /// The multi-channel kernels against im2col + GEMM: f64 to rounding, f32 to its precision
    /// (their summation order is (c, i, j) per output with fused multiply-adds, not the GEMM's).
    #[test]
    fn channel_kernels_match_im2col() {
        let p = |pad: [usize; 4]| Conv2dParams {
            stride: [1, 1],
            padding: pad,
            dilation: [1, 1],
            groups: 1,
        };
        let cases = [
            ([3, 8, 14, 14], [16, 8, 3, 3], p([1; 4])), // tiny's second layer
            ([2, 3, 32, 32], [16, 3, 3, 3], p([1; 4])), // a 3-channel first layer
            ([2, 3, 9, 7], [5, 3, 3, 3], p([0; 4])),    // odd channel counts, valid
            ([1, 2, 8, 11], [3, 2, 5, 5], p([2, 1, 4, 3])), // 5×5, asymmetric padding
            ([2, 4, 6, 5], [7, 4, 3, 2], p([1, 0, 0, 1])), // 3×2
            ([1, 2, 3, 3], [2, 2, 3, 3], p([2; 4])),    // output larger than the input
        ];
        for (k, (xd, wd, params)) in cases.into_iter().enumerate() {
            let g = Conv2dGeometry::new(&xd, &wd, &params).unwrap();
            assert!(applies_channels(&g), "{g:?}");
            let seed = 40 + 10 * k as u64;
            let data = |dims: &[usize], s: u64| {
                Tensor::<f64>::uniform(dims, -1.0, 1.0, seed + s)
                    .unwrap()
                    .into_vec()
            };
            let (x, w) = (data(&g.in_dims(), 0), data(&g.weight_dims(), 1));
            let (b, dy) = (data(&[g.out_channels], 2), data(&g.out_dims(), 3));
            let mut want_y = vec![0.0; dy.len()];
            super::super::conv::conv2d_fwd(&g, &x, &w, Some(&b), &mut want_y);
            let mut want_dx = vec![0.0; x.len()];
            super::super::conv::conv2d_bwd_input(&g, &dy, &w, &mut want_dx);
            let max_err = |got: &[f64], want: &[f64]| {
                let scale = want.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
                let err = got
                    .iter()
                    .zip(want)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                err / scale
            };
            let mut y = vec![f64::NAN; dy.len()];
            fwd_channels(&g, &x, &w, Some(&b), &mut y);
            assert!(max_err(&y, &want_y) < 1e-13, "f64 forward {g:?}");
            let mut dx = vec![f64::NAN; x.len()];
            bwd_input_channels(&g, &dy, &w, &mut dx);
            assert!(max_err(&dx, &want_dx) < 1e-13, "f64 input gradient {g:?}");
            let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
            let mut y = vec![f32::NAN; dy.len()];
            fwd_channels(&g, &f32s(&x), &f32s(&w), Some(&f32s(&b)), &mut y);
            let e = max_err(&f64s(&y), &want_y);
            assert!(e < 2e-6, "f32 forward {g:?}: {e:e}");
            let mut dx = vec![f32::NAN; x.len()];
            bwd_input_channels(&g, &f32s(&dy), &f32s(&w), &mut dx);
            let e = max_err(&f64s(&dx), &want_dx);
            assert!(e < 2e-6, "f32 input gradient {g:?}: {e:e}");
        }
        // Too many taps or output channels take im2col.
        let many = Conv2dGeometry::new(&[1, 9, 8, 8], &[4, 9, 3, 3], &p([1; 4])).unwrap();
        assert!(!applies_channels(&many));
        let wide = Conv2dGeometry::new(&[1, 3, 8, 8], &[32, 3, 3, 3], &p([1; 4])).unwrap();
        assert!(!applies_channels(&wide));
    }

    #[test]
    fn padded_plane_taps_match_the_row_loop_bit_for_bit() {
        let p = |pad: [usize; 4], groups| Conv2dParams {
            stride: [1, 1],
            padding: pad,
            dilation: [1, 1],
            groups,
        };
        // (x dims, w dims, params)
        let cases = [
            ([3, 1, 28, 28], [8, 1, 3, 3], p([1; 4], 1)), // tiny's first layer
            ([2, 1, 7, 5], [3, 1, 3, 3], p([0; 4], 1)),   // valid
            ([2, 3, 9, 6], [6, 1, 5, 5], p([2; 4], 3)),   // depthwise ×2, 5×5
            ([1, 2, 6, 7], [2, 1, 3, 2], p([1, 0, 2, 1], 2)), // asymmetric padding, 3×2
            ([2, 4, 5, 5], [4, 1, 1, 1], p([0; 4], 4)),   // 1×1 depthwise
            ([1, 2, 4, 9], [6, 1, 2, 3], p([1, 2, 0, 0], 2)), // start padding only, ×3
        ];
        for (k, (xd, wd, params)) in cases.into_iter().enumerate() {
            let g = Conv2dGeometry::new(&xd, &wd, &params).unwrap();
            assert!(applies(&g), "{g:?}");
            run::<f32>(&g, 10 * k as u64);
            run::<f64>(&g, 10 * k as u64 + 5);
        }
        // Padding as large as the kernel takes the row loop.
        let g = Conv2dGeometry::new(&[1, 1, 5, 5], &[1, 1, 3, 3], &p([3; 4], 1)).unwrap();
        assert!(!applies(&g));
    }
}
