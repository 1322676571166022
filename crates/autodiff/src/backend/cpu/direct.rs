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
use super::simd::multiversion;
use crate::element::Float;
use crate::ops::geometry::Conv2dGeometry;
use crate::parallel::for_each_chunk;

/// Whether [`fwd`] and [`bwd_input`] apply: one input channel per group, stride 1, no
/// dilation, and padding below the kernel size (so the input gradient's padding is ≥ 0).
pub(super) fn applies(g: &Conv2dGeometry) -> bool {
    g.in_channels == g.groups
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.kernel_h > 0
        && g.kernel_w > 0
        && g.pad[0] < g.kernel_h
        && g.pad[1] < g.kernel_w
        // The end padding (out + k − 1 − in − start pad) is below the kernel size too.
        && g.out_h <= g.in_h + g.pad[0]
        && g.out_w <= g.in_w + g.pad[1]
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
        dst[(top + r) * wp + left..][..w].copy_from_slice(row);
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
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    // Start padding before the input, end padding after it (it only shapes the output).
    let (hp, wp) = (g.out_h + kh - 1, g.out_w + kw - 1);
    let (hw, p) = (g.in_h * g.in_w, g.out_h * g.out_w);
    // Flat outputs on the padded width: the last one read is (out_h − 1)·Wp + out_w − 1.
    let flat = if p == 0 {
        0
    } else {
        (g.out_h - 1) * wp + g.out_w
    };
    for_each_chunk(out, og * p, |plane, out_c| {
        let (n, c) = (plane / g.in_channels, plane % g.in_channels);
        let x_c = &x[(n * g.in_channels + c) * hw..][..hw];
        // The padded plane and one output plane on the padded width, in this thread's scratch.
        with_scratch(hp * wp + flat, |buf: &mut [T]| {
            let (xp, y) = buf.split_at_mut(hp * wp);
            pad_into(x_c, g.in_h, g.in_w, g.pad[0], g.pad[1], wp, xp);
            for (k, out_o) in out_c.chunks_exact_mut(p.max(1)).enumerate() {
                let o = c * og + k;
                let b = bias.map_or(T::zero(), |b| b[o]);
                fwd_plane(xp, &w[o * kh * kw..][..kh * kw], b, kh, kw, wp, y);
                for (oh, row) in out_o.chunks_exact_mut(g.out_w).enumerate() {
                    row.copy_from_slice(&y[oh * wp..][..g.out_w]);
                }
            }
        });
    });
}

multiversion! {
    /// One output plane of [`fwd`] on the padded width.
    fn fwd_plane = fwd_plane_impl(
        xp: &[T],
        w_o: &[T],
        b: T,
        kh: usize,
        kw: usize,
        wp: usize,
        y: &mut [T],
    )
}

/// Outputs a block of [`fwd_plane`] keeps in registers while it runs through the taps.
const BLOCK: usize = 128;

#[inline(always)]
fn fwd_plane_impl<T: Float>(
    xp: &[T],
    w_o: &[T],
    b: T,
    kh: usize,
    kw: usize,
    wp: usize,
    y: &mut [T],
) {
    // Per output: the bias, then the taps in (i, j) order — in registers for whole blocks
    // (one load of x per tap and output, no load/store of y per tap), then the tail the same
    // way. (Helpers, not closures: a closure is compiled without the target features.)
    let blocks = y.len() / BLOCK;
    for (k, y_b) in y.chunks_exact_mut(BLOCK).enumerate() {
        let mut acc = [b; BLOCK];
        fwd_taps(xp, w_o, kh, kw, wp, k * BLOCK, &mut acc);
        y_b.copy_from_slice(&acc);
    }
    let tail = &mut y[blocks * BLOCK..];
    tail.fill(b);
    fwd_taps(xp, w_o, kh, kw, wp, blocks * BLOCK, tail);
}

/// `out += Σ_(i, j) w_o[i, j]·xp[i·wp + j + at ..]`, taps in (i, j) order.
#[inline(always)]
fn fwd_taps<T: Float>(
    xp: &[T],
    w_o: &[T],
    kh: usize,
    kw: usize,
    wp: usize,
    at: usize,
    out: &mut [T],
) {
    let len = out.len();
    for i in 0..kh {
        for j in 0..kw {
            let wv = w_o[i * kw + j];
            let src = &xp[i * wp + j + at..][..len];
            for (a, &xv) in out.iter_mut().zip(src) {
                *a += wv * xv;
            }
        }
    }
}

/// Input gradient: `dx[n, c] = Σ_(o in c's group) Σ_(i, j) w[o, 0, i, j]·dy[n, o]` at the
/// transposed offsets, over `dy` padded by `kh − 1 − ph` rows above and `kw − 1 − pw` columns
/// left (the full correlation with the flipped kernel).
pub(super) fn bwd_input<T: Float>(g: &Conv2dGeometry, dy: &[T], w: &[T], dx: &mut [T]) {
    let og = g.out_channels / g.groups;
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let (hp, wp) = (g.in_h + kh - 1, g.in_w + kw - 1);
    let (top, left) = (kh - 1 - g.pad[0], kw - 1 - g.pad[1]);
    let (hw, p) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let flat = if hw == 0 {
        0
    } else {
        (g.in_h - 1) * wp + g.in_w
    };
    for_each_chunk(dx, hw.max(1), |plane, dx_c| {
        let (n, c) = (plane / g.in_channels, plane % g.in_channels);
        // The group's padded dY planes and the accumulated input plane, in this thread's
        // scratch.
        with_scratch(og * hp * wp + flat, |buf: &mut [T]| {
            let (dyp, acc) = buf.split_at_mut(og * hp * wp);
            for (k, dyp_o) in dyp.chunks_exact_mut(hp * wp).enumerate() {
                let dy_o = &dy[(n * g.out_channels + c * og + k) * p..][..p];
                pad_into(dy_o, g.out_h, g.out_w, top, left, wp, dyp_o);
            }
            let w_c = &w[c * og * kh * kw..][..og * kh * kw];
            bwd_plane(dyp, w_c, og, kh, kw, wp, acc);
            for (ih, row) in dx_c.chunks_exact_mut(g.in_w.max(1)).enumerate() {
                row.copy_from_slice(&acc[ih * wp..][..g.in_w]);
            }
        });
    });
}

multiversion! {
    /// An input plane of [`bwd_input`] from its group's `og` padded dY planes (`dyp`, each
    /// `hp·wp` long) and their kernels (`w_c`).
    fn bwd_plane = bwd_plane_impl(
        dyp: &[T],
        w_c: &[T],
        og: usize,
        kh: usize,
        kw: usize,
        wp: usize,
        acc: &mut [T],
    )
}

#[inline(always)]
fn bwd_plane_impl<T: Float>(
    dyp: &[T],
    w_c: &[T],
    og: usize,
    kh: usize,
    kw: usize,
    wp: usize,
    acc: &mut [T],
) {
    // Per element: from 0, output channels in order, for each the taps with i descending and
    // j ascending — in registers for whole blocks, then the tail the same way.
    let blocks = acc.len() / BLOCK;
    for (k, acc_b) in acc.chunks_exact_mut(BLOCK).enumerate() {
        let mut a = [T::zero(); BLOCK];
        bwd_taps(dyp, w_c, og, kh, kw, wp, k * BLOCK, &mut a);
        acc_b.copy_from_slice(&a);
    }
    let tail = &mut acc[blocks * BLOCK..];
    tail.fill(T::zero());
    bwd_taps(dyp, w_c, og, kh, kw, wp, blocks * BLOCK, tail);
}

/// `out += Σ_o Σ_(i, j) w_c[o, i, j]·dyp[o][(kh − 1 − i)·wp + kw − 1 − j + at ..]`: output
/// channels in order, for each the taps with i descending and j ascending.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bwd_taps<T: Float>(
    dyp: &[T],
    w_c: &[T],
    og: usize,
    kh: usize,
    kw: usize,
    wp: usize,
    at: usize,
    out: &mut [T],
) {
    let plane = dyp.len() / og.max(1);
    let len = out.len();
    for o in 0..og {
        let w_o = &w_c[o * kh * kw..][..kh * kw];
        for i in (0..kh).rev() {
            for j in 0..kw {
                let wv = w_o[i * kw + j];
                let src = &dyp[o * plane + (kh - 1 - i) * wp + (kw - 1 - j) + at..][..len];
                for (a, &v) in out.iter_mut().zip(src) {
                    *a += wv * v;
                }
            }
        }
    }
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
