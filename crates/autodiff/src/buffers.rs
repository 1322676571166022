//! Reuse of tensor storage: a process-wide cache of freed buffers, so that the steady state of a
//! chunked explanation (the same shapes, chunk after chunk) allocates nothing.
//!
//! A tensor's storage goes back to the cache when its last reference is dropped; the CPU ops take
//! their outputs from it. Buffers are matched by exact capacity — a chunked explanation asks for
//! the same sizes every chunk — and only buffers of at least [`MIN_ELEMENTS`] elements are kept
//! (smaller ones are cheap to allocate). Without the cache, every chunk would allocate its
//! activations afresh, and the allocator would hand large blocks back to the kernel and fault
//! them in again (about 13 % of the time of the `tiny` benchmark model went to page faults).
//!
//! The cache holds at most [`limit`] bytes per element type (default [`DEFAULT_LIMIT`]); a freed
//! buffer that does not fit is released. [`release`] empties it.
//!
//! ```
//! use smoothgrad_autodiff::{buffers, Tensor};
//! let before = buffers::cached_bytes();
//! let t = Tensor::<f32>::zeros(&[64, 1024])?;
//! drop(t); // the 256 KiB buffer is kept for the next tensor of this size
//! assert!(buffers::cached_bytes() >= before);
//! buffers::release();
//! assert_eq!(buffers::cached_bytes(), 0);
//! # Ok::<(), smoothgrad_autodiff::Error>(())
//! ```

use crate::element::Float;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Buffers smaller than this many elements are not cached.
pub const MIN_ELEMENTS: usize = 1024;

/// Default bound on the cached bytes, per element type.
pub const DEFAULT_LIMIT: usize = 512 << 20;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);

/// Freed buffers of one element type, by capacity.
#[doc(hidden)]
#[derive(Debug)]
pub struct BufferPool<T> {
    inner: Mutex<FreeLists<T>>,
}

#[derive(Debug)]
struct FreeLists<T> {
    by_capacity: BTreeMap<usize, Vec<Vec<T>>>,
    /// Per capacity asked for: (buffers of it handed out and not yet back, the most at once).
    demand: BTreeMap<usize, (usize, usize)>,
    bytes: usize,
}

impl<T> BufferPool<T> {
    /// An empty pool.
    pub const fn new() -> Self {
        BufferPool {
            inner: Mutex::new(FreeLists {
                by_capacity: BTreeMap::new(),
                demand: BTreeMap::new(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FreeLists<T>> {
        // A panic while holding the lock leaves the lists consistent (every operation on them
        // is a single push or pop), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A cached vector of exactly `len` elements (the values of its last use), if there is one.
    fn take(&self, len: usize) -> Option<Vec<T>> {
        if len >= MIN_ELEMENTS {
            let mut lists = self.lock();
            let (live, peak) = lists.demand.entry(len).or_default();
            *live += 1;
            *peak = (*peak).max(*live);
            if let Some(list) = lists.by_capacity.get_mut(&len)
                && let Some(v) = list.pop()
            {
                lists.bytes -= len * size_of::<T>();
                return Some(v);
            }
        }
        None
    }

    /// Keeps `v`'s allocation for a later [`BufferPool::take`] when its capacity has been asked
    /// for and fewer of that capacity are cached than were ever out at once (so the cache never
    /// outgrows the working set of the calls that use it), within the byte limit.
    fn give(&self, v: Vec<T>) {
        let cap = v.capacity();
        // Only fully initialised buffers are kept, so that [`stale`] can hand them out whole.
        if cap < MIN_ELEMENTS || v.len() != cap {
            return;
        }
        let bytes = cap * size_of::<T>();
        let mut lists = self.lock();
        let Some((live, peak)) = lists.demand.get_mut(&cap) else {
            return;
        };
        *live = live.saturating_sub(1);
        let peak = *peak;
        let cached = lists.by_capacity.get(&cap).map_or(0, Vec::len);
        if cached >= peak || lists.bytes + bytes > LIMIT.load(Ordering::Relaxed) {
            return;
        }
        lists.bytes += bytes;
        lists.by_capacity.entry(cap).or_default().push(v);
    }

    fn release(&self) {
        let mut lists = self.lock();
        lists.by_capacity.clear();
        lists.demand.clear();
        lists.bytes = 0;
    }

    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl<T> Default for BufferPool<T> {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) static F32_POOL: BufferPool<f32> = BufferPool::new();
pub(crate) static F64_POOL: BufferPool<f64> = BufferPool::new();

/// An empty vector with capacity for exactly `len` elements, from the cache when it holds one.
pub(crate) fn with_capacity<T: Float>(len: usize) -> Vec<T> {
    match T::buffer_pool().take(len) {
        Some(mut v) => {
            v.clear();
            v
        }
        None => Vec::with_capacity(len),
    }
}

/// `len` zeros, in a cached buffer when there is one.
pub(crate) fn zeros<T: Float>(len: usize) -> Vec<T> {
    match T::buffer_pool().take(len) {
        Some(mut v) => {
            v.fill(T::zero());
            v
        }
        None => vec![T::zero(); len],
    }
}

/// `len` elements of unspecified value, for an output the caller overwrites entirely: a cached
/// buffer as its last user left it (no pass over memory), or fresh zeros. Debug builds fill it
/// with NaN, so that an output element a kernel forgets to write fails the tests.
pub(crate) fn stale<T: Float>(len: usize) -> Vec<T> {
    let v = T::buffer_pool().take(len);
    #[cfg(debug_assertions)]
    let v = v.map(|mut v| {
        v.fill(T::nan());
        v
    });
    v.unwrap_or_else(|| {
        if cfg!(debug_assertions) {
            vec![T::nan(); len]
        } else {
            vec![T::zero(); len]
        }
    })
}

/// Returns a buffer to the cache (or frees it).
pub(crate) fn recycle<T: Float>(v: Vec<T>) {
    T::buffer_pool().give(v);
}

/// Bytes currently held by the cache, all element types together.
pub fn cached_bytes() -> usize {
    F32_POOL.bytes() + F64_POOL.bytes()
}

/// Frees every cached buffer (the memory goes back to the allocator).
pub fn release() {
    F32_POOL.release();
    F64_POOL.release();
}

/// The bound on the cached bytes per element type.
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Sets the bound on the cached bytes per element type; 0 turns the cache off. Buffers already
/// cached beyond a lower bound stay until [`release`].
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_by_exact_capacity_and_bounded() {
        let pool = BufferPool::<f32>::new();
        // A capacity never asked for is not kept.
        pool.give(vec![1.0f32; 4096]);
        assert_eq!(pool.bytes(), 0);
        assert!(pool.take(4096).is_none());
        let v = vec![2.0f32; 4096];
        let ptr = v.as_ptr();
        pool.give(v);
        assert_eq!(pool.bytes(), 4096 * 4);
        // At most as many as were out at once (one) are kept.
        pool.give(vec![1.0f32; 4096]);
        assert_eq!(pool.bytes(), 4096 * 4);
        // Another size is not served from it.
        assert!(pool.take(4095).is_none());
        assert_eq!(pool.bytes(), 4096 * 4);
        let again = pool.take(4096).unwrap();
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!((again.len(), again.capacity()), (4096, 4096));
        assert_eq!(again[17], 2.0, "handed out with its last values");
        assert_eq!(pool.bytes(), 0);
        // Small buffers, and buffers not filled to their capacity, are not kept.
        assert!(pool.take(MIN_ELEMENTS - 1).is_none());
        pool.give(vec![0.0f32; MIN_ELEMENTS - 1]);
        let mut partial = Vec::with_capacity(4096);
        partial.push(1.0f32);
        pool.give(partial);
        assert_eq!(pool.bytes(), 0);
        pool.give(again);
        assert_eq!(pool.bytes(), 4096 * 4);
        pool.release();
        assert_eq!(pool.bytes(), 0);
        assert!(pool.take(4096).is_none());
    }
}
