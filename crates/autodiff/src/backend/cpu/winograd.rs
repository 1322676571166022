//! Winograd convolution F(m×m, 3×3) with m = 2 or 4: 3×3, stride-1 convolutions with fewer
//! multiplications than the im2col GEMM (2.25× fewer for F(2×2), 4× for F(4×4)), for the forward
//! pass and for the input gradient (which, for a stride-1 3×3 convolution, is itself a stride-1
//! 3×3 convolution of dY with the weights flipped and transposed).
//!
//! Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). Each m×m output
//! tile is `Aᵀ [ Σ_c (G g_kc Gᵀ) ⊙ (Bᵀ d_c B) ] A` where `d_c` is the a×a (a = m + 2) input
//! patch of channel c. The sum over channels of the a² element-wise products is a² independent
//! GEMMs, `M[ξ] (K×T) = U[ξ] (K×C) · V[ξ] (C×T)` over the T tiles of a block, run on the
//! register kernels of `wgemm` (at the machine's FMA peak: V needs no packing there, and U is
//! packed once per model, see `cache`). Per tile and channel pair that is a² multiply-adds
//! instead of 9·m².
//!
//! Layout and vectorisation. A block is a run of consecutive tile rows (a tile row is m output
//! rows of one sample). Tile rows are short (2–16 tiles on the benchmark models), so nothing in
//! the transforms loops over one row: every pass is one long stream over the whole block.
//! - The input transform cuts the block's zero-padded input into *groups* of m rows (group g
//!   holds padded rows m·g … m·g + m − 1; tile row ty reads groups ty and ty + 1) and splits
//!   every row into its m column phases (padded column m·x + ρ goes to phase ρ, position x), so
//!   that patch element (r, b) of every tile of the block is one contiguous run: phase (r mod m,
//!   b mod m), shifted by ⌊r/m⌋ groups and ⌊b/m⌋ columns. Each group row has one column more
//!   than there are tiles (the last patch reaches into it); the transforms run over those extra
//!   positions too, and a final copy per tile row leaves them out of the GEMM operand.
//! - The output transform runs Aᵀ over the GEMM results as flat vectors over the tiles and
//!   interleaves each output row of the block in one pass (column m·tx + c).
//!
//! Blocks run in parallel on the rayon pool, each with its own scratch.
//!
//! Accuracy (f32): F(4×4)'s transforms scale values by up to 8 (A) and 5 (B), so its rounding
//! errors are ≈ 10× im2col's: against an f64 direct convolution on random N(0,1) data,
//! C = K = 64 … 256, max |error| / max |y| ≈ 1e-6, relative L2 ≈ 3e-7 (test
//! `winograd_f32_error_is_small`; im2col ≈ 1e-7). F(2×2)'s transforms use only 0, ±1 and ±½:
//! its errors are close to im2col's.

use super::conv::{Slot, with_scratch, with_scratch_in};
use super::derived::{self, Key};
use super::gemm::Threads;
use super::simd::{copy_short, multiversion};
use super::wgemm;
use crate::element::Float;
use crate::ops::geometry::Conv2dGeometry;
use rayon::prelude::*;

/// The Winograd variant: output tile side m.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tile {
    /// F(2×2, 3×3): 4×4 patches, 16 GEMMs.
    F2 = 2,
    /// F(4×4, 3×3): 6×6 patches, 36 GEMMs.
    F4 = 4,
}

impl Tile {
    fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Tiles per block (GEMM width) the planner aims at.
    fn target_tiles(self) -> usize {
        match self {
            Tile::F2 => 240,
            Tile::F4 => 144,
        }
    }
}

/// Bytes of V and M a block aims to keep in L2 (1 MiB per core on the benchmark machine; the
/// rest is left to the weights and the input rows).
const BLOCK_BUDGET: usize = 768 << 10;

/// Tiles per block: the tile's target, fewer where V and M (A²·(C + K) values of `size` bytes
/// per tile) would not stay in L2 between the transforms and the GEMMs, but at least a few
/// GEMM strips.
fn block_tiles(tile: Tile, p: &Problem, size: usize) -> usize {
    let a = tile.m() + 2;
    let fit = BLOCK_BUDGET / (a * a * (p.c + p.k) * size).max(1);
    // Whole GEMM strips, the nearest count (the kernel's widest step is MIN_TILES = 48
    // tiles; narrower tail steps cost more per tile).
    let fit = ((fit + MIN_TILES / 2) / MIN_TILES).max(1) * MIN_TILES;
    tile.target_tiles().min(fit)
}

/// Elements from V[ξ][c] to V[ξ + 1][c]: C rows of `nts`, and one cache line more, so that
/// the A² rows one channel writes do not all fall into the same L1 set (C·nts·4 bytes is often
/// a multiple of 4 KiB: 36 rows in one 8-way set evicted each other at every store).
fn v_stride(c: usize, nts: usize) -> usize {
    c * nts + 16
}

/// The fewest tiles a block is cut to for the cache: one strip of the GEMM kernel.
const MIN_TILES: usize = 48;

/// The most tile rows a block holds (the planner's target tiles, at one tile per row).
const MAX_ROWS: usize = 256;

/// Extra columns after each row of the GEMM operands V and M: the per-tile-row copies into V
/// move 16 elements at a time and may run past a row's `nt` tiles into them.
const SLACK: usize = 16;

/// Whether the forward convolution of `g` should take the Winograd path with tiles `tile`.
pub(super) fn fits_fwd(g: &Conv2dGeometry, tile: Tile) -> bool {
    shape_fits(g) && enough_tiles(g.batch, g.out_h, g.out_w, tile.m())
}

/// Whether the input gradient of `g` should take the Winograd path with tiles `tile`.
pub(super) fn fits_bwd_input(g: &Conv2dGeometry, tile: Tile) -> bool {
    shape_fits(g) && enough_tiles(g.batch, g.in_h, g.in_w, tile.m())
}

fn shape_fits(g: &Conv2dGeometry) -> bool {
    g.kernel_h == 3
        && g.kernel_w == 3
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.in_channels >= 16
        && g.out_channels >= 16
        && g.pad[0] <= 2
        && g.pad[1] <= 2
        && g.out_h > 0
        && g.out_w > 0
        && g.in_h > 0
        && g.in_w > 0
}

/// Small planes waste most of a tile's outputs, and few tiles make thin GEMMs: im2col wins.
fn enough_tiles(batch: usize, h: usize, w: usize, m: usize) -> bool {
    let tiles = batch * h.div_ceil(m) * w.div_ceil(m);
    let useful = (h * w) as f64 / ((h.div_ceil(m) * m) * (w.div_ceil(m) * m)) as f64;
    tiles >= 48 && useful >= 0.7
}

/// out[N,K,OH,OW] = conv3×3(x[N,C,H,W], w[K,C,3,3]) + bias, stride 1. `out` is overwritten.
pub(super) fn conv3x3_fwd<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
    tile: Tile,
) {
    let p = Problem::forward(g);
    let out = Out::plain(&p, out);
    match tile {
        Tile::F2 => convolve::<T, F2x2, 2, 4>(&p, x, w, false, bias, out),
        Tile::F4 => convolve::<T, F4x4, 4, 6>(&p, x, w, false, bias, out),
    }
}

/// Whether [`conv3x3_fwd_pooled`] applies: the forward takes F(2×2) tiles and the output has
/// an even height and width, so that every tile is one whole window of a 2×2, stride-2 max pool.
pub(super) fn fits_fwd_pooled(g: &Conv2dGeometry) -> bool {
    fits_fwd(g, Tile::F2) && g.out_h.is_multiple_of(2) && g.out_w.is_multiple_of(2)
}

/// `pooled`[N,K,OH/2,OW/2] = the 2×2, stride-2 max pool of [`conv3x3_fwd`] with F(2×2) tiles,
/// each tile's four outputs pooled as the output transform makes them (never stored), and
/// `argmax` each window's winner as its index in the output plane (oh·OW + ow) — the values
/// and indices of `maxpool2d_fwd` over `conv3x3_fwd`'s output, bit for bit.
///
/// # Panics
/// When `g` does not fit ([`fits_fwd_pooled`]) or a length disagrees with it.
pub(super) fn conv3x3_fwd_pooled<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    pooled: &mut [T],
    argmax: &mut [u32],
) {
    assert!(fits_fwd_pooled(g), "conv3x3_fwd_pooled: {g:?}");
    let len = g.batch * g.out_channels * (g.out_h / 2) * (g.out_w / 2);
    assert_eq!(pooled.len(), len, "conv3x3_fwd_pooled: pooled length");
    assert_eq!(argmax.len(), len, "conv3x3_fwd_pooled: argmax length");
    let p = Problem::forward(g);
    let out = Out::Pooled(OutPtr(pooled.as_mut_ptr()), OutPtr(argmax.as_mut_ptr()));
    convolve::<T, F2x2, 2, 4>(&p, x, w, false, bias, out);
}

/// dx[N,C,H,W] from dy[N,K,OH,OW] for a 3×3 stride-1 convolution. `dx` is overwritten.
///
/// dx[c][i][j] = Σ_k Σ_{a,b} w[k][c][a][b] · dy[k][i + pt − a][j + pl − b]: a stride-1 3×3
/// convolution of dy with w'[c][k][a][b] = w[k][c][2−a][2−b] and padding 2 − pt, 2 − pl.
pub(super) fn conv3x3_bwd_input<T: Float>(
    g: &Conv2dGeometry,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
    tile: Tile,
) {
    let p = Problem {
        batch: g.batch,
        c: g.out_channels,
        h: g.out_h,
        w: g.out_w,
        k: g.in_channels,
        oh: g.in_h,
        ow: g.in_w,
        pad_t: 2 - g.pad[0],
        pad_l: 2 - g.pad[1],
    };
    let dx = Out::plain(&p, dx);
    match tile {
        Tile::F2 => convolve::<T, F2x2, 2, 4>(&p, dy, w, true, None, dx),
        Tile::F4 => convolve::<T, F4x4, 4, 6>(&p, dy, w, true, None, dx),
    }
}

/// Transforms the weights (flipped and transposed with `flip`), or finds them transformed in
/// the cache of derived weights (a model's weights are the same for every chunk of copies and
/// every image, and their transform costs K·C·A² scalar steps: ≈ 5% of a `small` map at 25
/// copies per call), and runs the blocks.
fn convolve<T: Float, V: Variant<M, A>, const M: usize, const A: usize>(
    p: &Problem,
    x: &[T],
    w: &[T],
    flip: bool,
    bias: Option<&[T]>,
    out: Out<T>,
) {
    let key = Key::Winograd {
        tile: V::TILE as u8,
        flip,
        k: p.k,
        c: p.c,
    };
    // The weights as given are [K, C, 3, 3] in the forward and [C, K, 3, 3] (read transposed)
    // in the input gradient: their first two dimensions are the problem's k, c or c, k.
    let (wk, wc) = if flip { (p.c, p.k) } else { (p.k, p.c) };
    if let Some(up) = derived::find(key, w) {
        return run::<T, V, M, A>(p, x, &up, bias, out);
    }
    let mut up = vec![T::zero(); wgemm::packed_len(p.k, p.c, A * A)];
    with_scratch_in(Slot::Weights, p.k * A * A * p.c, |u: &mut [T]| {
        transform_weights::<T, V, M, A>(w, wk, wc, flip, u);
        wgemm::pack_u(u, p.k, p.c, A * A, &mut up);
    });
    let up = derived::keep(key, w, up);
    run::<T, V, M, A>(p, x, &up, bias, out);
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
    /// Padding before the first row / column (0, 1 or 2).
    pad_t: usize,
    pad_l: usize,
}

impl Problem {
    /// The forward convolution of `g`.
    fn forward(g: &Conv2dGeometry) -> Self {
        Problem {
            batch: g.batch,
            c: g.in_channels,
            h: g.in_h,
            w: g.in_w,
            k: g.out_channels,
            oh: g.out_h,
            ow: g.out_w,
            pad_t: g.pad[0],
            pad_l: g.pad[1],
        }
    }
}

/// What the transforms compute on: one scalar (`f32`, `f64`) or one vector register of them
/// (the AVX-512 kernels' lanes), so that each transform's arithmetic is written once and every
/// path rounds alike.
pub(super) trait Lane:
    Copy + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self>
{
    /// The constant `v` in every lane.
    fn splat(v: f64) -> Self;
}

impl<T: Float> Lane for T {
    #[inline(always)]
    fn splat(v: f64) -> Self {
        T::from_f64(v)
    }
}

/// The transforms of one variant F(M×M, 3×3), A = M + 2: G (3 → A), Bᵀ (A → A) and Aᵀ (A → M).
pub(super) trait Variant<const M: usize, const A: usize> {
    /// The tile this variant is.
    const TILE: Tile;
    /// G · g for one 3-vector.
    fn g<T: Float>(g: [T; 3]) -> [T; A];
    /// Bᵀ d for one A-vector.
    fn bt1<L: Lane>(d: [L; A]) -> [L; A];
    /// Aᵀ m for one A-vector: M outputs.
    fn at1<L: Lane>(m: [L; A]) -> [L; M];

    /// Bᵀ d element-wise over A slices.
    #[inline(always)]
    fn bt<T: Float>(d: [&[T]; A], out: [&mut [T]; A]) {
        per_element(d, out, Self::bt1::<T>);
    }

    /// Aᵀ m element-wise over A slices.
    #[inline(always)]
    fn at<T: Float>(m: [&[T]; A], out: [&mut [T]; M]) {
        per_element(m, out, Self::at1::<T>);
    }
}

/// out[o][i] = f(x[0][i], …)[o] for every i < out[0].len() (a transform applied element-wise
/// over slices; `f` is one of the variants' `#[inline(always)]` transforms, a function item, so
/// it is compiled inside the caller's target features).
#[inline(always)]
fn per_element<T: Float, const I: usize, const O: usize>(
    x: [&[T]; I],
    mut out: [&mut [T]; O],
    f: impl Fn([T; I]) -> [T; O],
) {
    let n = out[0].len();
    let x: [&[T]; I] = std::array::from_fn(|b| &x[b][..n]);
    for i in 0..n {
        let o = f(std::array::from_fn(|b| x[b][i]));
        for (row, v) in out.iter_mut().zip(o) {
            row[i] = v;
        }
    }
}

/// F(4×4, 3×3) (Lavin & Gray's interpolation points 0, ±1, ±2, ∞).
pub(super) struct F4x4;

impl Variant<4, 6> for F4x4 {
    const TILE: Tile = Tile::F4;

    #[inline(always)]
    fn g<T: Float>(g: [T; 3]) -> [T; 6] {
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

    #[inline(always)]
    fn bt1<L: Lane>(d: [L; 6]) -> [L; 6] {
        let [a0, a1, a2, a3, a4, a5] = d;
        let (two, four, five) = (L::splat(2.0), L::splat(4.0), L::splat(5.0));
        [
            four * a0 - five * a2 + a4,
            a3 + a4 - four * (a1 + a2),
            four * (a1 - a2) - a3 + a4,
            two * (a3 - a1) - a2 + a4,
            two * (a1 - a3) - a2 + a4,
            four * a1 - five * a3 + a5,
        ]
    }

    #[inline(always)]
    fn at1<L: Lane>(m: [L; 6]) -> [L; 4] {
        let [m0, m1, m2, m3, m4, m5] = m;
        let (two, four, eight) = (L::splat(2.0), L::splat(4.0), L::splat(8.0));
        let (s12, d12) = (m1 + m2, m1 - m2);
        let (s34, d34) = (m3 + m4, m3 - m4);
        [
            m0 + s12 + s34,
            d12 + two * d34,
            s12 + four * s34,
            d12 + eight * d34 + m5,
        ]
    }
}

/// F(2×2, 3×3) (points 0, ±1, ∞): every transform entry is 0, ±1 or ±½.
pub(super) struct F2x2;

impl Variant<2, 4> for F2x2 {
    const TILE: Tile = Tile::F2;

    #[inline(always)]
    fn g<T: Float>(g: [T; 3]) -> [T; 4] {
        let [g0, g1, g2] = g;
        let half = T::from_f64(0.5);
        [g0, (g0 + g1 + g2) * half, (g0 - g1 + g2) * half, g2]
    }

    #[inline(always)]
    fn bt1<L: Lane>(d: [L; 4]) -> [L; 4] {
        let [d0, d1, d2, d3] = d;
        [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
    }

    #[inline(always)]
    fn at1<L: Lane>(m: [L; 4]) -> [L; 2] {
        let [m0, m1, m2, m3] = m;
        [m0 + m1 + m2, m1 - m2 - m3]
    }
}

/// U[k][ξ][c] = (G g Gᵀ)[ξ] for each kernel g = w[k][c] of `w` [K, C, 3, 3]; with `flip`,
/// U[c][ξ][k] for the flipped and transposed kernel w'[c][k] = w[k][c] rotated 180°
/// (`wgemm::pack_u` then packs it into the GEMM kernel's panels).
fn transform_weights<T: Float, V: Variant<M, A>, const M: usize, const A: usize>(
    w: &[T],
    k: usize,
    c: usize,
    flip: bool,
    u: &mut [T],
) {
    let cols = if flip { k } else { c };
    u.par_chunks_mut(A * A * cols)
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
                // t = G · kern (A×3), then t · Gᵀ (A×A).
                let cols_g: [[T; A]; 3] =
                    std::array::from_fn(|b| V::g([tap(0, b), tap(1, b), tap(2, b)]));
                for a in 0..A {
                    let row_g = V::g([cols_g[0][a], cols_g[1][a], cols_g[2][a]]);
                    for (b, &v) in row_g.iter().enumerate() {
                        u_row[(a * A + b) * cols + col] = v;
                    }
                }
            }
        });
}

/// A raw pointer to the output that blocks write through: every block writes a disjoint set
/// of (sample, channel, row) segments, so the writes never overlap.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: blocks write disjoint elements (see `OutPtr`); T is a plain float or index.
unsafe impl<T: Send> Send for OutPtr<T> {}
unsafe impl<T: Sync> Sync for OutPtr<T> {}

/// Where a convolution's blocks write.
#[derive(Clone, Copy)]
enum Out<T> {
    /// The output [N, K, OH, OW].
    Plain(OutPtr<T>),
    /// F(2×2) only, even OH and OW: its 2×2 max pool [N, K, OH/2, OW/2] and the windows'
    /// winners (index oh·OW + ow in the output plane), as [`conv3x3_fwd_pooled`] describes.
    Pooled(OutPtr<T>, OutPtr<u32>),
}

impl<T> Out<T> {
    /// The whole output of `p` in `out`, whose length is checked.
    fn plain(p: &Problem, out: &mut [T]) -> Self {
        assert_eq!(
            out.len(),
            p.batch * p.k * p.oh * p.ow,
            "winograd: output length"
        );
        Out::Plain(OutPtr(out.as_mut_ptr()))
    }
}

/// Runs the blocks of `p` into `out` (its length checked by whoever made it).
fn run<T: Float, V: Variant<M, A>, const M: usize, const A: usize>(
    p: &Problem,
    x: &[T],
    u: &[T],
    bias: Option<&[T]>,
    out: Out<T>,
) {
    assert_eq!(x.len(), p.batch * p.c * p.h * p.w, "winograd: input length");
    assert_eq!(
        u.len(),
        wgemm::packed_len(p.k, p.c, A * A),
        "winograd: packed weight length"
    );
    let tile = V::TILE;
    let th = p.oh.div_ceil(M);
    let tw = p.ow.div_ceil(M);
    let rows = p.batch * th;
    let threads = crate::parallel::threads().max(1);
    // Rows per block: about the target's tiles, but at least 2 blocks per thread when possible.
    let target = block_tiles(tile, p, std::mem::size_of::<T>());
    let mut per_block = target.div_ceil(tw).clamp(1, MAX_ROWS);
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
    let body = |b: usize| {
        let first = b * per_block;
        let last = (first + per_block).min(rows);
        let t = Tiles::new(first..last, th, tw);
        block::<T, V, M, A>(p, x, u, bias, out, &t, gemm_threads);
    };
    if gemm_threads == Threads::Pool || crate::parallel::is_serial() {
        (0..blocks).for_each(body);
    } else {
        (0..blocks).into_par_iter().for_each(body);
    }
}

/// The tile rows of one block and the groups of input rows they read.
struct Tiles {
    /// Tile rows, flattened over (sample, tile row).
    rows: std::ops::Range<usize>,
    /// Tile rows per sample, tiles per tile row.
    th: usize,
    tw: usize,
    /// Tiles in the block (GEMM width); tile `j = i·tw + tx` is tile tx of the block's i-th row.
    nt: usize,
    /// Row stride of the GEMM operands: nt + SLACK.
    nts: usize,
    /// Columns of a group row: tw + 1 (the last patches reach one column further).
    gw: usize,
    /// Groups of the block: each sample's tile rows and the group after its last one.
    groups: usize,
    /// The first sample of the block.
    n0: usize,
}

impl Tiles {
    fn new(rows: std::ops::Range<usize>, th: usize, tw: usize) -> Self {
        let nt = rows.len() * tw;
        let (n0, n1) = (rows.start / th, (rows.end - 1) / th);
        Tiles {
            groups: rows.len() + (n1 - n0 + 1),
            rows,
            th,
            tw,
            nt,
            nts: nt + SLACK,
            gw: tw + 1,
            n0,
        }
    }

    /// Each group as (sample, group row within the sample), in order.
    fn each_group(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let n1 = (self.rows.end - 1) / self.th;
        (self.n0..=n1).flat_map(move |n| {
            let lo = if n == self.n0 {
                self.rows.start % self.th
            } else {
                0
            };
            let hi = if n == n1 {
                (self.rows.end - 1) % self.th
            } else {
                self.th - 1
            };
            (lo..=hi + 1).map(move |g| (n, g))
        })
    }

    /// Scratch the input transform needs, for tile side m and patch side a.
    fn input_scratch(&self, m: usize, a: usize) -> usize {
        let l = m * self.groups * self.gw;
        // phase rows + phases + horizontal transform + vertical transform (+ copy slack)
        m * l + m * l + a * l + a * a * self.groups * self.gw + SLACK
    }

    /// Scratch the output transform needs.
    fn output_scratch(&self, m: usize, a: usize) -> usize {
        m * a * self.nt + m * m * self.nt + m * self.nt
    }
}

/// One block: its input transform, the A² GEMMs and its output transform.
fn block<T: Float, V: Variant<M, A>, const M: usize, const A: usize>(
    p: &Problem,
    x: &[T],
    u: &[T],
    bias: Option<&[T]>,
    out: Out<T>,
    t: &Tiles,
    threads: Threads,
) {
    let (nt, nts) = (t.nt, t.nts);
    let xi_n = A * A;
    let v_len = xi_n * v_stride(p.c, nts);
    let m_len = xi_n * p.k * nts;
    let s_len = t.input_scratch(M, A).max(t.output_scratch(M, A));
    let tile = V::TILE;
    with_scratch(v_len + m_len + s_len, |buf: &mut [T]| {
        let (v, rest) = buf.split_at_mut(v_len);
        let (m, scratch) = rest.split_at_mut(m_len);
        let cx = Block { tile, p, t };
        if !x86_input_transform::<T, V, M, A>(p, t, x, v) {
            input_transform(&cx, x, v, scratch);
        }
        // A² GEMMs: M[ξ] (K×nt) = U[ξ] (K×C) · V[ξ] (C×nt), with V ξ-major (V[ξ][c][j], what
        // the GEMM kernel reads) and M channel-major (M[k][ξ][j], what the output transform
        // reads one channel at a time); U packed in panels (`wgemm`).
        let shape = wgemm::Shape {
            k: p.k,
            c: p.c,
            xi_n,
            nt,
            vs: nts,
            v_xi: v_stride(p.c, nts),
            ms: xi_n * nts,
            m_xi: nts,
        };
        wgemm::multiply(shape, u, v, m, threads == Threads::Pool);
        match out {
            Out::Plain(out) => {
                if !x86_output_transform::<T, V, M, A>(p, t, m, bias, out) {
                    output_transform(&cx, m, scratch, bias, out);
                }
            }
            Out::Pooled(pooled, argmax) => pooled_output_transform(p, t, m, bias, pooled, argmax),
        }
    });
}

/// Runs the AVX-512 input transform (`winograd_x86.rs`) when T is f32 and the CPU has it;
/// false when it did not run.
fn x86_input_transform<T: Float, V: Variant<M, A>, const M: usize, const A: usize>(
    p: &Problem,
    t: &Tiles,
    x: &[T],
    v: &mut [T],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if T::DTYPE == crate::element::DType::F32 && x86::available() {
        // SAFETY: T is f32, so the casts reinterpret f32 slices as themselves; the CPU has
        // AVX-512F (checked); the lengths are `run`'s and `block`'s.
        unsafe {
            let x = std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len());
            let v = std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len());
            x86::input_transform::<V, M, A>(p, t, x, v);
        }
        return true;
    }
    false
}

/// [`x86_input_transform`] for the output transform.
fn x86_output_transform<T: Float, V: Variant<M, A>, const M: usize, const A: usize>(
    p: &Problem,
    t: &Tiles,
    m: &[T],
    bias: Option<&[T]>,
    out: OutPtr<T>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if T::DTYPE == crate::element::DType::F32 && x86::available() {
        // SAFETY: as in `x86_input_transform`; `out` is the same pointer, as f32.
        unsafe {
            let m = std::slice::from_raw_parts(m.as_ptr().cast::<f32>(), m.len());
            let bias = bias.map(|b| std::slice::from_raw_parts(b.as_ptr().cast::<f32>(), b.len()));
            x86::output_transform::<V, M, A>(p, t, m, bias, OutPtr(out.0.cast::<f32>()));
        }
        return true;
    }
    false
}

#[cfg(target_arch = "x86_64")]
#[path = "winograd_x86.rs"]
mod x86;

/// What the transforms of one block need to know: the variant, the problem, the block's tiles.
struct Block<'a> {
    tile: Tile,
    p: &'a Problem,
    t: &'a Tiles,
}

multiversion! {
    /// V[ξ][c][j] for every channel c and tile j of the block.
    fn input_transform = input_transform_impl(cx: &Block, x: &[T], v: &mut [T], scratch: &mut [T])
}

#[inline(always)]
fn input_transform_impl<T: Float>(cx: &Block, x: &[T], v: &mut [T], scratch: &mut [T]) {
    let (p, t) = (cx.p, cx.t);
    match cx.tile {
        Tile::F2 => input_transform_v::<T, F2x2, 2, 4>(p, t, x, v, scratch),
        Tile::F4 => input_transform_v::<T, F4x4, 4, 6>(p, t, x, v, scratch),
    }
}

/// Per channel, five passes, each one stream over the block (see the module docs):
/// 1. `rows`: the block's padded input rows by row phase ρy and group, M·gw columns each;
/// 2. `phase[ρx]`: every row's columns of phase ρx (the stride-M deinterleave);
/// 3. `hor[b']`: Bᵀ along the columns, patch column b from phase b mod M shifted ⌊b/M⌋;
/// 4. `ver[r'][b']`: Bᵀ along the rows, patch row r from row phase r mod M shifted ⌊r/M⌋ groups;
/// 5. each tile row's tw transformed patches copied into V (leaving out the extra column).
#[inline(always)]
fn input_transform_v<T: Float, V: Variant<M, A>, const M: usize, const A: usize>(
    p: &Problem,
    t: &Tiles,
    x: &[T],
    v: &mut [T],
    scratch: &mut [T],
) {
    let (gw, groups, tw, nts) = (t.gw, t.groups, t.tw, t.nts);
    let pw = M * gw;
    // Stream length: windows of M over all rows (= positions of each phase).
    let l = M * groups * gw;
    // Vertical outputs: every group but the last (no tile row starts there).
    let kv = (groups - 1) * gw;
    let (rows, rest) = scratch.split_at_mut(M * l);
    let (phase, rest) = rest.split_at_mut(M * l);
    let (hor, rest) = rest.split_at_mut(A * l);
    let ver = &mut rest[..A * A * kv + SLACK];
    let pad_l = p.pad_l;
    // Input columns that land in the padded row 0 .. pw.
    let copy = p.w.min(pw - pad_l);
    // The copy's slack stays finite whatever the scratch held before.
    ver[A * A * kv..].fill(T::zero());
    // Every channel writes the same input positions into the padded rows; the padding around
    // them is zeroed once.
    rows.fill(T::zero());
    // Where each tile row's patches start in the vertical transform's rows: its group's first
    // column (the next group, or one more past a sample's end).
    let mut starts = [0usize; MAX_ROWS];
    let from = &mut starts[..t.rows.len()];
    let (mut group, mut ty) = (0, t.rows.start % t.th);
    for f in from.iter_mut() {
        *f = group * gw;
        ty += 1;
        group += 1;
        if ty == t.th {
            ty = 0;
            group += 1;
        }
    }
    let from: &[usize] = from;
    for ci in 0..p.c {
        // 1. Padded rows: row (ρy, group) at (ρy·groups + group)·pw.
        for (gi, (n, g)) in t.each_group().enumerate() {
            let plane = &x[(n * p.c + ci) * p.h * p.w..][..p.h * p.w];
            for ry in 0..M {
                // Rows and columns outside the input stay as zeroed before the first channel.
                if let Some(iy) = (M * g + ry).checked_sub(p.pad_t).filter(|&iy| iy < p.h) {
                    let row = &mut rows[(ry * groups + gi) * pw + pad_l..][..copy];
                    copy_short(row, &plane[iy * p.w..][..copy]);
                }
            }
        }
        // 2. Column phases: phase[ρ][k] = rows[M·k + ρ].
        {
            let ph: [&mut [T]; M] = rows_of(phase, l, l);
            deinterleave::<T, M>(rows, ph);
        }
        // 3. Bᵀ along the columns over all positions but the last (whose patch would reach
        //    past the stream; it is an extra column, never copied into V).
        {
            let phase: &[T] = phase;
            let d: [&[T]; A] = std::array::from_fn(|b| &phase[(b % M) * l + b / M..][..l - 1]);
            V::bt(d, rows_of(hor, l - 1, l));
            for b in 0..A {
                hor[b * l + l - 1] = T::zero();
            }
        }
        // 4. Bᵀ along the rows: ver[r'·A + b'][k] for k over the groups where tile rows start.
        {
            let hor: &[T] = hor;
            for b in 0..A {
                let h_b = &hor[b * l..][..l];
                let d: [&[T]; A] =
                    std::array::from_fn(|r| &h_b[(r % M) * groups * gw + (r / M) * gw..][..kv]);
                V::bt(d, rows_of(&mut ver[b * kv..], kv, A * kv));
            }
        }
        // 5. Into V[ξ][c]: tile row i's tw patches start at its group's first column. One ξ
        //    row at a time, tile rows in order, so that the stores run forward through it.
        let v_c = &mut v[ci * nts..];
        let ds = v_stride(p.c, nts);
        match tw {
            0..=2 => compact::<T, 2>(A * A, &ver[..], kv, v_c, ds, nts, tw, from),
            3..=4 => compact::<T, 4>(A * A, &ver[..], kv, v_c, ds, nts, tw, from),
            5..=8 => compact::<T, 8>(A * A, &ver[..], kv, v_c, ds, nts, tw, from),
            9..=SLACK => compact::<T, SLACK>(A * A, &ver[..], kv, v_c, ds, nts, tw, from),
            _ => {
                for (xi, src) in ver.chunks_exact(kv).take(A * A).enumerate() {
                    let dst = &mut v_c[xi * ds..][..nts];
                    for (i, &f) in from.iter().enumerate() {
                        dst[i * tw..][..tw].copy_from_slice(&src[f..][..tw]);
                    }
                }
            }
        }
    }
}

/// dst row ξ (at ξ·ds, nts long)[i·tw ..][..W] = src row ξ (stride kv)[from[i] ..][..W] for
/// ξ < rows and every tile row i: one fixed-size move per tile row (W ≥ tw; the extra elements land
/// where the next tile row, or the row's slack, is written after; both sides have SLACK to
/// spare).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn compact<T: Copy, const W: usize>(
    rows: usize,
    src: &[T],
    kv: usize,
    dst: &mut [T],
    ds: usize,
    nts: usize,
    tw: usize,
    from: &[usize],
) {
    for xi in 0..rows {
        let d_row = &mut dst[xi * ds..][..nts];
        let s_row = &src[xi * kv..];
        for (i, &f) in from.iter().enumerate() {
            d_row[i * tw..][..W].copy_from_slice(&s_row[f..][..W]);
        }
    }
}

/// phase[ρ][k] = rows[M·k + ρ] over the whole stream (one loop, so that the stride-M loads
/// vectorise as an interleaved group).
#[inline(always)]
fn deinterleave<T: Float, const M: usize>(rows: &[T], phase: [&mut [T]; M]) {
    let n = phase[0].len();
    for (k, w) in rows[..M * n].chunks_exact(M).enumerate() {
        for r in 0..M {
            phase[r][k] = w[r];
        }
    }
}

multiversion! {
    /// out = Aᵀ M A (+ bias) for every output channel and tile of the block.
    fn output_transform = output_transform_impl(
        cx: &Block,
        m: &[T],
        scratch: &mut [T],
        bias: Option<&[T]>,
        out: OutPtr<T>,
    )
}

#[inline(always)]
fn output_transform_impl<T: Float>(
    cx: &Block,
    m: &[T],
    scratch: &mut [T],
    bias: Option<&[T]>,
    out: OutPtr<T>,
) {
    let (p, t) = (cx.p, cx.t);
    match cx.tile {
        Tile::F2 => output_transform_v::<T, F2x2, 2, 4>(p, t, m, scratch, bias, out),
        Tile::F4 => output_transform_v::<T, F4x4, 4, 6>(p, t, m, scratch, bias, out),
    }
}

/// Per output channel: Aᵀ along r over the block's flat tile vectors (s[a][b][j]), Aᵀ along b
/// (y[a][c][j]), then for each row a of the tiles one interleaving pass over the whole block
/// (column M·tx + c, bias added) and one copy per output row.
#[inline(always)]
fn output_transform_v<T: Float, V: Variant<M, A>, const M: usize, const A: usize>(
    p: &Problem,
    t: &Tiles,
    m: &[T],
    scratch: &mut [T],
    bias: Option<&[T]>,
    out: OutPtr<T>,
) {
    let (nt, nts, tw) = (t.nt, t.nts, t.tw);
    let (s, rest) = scratch.split_at_mut(M * A * nt);
    let (y, rest) = rest.split_at_mut(M * M * nt);
    let line = &mut rest[..M * nt];
    for ki in 0..p.k {
        let m_k = &m[ki * A * A * nts..][..A * A * nts];
        let add = bias.map_or(T::zero(), |b| b[ki]);
        for b in 0..A {
            let d: [&[T]; A] = std::array::from_fn(|r| &m_k[(r * A + b) * nts..][..nt]);
            V::at(d, rows_of(&mut s[b * nt..], nt, A * nt));
        }
        for a in 0..M {
            let s_a = &s[a * A * nt..][..A * nt];
            let d: [&[T]; A] = std::array::from_fn(|b| &s_a[b * nt..][..nt]);
            V::at(d, rows_of(&mut y[a * M * nt..], nt, nt));
        }
        for a in 0..M {
            let y_a = &y[a * M * nt..][..M * nt];
            interleave::<T, M>(&y_a[..M * nt], line, add);
            for (i, row) in t.rows.clone().enumerate() {
                let (n, ty) = (row / t.th, row % t.th);
                if ty * M + a >= p.oh {
                    continue;
                }
                let at = ((n * p.k + ki) * p.oh + ty * M + a) * p.ow;
                let src = &line[i * M * tw..][..p.ow];
                // SAFETY: the ow elements at `at` are one output row of this block's tile row:
                // inside `out` (lengths checked in `run`) and written by no other block.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), p.ow) };
                copy_short(dst, src);
            }
        }
    }
}

multiversion! {
    /// The 2×2 max pool of out = Aᵀ M A (+ bias) with F(2×2) tiles, every tile one window, for
    /// every output channel and tile of the block.
    fn pooled_output_transform = pooled_output_transform_impl(
        p: &Problem,
        t: &Tiles,
        m: &[T],
        bias: Option<&[T]>,
        pooled: OutPtr<T>,
        argmax: OutPtr<u32>,
    )
}

/// Per output channel, one stream over the block's tiles: the tile's four outputs with the
/// arithmetic of [`output_transform_v`] (Aᵀ along r, then along b, then the bias), pooled with
/// `maxpool2d_fwd`'s rule (`v > best || v is NaN` in row-major order: the horizontal pairs,
/// then bottom against top) into a line of values and of window winners; then one short copy
/// per tile row. A winner's index is its tile's corner in the output plane (the same for every
/// channel: made once per block) plus its offset in the window.
#[inline(always)]
fn pooled_output_transform_impl<T: Float>(
    p: &Problem,
    t: &Tiles,
    m: &[T],
    bias: Option<&[T]>,
    pooled: OutPtr<T>,
    argmax: OutPtr<u32>,
) {
    const A: usize = 4;
    /// Tiles per step: fixed, so that each step compiles to vector loads and selects (the
    /// stream runs past the block's tiles into the rows' slack, and those lanes are dropped).
    const G: usize = 16;
    let (nt, nts, tw) = (t.nt, t.nts, t.tw);
    let steps = nt.div_ceil(G);
    debug_assert!(steps * G <= nts, "the rows' slack covers the last step");
    let ow = p.ow as u32;
    let mut corner: Vec<u32> = t
        .rows
        .clone()
        .flat_map(|row| {
            let ty = (row % t.th) as u32;
            (0..tw as u32).map(move |tx| 2 * ty * ow + 2 * tx)
        })
        .collect();
    corner.resize(steps * G, 0);
    let mut line = vec![T::zero(); steps * G];
    let mut arg_line = vec![0u32; steps * G];
    let plane = t.th * tw;
    for ki in 0..p.k {
        let m_k = &m[ki * A * A * nts..][..A * A * nts];
        let add = bias.map_or(T::zero(), |b| b[ki]);
        for step in 0..steps {
            let j0 = step * G;
            // The A² GEMM results of these tiles, spelled out: `array::from_fn` was compiled
            // as a call per step.
            #[inline(always)]
            fn row<T, const G: usize>(m_k: &[T], i: usize, nts: usize, j0: usize) -> &[T; G] {
                (&m_k[i * nts + j0..][..G])
                    .try_into()
                    .unwrap_or_else(|_| unreachable!())
            }
            let r = |i| row::<T, G>(m_k, i, nts, j0);
            let e: [&[T; G]; A * A] = [
                r(0),
                r(1),
                r(2),
                r(3),
                r(4),
                r(5),
                r(6),
                r(7),
                r(8),
                r(9),
                r(10),
                r(11),
                r(12),
                r(13),
                r(14),
                r(15),
            ];
            let corner: &[u32; G] = (&corner[j0..][..G])
                .try_into()
                .unwrap_or_else(|_| unreachable!());
            let mut vals = [T::zero(); G];
            let mut args = [0u32; G];
            for l in 0..G {
                // s[b][a] = Aᵀ (m[0][b], …, m[3][b]) [a], y[a] = Aᵀ s[·][a].
                let s_b =
                    |b: usize| F2x2::at1([e[b][l], e[A + b][l], e[2 * A + b][l], e[3 * A + b][l]]);
                let s: [[T; 2]; A] = [s_b(0), s_b(1), s_b(2), s_b(3)];
                let y0 = F2x2::at1([s[0][0], s[1][0], s[2][0], s[3][0]]);
                let y1 = F2x2::at1([s[0][1], s[1][1], s[2][1], s[3][1]]);
                let (v00, v01, v10, v11) = (y0[0] + add, y0[1] + add, y1[0] + add, y1[1] + add);
                let take_top = (v01 > v00) | v01.is_nan();
                let top = if take_top { v01 } else { v00 };
                let take_bottom = (v11 > v10) | v11.is_nan();
                let bottom = if take_bottom { v11 } else { v10 };
                let take = (bottom > top) | bottom.is_nan();
                vals[l] = if take { bottom } else { top };
                // Offsets as masks (selects on them kept the loop scalar in `pool_plane_2x2`).
                let mask = (take as u32).wrapping_neg();
                let (tt, tb) = (take_top as u32, take_bottom as u32);
                args[l] = corner[l] + (ow & mask) + (tt ^ ((tt ^ tb) & mask));
            }
            line[j0..][..G].copy_from_slice(&vals);
            arg_line[j0..][..G].copy_from_slice(&args);
        }
        for (i, row) in t.rows.clone().enumerate() {
            let (n, ty) = (row / t.th, row % t.th);
            let at = (n * p.k + ki) * plane + ty * tw;
            // SAFETY: the tw elements at `at` are one pooled row of this block's tile row:
            // inside `pooled` and `argmax` (lengths checked in `conv3x3_fwd_pooled`) and
            // written by no other block.
            let (dst, dst_arg) = unsafe {
                (
                    std::slice::from_raw_parts_mut(pooled.0.add(at), tw),
                    std::slice::from_raw_parts_mut(argmax.0.add(at), tw),
                )
            };
            copy_short(dst, &line[i * tw..][..tw]);
            copy_short(dst_arg, &arg_line[i * tw..][..tw]);
        }
    }
}

/// line[M·j + c] = y[c·n + j] + add for the M vectors of y (n = line.len() / M): one pass in
/// fixed groups of 16 tiles, so that it compiles to vector loads and lane permutations.
#[inline(always)]
fn interleave<T: Float, const M: usize>(y: &[T], line: &mut [T], add: T) {
    const G: usize = 16;
    let n = line.len() / M;
    let full = n / G * G;
    for j0 in (0..full).step_by(G) {
        let block: [[T; G]; M] = std::array::from_fn(|c| {
            let mut v = [T::zero(); G];
            v.copy_from_slice(&y[c * n + j0..][..G]);
            v
        });
        let out = &mut line[M * j0..][..M * G];
        for j in 0..G {
            for c in 0..M {
                out[M * j + c] = block[c][j] + add;
            }
        }
    }
    for j in full..n {
        for c in 0..M {
            line[M * j + c] = y[c * n + j] + add;
        }
    }
}

/// N rows of `len` elements of `buf`, row i starting at `i·stride` (stride ≥ len).
#[inline(always)]
fn rows_of<T, const N: usize>(buf: &mut [T], len: usize, stride: usize) -> [&mut [T]; N] {
    let mut rest = buf;
    std::array::from_fn(|i| {
        let take = if i + 1 < N { stride } else { len };
        let (row, tail) = std::mem::take(&mut rest).split_at_mut(take);
        rest = tail;
        &mut row[..len]
    })
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
            let mut want_dx = vec![0.0; x.len()];
            conv::conv2d_bwd_input(&g, &dy, &w, &mut want_dx);
            for tile in [Tile::F2, Tile::F4] {
                let mut got = vec![f64::NAN; dy.len()];
                conv3x3_fwd(&g, &x, &w, Some(&b), &mut got, tile);
                let e = max_rel(&got, &want);
                assert!(e < 1e-13, "fwd case {i} {tile:?}: {e:e}");
                let mut got = vec![f64::NAN; x.len()];
                conv3x3_bwd_input(&g, &dy, &w, &mut got, tile);
                let e = max_rel(&got, &want_dx);
                assert!(e < 1e-13, "bwd case {i} {tile:?}: {e:e}");
            }
        }
    }

    /// The cache returns a transform only for the very weights it was made from: new values
    /// in the same buffer (and the flipped use of the same values) are transformed afresh.
    #[test]
    fn cached_weights_follow_the_values() {
        let p = Conv2dParams::new().padding(1);
        let g = Conv2dGeometry::new(&[2, 16, 9, 11], &[17, 16, 3, 3], &p).unwrap();
        let x = data(g.in_dims().iter().product(), 41);
        let dy = data(g.out_dims().iter().product(), 42);
        let mut w = data(g.weight_dims().iter().product(), 43);
        for round in 0..3 {
            for tile in [Tile::F2, Tile::F4] {
                // Twice each: the second call finds the first one's transform.
                for _ in 0..2 {
                    let mut want = vec![0.0; dy.len()];
                    conv::conv2d_fwd(&g, &x, &w, None, &mut want);
                    let mut got = vec![f64::NAN; dy.len()];
                    conv3x3_fwd(&g, &x, &w, None, &mut got, tile);
                    assert!(max_rel(&got, &want) < 1e-12, "fwd {tile:?} round {round}");
                    let mut want = vec![0.0; x.len()];
                    conv::conv2d_bwd_input(&g, &dy, &w, &mut want);
                    let mut got = vec![f64::NAN; x.len()];
                    conv3x3_bwd_input(&g, &dy, &w, &mut got, tile);
                    assert!(max_rel(&got, &want) < 1e-12, "bwd {tile:?} round {round}");
                }
            }
            // New values in place; one weight changed only in sign of zero the last round.
            if round == 0 {
                w.iter_mut().for_each(|v| *v = -*v * 0.5);
            } else {
                w[5] = 0.0;
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
            // F(2×2)'s transforms (0, ±1, ±½) round about as little as im2col's sums.
            for (tile, max_bar, l2_bar) in [(Tile::F2, 2e-6, 1e-6), (Tile::F4, 2e-5, 5e-6)] {
                let mut got = vec![f32::NAN; want.len()];
                conv3x3_fwd(&g, &x32, &w32, None, &mut got, tile);
                let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
                let err = max_rel(&got, &want);
                let num: f64 = got.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum();
                let den: f64 = want.iter().map(|b| b * b).sum();
                let l2 = (num / den).sqrt();
                eprintln!(
                    "winograd {tile:?} f32 C={c} K={k} {hw}²: max rel {err:.2e}, rel L2 {l2:.2e}"
                );
                assert!(
                    err < max_bar && l2 < l2_bar,
                    "{tile:?} C={c} K={k}: max {err:e}, L2 {l2:e}"
                );
            }
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
            let mut want_dx = vec![0.0; x.len()];
            conv::conv2d_bwd_input(&g, &dy, &w, &mut want_dx);
            for tile in [Tile::F2, Tile::F4] {
                let mut got = vec![f32::NAN; dy.len()];
                conv3x3_fwd(&g, &f32s(&x), &f32s(&w), None, &mut got, tile);
                let e = rel(&got, &want);
                assert!(e < 5e-6, "fwd {tile:?} C={c} K={k} {hw}²: rel L2 {e:e}");
                let mut got = vec![f32::NAN; x.len()];
                conv3x3_bwd_input(&g, &f32s(&dy), &f32s(&w), &mut got, tile);
                let e = rel(&got, &want_dx);
                assert!(e < 5e-6, "bwd {tile:?} C={c} K={k} {hw}²: rel L2 {e:e}");
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod x86_tests {
    use super::*;

    /// Fills `buf` with seeded values in [−1, 1).
    fn fill(buf: &mut [f32], seed: u64) {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for v in buf {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
        }
    }

    fn check<V: Variant<M, A>, const M: usize, const A: usize>(
        p: &Problem,
        rows: std::ops::Range<usize>,
    ) {
        let (th, tw) = (p.oh.div_ceil(M), p.ow.div_ceil(M));
        let t = Tiles::new(rows, th, tw);
        let mut x = vec![0f32; p.batch * p.c * p.h * p.w];
        fill(&mut x, 1);
        let mut scratch = vec![0f32; t.input_scratch(M, A).max(t.output_scratch(M, A))];
        let (mut v_port, mut v_x86) = (
            vec![f32::NAN; A * A * v_stride(p.c, t.nts)],
            vec![f32::NAN; A * A * v_stride(p.c, t.nts)],
        );
        let cx = Block {
            tile: V::TILE,
            p,
            t: &t,
        };
        input_transform(&cx, &x, &mut v_port, &mut scratch);
        assert!(x86_input_transform::<f32, V, M, A>(p, &t, &x, &mut v_x86));
        let vs = v_stride(p.c, t.nts);
        for xi in 0..A * A {
            for ci in 0..p.c {
                let at = xi * vs + ci * t.nts;
                for j in 0..t.nt {
                    let (a, b) = (v_port[at + j], v_x86[at + j]);
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "V[{xi}][{ci}] tile {j}: {a} vs {b}"
                    );
                }
            }
        }
        let mut m = vec![0f32; A * A * p.k * t.nts];
        fill(&mut m, 2);
        let bias: Vec<f32> = (0..p.k).map(|k| k as f32 * 0.25 - 1.0).collect();
        let len = p.batch * p.k * p.oh * p.ow;
        let (mut out_port, mut out_x86) = (vec![f32::NAN; len], vec![f32::NAN; len]);
        output_transform(
            &cx,
            &m,
            &mut scratch,
            Some(&bias),
            OutPtr(out_port.as_mut_ptr()),
        );
        assert!(x86_output_transform::<f32, V, M, A>(
            p,
            &t,
            &m,
            Some(&bias),
            OutPtr(out_x86.as_mut_ptr())
        ));
        for (i, (a, b)) in out_port.iter().zip(&out_x86).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "out {i}: {a} vs {b}");
        }
    }

    /// The AVX-512 transforms give the portable ones' bits (V over every tile of the block,
    /// every output the block writes, the rest untouched) for both tiles, plane sides 1–19, 33
    /// and 37 (1–19 tiles per row: several rows per register, one row in runs of 16), pads 0–2,
    /// and blocks that start inside a sample and span several.
    #[test]
    fn x86_transforms_match_portable() {
        if !x86::available() {
            eprintln!("skipped: no AVX-512F");
            return;
        }
        for side in (1..=19usize).chain([33, 37]) {
            for pad in 0..=2usize {
                for &(batch, c, k) in &[(1usize, 3usize, 2usize), (3, 2, 5)] {
                    // A stride-1 3×3 convolution with this padding: out = side + 2·pad − 2.
                    let Some(o) = (side + 2 * pad).checked_sub(2).filter(|&o| o > 0) else {
                        continue;
                    };
                    let p = Problem {
                        batch,
                        c,
                        h: side,
                        w: side,
                        k,
                        oh: o,
                        ow: o,
                        pad_t: pad,
                        pad_l: pad,
                    };
                    for m in [2usize, 4] {
                        let th = o.div_ceil(m);
                        let all = batch * th;
                        for rows in [0..all, all / 3..all, 0..all.div_ceil(2)] {
                            if rows.is_empty() {
                                continue;
                            }
                            if m == 2 {
                                check::<F2x2, 2, 4>(&p, rows);
                            } else {
                                check::<F4x4, 4, 6>(&p, rows);
                            }
                        }
                    }
                }
            }
        }
    }
}
