//! How many threads the CPU kernels spread one call over.
//!
//! By default a kernel uses the whole rayon pool. Inside [`serial`], the kernels called from
//! this thread run on it alone: a caller that already keeps every thread busy with independent
//! work — the saliency explainer running one chunk of noisy copies per thread — saves the
//! fork-join of every op (tens of microseconds each, most of the time of a small model).
//!
//! ```
//! use smoothgrad_autodiff::parallel;
//! assert_eq!(parallel::serial(parallel::threads), 1);
//! assert_eq!(parallel::threads(), rayon::current_num_threads());
//! ```

use std::cell::Cell;

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's CPU kernels on this thread only; restores the previous mode
/// afterwards, also when `f` panics.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.set(self.0);
        }
    }
    let _restore = Restore(SERIAL.replace(true));
    f()
}

/// Whether this thread is inside [`serial`].
pub fn is_serial() -> bool {
    SERIAL.get()
}

/// Threads a kernel called from this thread may use: 1 inside [`serial`], else the rayon pool's.
pub fn threads() -> usize {
    if is_serial() {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Runs `f(index, chunk)` over the `size`-element chunks of `data`: on the rayon pool, unless
/// this thread is inside [`serial`] or there is only one chunk.
pub(crate) fn for_each_chunk<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    use rayon::prelude::*;
    if threads() == 1 || data.len() <= size {
        data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}

/// [`for_each_chunk`] over two slices side by side: `f(index, a_chunk, b_chunk)` for the
/// `size_a`-element chunks of `a` and the `size_b`-element chunks of `b` (as many of each).
pub(crate) fn for_each_chunk_pair<A: Send, B: Send>(
    a: &mut [A],
    size_a: usize,
    b: &mut [B],
    size_b: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) {
    use rayon::prelude::*;
    let (size_a, size_b) = (size_a.max(1), size_b.max(1));
    if threads() == 1 || a.len() <= size_a {
        a.chunks_mut(size_a)
            .zip(b.chunks_mut(size_b))
            .enumerate()
            .for_each(|(i, (ca, cb))| f(i, ca, cb));
    } else {
        a.par_chunks_mut(size_a)
            .zip(b.par_chunks_mut(size_b))
            .enumerate()
            .for_each(|(i, (ca, cb))| f(i, ca, cb));
    }
}
