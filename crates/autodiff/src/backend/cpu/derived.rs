//! Weights in the form a kernel wants them (Winograd-transformed and packed, transposed),
//! made once per model and kept between calls.
//!
//! A model's weights are the same for every chunk of noisy copies and every image, so a
//! kernel that needs them rearranged should not redo it on every call. An entry is found by
//! what the derived form depends on ([`Key`]) and the weights' exact bytes, compared in full:
//! no hash can hand out another tensor's derived form, and weights changed in place are simply
//! not found. Entries are shared by all threads. The cache holds at most [`LIMIT`] bytes (the
//! weights included), first come first kept: nothing is evicted, so a model larger than that
//! keeps its first layers' forms and its other calls derive theirs each time (or, where that
//! would cost more than it saves, take a path that needs none).
//!
//! **Pinned weights.** Comparing the bytes costs a pass over the weights per call (2 MiB for
//! `small`'s first linear layer, 1–2% of its explanation). An op that holds its weights as a
//! [`Tensor`] runs its kernel inside [`pinned`]; an entry made there keeps a clone of the
//! tensor instead of a copy of its values. A tensor's storage is shared and immutable while
//! more than one clone exists (writes copy first, [`Tensor::data_mut`]), and the entry's clone
//! keeps it alive, so a slice with the entry's address and length can only be those very
//! values: it is found by address, without reading it. Any other slice is still compared in
//! full, so pinning changes how fast an entry is found, never which.

use crate::element::Float;
use crate::tensor::Tensor;
use std::any::Any;
use std::cell::RefCell;
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
    /// The weights: a copy of the values (`Vec<T>`) or a pinned tensor (`Tensor<T>`), and
    /// their derived form (`Arc<Vec<T>>`).
    raw: Box<dyn Any + Send + Sync>,
    derived: Box<dyn Any + Send + Sync>,
}

/// How an entry's weights compare with a slice.
enum Same {
    /// The pinned tensor's own storage: equal without reading it.
    Storage,
    /// Equal bytes.
    Bytes,
    /// Different.
    No,
}

impl Entry {
    fn holds<T: Float>(&self, w: &[T]) -> Same {
        if let Some(t) = self.raw.downcast_ref::<Tensor<T>>() {
            let own = t.as_slice();
            if std::ptr::eq(own, w) {
                return Same::Storage;
            }
            return if bytes(own) == bytes(w) {
                Same::Bytes
            } else {
                Same::No
            };
        }
        match self.raw.downcast_ref::<Vec<T>>() {
            Some(raw) if bytes(raw) == bytes(w) => Same::Bytes,
            _ => Same::No,
        }
    }
}

thread_local! {
    /// The tensors of the [`pinned`] calls running on this thread (`Tensor<T>`, innermost
    /// last).
    static PINS: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` (a kernel reading `w`'s values) with `w` pinned: a derived form of exactly `w`'s
/// storage made or found on this thread meanwhile keeps (or gets) a clone of `w` in place of
/// a copy of its values, and is found again by address (see the module's notes).
pub(crate) fn pinned<T: Float, R>(w: &Tensor<T>, f: impl FnOnce() -> R) -> R {
    struct Unpin;
    impl Drop for Unpin {
        fn drop(&mut self) {
            PINS.with(|p| p.borrow_mut().pop());
        }
    }
    PINS.with(|p| p.borrow_mut().push(Box::new(w.clone())));
    let _unpin = Unpin;
    f()
}

/// The pinned tensor whose storage is exactly `w`, if any.
fn pin_of<T: Float>(w: &[T]) -> Option<Tensor<T>> {
    PINS.with(|p| {
        p.borrow().iter().rev().find_map(|t| {
            t.downcast_ref::<Tensor<T>>()
                .filter(|t| std::ptr::eq(t.as_slice(), w))
                .cloned()
        })
    })
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

/// The entry for `key` and exactly these weights and the form it keeps; an entry found by its
/// bytes while `w` is pinned takes the pinned tensor (dropping its copy), so that it is found
/// by address from then on.
fn lookup<T: Float>(c: &mut Cache, key: Key, w: &[T]) -> Option<Arc<Vec<T>>> {
    let (e, same) = c
        .entries
        .iter_mut()
        .filter(|e| e.key == key && e.derived.is::<Arc<Vec<T>>>())
        .find_map(|e| match e.holds(w) {
            Same::No => None,
            same => Some((e, same)),
        })?;
    if matches!(same, Same::Bytes)
        && let Some(pin) = pin_of(w)
    {
        e.raw = Box::new(pin);
    }
    e.derived.downcast_ref::<Arc<Vec<T>>>().cloned()
}

/// The form kept for `key` and exactly these weights, if any.
pub(super) fn find<T: Float>(key: Key, w: &[T]) -> Option<Arc<Vec<T>>> {
    lookup(&mut lock(), key, w)
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
    if let Some(kept) = lookup(&mut c, key, w) {
        return kept;
    }
    if c.bytes + size <= LIMIT {
        c.bytes += size;
        let raw: Box<dyn Any + Send + Sync> = match pin_of(w) {
            Some(pin) => Box::new(pin),
            None => Box::new(w.to_vec()),
        };
        c.entries.push(Entry {
            key,
            raw,
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

    /// A pinned tensor's entry keeps the tensor, is found by address and by equal bytes
    /// elsewhere, and never hands its form to changed values: a write to a clone copies first,
    /// and the entry's values stay what they were.
    #[test]
    fn pinned_entries_hold_the_tensor_and_follow_the_values() {
        let key = Key::Transposed { rows: 3, cols: 5 };
        let w = Tensor::from_vec((0..15).map(|i| i as f32 * 0.5 - 7.25).collect(), &[3, 5])
            .unwrap_or_else(|e| unreachable!("{e}"));
        let kept = pinned(&w, || keep(key, w.as_slice(), vec![9.0f32; 15]));
        let (e_raw_is_tensor, by_address) = {
            let c = lock();
            let e = c
                .entries
                .iter()
                .find(|e| e.key == key)
                .unwrap_or_else(|| unreachable!("kept"));
            (
                e.raw.is::<Tensor<f32>>(),
                matches!(e.holds(w.as_slice()), Same::Storage),
            )
        };
        assert!(e_raw_is_tensor && by_address);
        // Found with or without the pin, by address.
        assert!(Arc::ptr_eq(
            &find(key, w.as_slice()).unwrap_or_default(),
            &kept
        ));
        // Another tensor with the same values: found by its bytes.
        let same = Tensor::from_vec(w.as_slice().to_vec(), &[3, 5])
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!std::ptr::eq(same.as_slice(), w.as_slice()));
        assert!(Arc::ptr_eq(
            &find(key, same.as_slice()).unwrap_or_default(),
            &kept
        ));
        // A write through a clone copies first: the changed values are not found, the
        // original still is.
        let mut changed = w.clone();
        changed.data_mut()[4] = 100.0;
        assert!(find(key, changed.as_slice()).is_none());
        assert!(pinned(&changed, || find(key, changed.as_slice())).is_none());
        assert!(Arc::ptr_eq(
            &find(key, w.as_slice()).unwrap_or_default(),
            &kept
        ));
        // The pin ends with its call.
        assert!(pin_of(w.as_slice()).is_none());
        assert!(pinned(&w, || pin_of(w.as_slice())).is_some());
    }

    /// An entry made from a copy takes the tensor when it is found while pinned.
    #[test]
    fn a_copied_entry_takes_the_pin() {
        let key = Key::Transposed { rows: 2, cols: 7 };
        let w = Tensor::from_vec((0..14).map(|i| i as f32 * -0.125 + 3.0).collect(), &[2, 7])
            .unwrap_or_else(|e| unreachable!("{e}"));
        let kept = keep(key, w.as_slice(), vec![1.0f32; 14]);
        let holds = |w: &[f32]| {
            let c = lock();
            let e = c
                .entries
                .iter()
                .find(|e| e.key == key)
                .unwrap_or_else(|| unreachable!());
            matches!(e.holds(w), Same::Storage)
        };
        assert!(!holds(w.as_slice()));
        let found = pinned(&w, || find(key, w.as_slice())).unwrap_or_default();
        assert!(Arc::ptr_eq(&found, &kept));
        assert!(holds(w.as_slice()));
    }
}
