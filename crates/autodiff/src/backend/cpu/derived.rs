//! Weights in the form a kernel wants them (Winograd-transformed and packed, transposed),
//! made once per model and kept between calls.
//!
//! A model's weights are the same for every chunk of noisy copies and every image, so a
//! kernel that needs them rearranged should not redo it on every call. An entry is found by
//! what the derived form depends on ([`Key`]) and the weights' exact bytes, compared in full:
//! no pointer or hash can hand out another tensor's derived form, and weights changed in place
//! are simply not found. Entries are shared by all threads. The cache holds at most [`LIMIT`]
//! bytes (the weights' copies included), first come first kept: nothing is evicted, so a model
//! larger than that keeps its first layers' forms and its other calls derive theirs each time
//! (or, where that would cost more than it saves, take a path that needs none).

use crate::element::Float;
use std::any::Any;
use std::sync::{Arc, Mutex, PoisonError};

/// Bytes kept at most, weights and derived forms together, both element types.
pub(super) const LIMIT: usize = 32 << 20;

/// What a derived form depends on besides the weights' values.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Key {
    /// Winograd F(tile×tile, 3×3) weights for K outputs and C inputs, flipped and transposed
    /// for the input gradient with `flip`, packed for `wgemm`.
    Winograd {
        tile: u8,
        flip: bool,
        k: usize,
        c: usize,
    },
    /// The transpose of a row-major `rows × cols` matrix.
    Transposed { rows: usize, cols: usize },
}

struct Entry {
    key: Key,
    /// The weights as given (`Vec<T>`) and their derived form (`Arc<Vec<T>>`).
    raw: Box<dyn Any + Send + Sync>,
    derived: Box<dyn Any + Send + Sync>,
}

struct Cache {
    entries: Vec<Entry>,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    entries: Vec::new(),
    bytes: 0,
});

fn lock() -> std::sync::MutexGuard<'static, Cache> {
    // Every change is one push and one addition: a poisoned lock is still consistent.
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The bytes of a float slice (floats have no padding), so that NaN weights compare equal to
/// themselves and −0 differs from +0.
fn bytes<T: Float>(w: &[T]) -> &[u8] {
    // SAFETY: T is f32 or f64: plain bytes, size_of_val(w) of them, borrowed as w is.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u8>(), std::mem::size_of_val(w)) }
}

fn lookup<T: Float>(c: &Cache, key: Key, w: &[T]) -> Option<Arc<Vec<T>>> {
    c.entries.iter().find_map(|e| {
        let raw = e.raw.downcast_ref::<Vec<T>>()?;
        (e.key == key && bytes(raw) == bytes(w))
            .then(|| e.derived.downcast_ref::<Arc<Vec<T>>>().cloned())
            .flatten()
    })
}

/// The form kept for `key` and exactly these weights, if any.
pub(super) fn find<T: Float>(key: Key, w: &[T]) -> Option<Arc<Vec<T>>> {
    lookup(&lock(), key, w)
}

/// Whether a form of `len` elements derived from `w` would be kept now.
pub(super) fn has_room<T: Float>(w: &[T], len: usize) -> bool {
    let size = std::mem::size_of_val(w) + len * std::mem::size_of::<T>();
    lock().bytes + size <= LIMIT
}

/// Keeps `derived` (the form of `w` under `key`) if the cache has room; returns it, or the
/// equal form another thread kept meanwhile.
pub(super) fn keep<T: Float>(key: Key, w: &[T], derived: Vec<T>) -> Arc<Vec<T>> {
    let size = std::mem::size_of_val(w) + std::mem::size_of_val(derived.as_slice());
    let derived = Arc::new(derived);
    let mut c = lock();
    if let Some(kept) = lookup(&c, key, w) {
        return kept;
    }
    if c.bytes + size <= LIMIT {
        c.bytes += size;
        c.entries.push(Entry {
            key,
            raw: Box::new(w.to_vec()),
            derived: Box::new(Arc::clone(&derived)),
        });
    }
    derived
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_by_key_and_exact_bytes() {
        let w: Vec<f32> = (0..64).map(|i| i as f32 * 0.25 - 3.0).collect();
        let key = Key::Transposed { rows: 8, cols: 8 };
        let kept = keep(key, &w, vec![1.0f32; 64]);
        assert_eq!(find(key, &w).as_deref(), Some(&*kept));
        // Another key, another element type, changed values, −0 for +0: not found.
        assert!(find(Key::Transposed { rows: 4, cols: 16 }, &w).is_none());
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        assert!(find(key, &w64).is_none());
        let mut changed = w.clone();
        changed[7] += 1.0;
        assert!(find(key, &changed).is_none());
        let mut zero = w.clone();
        zero[12] = 0.0;
        let kept_zero = keep(key, &zero, vec![2.0f32; 64]);
        zero[12] = -0.0;
        assert!(find(key, &zero).is_none());
        zero[12] = 0.0;
        assert_eq!(find(key, &zero).as_deref(), Some(&*kept_zero));
        // Keeping the same form again shares the first one.
        let again = keep(key, &w, vec![3.0f32; 64]);
        assert!(Arc::ptr_eq(&again, &kept));
        // Room is bounded.
        assert!(!has_room(&w, LIMIT));
    }
}
