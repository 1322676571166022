//! ReLU, saving one bit per element for its backward.

use super::Op;
use crate::backend::cpu::elementwise::{self, filled_vec};
use crate::element::Float;
use crate::error::Result;
use crate::tape::{KernelLog, Tape, Var, accumulate};
use crate::tensor::Tensor;

/// One bit per element: set where the forward input was strictly positive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitMask {
    words: Vec<u64>,
    len: usize,
}

impl BitMask {
    /// Bits `x > 0` for each element (NaN gives 0).
    pub fn positive<T: Float>(x: &[T]) -> Self {
        Self::from_predicate(x, |v| v > T::zero())
    }

    /// Bits `pred(x)` for each element.
    pub fn from_predicate<T: Float>(x: &[T], pred: impl Fn(T) -> bool) -> Self {
        let mut words = vec![0u64; x.len().div_ceil(64)];
        for (w, chunk) in words.iter_mut().zip(x.chunks(64)) {
            let mut bits = 0u64;
            for (i, &v) in chunk.iter().enumerate() {
                bits |= (pred(v) as u64) << i;
            }
            *w = bits;
        }
        BitMask {
            words,
            len: x.len(),
        }
    }

    /// Number of elements covered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mask covers no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i`.
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        (self.words[i / 64] >> (i % 64)) & 1 == 1
    }

    /// `g` where the bit is set, 0 elsewhere; with `positive_only`, also 0 where `g <= 0`
    /// (guided backpropagation). Multithreaded and vectorised (`backend::cpu::elementwise`).
    ///
    /// # Panics
    /// When `g.len()` differs from the mask's length.
    pub fn apply<T: Float>(&self, g: &[T], positive_only: bool) -> Vec<T> {
        assert_eq!(g.len(), self.len, "BitMask::apply: gradient length");
        let mut out = crate::buffers::with_capacity(g.len());
        out.extend_from_slice(g);
        elementwise::mask_backward(&mut out, &self.words, positive_only);
        out
    }

    /// [`apply`](Self::apply) with `g` overwritten in place: the same values without a second
    /// buffer.
    ///
    /// ```
    /// use smoothgrad_autodiff::ops::activation::{BitMask, relu_fwd_masked};
    /// let (_, mask) = relu_fwd_masked(&[1.0f32, -2.0, 3.0, 0.0]);
    /// let mut g = [0.5f32, 0.5, -0.5, 0.5];
    /// mask.apply_in_place(&mut g, false);
    /// assert_eq!(g, [0.5, 0.0, -0.5, 0.0]);
    /// mask.apply_in_place(&mut g, true); // guided: only positive gradients pass
    /// assert_eq!(g, [0.5, 0.0, 0.0, 0.0]);
    /// ```
    ///
    /// # Panics
    /// When `g.len()` differs from the mask's length.
    pub fn apply_in_place<T: Float>(&self, g: &mut [T], positive_only: bool) {
        assert_eq!(
            g.len(),
            self.len,
            "BitMask::apply_in_place: gradient length"
        );
        elementwise::mask_backward(g, &self.words, positive_only);
    }
}

/// `max(x, 0)` (NaN passed through, as PyTorch) and the mask `x > 0`, in one pass
/// (multithreaded and vectorised).
pub fn relu_fwd_masked<T: Float>(x: &[T]) -> (Vec<T>, BitMask) {
    let mut words = vec![0u64; x.len().div_ceil(64)];
    // SAFETY: `relu_fwd_masked` writes every element of `out`.
    let out = unsafe {
        filled_vec(x.len(), |out| {
            elementwise::relu_fwd_masked(x, out, &mut words)
        })
    };
    let mask = BitMask {
        words,
        len: x.len(),
    };
    (out, mask)
}

/// `max(x, 0)`, with NaN passed through as PyTorch does.
pub fn relu_fwd<T: Float>(x: &[T]) -> Vec<T> {
    // SAFETY: `relu_fwd` writes every element of `out`.
    unsafe { filled_vec(x.len(), |out| elementwise::relu_fwd(x, out)) }
}

impl<T: Float> Tape<T> {
    /// [`relu`](Self::relu) of a value the caller gives up: where nothing else holds its
    /// tensor, the ReLU overwrites it in place instead of filling a new buffer (the same
    /// values, mask and gradient).
    ///
    /// ```
    /// use smoothgrad_autodiff::{Tape, Tensor};
    /// let mut tape = Tape::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3])?);
    /// let h = tape.mul_scalar(&x, 2.0)?;
    /// let y = tape.relu_owned(h)?;
    /// assert_eq!(y.value().as_slice(), &[2.0, 0.0, 6.0]);
    /// let total = tape.sum(&y, &[0], false)?;
    /// let grads = tape.backward(&total)?;
    /// assert_eq!(grads.get(&x).map(|g| g.as_slice()), Some(&[2.0f32, 0.0, 2.0][..]));
    /// # Ok::<(), smoothgrad_autodiff::Error>(())
    /// ```
    pub fn relu_owned(&mut self, x: Var<T>) -> Result<Var<T>> {
        let ix = self.input(&x)?;
        if !x.value().is_unique() {
            return self.relu(&x);
        }
        let mut value = x.into_value();
        // Unique: `data_mut` does not copy.
        let xs = value.data_mut();
        let mut words = vec![0u64; xs.len().div_ceil(64)];
        elementwise::relu_fwd_masked_in_place(xs, &mut words);
        if ix.is_none() {
            return Ok(Var::constant(value));
        }
        let mask = BitMask {
            len: value.numel(),
            words,
        };
        Ok(self.push(Op::Relu { x: ix, mask }, value))
    }

    /// `max(x, 0)`; the gradient at exactly 0 is 0 (PyTorch's convention).
    pub fn relu(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let ix = self.input(x)?;
        let xs = x.value().as_slice();
        if ix.is_none() {
            let value = Tensor::from_parts(x.value().shape().clone(), relu_fwd(xs));
            return Ok(Var::constant(value));
        }
        let (out, mask) = relu_fwd_masked(xs);
        let value = Tensor::from_parts(x.value().shape().clone(), out);
        Ok(self.push(Op::Relu { x: ix, mask }, value))
    }
}

impl<T: Float> Tape<T> {
    /// `min(max(x, low), high)` (ReLU6 is `clamp(x, 0, 6)`). The gradient passes only strictly
    /// inside (low, high), as PyTorch's `hardtanh`/`relu6`, consistent with ReLU at 0.
    pub fn clamp(&mut self, x: &Var<T>, low: f64, high: f64) -> Result<Var<T>> {
        if low.is_nan() || high.is_nan() || low > high {
            return Err(crate::error::Error::InvalidArgument {
                op: "clamp",
                reason: format!("bounds must satisfy low <= high, got [{low}, {high}]"),
            });
        }
        let ix = self.input(x)?;
        let (lo, hi) = (T::from_f64(low), T::from_f64(high));
        let xs = x.value().as_slice();
        // The mask costs 1/32 of the output; on the constant path it is dropped unused.
        let mut words = vec![0u64; xs.len().div_ceil(64)];
        // SAFETY: `clamp_fwd_masked` writes every element of `out`.
        let out = unsafe {
            filled_vec(xs.len(), |out| {
                elementwise::clamp_fwd_masked(xs, lo, hi, out, &mut words)
            })
        };
        let value = Tensor::from_parts(x.value().shape().clone(), out);
        let len = xs.len();
        Ok(self.result(ix.is_some(), value, || Op::Clamp {
            x: ix,
            mask: BitMask { words, len },
        }))
    }
}

/// Passes `grad` where the mask is set (ReLU and clamp).
pub(super) fn mask_backward<T: Float>(
    x: super::Input,
    mask: &BitMask,
    grad: Tensor<T>,
    guided: bool,
    grads: &mut [Option<Tensor<T>>],
    log: &mut KernelLog,
    kernel: &'static str,
) {
    if let Some(x) = x {
        log.record(kernel);
        // The incoming gradient is the op's own (taken from the tape's slot): masked where it
        // lies when nothing else holds it (`data_mut` copies only a shared one).
        let mut g = grad;
        mask.apply_in_place(g.data_mut(), guided);
        accumulate(grads, x, g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `relu_owned` reuses a value nobody else holds and copies a shared one; either way its
    /// values and gradients are `relu`'s, guided or not, and the shared value is unchanged.
    #[test]
    fn relu_owned_reuses_an_unshared_value_and_matches_relu() -> Result<()> {
        let data: Vec<f32> = (0..300)
            .map(|i| match i % 7 {
                1 => -0.0,
                4 => f32::NAN,
                _ => (i as f32 * 0.37).sin(),
            })
            .collect();
        let seed = Tensor::from_vec((0..300).map(|i| (i as f32 * 0.11).cos()).collect(), &[300])?;
        for guided in [false, true] {
            let options = crate::ops::BackwardOptions {
                guided,
                ..Default::default()
            };
            let run = |owned: bool, keep: bool| -> Result<(Vec<u32>, Vec<u32>, bool)> {
                let mut tape = Tape::new();
                let x = tape.var(Tensor::from_vec(data.clone(), &[300])?);
                let h = tape.mul_scalar(&x, 1.0)?;
                let kept = keep.then(|| h.value().clone());
                let at = h.value().as_slice().as_ptr();
                let y = if owned {
                    tape.relu_owned(h)?
                } else {
                    tape.relu(&h)?
                };
                let reused = std::ptr::eq(y.value().as_slice().as_ptr(), at);
                if let Some(k) = kept {
                    let same: Vec<u32> = k.as_slice().iter().map(|v| v.to_bits()).collect();
                    let orig: Vec<u32> = data.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(same, orig, "a shared value is not overwritten");
                }
                let grads = tape.backward_with(&y, &seed, options)?;
                let bits = |t: &Tensor<f32>| t.as_slice().iter().map(|v| v.to_bits()).collect();
                let g = grads.get(&x).map(bits).unwrap_or_default();
                Ok((bits(y.value()), g, reused))
            };
            let (want_y, want_g, _) = run(false, false)?;
            let (y, g, reused) = run(true, false)?;
            assert!(reused, "an unshared value is overwritten in place");
            assert_eq!((y, g), (want_y.clone(), want_g.clone()), "guided {guided}");
            let (y, g, reused) = run(true, true)?;
            assert!(!reused, "a shared value is copied");
            assert_eq!((y, g), (want_y, want_g), "guided {guided}, shared");
        }
        Ok(())
    }

    #[test]
    fn mask_spans_word_boundaries() {
        let x: Vec<f32> = (0..130)
            .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect();
        let m = BitMask::positive(&x);
        assert_eq!(m.len(), 130);
        for i in 0..130 {
            assert_eq!(m.get(i), i % 3 == 0);
        }
        let g = vec![2.0f32; 130];
        let out = m.apply(&g, false);
        assert_eq!(out[129], 2.0);
        assert_eq!(out[128], 0.0);
    }

    #[test]
    fn apply_matches_the_bitwise_definition_on_full_empty_and_mixed_words() {
        // Word 0 all positive, word 1 all negative, word 2 mixed and partial.
        let x: Vec<f64> = (0..150)
            .map(|i| match i {
                0..64 => 1.0,
                64..128 => -1.0,
                _ => {
                    if i % 2 == 0 {
                        0.5
                    } else {
                        -0.5
                    }
                }
            })
            .collect();
        let g: Vec<f64> = (0..150)
            .map(|i| if i % 3 == 0 { -1.0 } else { i as f64 })
            .collect();
        let (y, m) = relu_fwd_masked(&x);
        assert_eq!(y, relu_fwd(&x));
        for guided in [false, true] {
            let out = m.apply(&g, guided);
            for i in 0..150 {
                let keep = x[i] > 0.0 && (!guided || g[i] > 0.0);
                assert_eq!(
                    out[i],
                    if keep { g[i] } else { 0.0 },
                    "i = {i}, guided = {guided}"
                );
            }
        }
    }
}
