//! im2col and col2im for stride-1, undilated convolutions whose output rows are as wide as the
//! input rows ("same" padding along the width: every 3×3 pad-1 layer of a VGG or ResNet).
//!
//! There, a tap (i, j)'s row of the column matrix is the input plane shifted by
//! `(i − ph)·W + (j − pw)` elements: one contiguous copy (col2im: one contiguous add) for all
//! output rows at once, instead of one short copy per output row. The elements the shift wraps
//! from the neighbouring row — at most `pw` columns on each side — are then zeroed with strided
//! stores (im2col), or zeroed in the column buffer before the add so they add 0 (col2im). Rows
//! whose tap falls on the vertical padding are zero (im2col) or skipped (col2im), as before.
//!
//! Values are those of the row-by-row loops in `conv.rs` (the same copies; col2im adds each
//! tap in the same order, plus exact zeros), which the tests check.

use super::conv::valid_range;
use crate::element::Float;
use crate::ops::geometry::Conv2dGeometry;

/// Whether the flat copies apply.
pub(super) fn applies(g: &Conv2dGeometry) -> bool {
    g.stride == [1, 1] && g.dilation == [1, 1] && g.out_w == g.in_w
}

/// The shift of tap `(i, j)`, and its valid output rows `[r0, r1)` and columns `[lo, hi)`.
fn tap(g: &Conv2dGeometry, i: usize, j: usize) -> (isize, (usize, usize), (usize, usize)) {
    let off_h = i as isize - g.pad[0] as isize;
    let off_w = j as isize - g.pad[1] as isize;
    let rows = valid_range(g.out_h, g.in_h, 1, off_h);
    let cols = valid_range(g.out_w, g.in_w, 1, off_w);
    (off_h * g.in_w as isize + off_w, rows, cols)
}

/// im2col of one input channel `x_c` (H·W) into its kh·kw rows of `col_c` (each OH·W).
pub(super) fn im2col_channel<T: Float>(g: &Conv2dGeometry, x_c: &[T], col_c: &mut [T]) {
    let w = g.in_w;
    let p = g.out_h * w;
    for (t, row) in col_c
        .chunks_exact_mut(p.max(1))
        .enumerate()
        .take(g.kernel_h * g.kernel_w)
    {
        let (shift, (r0, r1), (lo, hi)) = tap(g, t / g.kernel_w, t % g.kernel_w);
        if r0 >= r1 || lo >= hi {
            row.fill(T::zero());
            continue;
        }
        row[..r0 * w].fill(T::zero());
        row[r1 * w..].fill(T::zero());
        let (q0, q1) = (r0 * w + lo, (r1 - 1) * w + hi);
        let s0 = (q0 as isize + shift) as usize;
        row[q0..q1].copy_from_slice(&x_c[s0..s0 + (q1 - q0)]);
        // The wrapped columns (strided stores: no memset call per row).
        for k in (0..lo).chain(hi..w) {
            for r in r0..r1 {
                row[r * w + k] = T::zero();
            }
        }
    }
}

/// col2im of one input channel: `dx_c` (H·W) = Σ over taps of `col_c`'s rows shifted back.
/// Zeroes the wrapped columns of `col_c` (a scratch buffer) on the way.
pub(super) fn col2im_channel<T: Float>(g: &Conv2dGeometry, col_c: &mut [T], dx_c: &mut [T]) {
    dx_c.fill(T::zero());
    let w = g.in_w;
    let p = g.out_h * w;
    for (t, row) in col_c
        .chunks_exact_mut(p.max(1))
        .enumerate()
        .take(g.kernel_h * g.kernel_w)
    {
        let (shift, (r0, r1), (lo, hi)) = tap(g, t / g.kernel_w, t % g.kernel_w);
        if r0 >= r1 || lo >= hi {
            continue;
        }
        for k in (0..lo).chain(hi..w) {
            for r in r0..r1 {
                row[r * w + k] = T::zero();
            }
        }
        let (q0, q1) = (r0 * w + lo, (r1 - 1) * w + hi);
        let s0 = (q0 as isize + shift) as usize;
        for (d, &v) in dx_c[s0..s0 + (q1 - q0)].iter_mut().zip(&row[q0..q1]) {
            *d += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::geometry::Conv2dParams;
    use crate::tensor::Tensor;

    /// Stride-1 geometries with out_w == in_w: symmetric and one-sided width padding, any
    /// height padding, kernels 1–5, planes down to one pixel.
    fn geometries() -> Vec<Conv2dGeometry> {
        let mut all = Vec::new();
        for (h, w) in [(1, 1), (2, 5), (5, 2), (6, 7), (7, 3), (8, 8)] {
            for kh in 1..=4 {
                for kw in 1..=5 {
                    for top in 0..kh {
                        let left_options = [(kw - 1) / 2, 0, kw - 1];
                        for left in left_options {
                            let right = kw - 1 - left;
                            let bottom = (top + 1) % kh;
                            let p = Conv2dParams {
                                stride: [1, 1],
                                padding: [top, left, bottom, right],
                                dilation: [1, 1],
                                groups: 1,
                            };
                            if let Ok(g) = Conv2dGeometry::new(&[1, 1, h, w], &[1, 1, kh, kw], &p) {
                                all.push(g);
                            }
                        }
                    }
                }
            }
        }
        all
    }

    #[test]
    fn flat_copies_match_the_row_loops() {
        let all = geometries();
        assert!(all.len() > 300, "{}", all.len());
        for (k, g) in all.iter().enumerate() {
            assert!(applies(g), "{g:?}");
            let hw = g.in_h * g.in_w;
            let rows = g.kernel_h * g.kernel_w * g.out_h * g.out_w;
            let x = Tensor::<f32>::uniform(&[hw], -1.0, 1.0, k as u64)
                .unwrap()
                .into_vec();
            // im2col: the same copies, bit for bit (NaN where nothing would be written).
            let (mut flat, mut rows_loop) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
            im2col_channel(g, &x, &mut flat);
            super::super::conv::im2col_channel(g, &x, &mut rows_loop);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&flat), bits(&rows_loop), "im2col {g:?}");
            // col2im: the column buffer holds garbage where a tap falls on padding.
            let col = Tensor::<f32>::uniform(&[rows.max(1)], -1.0, 1.0, 1000 + k as u64)
                .unwrap()
                .into_vec();
            let col = &col[..rows];
            let (mut flat, mut rows_loop) = (vec![f32::NAN; hw], vec![f32::NAN; hw]);
            col2im_channel(g, &mut col.to_vec(), &mut flat);
            super::super::conv::col2im_channel(g, col, &mut rows_loop);
            assert_eq!(flat, rows_loop, "col2im {g:?}");
        }
    }
}
