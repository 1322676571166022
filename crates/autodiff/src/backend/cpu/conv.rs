//! 2-D convolution on the CPU (NCHW activations, OIHW weights, as PyTorch).
//!
//! Shape of the work: per sample and per group, im2col builds the column matrix
//! col[Cg·kh·kw, OH·OW], then one packed GEMM does the arithmetic (forward W·col, input
//! gradient Wᵀ·dY followed by col2im, weight gradient dY·colᵀ summed over the batch). A 1×1,
//! stride-1, unpadded convolution skips im2col: the input planes already are the column matrix.
//! Convolutions with one input channel per group (depthwise, channel multipliers) run a direct
//! loop instead, since their GEMMs would be a few rows deep; so do, in f32 outside
//! [`ConvAlgorithm::Im2col`], those with a few input channels and outputs (`direct.rs`), and
//! 3×3 stride-1 ones with enough channels take Winograd (`winograd.rs`, per [`ConvAlgorithm`]).
//!
//! Threads: with at least as many samples as rayon threads, each task takes whole samples and
//! runs single-threaded GEMMs; with fewer, samples run in order and each GEMM (and im2col, over
//! channels) uses the pool. Column buffers are kept per thread and reused across calls.

use super::gemm::{MatRef, Threads, matmul};
use super::winograd::{self, Tile};
use crate::element::{DType, Float};
use crate::ops::geometry::{Conv2dGeometry, Pool2dGeometry};
use rayon::prelude::*;
use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};

/// How f32 convolutions may be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// im2col + GEMM (or a direct loop), forward and input gradient: PyTorch's summation-order
    /// class, a SmoothGrad map of the `small` benchmark model within 2.1e-7 relative L2 of
    /// PyTorch's. f64 always runs this way.
    Im2col,
    /// The fastest the shape allows: Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions with
    /// enough channels and tiles (forward and input gradient), im2col otherwise. Each layer's
    /// f32 error is ≈ 10× im2col's (relative L2 ≈ 2e-6), which flips a few near-zero ReLUs: a
    /// SmoothGrad map of the `small` benchmark model moves by 4.7e-3 relative L2
    /// (`docs/cpu-speed.md`). Opt in where that is acceptable.
    Fastest,
    /// im2col forward, Winograd F(4×4, 3×3) input gradient. The forward — the logits and
    /// every ReLU and max-pool decision — is the [`ConvAlgorithm::Im2col`] one, and the
    /// backward's Winograd rounding stays linear (no mask flips to amplify it): the `small`
    /// model's map is within 1.3e-6 relative L2 of PyTorch's (`docs/cpu-speed.md`).
    WinogradBackward,
    /// The default: Winograd F(2×2, 3×3) forward and F(4×4, 3×3) input gradient. F(2×2)'s
    /// transforms use only 0, ±1 and ±½, so its f32 rounding stays close to im2col's (relative
    /// L2 ≈ 3e-7 per layer against 2e-6 for F(4×4)): on the benchmark models it flips no ReLU
    /// on `tiny` and `small` (maps within 1.3e-6 of PyTorch's, as with
    /// [`ConvAlgorithm::WinogradBackward`]) and moves `medium`'s by flips to 4.3e-4, inside the
    /// spread of the peers among themselves; about 18% faster on `small`.
    Winograd,
}

/// 0 = im2col, 1 = fastest, 2 = Winograd in the input gradient only, 3 = Winograd F(2×2)
/// forward and F(4×4) input gradient (the default).
static MODE: AtomicU8 = AtomicU8::new(3);

/// Chooses the convolution algorithm for f32 in this process (default
/// [`ConvAlgorithm::Winograd`]).
///
/// ```
/// use smoothgrad_autodiff::backend::cpu::conv::{ConvAlgorithm, conv_algorithm, set_conv_algorithm};
/// assert_eq!(conv_algorithm(), ConvAlgorithm::Winograd);
/// set_conv_algorithm(ConvAlgorithm::Im2col);
/// assert_eq!(conv_algorithm(), ConvAlgorithm::Im2col);
/// set_conv_algorithm(ConvAlgorithm::Winograd);
/// ```
pub fn set_conv_algorithm(algorithm: ConvAlgorithm) {
    let mode = match algorithm {
        ConvAlgorithm::Im2col => 0,
        ConvAlgorithm::Fastest => 1,
        ConvAlgorithm::WinogradBackward => 2,
        ConvAlgorithm::Winograd => 3,
    };
    MODE.store(mode, Ordering::Relaxed);
}

/// The convolution algorithm f32 convolutions use now.
pub fn conv_algorithm() -> ConvAlgorithm {
    match MODE.load(Ordering::Relaxed) {
        1 => ConvAlgorithm::Fastest,
        2 => ConvAlgorithm::WinogradBackward,
        3 => ConvAlgorithm::Winograd,
        _ => ConvAlgorithm::Im2col,
    }
}

/// The Winograd tile an f32 forward may take, if any.
fn winograd_fwd_tile<T: Float>() -> Option<Tile> {
    if T::DTYPE != DType::F32 {
        return None;
    }
    match conv_algorithm() {
        ConvAlgorithm::Fastest => Some(Tile::F4),
        ConvAlgorithm::Winograd => Some(Tile::F2),
        ConvAlgorithm::Im2col | ConvAlgorithm::WinogradBackward => None,
    }
}

/// Whether an f32 convolution with a few input channels may take the direct loop over padded
/// planes (`direct::applies_channels`) instead of im2col: not under [`ConvAlgorithm::Im2col`],
/// which keeps PyTorch's summation-order class.
fn direct_channels_allowed<T: Float>() -> bool {
    T::DTYPE == DType::F32 && conv_algorithm() != ConvAlgorithm::Im2col
}

/// Whether an f32 input gradient may take Winograd.
fn winograd_bwd_allowed<T: Float>() -> bool {
    T::DTYPE == DType::F32 && conv_algorithm() != ConvAlgorithm::Im2col
}

/// out[N,O,OH,OW] = conv(x[N,C,H,W], w[O,C/g,kh,kw]) + bias[O]. `out` is overwritten.
pub fn conv2d_fwd<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    conv2d_fwd_planned(g, x, w, bias, out, Plan::for_batch(g.batch));
}

/// dx[N,C,H,W] = gradient w.r.t. the input, given dy[N,O,OH,OW]. `dx` is overwritten.
pub fn conv2d_bwd_input<T: Float>(g: &Conv2dGeometry, dy: &[T], w: &[T], dx: &mut [T]) {
    conv2d_bwd_input_planned(g, dy, w, dx, Plan::for_batch(g.batch));
}

/// How [`conv2d_max_pool2d_fwd`] runs a convolution and the 2×2 max pool over its output as
/// one pass; the input-gradient functions take the same path (the forward's `argmax` means
/// something different on each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPoolPath {
    /// The direct loops over padded planes (one input channel per group, or a few channels in
    /// f32): each output plane pooled from the scratch it was computed in; `argmax` holds
    /// positions on the padded width, and the input gradient scatters the pooled gradient into
    /// the padded dY planes its kernels read.
    Direct,
    /// Winograd F(2×2, 3×3) (the forward the separate f32 convolution takes for ≥ 16 channels):
    /// every output tile is one pool window, pooled in the output transform; `argmax` as
    /// [`maxpool2d_fwd`](super::pool::maxpool2d_fwd) gives it, and the input gradient scatters
    /// the pooled gradient ([`maxpool2d_bwd`](super::pool::maxpool2d_bwd)) before the convolution's own input gradient.
    Winograd,
}

/// Whether and how [`conv2d_max_pool2d_fwd`] runs a convolution `g` and a max pool `pg` over
/// its output fused: `pg` is a 2×2 window at stride 2 (no padding, dilation or partial
/// windows), and the convolution takes, as the separate convolution would, either the direct
/// loops over padded planes keeping the width of its input (so the forward's and the input
/// gradient's padded widths agree) or Winograd F(2×2) with an even output height and width.
/// `None`: the two ops run separately.
pub fn conv2d_max_pool2d_path<T: Float>(
    g: &Conv2dGeometry,
    pg: &Pool2dGeometry,
) -> Option<ConvPoolPath> {
    if !pools_output(g, pg) {
        return None;
    }
    // The order of `conv2d_fwd_planned`'s choices.
    if Dims::new(g).direct || direct_channels_allowed::<T>() && super::direct::applies_channels(g) {
        direct_fuses::<T>(g).then_some(ConvPoolPath::Direct)
    } else {
        (winograd_fwd_tile::<T>() == Some(Tile::F2) && winograd::fits_fwd_pooled(g))
            .then_some(ConvPoolPath::Winograd)
    }
}

/// `pg` is a 2×2, stride-2 max pool over the whole output of `g`.
fn pools_output(g: &Conv2dGeometry, pg: &Pool2dGeometry) -> bool {
    super::pool::is_2x2_stride_2(pg)
        && pg.batch == g.batch
        && pg.channels == g.out_channels
        && [pg.in_h, pg.in_w] == [g.out_h, g.out_w]
}

/// The direct loops apply to `g` (one input channel per group, or a few in f32) and keep its
/// width.
fn direct_fuses<T: Float>(g: &Conv2dGeometry) -> bool {
    let applies = if Dims::new(g).direct {
        super::direct::applies(g)
    } else {
        direct_channels_allowed::<T>() && super::direct::applies_channels(g)
    };
    applies && g.out_w == g.in_w
}

/// Whether [`conv2d_max_pool2d_path`] finds a fused path.
pub fn conv2d_max_pool2d_fuses<T: Float>(g: &Conv2dGeometry, pg: &Pool2dGeometry) -> bool {
    conv2d_max_pool2d_path::<T>(g, pg).is_some()
}

/// `pooled` = max_pool2d(conv2d(x, w) + bias) on `path` (from [`conv2d_max_pool2d_path`]):
/// the same values, bit for bit, as [`conv2d_fwd`] then
/// [`maxpool2d_fwd`](super::pool::maxpool2d_fwd), without storing the convolution's output.
/// `argmax` gets each window's winner as a position for [`conv2d_max_pool2d_bwd_input`] on
/// the same path.
///
/// # Panics
/// When the geometries do not take `path` or a slice length disagrees with them.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_max_pool2d_fwd<T: Float>(
    path: ConvPoolPath,
    g: &Conv2dGeometry,
    pg: &Pool2dGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    pooled: &mut [T],
    argmax: &mut [u32],
) {
    let op = "conv2d_max_pool2d_fwd";
    let chosen = conv2d_max_pool2d_path::<T>(g, pg);
    assert_eq!(chosen, Some(path), "{op}: {g:?} {pg:?}");
    check_fused::<T>(
        op,
        path,
        g,
        pg,
        [x.len(), w.len(), pooled.len(), argmax.len()],
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), g.out_channels, "{op}: bias length");
    }
    if pooled.is_empty() {
        return;
    }
    match path {
        ConvPoolPath::Direct => super::direct::fwd_pooled(g, pg, x, w, bias, pooled, argmax),
        ConvPoolPath::Winograd => winograd::conv3x3_fwd_pooled(g, x, w, bias, pooled, argmax),
    }
}

/// dx of [`conv2d_max_pool2d_fwd`] on `path` from the gradient `dy` of its pooled output and
/// its `argmax`: bit for bit the separate max pool's input gradient then [`conv2d_bwd_input`].
/// `dx` is overwritten.
///
/// # Panics
/// When the geometries do not take `path` or a slice length disagrees with them.
pub fn conv2d_max_pool2d_bwd_input<T: Float>(
    path: ConvPoolPath,
    g: &Conv2dGeometry,
    pg: &Pool2dGeometry,
    dy: &[T],
    argmax: &[u32],
    w: &[T],
    dx: &mut [T],
) {
    let op = "conv2d_max_pool2d_bwd_input";
    check_fused::<T>(op, path, g, pg, [dx.len(), w.len(), dy.len(), argmax.len()]);
    if dx.is_empty() {
        return;
    }
    match path {
        ConvPoolPath::Direct => super::direct::bwd_input_pooled(g, dy, argmax, w, dx),
        ConvPoolPath::Winograd => {
            with_scratch_in(
                Slot::Unpooled,
                g.batch * Dims::new(g).y_per,
                |dyu: &mut [T]| {
                    super::pool::maxpool2d_bwd(pg, dy, argmax, dyu);
                    conv2d_bwd_input(g, dyu, w, dx);
                },
            );
        }
    }
}

/// `dx` (one sample) = Σ over the batch of `g` of [`conv2d_max_pool2d_bwd_input`]'s per-sample
/// input gradients: the copies' pooled gradients are scattered into one set of dY planes,
/// summed, and the convolution's input gradient runs once (it is linear in dY; rounded
/// differently from summing the samples' gradients).
///
/// # Panics
/// When the geometries do not take `path` or a slice length disagrees with them.
pub fn conv2d_max_pool2d_bwd_input_sum<T: Float>(
    path: ConvPoolPath,
    g: &Conv2dGeometry,
    pg: &Pool2dGeometry,
    dy: &[T],
    argmax: &[u32],
    w: &[T],
    dx: &mut [T],
) {
    let op = "conv2d_max_pool2d_bwd_input_sum";
    let x_len = g.batch * dx.len();
    check_fused::<T>(op, path, g, pg, [x_len, w.len(), dy.len(), argmax.len()]);
    if dx.is_empty() || g.batch == 0 {
        dx.fill(T::zero());
        return;
    }
    match path {
        ConvPoolPath::Direct => super::direct::bwd_input_pooled_sum(g, dy, argmax, w, dx),
        ConvPoolPath::Winograd => {
            let one = Conv2dGeometry { batch: 1, ..*g };
            let per_dy = pg.channels * pg.out_h * pg.out_w;
            let plane = g.out_h * g.out_w;
            with_scratch_in(Slot::Unpooled, Dims::new(g).y_per, |dyu: &mut [T]| {
                dyu.fill(T::zero());
                for (dy_i, arg_i) in dy.chunks_exact(per_dy).zip(argmax.chunks_exact(per_dy)) {
                    let planes = dy_i.chunks_exact(per_dy / pg.channels.max(1));
                    let args = arg_i.chunks_exact(per_dy / pg.channels.max(1));
                    for ((dy_k, arg_k), dyu_k) in planes.zip(args).zip(dyu.chunks_exact_mut(plane))
                    {
                        for (&v, &a) in dy_k.iter().zip(arg_k) {
                            dyu_k[a as usize] += v;
                        }
                    }
                }
                conv2d_bwd_input(&one, dyu, w, dx);
            });
        }
    }
}

/// Checks that `g` and `pg` can take `path` (its kernels' conditions that do not depend on the
/// batch: the reductions over copies run the input gradient on a few copies at a time) and the
/// lengths of the input (or its gradient), the weights, the pooled output (or its gradient) and
/// the windows' winners against them.
fn check_fused<T: Float>(
    op: &str,
    path: ConvPoolPath,
    g: &Conv2dGeometry,
    pg: &Pool2dGeometry,
    [x, w, pooled, argmax]: [usize; 4],
) {
    let fits = pools_output(g, pg)
        && match path {
            ConvPoolPath::Direct => direct_fuses::<T>(g),
            ConvPoolPath::Winograd => g.out_h.is_multiple_of(2) && g.out_w.is_multiple_of(2),
        };
    assert!(fits, "{op}: {path:?} {g:?} {pg:?}");
    let d = Dims::new(g);
    assert_eq!(x, g.batch * d.x_per, "{op}: input length");
    assert_eq!(w, g.out_channels * d.k, "{op}: weight length");
    let out: usize = [pg.batch, pg.channels, pg.out_h, pg.out_w].iter().product();
    assert_eq!(pooled, out, "{op}: pooled length");
    assert_eq!(argmax, out, "{op}: argmax length");
}

/// dw[O,C/g,kh,kw] = gradient w.r.t. the weight, given dy and x. `dw` is overwritten.
pub fn conv2d_bwd_weight<T: Float>(g: &Conv2dGeometry, dy: &[T], x: &[T], dw: &mut [T]) {
    conv2d_bwd_weight_planned(g, dy, x, dw, Plan::for_batch(g.batch));
}

/// db[O] = sum of dy over N, OH, OW. `db` is overwritten.
pub fn conv2d_bwd_bias<T: Float>(g: &Conv2dGeometry, dy: &[T], db: &mut [T]) {
    let d = Dims::new(g);
    assert_eq!(dy.len(), g.batch * d.y_per, "conv2d_bwd_bias: dy length");
    assert_eq!(db.len(), g.out_channels, "conv2d_bwd_bias: db length");
    let (o_count, p) = (g.out_channels, d.p);
    db.par_iter_mut().enumerate().for_each(|(o, b)| {
        *b = (0..g.batch)
            .map(|n| sum(&dy[(n * o_count + o) * p..][..p]))
            .fold(T::zero(), |a, v| a + v);
    });
}

/// How one call spreads over the rayon pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Tasks take whole samples; GEMMs inside run on one thread.
    PerSample,
    /// Samples in order; each GEMM and im2col uses the pool.
    PoolInside,
}

impl Plan {
    fn for_batch(batch: usize) -> Plan {
        if batch >= crate::parallel::threads() {
            Plan::PerSample
        } else {
            Plan::PoolInside
        }
    }
}

/// Sizes derived once from the geometry.
pub(super) struct Dims {
    /// Input channels per group.
    cg: usize,
    /// Output channels per group.
    og: usize,
    /// Taps of one kernel plane, kh·kw.
    taps: usize,
    /// Rows of the column matrix, cg·kh·kw.
    k: usize,
    /// Output pixels per plane, OH·OW (columns of the column matrix).
    p: usize,
    /// Input pixels per plane, H·W.
    hw: usize,
    /// Elements of one input sample, C·H·W.
    x_per: usize,
    /// Elements of one output sample, O·OH·OW.
    y_per: usize,
    /// 1×1, stride 1, no padding: the input planes are the column matrix.
    pointwise: bool,
    /// One input channel per group: the direct loop beats a GEMM with kh·kw-deep products.
    direct: bool,
}

impl Dims {
    fn new(g: &Conv2dGeometry) -> Dims {
        let cg = g.in_channels / g.groups;
        let taps = g.kernel_h * g.kernel_w;
        let p = g.out_h * g.out_w;
        let hw = g.in_h * g.in_w;
        Dims {
            cg,
            og: g.out_channels / g.groups,
            taps,
            k: cg * taps,
            p,
            hw,
            x_per: g.in_channels * hw,
            y_per: g.out_channels * p,
            pointwise: taps == 1
                && g.stride == [1, 1]
                && g.pad == [0, 0]
                && g.out_h == g.in_h
                && g.out_w == g.in_w,
            direct: cg == 1,
        }
    }
    /// Length of the column buffer one sample needs (none for pointwise).
    fn col_len(&self) -> usize {
        if self.pointwise { 0 } else { self.k * self.p }
    }
}

fn check_lengths<T>(g: &Conv2dGeometry, d: &Dims, op: &str, x: &[T], w: &[T], y: &[T]) {
    assert_eq!(x.len(), g.batch * d.x_per, "{op}: input length");
    assert_eq!(w.len(), g.out_channels * d.k, "{op}: weight length");
    assert_eq!(y.len(), g.batch * d.y_per, "{op}: output length");
}

fn conv2d_fwd_planned<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
    plan: Plan,
) {
    let d = Dims::new(g);
    check_lengths(g, &d, "conv2d_fwd", x, w, out);
    if let Some(b) = bias {
        assert_eq!(b.len(), g.out_channels, "conv2d_fwd: bias length");
    }
    if out.is_empty() {
        return;
    }
    if d.direct {
        return direct_fwd(g, &d, x, w, bias, out);
    }
    if direct_channels_allowed::<T>() && super::direct::applies_channels(g) {
        return super::direct::fwd_channels(g, x, w, bias, out);
    }
    if let Some(tile) = winograd_fwd_tile::<T>().filter(|&t| winograd::fits_fwd(g, t)) {
        return winograd::conv3x3_fwd(g, x, w, bias, out, tile);
    }
    let sample = |n: usize, out_n: &mut [T], threads: Threads| {
        let x_n = &x[n * d.x_per..(n + 1) * d.x_per];
        with_scratch(d.col_len(), |col: &mut [T]| {
            for grp in 0..g.groups {
                let cols = if d.pointwise {
                    MatRef::row_major(x_n, grp * d.cg * d.hw, d.p)
                } else {
                    im2col(
                        g,
                        &d,
                        &x_n[grp * d.cg * d.hw..][..d.cg * d.hw],
                        col,
                        threads,
                    );
                    MatRef::row_major(&*col, 0, d.p)
                };
                let w_g = MatRef::row_major(w, grp * d.og * d.k, d.k);
                let at = grp * d.og * d.p;
                matmul(d.og, d.p, d.k, w_g, cols, out_n, at, d.p, false, threads);
            }
        });
        if let Some(b) = bias {
            for (plane, &bo) in out_n.chunks_mut(d.p).zip(b) {
                plane.iter_mut().for_each(|v| *v += bo);
            }
        }
    };
    match plan {
        Plan::PerSample => crate::parallel::for_each_chunk(out, d.y_per, |n, out_n| {
            sample(n, out_n, Threads::Single)
        }),
        Plan::PoolInside => {
            for (n, out_n) in out.chunks_mut(d.y_per).enumerate() {
                sample(n, out_n, Threads::Pool);
            }
        }
    }
}

fn conv2d_bwd_input_planned<T: Float>(
    g: &Conv2dGeometry,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
    plan: Plan,
) {
    let d = Dims::new(g);
    check_lengths(g, &d, "conv2d_bwd_input", dx, w, dy);
    if dx.is_empty() {
        return;
    }
    if d.direct {
        return direct_bwd_input(g, &d, dy, w, dx);
    }
    if direct_channels_allowed::<T>() && super::direct::applies_channels(g) {
        return super::direct::bwd_input_channels(g, dy, w, dx);
    }
    if winograd_bwd_allowed::<T>() && winograd::fits_bwd_input(g, Tile::F4) {
        return winograd::conv3x3_bwd_input(g, dy, w, dx, Tile::F4);
    }
    let sample = |n: usize, dx_n: &mut [T], threads: Threads| {
        let dy_n = &dy[n * d.y_per..(n + 1) * d.y_per];
        with_scratch(d.col_len(), |col: &mut [T]| {
            for grp in 0..g.groups {
                let w_t = MatRef::transposed(w, grp * d.og * d.k, d.k);
                let dy_g = MatRef::row_major(dy_n, grp * d.og * d.p, d.p);
                let dx_g = &mut dx_n[grp * d.cg * d.hw..][..d.cg * d.hw];
                if d.pointwise {
                    matmul(d.k, d.p, d.og, w_t, dy_g, dx_g, 0, d.p, false, threads);
                } else {
                    matmul(d.k, d.p, d.og, w_t, dy_g, col, 0, d.p, false, threads);
                    col2im(g, &d, col, dx_g, threads);
                }
            }
        });
    };
    match plan {
        Plan::PerSample => {
            crate::parallel::for_each_chunk(dx, d.x_per, |n, dx_n| sample(n, dx_n, Threads::Single))
        }
        Plan::PoolInside => {
            for (n, dx_n) in dx.chunks_mut(d.x_per).enumerate() {
                sample(n, dx_n, Threads::Pool);
            }
        }
    }
}

fn conv2d_bwd_weight_planned<T: Float>(
    g: &Conv2dGeometry,
    dy: &[T],
    x: &[T],
    dw: &mut [T],
    plan: Plan,
) {
    let d = Dims::new(g);
    check_lengths(g, &d, "conv2d_bwd_weight", x, dw, dy);
    dw.fill(T::zero());
    if dw.is_empty() || g.batch == 0 {
        return;
    }
    if d.direct {
        return direct_bwd_weight(g, &d, dy, x, dw);
    }
    // Adds sample n's dW into `acc`.
    let sample = |n: usize, acc: &mut [T], col: &mut [T], threads: Threads| {
        let x_n = &x[n * d.x_per..(n + 1) * d.x_per];
        let dy_n = &dy[n * d.y_per..(n + 1) * d.y_per];
        for grp in 0..g.groups {
            let cols_t = if d.pointwise {
                MatRef::transposed(x_n, grp * d.cg * d.hw, d.p)
            } else {
                im2col(
                    g,
                    &d,
                    &x_n[grp * d.cg * d.hw..][..d.cg * d.hw],
                    col,
                    threads,
                );
                MatRef::transposed(&*col, 0, d.p)
            };
            let dy_g = MatRef::row_major(dy_n, grp * d.og * d.p, d.p);
            let at = grp * d.og * d.k;
            matmul(d.og, d.k, d.p, dy_g, cols_t, acc, at, d.k, true, threads);
        }
    };
    match plan {
        Plan::PerSample => {
            // Fixed contiguous runs of samples, one partial sum each, added in order: the result
            // depends only on the thread count, not on scheduling.
            let runs = crate::parallel::threads().clamp(1, g.batch);
            let per_run = g.batch.div_ceil(runs);
            let runs = g.batch.div_ceil(per_run);
            let len = dw.len();
            let mut partials = vec![T::zero(); (runs - 1) * len];
            let mut slots: Vec<&mut [T]> = Vec::with_capacity(runs);
            slots.push(&mut *dw);
            slots.extend(partials.chunks_mut(len));
            slots.into_par_iter().enumerate().for_each(|(r, acc)| {
                with_scratch(d.col_len(), |col: &mut [T]| {
                    for n in r * per_run..((r + 1) * per_run).min(g.batch) {
                        sample(n, acc, col, Threads::Single);
                    }
                });
            });
            for part in partials.chunks(len) {
                dw.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
            }
        }
        Plan::PoolInside => with_scratch(d.col_len(), |col: &mut [T]| {
            for n in 0..g.batch {
                sample(n, dw, col, Threads::Pool);
            }
        }),
    }
}

/// The outputs `o` in `[lo, hi)` (clipped to `out_len`) whose input index `o·stride + offset`
/// lies in `[0, in_len)`.
pub(super) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    offset: isize,
) -> (usize, usize) {
    let lo = if offset >= 0 {
        0
    } else {
        offset.unsigned_abs().div_ceil(stride)
    };
    let hi = if offset >= in_len as isize {
        0
    } else {
        ((in_len as isize - offset) as usize).div_ceil(stride)
    };
    let hi = hi.min(out_len);
    (lo.min(hi), hi)
}

/// Input offset of tap `t` for output 0: `t·dilation − pad`.
#[inline]
fn tap_offset(t: usize, dilation: usize, pad: usize) -> isize {
    (t * dilation) as isize - pad as isize
}

/// col[(c·kh + i)·kw + j, oh·OW + ow] = x_g[c, oh·sh − ph + i·dh, ow·sw − pw + j·dw], zero
/// outside the input. Writes all of `col` (len cg·kh·kw·OH·OW).
fn im2col<T: Float>(g: &Conv2dGeometry, d: &Dims, x_g: &[T], col: &mut [T], threads: Threads) {
    let channel = |c: usize, col_c: &mut [T]| {
        let x_c = &x_g[c * d.hw..][..d.hw];
        if super::flatcol::applies(g) {
            super::flatcol::im2col_channel(g, x_c, col_c);
        } else {
            im2col_channel(g, x_c, col_c);
        }
    };
    let rows = d.taps * d.p;
    match threads {
        Threads::Pool => col
            .par_chunks_mut(rows)
            .enumerate()
            .for_each(|(c, col_c)| channel(c, col_c)),
        Threads::Single => col
            .chunks_mut(rows)
            .enumerate()
            .for_each(|(c, col_c)| channel(c, col_c)),
    }
}

pub(super) fn im2col_channel<T: Float>(g: &Conv2dGeometry, x_c: &[T], col_c: &mut [T]) {
    let (ow_len, w_len, sw) = (g.out_w, g.in_w, g.stride[1]);
    let rows = col_c.chunks_mut(g.out_h * ow_len);
    // One row of the column matrix per tap (i, j); the caller sized the buffer for all taps.
    for (t, row) in rows.enumerate().take(g.kernel_h * g.kernel_w) {
        let (i, j) = (t / g.kernel_w, t % g.kernel_w);
        let off_h = tap_offset(i, g.dilation[0], g.pad[0]);
        {
            let off_w = tap_offset(j, g.dilation[1], g.pad[1]);
            let (lo, hi) = valid_range(ow_len, w_len, sw, off_w);
            for (oh, dst) in row.chunks_mut(ow_len).enumerate() {
                let ih = (oh * g.stride[0]) as isize + off_h;
                if ih < 0 || ih >= g.in_h as isize || lo == hi {
                    dst.fill(T::zero());
                    continue;
                }
                let src = &x_c[ih as usize * w_len..][..w_len];
                let start = ((lo * sw) as isize + off_w) as usize;
                dst[..lo].fill(T::zero());
                dst[hi..].fill(T::zero());
                if sw == 1 {
                    dst[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                } else {
                    for (v, &s) in dst[lo..hi].iter_mut().zip(src[start..].iter().step_by(sw)) {
                        *v = s;
                    }
                }
            }
        }
    }
}

/// dx_g (overwritten) = the adjoint of im2col applied to `col`: every column entry is added
/// back to the input pixel it was read from.
fn col2im<T: Float>(g: &Conv2dGeometry, d: &Dims, col: &mut [T], dx_g: &mut [T], threads: Threads) {
    let rows = d.taps * d.p;
    let channel = |dx_c: &mut [T], col_c: &mut [T]| {
        if super::flatcol::applies(g) {
            super::flatcol::col2im_channel(g, col_c, dx_c);
        } else {
            col2im_channel(g, col_c, dx_c);
        }
    };
    match threads {
        Threads::Pool => dx_g
            .par_chunks_mut(d.hw)
            .zip(col.par_chunks_mut(rows))
            .for_each(|(dx_c, col_c)| channel(dx_c, col_c)),
        Threads::Single => dx_g
            .chunks_mut(d.hw)
            .zip(col.chunks_mut(rows))
            .for_each(|(dx_c, col_c)| channel(dx_c, col_c)),
    }
}

pub(super) fn col2im_channel<T: Float>(g: &Conv2dGeometry, col_c: &[T], dx_c: &mut [T]) {
    dx_c.fill(T::zero());
    let (ow_len, w_len, sw) = (g.out_w, g.in_w, g.stride[1]);
    let rows = col_c.chunks(g.out_h * ow_len);
    // One row of the column matrix per tap (i, j); the caller sized the buffer for all taps.
    for (t, row) in rows.enumerate().take(g.kernel_h * g.kernel_w) {
        let (i, j) = (t / g.kernel_w, t % g.kernel_w);
        let off_h = tap_offset(i, g.dilation[0], g.pad[0]);
        {
            let off_w = tap_offset(j, g.dilation[1], g.pad[1]);
            let (lo, hi) = valid_range(ow_len, w_len, sw, off_w);
            if lo == hi {
                continue;
            }
            let start = ((lo * sw) as isize + off_w) as usize;
            for (oh, src) in row.chunks(ow_len).enumerate() {
                let ih = (oh * g.stride[0]) as isize + off_h;
                if ih < 0 || ih >= g.in_h as isize {
                    continue;
                }
                let dst = &mut dx_c[ih as usize * w_len..][..w_len];
                add_strided(T::one(), &src[lo..hi], &mut dst[start..], sw);
            }
        }
    }
}

/// Forward with one input channel per group: out[n,o] = Σ taps w[o,0,i,j]·shifted x[n, o/og].
fn direct_fwd<T: Float>(
    g: &Conv2dGeometry,
    d: &Dims,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    if super::direct::applies(g) {
        return super::direct::fwd(g, x, w, bias, out);
    }
    direct_fwd_rows(g, d, x, w, bias, out);
}

/// [`direct_fwd`] row by row, for any stride and dilation.
pub(super) fn direct_fwd_rows<T: Float>(
    g: &Conv2dGeometry,
    d: &Dims,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let columns = tap_columns(g);
    let o_count = g.out_channels;
    out.par_chunks_mut(d.p)
        .enumerate()
        .for_each(|(plane, out_p)| {
            let (n, o) = (plane / o_count, plane % o_count);
            let x_c = &x[(n * g.in_channels + o / d.og) * d.hw..][..d.hw];
            let w_o = &w[o * d.taps..][..d.taps];
            out_p.fill(bias.map_or(T::zero(), |b| b[o]));
            for (oh, out_row) in out_p.chunks_mut(g.out_w).enumerate() {
                for_each_tap_row(g, &columns, oh, |i, j, ih, lo, hi, start| {
                    let x_row = &x_c[ih * g.in_w..][..g.in_w];
                    let wv = w_o[i * g.kernel_w + j];
                    gather_add(wv, &x_row[start..], g.stride[1], &mut out_row[lo..hi]);
                });
            }
        });
}

/// Input gradient with one input channel per group: scatter each output plane of the group.
fn direct_bwd_input<T: Float>(g: &Conv2dGeometry, d: &Dims, dy: &[T], w: &[T], dx: &mut [T]) {
    if super::direct::applies(g) {
        return super::direct::bwd_input(g, dy, w, dx);
    }
    direct_bwd_input_rows(g, d, dy, w, dx);
}

/// [`direct_bwd_input`] row by row, for any stride and dilation.
pub(super) fn direct_bwd_input_rows<T: Float>(
    g: &Conv2dGeometry,
    d: &Dims,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
) {
    let columns = tap_columns(g);
    let c_count = g.in_channels;
    dx.par_chunks_mut(d.hw)
        .enumerate()
        .for_each(|(plane, dx_c)| {
            let (n, c) = (plane / c_count, plane % c_count);
            dx_c.fill(T::zero());
            for o in c * d.og..(c + 1) * d.og {
                let dy_o = &dy[(n * g.out_channels + o) * d.p..][..d.p];
                let w_o = &w[o * d.taps..][..d.taps];
                for (oh, dy_row) in dy_o.chunks(g.out_w).enumerate() {
                    for_each_tap_row(g, &columns, oh, |i, j, ih, lo, hi, start| {
                        let dx_row = &mut dx_c[ih * g.in_w..][..g.in_w];
                        let wv = w_o[i * g.kernel_w + j];
                        add_strided(wv, &dy_row[lo..hi], &mut dx_row[start..], g.stride[1]);
                    });
                }
            }
        });
}

/// Weight gradient with one input channel per group: one dot product per tap, row by row.
fn direct_bwd_weight<T: Float>(g: &Conv2dGeometry, d: &Dims, dy: &[T], x: &[T], dw: &mut [T]) {
    let columns = tap_columns(g);
    dw.par_chunks_mut(d.taps).enumerate().for_each(|(o, dw_o)| {
        let c = o / d.og;
        for n in 0..g.batch {
            let dy_o = &dy[(n * g.out_channels + o) * d.p..][..d.p];
            let x_c = &x[(n * g.in_channels + c) * d.hw..][..d.hw];
            for (oh, dy_row) in dy_o.chunks(g.out_w).enumerate() {
                for_each_tap_row(g, &columns, oh, |i, j, ih, lo, hi, start| {
                    let x_row = &x_c[ih * g.in_w..][..g.in_w];
                    let s = dot_strided(&dy_row[lo..hi], &x_row[start..], g.stride[1]);
                    dw_o[i * g.kernel_w + j] += s;
                });
            }
        }
    });
}

/// Per kernel column j, the outputs `[lo, hi)` of a row that read the input, and the input
/// column `start` the first of them reads; computed once per call.
fn tap_columns(g: &Conv2dGeometry) -> Vec<(usize, usize, usize)> {
    (0..g.kernel_w)
        .map(|j| {
            let off_w = tap_offset(j, g.dilation[1], g.pad[1]);
            let (lo, hi) = valid_range(g.out_w, g.in_w, g.stride[1], off_w);
            let start = if lo < hi {
                ((lo * g.stride[1]) as isize + off_w) as usize
            } else {
                0
            };
            (lo, hi, start)
        })
        .collect()
}

/// Calls `f(i, j, ih, lo, hi, start)` for every tap (i, j) that reads input row `ih` from output
/// row `oh`: outputs `ow` in `[lo, hi)` read input column `start + (ow − lo)·sw`.
#[inline]
fn for_each_tap_row(
    g: &Conv2dGeometry,
    columns: &[(usize, usize, usize)],
    oh: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize),
) {
    for i in 0..g.kernel_h {
        let ih = (oh * g.stride[0]) as isize + tap_offset(i, g.dilation[0], g.pad[0]);
        if ih < 0 || ih >= g.in_h as isize {
            continue;
        }
        for (j, &(lo, hi, start)) in columns.iter().enumerate() {
            if lo < hi {
                f(i, j, ih as usize, lo, hi, start);
            }
        }
    }
}

/// dst[t] += alpha · src[t·step] for every t of `dst`.
#[inline]
fn gather_add<T: Float>(alpha: T, src: &[T], step: usize, dst: &mut [T]) {
    if step == 1 {
        let len = dst.len();
        dst.iter_mut()
            .zip(&src[..len])
            .for_each(|(y, &v)| *y += alpha * v);
    } else {
        dst.iter_mut()
            .zip(src.iter().step_by(step))
            .for_each(|(y, &v)| *y += alpha * v);
    }
}

/// dst[t·step] += alpha · src[t] for every t of `src`.
#[inline]
fn add_strided<T: Float>(alpha: T, src: &[T], dst: &mut [T], step: usize) {
    if step == 1 {
        dst[..src.len()]
            .iter_mut()
            .zip(src)
            .for_each(|(y, &v)| *y += alpha * v);
    } else {
        dst.iter_mut()
            .step_by(step)
            .zip(src)
            .for_each(|(y, &v)| *y += alpha * v);
    }
}

/// Σ a[t] · b[t·step] over t of `a`, in eight lanes (vectorisable, and more accurate than one
/// running sum).
#[inline]
fn dot_strided<T: Float>(a: &[T], b: &[T], step: usize) -> T {
    if step != 1 {
        return a
            .iter()
            .zip(b.iter().step_by(step))
            .fold(T::zero(), |s, (&u, &v)| s + u * v);
    }
    let b = &b[..a.len()];
    let mut lanes = [T::zero(); 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .fold(T::zero(), |s, (&u, &v)| s + u * v);
    for (ca, cb) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += ca[l] * cb[l];
        }
    }
    lanes.iter().fold(tail, |s, &v| s + v)
}

/// Σ a[t] in eight lanes.
fn sum<T: Float>(a: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let a8 = a.chunks_exact(8);
    let tail = a8.remainder().iter().fold(T::zero(), |s, &v| s + v);
    for c in a8 {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().fold(tail, |s, &v| s + v)
}

/// Which of a thread's kept buffers a kernel uses (two kernels that nest — the Winograd
/// weights around its blocks' scratch — use different slots, so both stay cached).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// im2col columns, Winograd transform scratch.
    Work,
    /// Transformed convolution weights.
    Weights,
    /// A fused max pool's gradient scattered back to the convolution's output.
    Unpooled,
}

thread_local! {
    /// Buffers kept between calls on this thread, at most one per element type and slot.
    static SCRATCH: RefCell<Vec<(Slot, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a buffer of `len` elements (contents unspecified) taken from this thread's
/// cache. The buffer is out of the cache while `f` runs, so a call nested through rayon work
/// stealing gets a fresh one instead of a double borrow.
pub(super) fn with_scratch<T: Float, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    with_scratch_in(Slot::Work, len, f)
}

/// [`with_scratch`] in a given slot.
pub(super) fn with_scratch_in<T: Float, R>(
    slot: Slot,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    if len == 0 {
        return f(&mut []);
    }
    let cached = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let at = s
            .iter()
            .position(|(sl, b)| *sl == slot && b.is::<Vec<T>>())?;
        s.swap_remove(at).1.downcast::<Vec<T>>().ok()
    });
    let mut buf: Vec<T> = cached.map(|b| *b).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, T::zero());
    }
    let result = f(&mut buf[..len]);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let kept = s
            .iter_mut()
            .filter(|(sl, _)| *sl == slot)
            .find_map(|(_, b)| b.downcast_mut::<Vec<T>>());
        match kept {
            // A nested call returned one meanwhile: keep the larger.
            Some(other) if other.len() >= buf.len() => {}
            Some(other) => *other = buf,
            None => s.push((slot, Box::new(buf))),
        }
    });
    result
}

#[cfg(test)]
pub(super) fn test_dims(g: &Conv2dGeometry) -> Dims {
    Dims::new(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::geometry::Conv2dParams;
    use crate::tensor::Tensor;

    fn data(dims: &[usize], seed: u64) -> Vec<f64> {
        Tensor::<f64>::uniform(dims, -1.0, 1.0, seed)
            .unwrap()
            .into_vec()
    }

    fn params(
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
    ) -> Conv2dParams {
        Conv2dParams {
            stride,
            padding,
            dilation,
            groups,
        }
    }

    /// (x dims, w dims, params, what it covers)
    fn cases() -> Vec<([usize; 4], [usize; 4], Conv2dParams, &'static str)> {
        let p = Conv2dParams::new;
        vec![
            ([1, 3, 7, 5], [4, 3, 3, 3], p(), "odd 7x5, valid, batch 1"),
            (
                [3, 3, 7, 5],
                [4, 3, 3, 2],
                p().stride(2).padding(1),
                "stride 2, pad 1, 3x2 kernel, batch 3",
            ),
            (
                [2, 2, 7, 5],
                [3, 2, 3, 3],
                params([1, 2], [1, 0, 2, 1], [1, 1], 1),
                "asymmetric padding, stride (1,2)",
            ),
            (
                [3, 2, 9, 8],
                [3, 2, 3, 3],
                p().padding(2).dilation(2),
                "dilation 2",
            ),
            (
                [1, 3, 7, 6],
                [2, 3, 2, 3],
                params([2, 1], [0; 4], [2, 1], 1),
                "mixed stride and dilation",
            ),
            (
                [3, 4, 7, 5],
                [6, 2, 3, 3],
                p().padding(1).groups(2),
                "groups 2",
            ),
            (
                [3, 3, 7, 5],
                [6, 1, 3, 3],
                p().stride(2).padding(1).groups(3),
                "depthwise, multiplier 2, stride 2",
            ),
            (
                [1, 4, 8, 7],
                [4, 1, 3, 3],
                p().padding(2).dilation(2).groups(4),
                "depthwise, dilation 2, batch 1",
            ),
            (
                [3, 1, 6, 5],
                [4, 1, 3, 3],
                p().padding(1),
                "one input channel, groups 1 (direct path)",
            ),
            ([3, 5, 7, 5], [4, 5, 1, 1], p(), "1x1 pointwise, batch 3"),
            (
                [1, 4, 6, 5],
                [6, 2, 1, 1],
                p().groups(2),
                "1x1 pointwise, groups 2, batch 1",
            ),
            (
                [2, 3, 7, 5],
                [4, 3, 1, 1],
                p().stride(2),
                "1x1 stride 2 (im2col path)",
            ),
            (
                [1, 3, 5, 4],
                [2, 3, 1, 1],
                params([1, 1], [0, 0, 1, 2], [1, 1], 1),
                "1x1 with trailing padding only",
            ),
            (
                [2, 2, 3, 3],
                [2, 2, 5, 5],
                p().padding(2),
                "kernel as large as the padded input",
            ),
        ]
    }

    fn idx(d: [usize; 4], a: usize, b: usize, c: usize, e: usize) -> usize {
        ((a * d[1] + b) * d[2] + c) * d[3] + e
    }

    /// The 7 nested loops over (n, o, oh, ow, c, i, j), calling `f(x_index, w_index, y_index)`
    /// for every tap that reads the input.
    fn each_tap(g: &Conv2dGeometry, mut f: impl FnMut(usize, usize, usize)) {
        let (xd, wd, yd) = (g.in_dims(), g.weight_dims(), g.out_dims());
        let (cg, og) = (wd[1], g.out_channels / g.groups);
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for oh in 0..g.out_h {
                    for ow in 0..g.out_w {
                        for cl in 0..cg {
                            for i in 0..g.kernel_h {
                                for j in 0..g.kernel_w {
                                    let ih = (oh * g.stride[0] + i * g.dilation[0]) as isize
                                        - g.pad[0] as isize;
                                    let iw = (ow * g.stride[1] + j * g.dilation[1]) as isize
                                        - g.pad[1] as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= g.in_h as isize
                                        || iw >= g.in_w as isize
                                    {
                                        continue;
                                    }
                                    let c = (o / og) * cg + cl;
                                    f(
                                        idx(xd, n, c, ih as usize, iw as usize),
                                        idx(wd, o, cl, i, j),
                                        idx(yd, n, o, oh, ow),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn reference_fwd(g: &Conv2dGeometry, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let p = g.out_h * g.out_w;
        let mut y: Vec<f64> = (0..g.batch * g.out_channels * p)
            .map(|k| b[(k / p) % g.out_channels])
            .collect();
        each_tap(g, |xi, wi, yi| y[yi] += x[xi] * w[wi]);
        y
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(u, v)| u * v).sum()
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

    struct Case {
        g: Conv2dGeometry,
        x: Vec<f64>,
        w: Vec<f64>,
        b: Vec<f64>,
        dy: Vec<f64>,
        name: String,
    }

    fn all_cases() -> Vec<Case> {
        cases()
            .into_iter()
            .enumerate()
            .map(|(k, (xd, wd, p, name))| {
                let g = Conv2dGeometry::new(&xd, &wd, &p).unwrap();
                let seed = 100 * k as u64;
                Case {
                    x: data(&xd, seed + 1),
                    w: data(&wd, seed + 2),
                    b: data(&[wd[0]], seed + 3),
                    dy: data(&g.out_dims(), seed + 4),
                    name: format!("{name} {xd:?} {wd:?}"),
                    g,
                }
            })
            .collect()
    }

    const PLANS: [Plan; 2] = [Plan::PerSample, Plan::PoolInside];

    #[test]
    fn conv2d_fwd_matches_direct_loop() {
        for c in all_cases() {
            let want = reference_fwd(&c.g, &c.x, &c.w, &c.b);
            for plan in PLANS {
                let mut out = vec![f64::NAN; want.len()];
                conv2d_fwd_planned(&c.g, &c.x, &c.w, Some(&c.b), &mut out, plan);
                assert_close(&out, &want, 1e-12, &format!("{} {plan:?}", c.name));
                conv2d_fwd_planned(&c.g, &c.x, &c.w, None, &mut out, plan);
                let zero_bias = vec![0.0; c.b.len()];
                let want = reference_fwd(&c.g, &c.x, &c.w, &zero_bias);
                assert_close(&out, &want, 1e-12, &format!("{} no bias {plan:?}", c.name));
            }
        }
    }

    #[test]
    fn conv2d_bwd_input_matches_direct_loop_and_adjoint() {
        for c in all_cases() {
            let mut want = vec![0.0; c.x.len()];
            each_tap(&c.g, |xi, wi, yi| want[xi] += c.w[wi] * c.dy[yi]);
            let y = reference_fwd(&c.g, &c.x, &c.w, &vec![0.0; c.b.len()]);
            for plan in PLANS {
                let mut dx = vec![f64::NAN; c.x.len()];
                conv2d_bwd_input_planned(&c.g, &c.dy, &c.w, &mut dx, plan);
                assert_close(&dx, &want, 1e-12, &format!("{} {plan:?}", c.name));
                let (lhs, rhs) = (dot(&y, &c.dy), dot(&c.x, &dx));
                assert!(
                    (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
                    "{}: <conv(x), dy> = {lhs} but <x, bwd_input(dy)> = {rhs}",
                    c.name
                );
            }
        }
    }

    #[test]
    fn conv2d_bwd_weight_matches_direct_loop_and_adjoint() {
        for c in all_cases() {
            let mut want = vec![0.0; c.w.len()];
            each_tap(&c.g, |xi, wi, yi| want[wi] += c.x[xi] * c.dy[yi]);
            let y = reference_fwd(&c.g, &c.x, &c.w, &vec![0.0; c.b.len()]);
            for plan in PLANS {
                let mut dw = vec![f64::NAN; c.w.len()];
                conv2d_bwd_weight_planned(&c.g, &c.dy, &c.x, &mut dw, plan);
                assert_close(&dw, &want, 1e-12, &format!("{} {plan:?}", c.name));
                // The convolution is linear in w too: <conv_w(x), dy> = <w, bwd_weight(dy, x)>.
                let (lhs, rhs) = (dot(&y, &c.dy), dot(&c.w, &dw));
                assert!(
                    (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
                    "{}: <conv_w(x), dy> = {lhs} but <w, bwd_weight(dy, x)> = {rhs}",
                    c.name
                );
            }
        }
    }

    #[test]
    fn conv2d_bwd_bias_sums_over_batch_and_pixels() {
        for c in all_cases() {
            let p = c.g.out_h * c.g.out_w;
            let mut want = vec![0.0; c.g.out_channels];
            for (k, v) in c.dy.iter().enumerate() {
                want[(k / p) % c.g.out_channels] += v;
            }
            let mut db = vec![f64::NAN; want.len()];
            conv2d_bwd_bias(&c.g, &c.dy, &mut db);
            assert_close(&db, &want, 1e-12, &c.name);
        }
    }

    #[test]
    fn conv2d_f32_matches_f64_reference() {
        let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let widen = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        for c in all_cases() {
            let (x, w, b, dy) = (to32(&c.x), to32(&c.w), to32(&c.b), to32(&c.dy));
            // Reference on the f32-rounded inputs, so only the kernel's rounding remains.
            let (x64, w64, b64, dy64) = (widen(&x), widen(&w), widen(&b), widen(&dy));
            let mut out = vec![0f32; c.dy.len()];
            conv2d_fwd(&c.g, &x, &w, Some(&b), &mut out);
            let want = reference_fwd(&c.g, &x64, &w64, &b64);
            assert_close(&widen(&out), &want, 1e-5, &format!("f32 fwd {}", c.name));

            let mut dx = vec![0f32; x.len()];
            conv2d_bwd_input(&c.g, &dy, &w, &mut dx);
            let mut want = vec![0.0; x.len()];
            each_tap(&c.g, |xi, wi, yi| want[xi] += w64[wi] * dy64[yi]);
            assert_close(
                &widen(&dx),
                &want,
                1e-5,
                &format!("f32 bwd_input {}", c.name),
            );

            let mut dw = vec![0f32; w.len()];
            conv2d_bwd_weight(&c.g, &dy, &x, &mut dw);
            let mut want = vec![0.0; w.len()];
            each_tap(&c.g, |xi, wi, yi| want[wi] += x64[xi] * dy64[yi]);
            assert_close(
                &widen(&dw),
                &want,
                1e-5,
                &format!("f32 bwd_weight {}", c.name),
            );
        }
    }

    #[test]
    fn conv2d_degenerate_sizes_do_not_panic() {
        // An empty input plane with padding: every output is the bias.
        let g = Conv2dGeometry::new(
            &[2, 3, 0, 2],
            &[2, 3, 2, 2],
            &Conv2dParams::new().padding(1),
        )
        .unwrap();
        let (x, w) = (vec![0.0; 0], data(&g.weight_dims(), 1));
        let mut out = vec![f64::NAN; g.out_dims().iter().product()];
        conv2d_fwd(&g, &x, &w, Some(&[0.5, -2.0]), &mut out);
        let p = g.out_h * g.out_w;
        for (k, v) in out.iter().enumerate() {
            assert_eq!(*v, [0.5, -2.0][(k / p) % 2]);
        }
        let dy = data(&g.out_dims(), 2);
        let mut dw = vec![f64::NAN; w.len()];
        conv2d_bwd_weight(&g, &dy, &x, &mut dw);
        assert!(dw.iter().all(|&v| v == 0.0));
        conv2d_bwd_input(&g, &dy, &w, &mut []);

        // No input channels: the weight is empty and the output is the bias.
        let g = Conv2dGeometry::new(&[1, 0, 4, 4], &[2, 0, 3, 3], &Conv2dParams::new()).unwrap();
        let mut out = vec![f64::NAN; g.out_dims().iter().product()];
        conv2d_fwd(&g, &[], &[], Some(&[1.0, 2.0]), &mut out);
        assert!(out[..4].iter().all(|&v| v == 1.0) && out[4..].iter().all(|&v| v == 2.0));

        // No output channels: the input gradient is zero.
        let g = Conv2dGeometry::new(&[1, 2, 4, 4], &[0, 2, 3, 3], &Conv2dParams::new()).unwrap();
        let mut dx = vec![f64::NAN; 32];
        conv2d_bwd_input(&g, &[], &[], &mut dx);
        assert!(dx.iter().all(|&v| v == 0.0));

        // An empty batch.
        let g = Conv2dGeometry::new(&[0, 2, 4, 4], &[3, 2, 3, 3], &Conv2dParams::new()).unwrap();
        let mut dw = vec![f64::NAN; 54];
        conv2d_bwd_weight(&g, &[], &[], &mut dw);
        assert!(dw.iter().all(|&v| v == 0.0));
        conv2d_fwd(&g, &[], &data(&[3, 2, 3, 3], 3), None, &mut []);
    }

    #[test]
    fn conv2d_nested_in_rayon_tasks_matches_sequential() {
        let c = &all_cases()[5];
        let want = reference_fwd(&c.g, &c.x, &c.w, &c.b);
        (0..8).into_par_iter().for_each(|_| {
            let mut out = vec![0.0; want.len()];
            conv2d_fwd_planned(&c.g, &c.x, &c.w, Some(&c.b), &mut out, Plan::PoolInside);
            assert_close(&out, &want, 1e-12, "nested");
        });
    }
}
