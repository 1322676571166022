//! SmoothGrad's batch of noisy copies: made from a counter-based RNG, and reduced over copies
//! (sum and sum of squares) straight out of the first convolution's input-gradient kernel.

use super::conv::{ConvPoolPath, conv2d_bwd_input, conv2d_max_pool2d_bwd_input};
use crate::element::Float;
use crate::ops::geometry::{Conv2dGeometry, Pool2dGeometry};
use crate::rng;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Where the noise of copy `i`, element `e` comes from.
#[derive(Debug, Clone)]
pub enum NoiseSource<T: Float> {
    /// Standard normal draw `e` of Philox stream `i` under `seed`: independent of chunking,
    /// threads and backend.
    Philox { seed: u64 },
    /// Given standard normal draws `[n, ...]` (to replay another framework's noise exactly).
    Given(Tensor<T>),
}

/// `out[i, e] = x[e] + sigma · ε(first + i, e)` for `count` copies of `x`.
pub fn noisy_copies_fwd<T: Float>(
    x: &[T],
    noise: &NoiseSource<T>,
    sigma: T,
    first: usize,
    out: &mut [T],
) {
    let e = x.len();
    if e == 0 {
        return;
    }
    // One draws buffer per rayon job (or per call inside a serial lane), not per copy.
    let draws = || match noise {
        NoiseSource::Philox { .. } => vec![0.0f32; e],
        NoiseSource::Given(_) => Vec::new(),
    };
    let fill = |draws: &mut Vec<f32>, (i, copy): (usize, &mut [T])| {
        let index = first + i;
        match noise {
            NoiseSource::Philox { seed } => {
                rng::fill_normal(*seed, index as u32, 0, draws);
                for ((o, &xv), &z) in copy.iter_mut().zip(x).zip(draws.iter()) {
                    *o = xv + sigma * T::from_f64(z as f64);
                }
            }
            NoiseSource::Given(t) => {
                let z = &t.as_slice()[index * e..(index + 1) * e];
                for ((o, &xv), &zv) in copy.iter_mut().zip(x).zip(z) {
                    *o = xv + sigma * zv;
                }
            }
        }
    };
    if crate::parallel::threads() == 1 {
        let mut buffer = draws();
        out.chunks_mut(e)
            .enumerate()
            .for_each(|item| fill(&mut buffer, item));
    } else {
        out.par_chunks_mut(e)
            .enumerate()
            .for_each_init(draws, |buffer, item| fill(buffer, item));
    }
}

/// Adds `Σᵢ g[i, e]` to `sum` and `Σᵢ g[i, e]²` to `sumsq` over the copies in `g`.
pub fn reduce_copies<T: Float>(g: &[T], sum: &mut [T], sumsq: &mut [T]) {
    let e = sum.len();
    if e == 0 {
        return;
    }
    for copy in g.chunks(e) {
        for ((s, q), &v) in sum.iter_mut().zip(sumsq.iter_mut()).zip(copy) {
            *s += v;
            *q += v * v;
        }
    }
}

/// The input gradient of a convolution over a batch of copies, reduced over the copies as it is
/// produced: `sum += Σᵢ dxᵢ`, `sumsq += Σᵢ dxᵢ²`. Copies go through in blocks of one per
/// thread, so at most that many per-copy gradients exist at any time — never the whole batch.
pub fn conv2d_bwd_input_reduce_copies<T: Float>(
    g: &Conv2dGeometry,
    dy: &[T],
    w: &[T],
    sum: &mut [T],
    sumsq: &mut [T],
) {
    let per_dy = g.out_channels * g.out_h * g.out_w;
    assert_eq!(
        dy.len(),
        g.batch * per_dy,
        "conv2d_bwd_input_reduce_copies: dy"
    );
    reduce_in_blocks(g, sum, sumsq, |sub, start, dx| {
        conv2d_bwd_input(sub, &dy[start * per_dy..][..sub.batch * per_dy], w, dx);
    });
}

/// [`conv2d_bwd_input_reduce_copies`] for a convolution followed by a fused 2×2 max pool
/// (`pg`; see [`conv2d_max_pool2d_bwd_input`]): `dy` is the pool's output gradient, `argmax`
/// its winners, both from the forward on `path`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_max_pool2d_bwd_input_reduce_copies<T: Float>(
    path: ConvPoolPath,
    g: &Conv2dGeometry,
    pg: &Pool2dGeometry,
    dy: &[T],
    argmax: &[u32],
    w: &[T],
    sum: &mut [T],
    sumsq: &mut [T],
) {
    let per_dy = pg.channels * pg.out_h * pg.out_w;
    assert_eq!(
        dy.len(),
        g.batch * per_dy,
        "conv2d_max_pool2d_bwd_input_reduce_copies: dy"
    );
    assert_eq!(
        argmax.len(),
        dy.len(),
        "conv2d_max_pool2d_bwd_input_reduce_copies: argmax"
    );
    reduce_in_blocks(g, sum, sumsq, |sub, start, dx| {
        let span = start * per_dy..(start + sub.batch) * per_dy;
        let pooled = Pool2dGeometry {
            batch: sub.batch,
            ..*pg
        };
        let (dy, argmax) = (&dy[span.clone()], &argmax[span]);
        conv2d_max_pool2d_bwd_input(path, sub, &pooled, dy, argmax, w, dx);
    });
}

/// `dx` (one sample) = Σᵢ of the input gradients of a convolution over the batch of copies in
/// `dy`: the input gradient is linear in dY, so dY is summed over the copies first and the
/// convolution's input gradient runs once (rounded differently from summing the copies'
/// gradients). For sums without sums of squares, e.g. SmoothGrad's mean.
pub fn conv2d_bwd_input_sum_copies<T: Float>(g: &Conv2dGeometry, dy: &[T], w: &[T], dx: &mut [T]) {
    let per_dy = g.out_channels * g.out_h * g.out_w;
    assert_eq!(
        dy.len(),
        g.batch * per_dy,
        "conv2d_bwd_input_sum_copies: dy"
    );
    let mut dy_sum = crate::buffers::zeros(per_dy);
    sum_copies(dy, &mut dy_sum);
    conv2d_bwd_input(&Conv2dGeometry { batch: 1, ..*g }, &dy_sum, w, dx);
    crate::buffers::recycle(dy_sum);
}

/// Adds `Σᵢ g[i, e]` to `sum` over the copies in `g` ([`reduce_copies`] without squares).
pub fn sum_copies<T: Float>(g: &[T], sum: &mut [T]) {
    let e = sum.len();
    if e == 0 {
        return;
    }
    for copy in g.chunks(e) {
        for (s, &v) in sum.iter_mut().zip(copy) {
            *s += v;
        }
    }
}

/// Runs `dx_of(sub, start, dx)` over the copies of `g` in blocks of one per thread (`sub` is
/// `g` for the block's copies `start ..`) and reduces each block's input gradient into `sum`
/// and `sumsq`.
fn reduce_in_blocks<T: Float>(
    g: &Conv2dGeometry,
    sum: &mut [T],
    sumsq: &mut [T],
    dx_of: impl Fn(&Conv2dGeometry, usize, &mut [T]),
) {
    let per_dx = g.in_channels * g.in_h * g.in_w;
    assert_eq!(sum.len(), per_dx, "conv2d_bwd_input_reduce_copies: sum");
    assert_eq!(sumsq.len(), per_dx, "conv2d_bwd_input_reduce_copies: sumsq");
    let block = crate::parallel::threads().max(1);
    let mut scratch = vec![T::zero(); block.min(g.batch) * per_dx];
    let mut start = 0;
    while start < g.batch {
        let count = block.min(g.batch - start);
        let sub = Conv2dGeometry { batch: count, ..*g };
        let dx = &mut scratch[..count * per_dx];
        dx_of(&sub, start, dx);
        reduce_copies(dx, sum, sumsq);
        start += count;
    }
}
