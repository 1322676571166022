//! Broadcasting elementwise kernels, reductions to a broadcast-compatible shape, and the
//! masked activation kernels (ReLU and clamp forward with their 1-bit masks, and the masked
//! backward).
//!
//! Shape of the masked work: the elements are split into rayon tasks of at least
//! [`MASKED_TASK`] elements that start at multiples of 64, so each task owns whole mask words;
//! inside a task, 64-element blocks are compiled for the machine's vector width (see
//! `simd.rs`): one block makes one mask word.

use super::simd::multiversion;
use crate::element::Float;
use crate::shape::Shape;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Calls `f(out_index, a_offset, b_offset)` for every element of `out` in row-major order, where
/// the offsets follow the (broadcast, possibly zero) strides `sa` and `sb`.
#[inline]
pub fn for_each_broadcast(
    out: &Shape,
    sa: &[usize],
    sb: &[usize],
    mut f: impl FnMut(usize, usize, usize),
) {
    let dims = out.dims();
    let rank = dims.len();
    if rank == 0 {
        f(0, 0, 0);
        return;
    }
    let inner = dims[rank - 1];
    let numel = out.numel();
    if inner == 0 || numel == 0 {
        return;
    }
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut index = vec![0usize; rank - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    for outer in 0..numel / inner {
        let base = outer * inner;
        for j in 0..inner {
            f(base + j, oa + j * ia, ob + j * ib);
        }
        for d in (0..rank - 1).rev() {
            index[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if index[d] < dims[d] {
                break;
            }
            oa -= sa[d] * dims[d];
            ob -= sb[d] * dims[d];
            index[d] = 0;
        }
    }
}

/// `f(a, b)` elementwise with numpy broadcasting; `out_shape` is the broadcast of both shapes.
pub fn broadcast_binary<T: Float>(
    a: &[T],
    a_shape: &Shape,
    b: &[T],
    b_shape: &Shape,
    out_shape: &Shape,
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    if a_shape == out_shape && b_shape == out_shape {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    if b.len() == 1 && a_shape == out_shape {
        let y = b[0];
        return a.iter().map(|&x| f(x, y)).collect();
    }
    if a.len() == 1 && b_shape == out_shape {
        let x = a[0];
        return b.iter().map(|&y| f(x, y)).collect();
    }
    let sa = a_shape.broadcast_strides(out_shape);
    let sb = b_shape.broadcast_strides(out_shape);
    let mut out = crate::buffers::zeros(out_shape.numel());
    for_each_broadcast(out_shape, &sa, &sb, |o, ia, ib| out[o] = f(a[ia], b[ib]));
    out
}

/// Sums `g` (of shape `g_shape`) down to `target`, a shape that broadcasts to `g_shape`: the
/// backward of broadcasting, and the forward of `sum` over axes.
pub fn sum_to_shape<T: Float>(g: &[T], g_shape: &Shape, target: &Shape) -> Vec<T> {
    if g_shape == target {
        return g.to_vec();
    }
    let st = target.broadcast_strides(g_shape);
    let zeros = vec![0; g_shape.rank()];
    let mut out = crate::buffers::zeros(target.numel());
    for_each_broadcast(g_shape, &st, &zeros, |o, it, _| out[it] += g[o]);
    out
}

/// Repeats `src` (of a shape that broadcasts to `out_shape`) to fill `out_shape`.
pub fn broadcast_to<T: Float>(src: &[T], src_shape: &Shape, out_shape: &Shape) -> Vec<T> {
    if src_shape == out_shape {
        return src.to_vec();
    }
    let ss = src_shape.broadcast_strides(out_shape);
    let zeros = vec![0; out_shape.rank()];
    let mut out = crate::buffers::zeros(out_shape.numel());
    for_each_broadcast(out_shape, &ss, &zeros, |o, is, _| out[o] = src[is]);
    out
}

/// Whether every value is finite: `v - v` is 0 for a finite `v` and NaN for NaN and ±Inf, and a
/// NaN survives every addition, so sixteen independent running sums (which vectorise) tell.
/// Parallel over the pool above [`MASKED_TASK`] elements per thread.
pub fn all_finite<T: Float>(x: &[T]) -> bool {
    let task = task_len(x.len());
    if x.len() <= task {
        let mut ok = true;
        all_finite_task(x, &mut ok);
        return ok;
    }
    x.par_chunks(task).all(|part| {
        let mut ok = true;
        all_finite_task(part, &mut ok);
        ok
    })
}

multiversion! {
    /// [`all_finite`] on one task's elements.
    fn all_finite_task = all_finite_impl(x: &[T], ok: &mut bool)
}

#[inline(always)]
#[allow(clippy::eq_op)] // justified: `v - v` is the test itself (0 if finite, else NaN)
fn all_finite_impl<T: Float>(x: &[T], ok: &mut bool) {
    let mut acc = [T::zero(); 16];
    let mut blocks = x.chunks_exact(16);
    for block in &mut blocks {
        for (a, &v) in acc.iter_mut().zip(block) {
            *a += v - v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(blocks.remainder()) {
        *a += v - v;
    }
    *ok = acc.iter().all(|a| *a == T::zero());
}

/// Fewest elements one task of the masked kernels takes: below it the rayon hand-off costs more
/// than the pass itself. A multiple of 64.
pub const MASKED_TASK: usize = 64 * 1024;

/// Elements per task for `len` elements: at least [`MASKED_TASK`], about four tasks per thread
/// (so a loaded core does not hold the others up), a multiple of 64; all of them in one task
/// on a serial thread.
fn task_len(len: usize) -> usize {
    if crate::parallel::is_serial() {
        // One task: the caller runs on this thread (a lane of side-by-side chunks).
        return len.next_multiple_of(64).max(MASKED_TASK);
    }
    let per_task = len.div_ceil(4 * crate::parallel::threads());
    per_task.next_multiple_of(64).max(MASKED_TASK)
}

/// Runs `kernel` over matching parts of `x`, `out` and the mask `words` (one word per 64
/// elements), in parallel when there is enough work.
fn par_masked<T: Float>(
    x: &[T],
    out: &mut [MaybeUninit<T>],
    words: &mut [u64],
    kernel: impl Fn(&[T], &mut [MaybeUninit<T>], &mut [u64]) + Sync,
) {
    assert_eq!(out.len(), x.len(), "masked kernel: output length");
    assert_eq!(
        words.len(),
        x.len().div_ceil(64),
        "masked kernel: mask length"
    );
    let task = task_len(x.len());
    if x.len() <= task {
        kernel(x, out, words);
        return;
    }
    x.par_chunks(task)
        .zip(out.par_chunks_mut(task))
        .zip(words.par_chunks_mut(task / 64))
        .for_each(|((x, out), words)| kernel(x, out, words));
}

/// Runs `kernel` over matching parts of `x` and `out`, in parallel when there is enough work.
fn par_unmasked<T: Float>(
    x: &[T],
    out: &mut [MaybeUninit<T>],
    kernel: impl Fn(&[T], &mut [MaybeUninit<T>]) + Sync,
) {
    assert_eq!(out.len(), x.len(), "elementwise kernel: output length");
    let task = task_len(x.len());
    if x.len() <= task {
        kernel(x, out);
        return;
    }
    x.par_chunks(task)
        .zip(out.par_chunks_mut(task))
        .for_each(|(x, out)| kernel(x, out));
}

/// A vector of `len` elements written by `fill`, without zeroing it first.
///
/// # Safety
/// `fill` must initialise every element of the slice it is given. The kernels of this module
/// do: each writes every output element (or panics, and then the vector is dropped empty).
pub(crate) unsafe fn filled_vec<T: Float>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut v = crate::buffers::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller guarantees that `fill` initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// ReLU forward with its mask: `out = max(x, 0)` (NaN passed through, -0 becomes +0, as
/// PyTorch), bit i of `words[i / 64]` set where `x[i] > 0`. Bits past the end of `x` are 0.
///
/// # Panics
/// When `out.len() != x.len()` or `words.len() != x.len().div_ceil(64)`.
pub fn relu_fwd_masked<T: Float>(x: &[T], out: &mut [MaybeUninit<T>], words: &mut [u64]) {
    par_masked(x, out, words, relu_fwd_masked_task);
}

/// [`relu_fwd_masked`] with `x` overwritten by its ReLU: the same values and mask, without a
/// second buffer.
///
/// # Panics
/// When `words.len() != x.len().div_ceil(64)`.
pub fn relu_fwd_masked_in_place<T: Float>(x: &mut [T], words: &mut [u64]) {
    assert_eq!(
        words.len(),
        x.len().div_ceil(64),
        "relu_fwd_masked_in_place: mask length"
    );
    let task = task_len(x.len());
    if x.len() <= task {
        relu_in_place_task(x, words);
        return;
    }
    x.par_chunks_mut(task)
        .zip(words.par_chunks_mut(task / 64))
        .for_each(|(x, words)| relu_in_place_task(x, words));
}

multiversion! {
    /// [`relu_fwd_masked_in_place`] on one task's elements.
    fn relu_in_place_task = relu_in_place_impl(x: &mut [T], words: &mut [u64])
}

#[inline(always)]
fn relu_in_place_impl<T: Float>(x: &mut [T], words: &mut [u64]) {
    // Whole 64-element blocks as fixed-size arrays (so the block loop unrolls and
    // vectorises), then the partial last one.
    let (blocks, rest) = x.as_chunks_mut::<64>();
    let n = blocks.len();
    for (block, word) in blocks.iter_mut().zip(words.iter_mut()) {
        *word = relu_block_in_place(block);
    }
    if !rest.is_empty() {
        words[n] = relu_block_in_place(rest);
    }
}

/// `relu_block`'s bit and select on each element itself: at most 64 elements.
#[inline(always)]
fn relu_block_in_place<T: Float>(x: &mut [T]) -> u64 {
    let zero = T::zero();
    let mut bits = 0u64;
    for (i, v) in x.iter_mut().enumerate() {
        bits |= ((*v > zero) as u64) << i;
        *v = if *v <= zero { zero } else { *v };
    }
    bits
}

/// ReLU forward without a mask (for inputs that need no gradient).
///
/// # Panics
/// When `out.len() != x.len()`.
pub fn relu_fwd<T: Float>(x: &[T], out: &mut [MaybeUninit<T>]) {
    par_unmasked(x, out, relu_fwd_task);
}

/// Clamp forward with its mask: `out = min(max(x, low), high)` (NaN passed through), bit set
/// where `low < x < high` (where the gradient passes).
///
/// # Panics
/// As [`relu_fwd_masked`].
pub fn clamp_fwd_masked<T: Float>(
    x: &[T],
    low: T,
    high: T,
    out: &mut [MaybeUninit<T>],
    words: &mut [u64],
) {
    par_masked(x, out, words, |x, out, words| {
        clamp_fwd_masked_task(x, low, high, out, words)
    });
}

multiversion! {
    /// [`relu_fwd_masked`] on one task's elements.
    fn relu_fwd_masked_task = relu_fwd_masked_impl(
        x: &[T],
        out: &mut [MaybeUninit<T>],
        words: &mut [u64],
    )
}

/// Runs `block(x, out) -> mask word` over whole 64-element blocks (fixed-size arrays, so the
/// block loops unroll and vectorise) and then the partial last block.
macro_rules! masked_blocks {
    ($x:expr, $out:expr, $words:expr, $block:ident($($arg:expr),*)) => {{
        let (x_blocks, x_rest) = $x.as_chunks::<64>();
        let (out_blocks, out_rest) = $out.as_chunks_mut::<64>();
        for ((x, out), word) in x_blocks.iter().zip(out_blocks).zip($words.iter_mut()) {
            *word = $block(x, out $(, $arg)*);
        }
        if !x_rest.is_empty() {
            $words[x_blocks.len()] = $block(x_rest, out_rest $(, $arg)*);
        }
    }};
}

#[inline(always)]
fn relu_fwd_masked_impl<T: Float>(x: &[T], out: &mut [MaybeUninit<T>], words: &mut [u64]) {
    masked_blocks!(x, out, words, relu_block());
}

/// One mask word of ReLU: at most 64 elements.
#[inline(always)]
fn relu_block<T: Float>(x: &[T], out: &mut [MaybeUninit<T>]) -> u64 {
    let zero = T::zero();
    let mut bits = 0u64;
    for (i, (&v, o)) in x.iter().zip(out).enumerate() {
        bits |= ((v > zero) as u64) << i;
        // `v <= 0` is false for NaN, so NaN passes; -0 and 0 give +0.
        o.write(if v <= zero { zero } else { v });
    }
    bits
}

multiversion! {
    /// [`relu_fwd`] on one task's elements.
    fn relu_fwd_task = relu_fwd_impl(x: &[T], out: &mut [MaybeUninit<T>])
}

#[inline(always)]
fn relu_fwd_impl<T: Float>(x: &[T], out: &mut [MaybeUninit<T>]) {
    let zero = T::zero();
    for (&v, o) in x.iter().zip(out) {
        o.write(if v <= zero { zero } else { v });
    }
}

multiversion! {
    /// [`clamp_fwd_masked`] on one task's elements.
    fn clamp_fwd_masked_task = clamp_fwd_masked_impl(
        x: &[T],
        low: T,
        high: T,
        out: &mut [MaybeUninit<T>],
        words: &mut [u64],
    )
}

#[inline(always)]
fn clamp_fwd_masked_impl<T: Float>(
    x: &[T],
    low: T,
    high: T,
    out: &mut [MaybeUninit<T>],
    words: &mut [u64],
) {
    masked_blocks!(x, out, words, clamp_block(low, high));
}

/// One mask word of clamp: at most 64 elements.
#[inline(always)]
fn clamp_block<T: Float>(x: &[T], out: &mut [MaybeUninit<T>], low: T, high: T) -> u64 {
    let mut bits = 0u64;
    for (i, (&v, o)) in x.iter().zip(out).enumerate() {
        bits |= (((v > low) & (v < high)) as u64) << i;
        // low <= high, so at most one bound applies; NaN fails both tests and passes.
        let lifted = if v < low { low } else { v };
        o.write(if v > high { high } else { lifted });
    }
    bits
}

/// The masked backward of ReLU and clamp, in place: `g` kept where the mask bit is set, 0
/// elsewhere; with `positive_only` also 0 where `g <= 0` (guided backpropagation). In place
/// because the tape owns the gradient it masks: a second buffer's fresh lines would each be
/// fetched before being written (that was ≈ 2/3 of this pass's time in `small`).
///
/// # Panics
/// When `words.len() != g.len().div_ceil(64)`.
pub fn mask_backward<T: Float>(g: &mut [T], words: &[u64], positive_only: bool) {
    assert_eq!(
        words.len(),
        g.len().div_ceil(64),
        "mask_backward: mask length"
    );
    let task = task_len(g.len());
    if g.len() <= task {
        mask_in_place_task(g, words, positive_only);
        return;
    }
    g.par_chunks_mut(task)
        .zip(words.par_chunks(task / 64))
        .for_each(|(g, words)| mask_in_place_task(g, words, positive_only));
}

multiversion! {
    /// [`mask_backward`] on one task's elements.
    fn mask_in_place_task = mask_in_place_impl(g: &mut [T], words: &[u64], positive_only: bool)
}

#[inline(always)]
fn mask_in_place_impl<T: Float>(g: &mut [T], words: &[u64], positive_only: bool) {
    let (blocks, rest) = g.as_chunks_mut::<64>();
    let n = blocks.len();
    // Two loops rather than a test per element, so each block is a plain masked move, and whole
    // blocks as fixed-size arrays (so the block loops unroll and vectorise).
    if positive_only {
        for (block, &w) in blocks.iter_mut().zip(words) {
            mask_in_place_guided(block, w);
        }
        if !rest.is_empty() {
            mask_in_place_guided(rest, words[n]);
        }
    } else {
        for (block, &w) in blocks.iter_mut().zip(words) {
            mask_in_place_block(block, w);
        }
        if !rest.is_empty() {
            mask_in_place_block(rest, words[n]);
        }
    }
}

/// `g` where bit i of `w` is set, 0 elsewhere: at most 64 elements.
#[inline(always)]
fn mask_in_place_block<T: Float>(g: &mut [T], w: u64) {
    let zero = T::zero();
    for (i, v) in g.iter_mut().enumerate() {
        *v = if (w >> i) & 1 == 1 { *v } else { zero };
    }
}

/// As [`mask_in_place_block`], and 0 where `g <= 0` (guided backpropagation).
#[inline(always)]
fn mask_in_place_guided<T: Float>(g: &mut [T], w: u64) {
    let zero = T::zero();
    for (i, v) in g.iter_mut().enumerate() {
        let keep = ((w >> i) & 1 == 1) & (*v > zero);
        *v = if keep { *v } else { zero };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_every_kind_of_non_finite_anywhere() {
        // Lengths around the 16-lane blocks and past the parallel threshold.
        for len in [1, 15, 16, 17, 100, 3 * MASKED_TASK + 5] {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 1e30).collect();
            assert!(all_finite(&x), "len {len}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in [0, len / 2, len - 1] {
                    let mut y = x.clone();
                    y[at] = bad;
                    assert!(!all_finite(&y), "{bad} at {at} of {len}");
                    let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
                    assert!(!all_finite(&y64), "f64: {bad} at {at} of {len}");
                }
            }
        }
        // The largest finite values do not overflow the test (v - v is exactly 0).
        assert!(all_finite(&[f32::MAX; 40]));
        assert!(all_finite::<f32>(&[]));
    }

    /// ReLU in place writes the copying kernel's values and mask bits (NaN, ±0, ±inf).
    #[test]
    fn relu_in_place_matches_the_copying_kernel() {
        for len in [1, 63, 64, 65, 200, 3 * MASKED_TASK + 17] {
            let x: Vec<f32> = (0..len)
                .map(|i| match i % 13 {
                    2 => f32::NAN,
                    4 => -0.0,
                    6 => 0.0,
                    8 => f32::INFINITY,
                    10 => f32::NEG_INFINITY,
                    _ => (i as f32 * 0.73).cos(),
                })
                .collect();
            let mut want = vec![MaybeUninit::uninit(); len];
            let mut want_words = vec![0u64; len.div_ceil(64)];
            relu_fwd_masked(&x, &mut want, &mut want_words);
            // SAFETY: `relu_fwd_masked` wrote every element.
            let want: Vec<u32> = want
                .iter()
                .map(|v| unsafe { v.assume_init() }.to_bits())
                .collect();
            let mut got = x.clone();
            let mut words = vec![u64::MAX; len.div_ceil(64)];
            relu_fwd_masked_in_place(&mut got, &mut words);
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "len {len}");
            assert_eq!(words, want_words, "len {len}");
        }
    }

    #[test]
    fn broadcasting_adds_rows_and_columns() {
        let a = Shape::new(&[2, 1]).unwrap();
        let b = Shape::new(&[3]).unwrap();
        let out = Shape::new(&[2, 3]).unwrap();
        let r = broadcast_binary(&[10.0, 20.0], &a, &[1.0, 2.0, 3.0], &b, &out, |x, y| x + y);
        assert_eq!(r, vec![11.0, 12.0, 13.0, 21.0, 22.0, 23.0]);
        assert_eq!(sum_to_shape(&r, &out, &a), vec![36.0, 66.0]);
        assert_eq!(sum_to_shape(&r, &out, &b), vec![32.0, 34.0, 36.0]);
        assert_eq!(
            broadcast_to(&[1.0, 2.0], &a, &out),
            vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
    }

    /// Values that exercise every branch: signed zeros, NaN, infinities, the clamp bounds.
    fn special_values(len: usize, seed: u64) -> Vec<f32> {
        let specials = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1.0,
            6.0,
        ];
        let noise = crate::tensor::Tensor::<f32>::uniform(&[len], -8.0, 8.0, seed)
            .unwrap()
            .into_vec();
        noise
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % 7 == 3 { specials[(i / 7) % 7] } else { v })
            .collect()
    }

    /// Lengths around one task, several tasks with a partial last word, and tiny ones.
    fn lengths() -> [usize; 6] {
        [0, 1, 63, 65, 3 * MASKED_TASK + 64 * 5 + 17, 4 * MASKED_TASK]
    }

    fn words_of(len: usize, pred: impl Fn(usize) -> bool) -> Vec<u64> {
        let mut words = vec![0u64; len.div_ceil(64)];
        for i in (0..len).filter(|&i| pred(i)) {
            words[i / 64] |= 1 << (i % 64);
        }
        words
    }

    #[test]
    fn relu_fwd_masked_is_bit_identical_to_the_scalar_definition() {
        for (k, len) in lengths().into_iter().enumerate() {
            let x = special_values(len, k as u64);
            let mut words = vec![u64::MAX; len.div_ceil(64)];
            let out = unsafe { filled_vec(len, |out| relu_fwd_masked(&x, out, &mut words)) };
            let want: Vec<u32> = x
                .iter()
                .map(|&v| if v > 0.0 || v.is_nan() { v } else { 0.0 }.to_bits())
                .collect();
            let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "len {len}");
            assert_eq!(words, words_of(len, |i| x[i] > 0.0), "len {len}: mask");
            let plain = unsafe { filled_vec(len, |out| relu_fwd(&x, out)) };
            assert_eq!(plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn clamp_fwd_masked_is_bit_identical_to_the_scalar_definition() {
        for (k, len) in lengths().into_iter().enumerate() {
            let x = special_values(len, k as u64 + 10);
            let (lo, hi) = (-1.0f32, 6.0f32);
            let mut words = vec![u64::MAX; len.div_ceil(64)];
            let out =
                unsafe { filled_vec(len, |out| clamp_fwd_masked(&x, lo, hi, out, &mut words)) };
            let want: Vec<u32> = x
                .iter()
                .map(|&v| {
                    if v < lo {
                        lo
                    } else if v > hi {
                        hi
                    } else {
                        v
                    }
                    .to_bits()
                })
                .collect();
            let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "len {len}");
            assert_eq!(
                words,
                words_of(len, |i| x[i] > lo && x[i] < hi),
                "len {len}: mask"
            );
        }
    }

    #[test]
    fn mask_backward_is_bit_identical_to_the_scalar_definition() {
        for (k, len) in lengths().into_iter().enumerate() {
            let g = special_values(len, k as u64 + 20);
            // Full, empty and mixed words.
            let words = words_of(len, |i| match (i / 64) % 3 {
                0 => true,
                1 => false,
                _ => i % 5 != 2,
            });
            for guided in [false, true] {
                let mut out = g.clone();
                mask_backward(&mut out, &words, guided);
                for (i, (&o, &v)) in out.iter().zip(&g).enumerate() {
                    let bit = (words[i / 64] >> (i % 64)) & 1 == 1;
                    let keep = bit && (!guided || v > 0.0);
                    let want = if keep { v } else { 0.0 };
                    assert_eq!(
                        o.to_bits(),
                        want.to_bits(),
                        "len {len} guided {guided} i {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn masked_tasks_own_whole_mask_words() {
        for len in [1, MASKED_TASK, MASKED_TASK + 1, 100 * MASKED_TASK + 3] {
            let task = task_len(len);
            assert_eq!(task % 64, 0, "len {len}");
            assert!(task >= MASKED_TASK, "len {len}");
        }
    }
}
