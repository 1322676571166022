//! 2-D max and average pooling on the CPU (NCHW), with PyTorch's CPU semantics.
//!
//! Shape of the work: one rayon task per (n, c) plane; each output pixel scans its window
//! directly (windows are small, and pooling is memory-bound).

use super::conv::valid_range;
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
    out.par_chunks_mut(p)
        .zip(argmax.par_chunks_mut(p))
        .enumerate()
        .for_each(|(plane, (out_p, arg_p))| {
            maxpool_plane(g, &x[plane * hw..][..hw], out_p, arg_p);
        });
}

/// dx (overwritten) = scatter-add of dy at argmax.
pub fn maxpool2d_bwd<T: Float>(g: &Pool2dGeometry, dy: &[T], argmax: &[u32], dx: &mut [T]) {
    let (hw, p) = check_lengths(g, "maxpool2d_bwd", dx.len(), dy.len());
    assert_eq!(argmax.len(), dy.len(), "maxpool2d_bwd: argmax length");
    if dx.is_empty() {
        return;
    }
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dx_p)| {
        dx_p.fill(T::zero());
        let (dy_p, arg_p) = (&dy[plane * p..][..p], &argmax[plane * p..][..p]);
        for (&v, &a) in dy_p.iter().zip(arg_p) {
            if let Some(d) = dx_p.get_mut(a as usize) {
                *d += v;
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

fn maxpool_plane<T: Float>(g: &Pool2dGeometry, x_p: &[T], out_p: &mut [T], arg_p: &mut [u32]) {
    let [kh, kw] = g.kernel;
    let [dh, dw] = g.dilation;
    for oh in 0..g.out_h {
        // Taps t in [t0, t1) read input rows h0 + t·dh inside the plane.
        let h0 = (oh * g.stride[0]) as isize - g.pad[0] as isize;
        let (t0, t1) = valid_range(kh, g.in_h, dh, h0);
        for ow in 0..g.out_w {
            let w0 = (ow * g.stride[1]) as isize - g.pad[1] as isize;
            let (s0, s1) = valid_range(kw, g.in_w, dw, w0);
            let o = oh * g.out_w + ow;
            if t0 == t1 || s0 == s1 {
                out_p[o] = T::neg_infinity();
                arg_p[o] = NO_ARGMAX;
                continue;
            }
            let row_of = |t: usize| (h0 + (t * dh) as isize) as usize;
            let col_of = |s: usize| (w0 + (s * dw) as isize) as usize;
            // As PyTorch: start at the first tap inside the input, so an all -inf window
            // reports that tap.
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
            out_p[o] = best;
            arg_p[o] = best_at as u32;
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
