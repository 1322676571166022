//! `Tensor`: an immutable, contiguous, row-major array shared by reference counting.

use crate::element::Float;
use crate::error::{Error, Result};
use crate::rng;
use crate::shape::Shape;
use std::sync::Arc;

/// A contiguous row-major tensor (NCHW for images, OIHW for convolution weights).
///
/// Cloning is cheap (the data is shared); writing through [`Tensor::data_mut`] copies only when
/// the data is shared.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T: Float> {
    shape: Shape,
    data: Arc<Storage<T>>,
}

/// A tensor's values; the buffer goes back to the [`crate::buffers`] cache when dropped.
#[derive(Debug, PartialEq)]
struct Storage<T: Float>(Vec<T>);

impl<T: Float> Clone for Storage<T> {
    fn clone(&self) -> Self {
        let mut v = crate::buffers::with_capacity(self.0.len());
        v.extend_from_slice(&self.0);
        Storage(v)
    }
}

impl<T: Float> Drop for Storage<T> {
    fn drop(&mut self) {
        crate::buffers::recycle(std::mem::take(&mut self.0));
    }
}

impl<T: Float> Tensor<T> {
    /// A tensor from its values in row-major order.
    ///
    /// ```
    /// use smoothgrad_autodiff::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(t.dims(), &[2, 3]);
    /// assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).is_err());
    /// # Ok::<(), smoothgrad_autodiff::Error>(())
    /// ```
    pub fn from_vec(data: Vec<T>, dims: &[usize]) -> Result<Self> {
        let shape = Shape::new(dims)?;
        if data.len() != shape.numel() {
            return Err(Error::DataLength {
                shape: dims.to_vec(),
                expected: shape.numel(),
                got: data.len(),
            });
        }
        Ok(Tensor {
            shape,
            data: Arc::new(Storage(data)),
        })
    }

    /// A tensor from a shape already checked and a vector of the right length.
    pub(crate) fn from_parts(shape: Shape, data: Vec<T>) -> Self {
        debug_assert_eq!(shape.numel(), data.len());
        Tensor {
            shape,
            data: Arc::new(Storage(data)),
        }
    }

    /// A tensor filled with `value`.
    pub fn full(dims: &[usize], value: T) -> Result<Self> {
        let shape = Shape::new(dims)?;
        let mut data = crate::buffers::with_capacity(shape.numel());
        data.resize(shape.numel(), value);
        Ok(Self::from_parts(shape, data))
    }

    /// A tensor of zeros.
    pub fn zeros(dims: &[usize]) -> Result<Self> {
        Self::full(dims, T::zero())
    }

    /// A tensor of ones.
    pub fn ones(dims: &[usize]) -> Result<Self> {
        Self::full(dims, T::one())
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar(value: T) -> Self {
        Self::from_parts(Shape::scalar(), vec![value])
    }

    /// Standard normal values, a pure function of `seed` (Philox4x32-10 + Box–Muller).
    pub fn randn(dims: &[usize], seed: u64) -> Result<Self> {
        let shape = Shape::new(dims)?;
        let mut buf = vec![0.0f32; shape.numel()];
        rng::fill_normal(seed, 0, 0, &mut buf);
        Ok(Self::from_parts(
            shape,
            buf.into_iter().map(|v| T::from_f64(v as f64)).collect(),
        ))
    }

    /// Values uniform in `[low, high)`, a pure function of `seed` (Philox4x32-10, 53-bit draws).
    pub fn uniform(dims: &[usize], low: f64, high: f64, seed: u64) -> Result<Self> {
        let shape = Shape::new(dims)?;
        let n = shape.numel();
        let mut data = Vec::with_capacity(n);
        for i in 0..n.div_ceil(2) as u64 {
            let r = rng::philox4x32_10(
                [i as u32, (i >> 32) as u32, 1, 0],
                [seed as u32, (seed >> 32) as u32],
            );
            for pair in [(r[0], r[1]), (r[2], r[3])] {
                if data.len() < n {
                    let bits = ((pair.0 as u64) << 21) ^ ((pair.1 as u64) >> 11);
                    let u = (bits & ((1u64 << 53) - 1)) as f64 / (1u64 << 53) as f64;
                    data.push(T::from_f64(low + (high - low) * u));
                }
            }
        }
        Ok(Self::from_parts(shape, data))
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.data.0.len()
    }

    /// The values in row-major order.
    pub fn as_slice(&self) -> &[T] {
        &self.data.0
    }

    /// Whether no other clone shares these values (so [`Tensor::data_mut`] would not copy).
    pub(crate) fn is_unique(&self) -> bool {
        Arc::strong_count(&self.data) == 1 && Arc::weak_count(&self.data) == 0
    }

    /// Mutable access to the values; copies them first if they are shared.
    pub fn data_mut(&mut self) -> &mut [T] {
        Arc::make_mut(&mut self.data).0.as_mut_slice()
    }

    /// The values as a vector (without copying when this is the only reference).
    pub fn into_vec(self) -> Vec<T> {
        match Arc::try_unwrap(self.data) {
            Ok(mut own) => std::mem::take(&mut own.0),
            Err(shared) => shared.0.clone(),
        }
    }

    /// The same values under another shape with the same element count (no copy).
    pub fn reshape(&self, dims: &[usize]) -> Result<Self> {
        let shape = Shape::new(dims)?;
        if shape.numel() != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.dims().to_vec(),
                rhs: dims.to_vec(),
            });
        }
        Ok(Tensor {
            shape,
            data: self.data.clone(),
        })
    }

    /// The values converted to another element type.
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor::from_parts(
            self.shape.clone(),
            self.as_slice()
                .iter()
                .map(|v| U::from_f64(v.as_f64()))
                .collect(),
        )
    }

    /// A new tensor with `f` applied to every value.
    pub fn map(&self, f: impl Fn(T) -> T) -> Self {
        Tensor::from_parts(
            self.shape.clone(),
            self.as_slice().iter().map(|&v| f(v)).collect(),
        )
    }

    /// The first index of a non-finite value, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        if self.all_finite() {
            return None;
        }
        self.as_slice().iter().position(|v| !v.is_finite())
    }

    /// Whether every value is finite (neither NaN nor ±Inf); a vectorised scan.
    ///
    /// ```
    /// use smoothgrad_autodiff::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, f32::NAN], &[2])?;
    /// assert!(!t.all_finite());
    /// assert!(Tensor::<f32>::ones(&[3])?.all_finite());
    /// # Ok::<(), smoothgrad_autodiff::Error>(())
    /// ```
    pub fn all_finite(&self) -> bool {
        crate::backend::cpu::elementwise::all_finite(self.as_slice())
    }
}
