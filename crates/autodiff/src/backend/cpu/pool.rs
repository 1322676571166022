//! 2-D max and average pooling on the CPU (NCHW), with PyTorch's CPU semantics.
//!
//! Shape of the work: rayon tasks of whole (n, c) planes, enough planes per task to amortise the
//! hand-off. Max pool's windows that lie wholly inside the input run vectorised across output
//! columns (one output row at a time, each tap a unit-stride slice of a deinterleaved input
//! row); the border windows, and average pool, scan each window directly.

use super::conv::valid_range;
use super::simd::{copy_short, multiversion};
use crate::element::Float;
use crate::ops::geometry::Pool2dGeometry;
use rayon::prelude::*;

/// Argmax of a window that holds no input element (possible only with dilation and padding):
/// its output is -inf and the backward skips it.
pub const NO_ARGMAX: u32 = u32::MAX;

/// Max pool: out[N,C,OH,OW] and argmax[N,C,OH,OW] = flat index (ih*W + iw) inside the input
/// plane of the max. Padding counts as -inf (never selected). Ties: the FIRST maximum in
/// row-major scan order wins (PyTorch CPU: `val > max || isnan(val)`; NaN propagates and is
/// selected).
///
/// # Panics
/// When a slice length disagrees with the geometry, or an input plane has 2^32 elements or more
/// (the op layer rejects both).
pub fn maxpool2d_fwd<T: Float>(g: &Pool2dGeometry, x: &[T], out: &mut [T], argmax: &mut [u32]) {
    let (hw, p) = check_lengths(g, "maxpool2d_fwd", x.len(), out.len());
    assert_eq!(argmax.len(), out.len(), "maxpool2d_fwd: argmax length");
    assert!(
        hw < NO_ARGMAX as usize,
        "maxpool2d_fwd: input plane too large for u32 argmax"
    );
    if out.is_empty() {
        return;
    }
    let per_task = planes_per_task(g);
    let fast = has_interior(g) && g.stride[1] <= MAX_FAST_STRIDE;
    let two = is_2x2_stride_2(g);
    let task = |task: usize, out_t: &mut [T], arg_t: &mut [u32]| {
        let x_t = &x[task * per_task * hw..][..out_t.len() / p * hw];
        if two {
            maxpool_planes_2x2(g, x_t, out_t, arg_t);
        } else if fast {
            maxpool_planes_fast(g, x_t, out_t, arg_t);
        } else {
            for ((x_p, out_p), arg_p) in x_t
                .chunks(hw)
                .zip(out_t.chunks_mut(p))
                .zip(arg_t.chunks_mut(p))
            {
                maxpool_plane_general(g, x_p, out_p, arg_p);
            }
        }
    };
    if crate::parallel::threads() == 1 {
        out.chunks_mut(p * per_task)
            .zip(argmax.chunks_mut(p * per_task))
            .enumerate()
            .for_each(|(t, (out_t, arg_t))| task(t, out_t, arg_t));
    } else {
        out.par_chunks_mut(p * per_task)
            .zip(argmax.par_chunks_mut(p * per_task))
            .enumerate()
            .for_each(|(t, (out_t, arg_t))| task(t, out_t, arg_t));
    }
}

/// The common 2×2 window at stride 2, no padding or dilation, every window inside the input.
pub(super) fn is_2x2_stride_2(g: &Pool2dGeometry) -> bool {
    g.kernel == [2, 2]
        && g.stride == [2, 2]
        && g.pad == [0, 0]
        && g.dilation == [1, 1]
        && 2 * g.out_h <= g.in_h
        && 2 * g.out_w <= g.in_w
}

multiversion! {
    /// [`maxpool2d_fwd`] on whole planes for [`is_2x2_stride_2`] geometries.
    fn maxpool_planes_2x2 = maxpool_planes_2x2_impl(
        g: &Pool2dGeometry,
        x: &[T],
        out: &mut [T],
        arg: &mut [u32],
    )
}

/// Each output reads (2oh, 2ow), (2oh, 2ow + 1), (2oh + 1, 2ow), (2oh + 1, 2ow + 1) in that
/// order with [`max_window`]'s rule (`v > best || v is NaN`, from the first tap): the first
/// maximum in scan order, or the last NaN. That rule splits exactly into the horizontal pairs
/// first (each row pair → its winner) and then the two winners, top preferred on a tie. Both
/// passes run as long loops over the whole plane, which is what lets them vectorise when rows
/// are short (7 or 14 outputs in the small models: a loop per row never reaches its vector
/// body):
///
/// 1. pairs: the winner of each horizontal pair and its index in the plane (all the rows' pairs
///    as one stream when the rows have an even width);
/// 2. rows: every row of pair winners against the next one, as one stream — twice the
///    comparisons needed, the odd rows' results are dropped;
/// 3. the even rows' results are copied into the plane's output rows (short fixed-size
///    moves, no `memcpy` calls).
///
/// Values and argmax match [`max_window`] bit for bit.
#[inline(always)]
fn maxpool_planes_2x2_impl<T: Float>(g: &Pool2dGeometry, x: &[T], out: &mut [T], arg: &mut [u32]) {
    let (hw, p) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let mut scratch = Pool2x2Scratch::new(g);
    for ((x_p, out_p), arg_p) in x.chunks(hw).zip(out.chunks_mut(p)).zip(arg.chunks_mut(p)) {
        pool_plane_2x2(g, x_p, out_p, arg_p, &mut scratch);
    }
}

/// The buffers of [`pool_plane_2x2`] for planes of one geometry: pair winners per input row,
/// each row against the next.
pub(super) struct Pool2x2Scratch<T> {
    hv: Vec<T>,
    hi: Vec<u32>,
    dv: Vec<T>,
    di: Vec<u32>,
}

impl<T: Float> Pool2x2Scratch<T> {
    pub(super) fn new(g: &Pool2dGeometry) -> Self {
        let pairs_len = 2 * g.out_h * pairs_per_row(g);
        Pool2x2Scratch {
            hv: vec![T::zero(); pairs_len],
            hi: vec![0; pairs_len],
            dv: vec![T::zero(); pairs_len],
            di: vec![0; pairs_len],
        }
    }
}

/// Pair winners [`pool_plane_2x2`] keeps per input row: every pair of an even-width row (the
/// rows then form one stream of pairs), the windows' pairs of an odd-width one.
fn pairs_per_row(g: &Pool2dGeometry) -> usize {
    if g.in_w.is_multiple_of(2) {
        g.in_w / 2
    } else {
        g.out_w
    }
}

/// One plane of [`maxpool_planes_2x2`]: `x_p` holds the plane's rows `g.in_w` apart (at least
/// up to the last element a window reads), `out_p` and `arg_p` its outputs and their indices
/// in `x_p`.
#[inline(always)]
pub(super) fn pool_plane_2x2<T: Float>(
    g: &Pool2dGeometry,
    x_p: &[T],
    out_p: &mut [T],
    arg_p: &mut [u32],
    s: &mut Pool2x2Scratch<T>,
) {
    let (w, ow_len) = (g.in_w, g.out_w);
    let rows = 2 * g.out_h;
    // Pair winners per row in `hv`: the rows' windows start that far apart.
    let stride = pairs_per_row(g);
    let pairs_len = rows * stride;
    let (hv, hi) = (&mut s.hv[..pairs_len], &mut s.hi[..pairs_len]);
    if w.is_multiple_of(2) {
        // Every pair of every row, in one stream (the pairs past a row's windows are computed
        // and never read; the plane may end before the last row's extra ones).
        pairs(&x_p[..(rows * w).min(x_p.len())], 0, hv, hi);
    } else {
        for r in 0..rows {
            let span = r * ow_len..(r + 1) * ow_len;
            pairs(
                &x_p[r * w..][..2 * ow_len],
                (r * w) as u32,
                &mut hv[span.clone()],
                &mut hi[span],
            );
        }
    }
    let n = pairs_len.saturating_sub(stride);
    let (tv, ti) = (&hv[..n], &hi[..n]);
    let (bv, bi) = (&hv[stride..][..n], &hi[stride..][..n]);
    let (dv_n, di_n) = (&mut s.dv[..n], &mut s.di[..n]);
    for j in 0..n {
        let take = (bv[j] > tv[j]) | bv[j].is_nan();
        dv_n[j] = if take { bv[j] } else { tv[j] };
        // The index select as a mask (a `select` on it kept the loop scalar).
        let m = (take as u32).wrapping_neg();
        di_n[j] = ti[j] ^ ((ti[j] ^ bi[j]) & m);
    }
    let rows = out_p
        .chunks_exact_mut(ow_len.max(1))
        .zip(arg_p.chunks_exact_mut(ow_len.max(1)));
    for (oh, (out_row, arg_row)) in rows.enumerate() {
        let from = 2 * oh * stride;
        copy_short(out_row, &s.dv[from..][..ow_len]);
        copy_short(arg_row, &s.di[from..][..ow_len]);
    }
}

/// `v[k], i[k]` = the winner of the pair `(x[2k], x[2k + 1])` by the scalar rule and its
/// index, `first + 2k` or `first + 2k + 1`.
#[inline(always)]
fn pairs<T: Float>(x: &[T], first: u32, v: &mut [T], i: &mut [u32]) {
    let n = v.len().min(i.len()).min(x.len() / 2);
    let (x, v, i) = (&x[..2 * n], &mut v[..n], &mut i[..n]);
    for k in 0..n {
        let (a, b) = (x[2 * k], x[2 * k + 1]);
        let take = (b > a) | b.is_nan();
        v[k] = if take { b } else { a };
        i[k] = first + 2 * k as u32 + u32::from(take);
    }
}

/// Window taps (kernel elements × outputs) one rayon task takes at least.
const TASK_TAPS: usize = 32 * 1024;

/// Largest column stride the vector path takes (it deinterleaves each input row into `stride`
/// phases).
const MAX_FAST_STRIDE: usize = 4;

/// Planes per rayon task: at least [`TASK_TAPS`] window taps, and about four tasks per thread
/// when there is more work than that.
fn planes_per_task(g: &Pool2dGeometry) -> usize {
    let taps = (g.out_h * g.out_w * g.kernel[0] * g.kernel[1]).max(1);
    let planes = g.batch * g.channels;
    if crate::parallel::is_serial() {
        // One task: the caller runs on this thread (a lane of side-by-side chunks).
        return planes.max(1);
    }
    let by_size = TASK_TAPS.div_ceil(taps);
    let by_balance = planes.div_ceil(4 * crate::parallel::threads());
    by_size.max(by_balance).clamp(1, planes.max(1))
}

/// Whether some output row and some output column have all their taps inside the input.
fn has_interior(g: &Pool2dGeometry) -> bool {
    let rows = interior_range(g, 0);
    let cols = interior_range(g, 1);
    !rows.is_empty() && !cols.is_empty()
}

/// The outputs along `axis` (0: rows, 1: columns) whose every tap
/// `o·stride − pad + t·dilation` (t < kernel) lies in the input.
fn interior_range(g: &Pool2dGeometry, axis: usize) -> std::ops::Range<usize> {
    let (out_len, in_len) = if axis == 0 {
        (g.out_h, g.in_h)
    } else {
        (g.out_w, g.in_w)
    };
    let (stride, pad) = (g.stride[axis], g.pad[axis]);
    let lo = pad.div_ceil(stride).min(out_len);
    let span = (g.kernel[axis] - 1) * g.dilation[axis];
    // Largest o with o·stride − pad + span <= in_len − 1.
    let hi = match (in_len + pad).checked_sub(span + 1) {
        Some(last) => (last / stride + 1).min(out_len),
        None => 0,
    };
    lo..hi.max(lo)
}

/// dx (overwritten) = scatter-add of dy at argmax.
pub fn maxpool2d_bwd<T: Float>(g: &Pool2dGeometry, dy: &[T], argmax: &[u32], dx: &mut [T]) {
    let (hw, p) = check_lengths(g, "maxpool2d_bwd", dx.len(), dy.len());
    assert_eq!(argmax.len(), dy.len(), "maxpool2d_bwd: argmax length");
    if dx.is_empty() {
        return;
    }
    if p == 0 {
        dx.fill(T::zero());
        return;
    }
    let per_task = planes_per_task(g);
    dx.par_chunks_mut(hw * per_task)
        .zip(dy.par_chunks(p * per_task))
        .zip(argmax.par_chunks(p * per_task))
        .for_each(|((dx_t, dy_t), arg_t)| {
            for ((dx_p, dy_p), arg_p) in
                dx_t.chunks_mut(hw).zip(dy_t.chunks(p)).zip(arg_t.chunks(p))
            {
                dx_p.fill(T::zero());
                for (&v, &a) in dy_p.iter().zip(arg_p) {
                    if let Some(d) = dx_p.get_mut(a as usize) {
                        *d += v;
                    }
                }
            }
        });
}

/// Average pool with PyTorch's exact divisor rules (ceil_mode, count_include_pad):
///   hstart = oh*sh - ph; hend = min(hstart + kh, H + ph); pool_size = (hend-hstart)*(wend-wstart);
///   hstart = max(hstart, 0); hend = min(hend, H); (same for w);
///   divisor = if count_include_pad { pool_size } else { (hend-hstart)*(wend-wstart) }
/// A window with no input element gives 0. Average pool ignores dilation (the op layer rejects
/// dilation != 1).
pub fn avgpool2d_fwd<T: Float>(g: &Pool2dGeometry, x: &[T], out: &mut [T]) {
    let (hw, p) = check_lengths(g, "avgpool2d_fwd", x.len(), out.len());
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(p)
        .enumerate()
        .for_each(|(plane, out_p)| {
            let x_p = &x[plane * hw..][..hw];
            for_each_avg_window(g, |o, rows, cols, divisor| {
                let mut s = T::zero();
                for ih in rows {
                    x_p[ih * g.in_w..][cols.clone()]
                        .iter()
                        .for_each(|&v| s += v);
                }
                out_p[o] = s / T::from_usize(divisor);
            });
        });
}

/// dx (overwritten) = each dy spread evenly (by the forward's divisor) over its window.
pub fn avgpool2d_bwd<T: Float>(g: &Pool2dGeometry, dy: &[T], dx: &mut [T]) {
    let (hw, p) = check_lengths(g, "avgpool2d_bwd", dx.len(), dy.len());
    if dx.is_empty() {
        return;
    }
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dx_p)| {
        dx_p.fill(T::zero());
        let dy_p = &dy[plane * p..][..p];
        for_each_avg_window(g, |o, rows, cols, divisor| {
            let share = dy_p[o] / T::from_usize(divisor);
            for ih in rows {
                dx_p[ih * g.in_w..][cols.clone()]
                    .iter_mut()
                    .for_each(|v| *v += share);
            }
        });
    });
}

/// Checks the input-side and output-side lengths; returns (H·W, OH·OW).
fn check_lengths(g: &Pool2dGeometry, op: &str, input: usize, output: usize) -> (usize, usize) {
    let (hw, p) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let planes = g.batch * g.channels;
    assert_eq!(input, planes * hw, "{op}: input-side length");
    assert_eq!(output, planes * p, "{op}: output-side length");
    (hw, p)
}

/// Every window of one plane by [`max_window`]: the path for geometries with no interior
/// window or a large column stride, and the reference the vector path is tested against.
fn maxpool_plane_general<T: Float>(
    g: &Pool2dGeometry,
    x_p: &[T],
    out_p: &mut [T],
    arg_p: &mut [u32],
) {
    for oh in 0..g.out_h {
        for ow in 0..g.out_w {
            let o = oh * g.out_w + ow;
            (out_p[o], arg_p[o]) = max_window(g, x_p, oh, ow);
        }
    }
}

/// Max and argmax of one window, clipped to the plane; (-inf, [`NO_ARGMAX`]) when the window
/// holds no input element.
#[inline(always)]
fn max_window<T: Float>(g: &Pool2dGeometry, x_p: &[T], oh: usize, ow: usize) -> (T, u32) {
    let [kh, kw] = g.kernel;
    let [dh, dw] = g.dilation;
    // Taps t in [t0, t1) read input rows h0 + t·dh inside the plane; likewise columns.
    let h0 = (oh * g.stride[0]) as isize - g.pad[0] as isize;
    let (t0, t1) = valid_range(kh, g.in_h, dh, h0);
    let w0 = (ow * g.stride[1]) as isize - g.pad[1] as isize;
    let (s0, s1) = valid_range(kw, g.in_w, dw, w0);
    if t0 == t1 || s0 == s1 {
        return (T::neg_infinity(), NO_ARGMAX);
    }
    let row_of = |t: usize| (h0 + (t * dh) as isize) as usize;
    let col_of = |s: usize| (w0 + (s * dw) as isize) as usize;
    // As PyTorch: start at the first tap inside the input, so an all -inf window reports that
    // tap.
    let mut best = T::neg_infinity();
    let mut best_at = row_of(t0) * g.in_w + col_of(s0);
    for t in t0..t1 {
        let row = row_of(t) * g.in_w;
        for s in s0..s1 {
            let at = row + col_of(s);
            let v = x_p[at];
            if v > best || v.is_nan() {
                best = v;
                best_at = at;
            }
        }
    }
    (best, best_at as u32)
}

multiversion! {
    /// Max pool of whole planes (`x`, `out` and `arg` hold the same planes): the vector path for
    /// the interior windows, [`max_window`] for the border.
    fn maxpool_planes_fast = maxpool_planes_fast_impl(
        g: &Pool2dGeometry,
        x: &[T],
        out: &mut [T],
        arg: &mut [u32],
    )
}

/// Per output row whose window rows all lie inside the input: for the interior columns
/// `[lo, hi)`, the running max and the winning tap's offset (`t·dh·W + s·dw`) of each output,
/// updated tap by tap in row-major order with the scalar rule (`v > best || v is NaN`), so
/// ties, NaN and argmax match [`max_window`] exactly. With column stride `sw`, tap `s` of
/// output `ow` reads column `sw·ow + s·dw − pw`, i.e. element `ow + ⌊d / sw⌋` of phase
/// `d mod sw` (`d = s·dw − pw`) of the input row split into its `sw` phases.
#[inline(always)]
fn maxpool_planes_fast_impl<T: Float>(g: &Pool2dGeometry, x: &[T], out: &mut [T], arg: &mut [u32]) {
    let (hw, p) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let (in_w, out_w) = (g.in_w, g.out_w);
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.pad;
    let [dh, dw] = g.dilation;
    let rows = interior_range(g, 0);
    let cols = interior_range(g, 1);
    let n = cols.len();
    let phase_len = in_w.div_ceil(sw);
    // Where tap column s of the first interior output starts in the row's phases: column
    // sw·cols.start + d, d = s·dw − pw, is element cols.start + ⌊d / sw⌋ of phase d mod sw.
    let tap_start: Vec<usize> = (0..kw)
        .map(|s| {
            let d = (s * dw) as isize - pw as isize;
            let (phase, shift) = (d.rem_euclid(sw as isize), d.div_euclid(sw as isize));
            phase as usize * phase_len + (cols.start as isize + shift) as usize
        })
        .collect();
    // The running max runs over `n` rounded up to whole vectors, so its loops have no scalar
    // remainder; the extra lanes read the phase buffer's slack and are never stored.
    let padded = n.next_multiple_of(LANES);
    let mut best = vec![T::zero(); padded];
    let mut offs = vec![0u32; padded];
    let mut phases = vec![T::zero(); sw * phase_len + LANES];
    for ((x_p, out_p), arg_p) in x.chunks(hw).zip(out.chunks_mut(p)).zip(arg.chunks_mut(p)) {
        for oh in 0..g.out_h {
            let out_r = &mut out_p[oh * out_w..][..out_w];
            let arg_r = &mut arg_p[oh * out_w..][..out_w];
            // This row's interior columns; the others (all of them on a border row) go one
            // window at a time.
            let inner = if rows.contains(&oh) {
                cols.clone()
            } else {
                0..0
            };
            for ow in (0..inner.start).chain(inner.end..out_w) {
                (out_r[ow], arg_r[ow]) = max_window(g, x_p, oh, ow);
            }
            if inner.is_empty() {
                continue;
            }
            let h0 = oh * sh - ph;
            for t in 0..kh {
                let row = &x_p[(h0 + t * dh) * in_w..][..in_w];
                deinterleave(row, sw, phase_len, &mut phases);
                for (s, &start) in tap_start.iter().enumerate() {
                    let tap = &phases[start..][..padded];
                    let offset = (t * dh * in_w + s * dw) as u32;
                    match (t, s) {
                        // Taps (0, 0) and (0, 1) start the running max together (a plain copy
                        // of tap 0 would become a `memmove` call per row).
                        (0, 0) if kw > 1 => {}
                        (0, 0) => max_first(&mut best, &mut offs, tap),
                        (0, 1) => {
                            let tap0 = &phases[tap_start[0]..][..padded];
                            max_first_two(&mut best, &mut offs, tap0, tap, offset);
                        }
                        _ => max_step(&mut best, &mut offs, tap, offset),
                    }
                }
            }
            // Input index of tap (0, 0) of the first interior output; fits u32 (plane < 2^32).
            let first = (h0 * in_w + cols.start * sw - pw) as u32;
            store(
                &mut out_r[cols.clone()],
                &mut arg_r[cols.clone()],
                &best,
                &offs,
                first,
                sw as u32,
            );
        }
    }
}

/// The vector width the running max's lengths are rounded up to: 16 f32 lanes, one AVX-512
/// register.
const LANES: usize = 16;

/// The running max of one tap: the tap itself, at offset 0.
#[inline(always)]
fn max_first<T: Float>(best: &mut [T], offs: &mut [u32], tap: &[T]) {
    for ((b, o), &v) in best.iter_mut().zip(offs.iter_mut()).zip(tap) {
        *b = v;
        *o = 0;
    }
}

/// The running max of the first two taps (offsets 0 and `offset`), by the scalar rule.
#[inline(always)]
fn max_first_two<T: Float>(best: &mut [T], offs: &mut [u32], tap0: &[T], tap1: &[T], offset: u32) {
    for (((b, o), &v0), &v1) in best.iter_mut().zip(offs.iter_mut()).zip(tap0).zip(tap1) {
        let take = (v1 > v0) | v1.is_nan();
        *b = if take { v1 } else { v0 };
        *o = if take { offset } else { 0 };
    }
}

/// One step of the running max: where `v > best` or `v` is NaN (the scalar rule), take `v` and
/// the tap's offset. (`|`, not `||`: a short-circuit is a branch per lane, which keeps the block
/// from vectorising.)
#[inline(always)]
fn max_step<T: Float>(best: &mut [T], offs: &mut [u32], tap: &[T], offset: u32) {
    for ((b, o), &v) in best.iter_mut().zip(offs.iter_mut()).zip(tap) {
        let take = (v > *b) | v.is_nan();
        *b = if take { v } else { *b };
        *o = if take { offset } else { *o };
    }
}

/// Output values and argmax indices: lane j's window starts at input index `first + j·stride`.
#[inline(always)]
fn store<T: Float>(
    out: &mut [T],
    arg: &mut [u32],
    best: &[T],
    offs: &[u32],
    first: u32,
    stride: u32,
) {
    for (j, (((o, a), &b), &off)) in out.iter_mut().zip(arg).zip(best).zip(offs).enumerate() {
        *o = b;
        *a = first + j as u32 * stride + off;
    }
}

/// Splits `row` into its `stride` phases: `phases[q·phase_len + i] = row[q + stride·i]` (a copy
/// for stride 1).
#[inline(always)]
fn deinterleave<T: Float>(row: &[T], stride: usize, phase_len: usize, phases: &mut [T]) {
    if stride == 1 {
        phases[..row.len()].copy_from_slice(row);
        return;
    }
    if stride == 2 {
        let (even, odd) = phases.split_at_mut(phase_len);
        let (pairs, rest) = row.as_chunks::<2>();
        for ((e, o), &[a, b]) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
            *e = a;
            *o = b;
        }
        if let Some(&last) = rest.first() {
            even[pairs.len()] = last;
        }
        return;
    }
    for (q, phase) in phases.chunks_mut(phase_len).enumerate() {
        for (p, &v) in phase.iter_mut().zip(row.iter().skip(q).step_by(stride)) {
            *p = v;
        }
    }
}

/// Calls `f(output index, input rows, input columns, divisor)` for every average-pool window
/// that holds at least one input element; writes nothing for the others (their output is 0).
fn for_each_avg_window(
    g: &Pool2dGeometry,
    mut f: impl FnMut(usize, std::ops::Range<usize>, std::ops::Range<usize>, usize),
) {
    // (clamped range, window length including padding) along one axis.
    let axis = |o: usize, axis: usize, size: usize| {
        let pad = g.pad[axis] as isize;
        let start = (o * g.stride[axis]) as isize - pad;
        let end = (start + g.kernel[axis] as isize).min(size as isize + pad);
        let padded_len = (end - start) as usize;
        let (start, end) = (
            start.max(0) as usize,
            end.min(size as isize).max(0) as usize,
        );
        (start..end.max(start), padded_len)
    };
    for oh in 0..g.out_h {
        let (rows, pool_h) = axis(oh, 0, g.in_h);
        for ow in 0..g.out_w {
            let (cols, pool_w) = axis(ow, 1, g.in_w);
            if rows.is_empty() || cols.is_empty() {
                continue;
            }
            let divisor = if g.count_include_pad {
                pool_h * pool_w
            } else {
                rows.len() * cols.len()
            };
            f(oh * g.out_w + ow, rows.clone(), cols, divisor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::geometry::Pool2dParams;
    use crate::tensor::Tensor;

    fn data(dims: &[usize], seed: u64) -> Vec<f64> {
        Tensor::<f64>::uniform(dims, -1.0, 1.0, seed)
            .unwrap()
            .into_vec()
    }

    fn geometry(x: [usize; 4], p: Pool2dParams) -> Pool2dGeometry {
        Pool2dGeometry::new("test", &x, &p).unwrap()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= tol * b.abs().max(1.0),
                "{what}: element {k}: got {a}, want {b}"
            );
        }
    }

    fn max_cases() -> Vec<([usize; 4], Pool2dParams)> {
        let p = Pool2dParams::new;
        let mut rect = p(3).stride(2);
        rect.kernel = [3, 2];
        rect.stride = [2, 1];
        rect.padding = [1, 0];
        vec![
            ([1, 2, 7, 5], p(2)),
            ([3, 2, 7, 5], p(3).stride(2).padding(1)),
            ([2, 3, 7, 5], p(2).ceil_mode(true)),
            ([2, 1, 5, 5], p(2).padding(1).ceil_mode(true)),
            ([1, 2, 8, 7], p(3).stride(1).padding(1).dilation(2)),
            (
                [2, 2, 9, 6],
                p(3).stride(2).padding(1).dilation(2).ceil_mode(true),
            ),
            ([1, 3, 7, 5], rect),
        ]
    }

    /// Max over the window by the definition: all kh·kw taps, padding skipped, first maximum
    /// (or NaN) wins. Returns (value, index) per output.
    fn reference_max(g: &Pool2dGeometry, x: &[f64]) -> (Vec<f64>, Vec<u32>) {
        let (mut out, mut arg) = (Vec::new(), Vec::new());
        for plane in 0..g.batch * g.channels {
            let x_p = &x[plane * g.in_h * g.in_w..];
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let mut best: Option<(f64, usize)> = None;
                    for i in 0..g.kernel[0] {
                        for j in 0..g.kernel[1] {
                            let ih =
                                (oh * g.stride[0] + i * g.dilation[0]) as isize - g.pad[0] as isize;
                            let iw =
                                (ow * g.stride[1] + j * g.dilation[1]) as isize - g.pad[1] as isize;
                            if ih < 0 || iw < 0 || ih >= g.in_h as isize || iw >= g.in_w as isize {
                                continue;
                            }
                            let at = ih as usize * g.in_w + iw as usize;
                            let v = x_p[at];
                            match best {
                                Some((b, _)) if !(v > b || v.is_nan()) => {}
                                _ => best = Some((v, at)),
                            }
                        }
                    }
                    let (v, at) = best.expect("test geometries have no empty window");
                    out.push(v);
                    arg.push(at as u32);
                }
            }
        }
        (out, arg)
    }

    #[test]
    fn maxpool2d_fwd_matches_direct_definition() {
        for (k, (xd, p)) in max_cases().into_iter().enumerate() {
            let g = geometry(xd, p);
            let x = data(&xd, k as u64 + 10);
            let (want, want_arg) = reference_max(&g, &x);
            let mut out = vec![f64::NAN; want.len()];
            let mut arg = vec![7u32; want.len()];
            maxpool2d_fwd(&g, &x, &mut out, &mut arg);
            assert_eq!(out, want, "case {k} {xd:?} {p:?}");
            assert_eq!(arg, want_arg, "case {k} {xd:?} {p:?}");
        }
    }

    #[test]
    fn maxpool2d_bwd_scatters_at_argmax() {
        for (k, (xd, p)) in max_cases().into_iter().enumerate() {
            let g = geometry(xd, p);
            let x = data(&xd, k as u64 + 20);
            let dy = data(&g.out_dims(), k as u64 + 30);
            let (_, arg) = reference_max(&g, &x);
            let hw = g.in_h * g.in_w;
            let p_len = g.out_h * g.out_w;
            let mut want = vec![0.0; x.len()];
            for (o, (&v, &a)) in dy.iter().zip(&arg).enumerate() {
                want[(o / p_len) * hw + a as usize] += v;
            }
            let mut dx = vec![f64::NAN; x.len()];
            maxpool2d_bwd(&g, &dy, &arg, &mut dx);
            assert_close(&dx, &want, 1e-12, &format!("case {k}"));
        }
    }

    #[test]
    fn maxpool2d_ties_pick_first_index() {
        // All equal: every window reports its top-left element.
        let g = geometry([1, 1, 4, 4], Pool2dParams::new(2));
        let mut out = vec![0.0; 4];
        let mut arg = vec![0u32; 4];
        maxpool2d_fwd(&g, &[1.0f64; 16], &mut out, &mut arg);
        assert_eq!(arg, [0, 2, 8, 10]);
        // A tie between the second and third element of a window: the second wins.
        let x = [0.5, 0.9, 0.9, 0.1];
        let g = geometry([1, 1, 2, 2], Pool2dParams::new(2));
        let (mut out, mut arg) = (vec![0.0; 1], vec![0u32; 1]);
        maxpool2d_fwd(&g, &x, &mut out, &mut arg);
        assert_eq!((out[0], arg[0]), (0.9, 1));
        // With padding, an all -inf window reports its first in-plane tap, as PyTorch.
        let g = geometry([1, 1, 2, 2], Pool2dParams::new(2).padding(1));
        let (mut out, mut arg) = (vec![0.0; 4], vec![9u32; 4]);
        maxpool2d_fwd(&g, &[f64::NEG_INFINITY; 4], &mut out, &mut arg);
        assert_eq!(arg, [0, 1, 2, 3]);
    }

    #[test]
    fn maxpool2d_nan_propagates_and_is_selected() {
        let x = [1.0, f64::NAN, 3.0, 2.0];
        let g = geometry([1, 1, 2, 2], Pool2dParams::new(2));
        let (mut out, mut arg) = (vec![0.0; 1], vec![0u32; 1]);
        maxpool2d_fwd(&g, &x, &mut out, &mut arg);
        assert!(out[0].is_nan());
        // 3.0 > NaN is false, so the NaN keeps its place.
        assert_eq!(arg[0], 1);
    }

    #[test]
    fn maxpool2d_ceil_mode_with_padding_matches_pytorch() {
        // torch.nn.MaxPool2d(2, 2, padding=1, ceil_mode=True)(torch.arange(25.).view(1,1,5,5))
        // = [[0, 2, 4], [10, 12, 14], [20, 22, 24]], indices the same numbers.
        let x: Vec<f64> = (0..25).map(f64::from).collect();
        let g = geometry(
            [1, 1, 5, 5],
            Pool2dParams::new(2).padding(1).ceil_mode(true),
        );
        let (mut out, mut arg) = (vec![0.0; 9], vec![0u32; 9]);
        maxpool2d_fwd(&g, &x, &mut out, &mut arg);
        assert_eq!(out, [0.0, 2.0, 4.0, 10.0, 12.0, 14.0, 20.0, 22.0, 24.0]);
        assert_eq!(arg, [0, 2, 4, 10, 12, 14, 20, 22, 24]);
    }

    #[test]
    fn maxpool2d_empty_dilated_window_is_neg_inf_and_skipped() {
        // Kernel 2, dilation 3, padding 1 on height 2: the taps read rows -1 and 2, both outside.
        let g = geometry([1, 1, 2, 2], Pool2dParams::new(2).padding(1).dilation(3));
        assert_eq!((g.out_h, g.out_w), (1, 1));
        let (mut out, mut arg) = (vec![0.0; 1], vec![0u32; 1]);
        maxpool2d_fwd(&g, &[1.0, 2.0, 3.0, 4.0], &mut out, &mut arg);
        assert_eq!((out[0], arg[0]), (f64::NEG_INFINITY, NO_ARGMAX));
        let mut dx = vec![f64::NAN; 4];
        maxpool2d_bwd(&g, &[1.0], &arg, &mut dx);
        assert_eq!(dx, [0.0; 4]);
    }

    /// Values from a small set, so windows tie often, with NaN and -inf sprinkled in; `nan_every`
    /// 0 leaves NaN out.
    fn tie_heavy(len: usize, seed: u64, nan_every: usize) -> Vec<f32> {
        let u = Tensor::<f32>::uniform(&[len], 0.0, 1.0, seed)
            .unwrap()
            .into_vec();
        u.iter()
            .enumerate()
            .map(|(i, &v)| match i {
                _ if nan_every > 0 && i % nan_every == nan_every - 1 => f32::NAN,
                _ if i % 23 == 5 => f32::NEG_INFINITY,
                _ => (v * 4.0).floor() - 1.0,
            })
            .collect()
    }

    /// Every geometry of kernel 1–4, stride 1–5, legal padding, dilation 1–2 and both ceil
    /// modes on odd and even sizes, square and not, with rows shorter and longer than a lane
    /// block.
    fn fast_path_geometries() -> Vec<Pool2dGeometry> {
        let mut all = Vec::new();
        for (h, w) in [(7, 9), (8, 8), (5, 13), (12, 11), (3, 4), (4, 37), (9, 20)] {
            for k in 1..=4 {
                for stride in 1..=5 {
                    for pad in 0..=k / 2 {
                        for dilation in 1..=2 {
                            for ceil in [false, true] {
                                let mut p = Pool2dParams::new(k)
                                    .stride(stride)
                                    .padding(pad)
                                    .dilation(dilation)
                                    .ceil_mode(ceil);
                                // A non-square window on every other case.
                                if (k + stride) % 2 == 0 && k > 1 {
                                    p.kernel = [k, k - 1];
                                    p.padding = [pad, pad.min((k - 1) / 2)];
                                }
                                if let Ok(g) = Pool2dGeometry::new("test", &[2, 3, h, w], &p) {
                                    all.push(g);
                                }
                            }
                        }
                    }
                }
            }
            // The square 2×2 window at stride 2 (its own path), floor and ceil mode.
            for ceil in [false, true] {
                let p = Pool2dParams::new(2).stride(2).ceil_mode(ceil);
                if let Ok(g) = Pool2dGeometry::new("test", &[2, 3, h, w], &p) {
                    all.push(g);
                }
            }
        }
        all
    }

    /// The general path, plane by plane.
    fn general(g: &Pool2dGeometry, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
        let (hw, p) = (g.in_h * g.in_w, g.out_h * g.out_w);
        let mut out = vec![0.0; p * g.batch * g.channels];
        let mut arg = vec![0u32; out.len()];
        for ((x_p, o), a) in x.chunks(hw).zip(out.chunks_mut(p)).zip(arg.chunks_mut(p)) {
            maxpool_plane_general(g, x_p, o, a);
        }
        (out, arg)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn maxpool2d_fast_path_is_bit_identical_to_the_general_path() {
        let geometries = fast_path_geometries();
        assert!(geometries.len() > 500, "{} geometries", geometries.len());
        let mut with_interior = 0;
        let mut two_by_two = 0;
        for (k, g) in geometries.iter().enumerate() {
            with_interior += usize::from(has_interior(g));
            two_by_two += usize::from(is_2x2_stride_2(g));
            for nan_every in [0, 11] {
                let x = tie_heavy(g.in_dims().iter().product(), k as u64, nan_every);
                let (want, want_arg) = general(g, &x);
                if is_2x2_stride_2(g) {
                    let mut out = vec![7.0; want.len()];
                    let mut arg = vec![7u32; want.len()];
                    maxpool_planes_2x2(g, &x, &mut out, &mut arg);
                    assert_eq!(bits(&out), bits(&want), "2x2 {g:?} nan_every {nan_every}");
                    assert_eq!(arg, want_arg, "2x2 {g:?} nan_every {nan_every}");
                }
                let mut out = vec![7.0; want.len()];
                let mut arg = vec![7u32; want.len()];
                maxpool_planes_fast(g, &x, &mut out, &mut arg);
                assert_eq!(bits(&out), bits(&want), "{g:?} nan_every {nan_every}");
                assert_eq!(arg, want_arg, "{g:?} nan_every {nan_every}");
                // And through the public entry point, whichever path it picks.
                let (mut out, mut arg) = (vec![7.0; want.len()], vec![7u32; want.len()]);
                maxpool2d_fwd(g, &x, &mut out, &mut arg);
                assert_eq!(bits(&out), bits(&want), "{g:?} nan_every {nan_every}");
                assert_eq!(arg, want_arg, "{g:?} nan_every {nan_every}");
            }
        }
        assert!(
            with_interior > geometries.len() / 2,
            "{with_interior} with interior"
        );
        assert!(two_by_two >= 4, "{two_by_two} 2×2 stride-2 geometries");
    }

    #[test]
    fn maxpool2d_fast_path_keeps_ties_nan_and_first_tap_rules() {
        // 2×2 stride 2 on an 8×8 plane: all windows interior, vector path only.
        let g = geometry([1, 1, 4, 8], Pool2dParams::new(2));
        let mut x = vec![1.0f64; 32];
        // Window 1 (columns 2–3): a tie between (0, 3) and (1, 2) → (0, 3), index 3.
        x[3] = 5.0;
        x[8 + 2] = 5.0;
        // Window 2 (columns 4–5): a NaN after the max → NaN wins, index 8 + 5.
        x[4] = 9.0;
        x[8 + 5] = f64::NAN;
        // Window 3 (columns 6–7): two NaNs → the later one in scan order, as the scalar rule.
        x[6] = f64::NAN;
        x[8 + 7] = f64::NAN;
        let (mut out, mut arg) = (vec![0.0; 8], vec![0u32; 8]);
        maxpool2d_fwd(&g, &x, &mut out, &mut arg);
        assert_eq!(&arg[..4], [0, 3, 13, 15]);
        assert_eq!(&out[..2], [1.0, 5.0]);
        assert!(out[2].is_nan() && out[3].is_nan());
        let (want, want_arg) = reference_max(&g, &x);
        assert_eq!(arg, want_arg);
        assert_eq!(bits64(&out), bits64(&want));
        // All -inf: the first tap of each window.
        let (mut out, mut arg) = (vec![0.0; 8], vec![0u32; 8]);
        maxpool2d_fwd(&g, &[f64::NEG_INFINITY; 32], &mut out, &mut arg);
        assert_eq!(arg, [0, 2, 4, 6, 16, 18, 20, 22]);
    }

    fn bits64(v: &[f64]) -> Vec<u64> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn maxpool2d_interior_ranges_are_exact() {
        for g in fast_path_geometries() {
            for (axis, out_len, in_len) in [(0, g.out_h, g.in_h), (1, g.out_w, g.in_w)] {
                let inner = interior_range(&g, axis);
                for o in 0..out_len {
                    let taps_inside = (0..g.kernel[axis]).all(|t| {
                        let i = (o * g.stride[axis] + t * g.dilation[axis]) as isize
                            - g.pad[axis] as isize;
                        i >= 0 && i < in_len as isize
                    });
                    assert_eq!(inner.contains(&o), taps_inside, "{g:?} axis {axis} at {o}");
                }
            }
        }
    }

    #[test]
    fn maxpool2d_tasks_cover_whole_planes() {
        // small's first pool: 1600 planes of 256 outputs × 4 taps; tasks of at least
        // TASK_TAPS taps, and more than one task.
        let g = geometry([50, 32, 32, 32], Pool2dParams::new(2));
        let per_task = planes_per_task(&g);
        assert!(
            per_task * 256 * 4 >= TASK_TAPS,
            "{per_task} planes per task"
        );
        assert!(per_task < 50 * 32, "{per_task} planes per task");
        let tiny = geometry([1, 1, 2, 2], Pool2dParams::new(2));
        assert_eq!(planes_per_task(&tiny), 1);
    }

    fn avg_cases() -> Vec<([usize; 4], Pool2dParams)> {
        let mut cases = Vec::new();
        for include in [true, false] {
            let p = |k| Pool2dParams::new(k).count_include_pad(include);
            let mut rect = p(3).padding(1);
            rect.kernel = [3, 2];
            rect.stride = [2, 1];
            rect.padding = [1, 1];
            cases.extend([
                ([1, 2, 7, 5], p(2)),
                ([3, 2, 7, 5], p(3).stride(2).padding(1)),
                ([2, 3, 7, 5], p(2).ceil_mode(true)),
                ([2, 1, 5, 5], p(2).padding(1).ceil_mode(true)),
                ([1, 2, 6, 6], p(3).stride(2).padding(1).ceil_mode(true)),
                ([1, 3, 7, 5], rect),
            ]);
        }
        cases
    }

    /// Average by the definition: walk the kh·kw taps; a tap counts toward the padded divisor
    /// when it lies before the trailing padding's end, toward the other divisor when it lies in
    /// the input. Returns, per output, the (input index, weight) pairs.
    fn reference_avg_weights(g: &Pool2dGeometry) -> Vec<Vec<(usize, f64)>> {
        let mut all = Vec::new();
        for plane in 0..g.batch * g.channels {
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let (mut inside, mut counted) = (Vec::new(), 0usize);
                    for i in 0..g.kernel[0] {
                        for j in 0..g.kernel[1] {
                            let ih = (oh * g.stride[0] + i) as isize - g.pad[0] as isize;
                            let iw = (ow * g.stride[1] + j) as isize - g.pad[1] as isize;
                            if ih < (g.in_h + g.pad[0]) as isize
                                && iw < (g.in_w + g.pad[1]) as isize
                            {
                                counted += 1;
                            }
                            if ih >= 0 && iw >= 0 && ih < g.in_h as isize && iw < g.in_w as isize {
                                let at =
                                    plane * g.in_h * g.in_w + ih as usize * g.in_w + iw as usize;
                                inside.push(at);
                            }
                        }
                    }
                    let divisor = if g.count_include_pad {
                        counted
                    } else {
                        inside.len()
                    };
                    all.push(
                        inside
                            .into_iter()
                            .map(|at| (at, 1.0 / divisor as f64))
                            .collect(),
                    );
                }
            }
        }
        all
    }

    #[test]
    fn avgpool2d_fwd_matches_direct_definition() {
        for (k, (xd, p)) in avg_cases().into_iter().enumerate() {
            let g = geometry(xd, p);
            let x = data(&xd, k as u64 + 40);
            let want: Vec<f64> = reference_avg_weights(&g)
                .iter()
                .map(|ws| ws.iter().map(|&(at, c)| x[at] * c).sum())
                .collect();
            let mut out = vec![f64::NAN; want.len()];
            avgpool2d_fwd(&g, &x, &mut out);
            assert_close(&out, &want, 1e-12, &format!("case {k} {xd:?} {p:?}"));
        }
    }

    #[test]
    fn avgpool2d_bwd_matches_direct_loop_and_adjoint() {
        for (k, (xd, p)) in avg_cases().into_iter().enumerate() {
            let g = geometry(xd, p);
            let x = data(&xd, k as u64 + 50);
            let dy = data(&g.out_dims(), k as u64 + 60);
            let mut want = vec![0.0; x.len()];
            for (ws, &d) in reference_avg_weights(&g).iter().zip(&dy) {
                for &(at, c) in ws {
                    want[at] += c * d;
                }
            }
            let mut dx = vec![f64::NAN; x.len()];
            avgpool2d_bwd(&g, &dy, &mut dx);
            assert_close(&dx, &want, 1e-12, &format!("case {k} {xd:?} {p:?}"));
            let mut y = vec![0.0; dy.len()];
            avgpool2d_fwd(&g, &x, &mut y);
            let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
                "case {k}: adjoint"
            );
        }
    }

    #[test]
    fn avgpool2d_matches_pytorch_golden_values() {
        let x: Vec<f64> = (0..9).map(f64::from).collect();
        let run = |p: Pool2dParams| {
            let g = geometry([1, 1, 3, 3], p);
            let mut out = vec![0.0; g.out_h * g.out_w];
            avgpool2d_fwd(&g, &x, &mut out);
            out
        };
        // torch.nn.AvgPool2d(2, ceil_mode=True)(torch.arange(9.).view(1,1,3,3)): the overhanging
        // windows divide by their in-input size even with count_include_pad.
        assert_eq!(
            run(Pool2dParams::new(2).ceil_mode(true)),
            [2.0, 3.5, 6.5, 8.0]
        );
        // AvgPool2d(2, 2, padding=1, ceil_mode=True), count_include_pad True then False.
        let p = Pool2dParams::new(2).padding(1).ceil_mode(true);
        assert_eq!(run(p), [0.0, 0.75, 2.25, 6.0]);
        assert_eq!(run(p.count_include_pad(false)), [0.0, 1.5, 4.5, 6.0]);
    }

    #[test]
    fn pool_f32_matches_f64() {
        for (k, (xd, p)) in avg_cases().into_iter().enumerate() {
            let g = geometry(xd, p);
            let x = data(&xd, k as u64 + 70);
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let x64: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
            let (mut o32, mut o64) = (vec![0f32; g.out_dims().iter().product()], vec![0.0; 0]);
            o64.resize(o32.len(), 0.0);
            avgpool2d_fwd(&g, &x32, &mut o32);
            avgpool2d_fwd(&g, &x64, &mut o64);
            let widened: Vec<f64> = o32.iter().map(|&v| v as f64).collect();
            assert_close(&widened, &o64, 1e-5, &format!("avg case {k}"));
            let (mut m32, mut a32) = (vec![0f32; o32.len()], vec![0u32; o32.len()]);
            let (mut m64, mut a64) = (vec![0.0; o32.len()], vec![0u32; o32.len()]);
            maxpool2d_fwd(&g, &x32, &mut m32, &mut a32);
            maxpool2d_fwd(&g, &x64, &mut m64, &mut a64);
            assert_eq!(a32, a64, "max case {k}");
        }
    }
}
