//! The element types a tensor can hold: `f32` everywhere, `f64` on the CPU for validation.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

/// Element type tag, for messages and for backends that only take some types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
}

/// A floating-point element: `f32` (the working type) or `f64` (gradient checks).
pub trait Float:
    num_traits::Float
    + Copy
    + Send
    + Sync
    + Default
    + Debug
    + Display
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + 'static
{
    /// The tag of this type.
    const DTYPE: DType;
    /// Converts from `f64`, rounding to nearest.
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` exactly (named apart from `ToPrimitive::to_f64`, which returns an Option).
    fn as_f64(self) -> f64;
    /// Converts from a count (used for means); exact below 2^24 for f32.
    fn from_usize(v: usize) -> Self {
        Self::from_f64(v as f64)
    }
    /// The cache of freed tensor buffers of this type (see [`crate::buffers`]).
    #[doc(hidden)]
    fn buffer_pool() -> &'static crate::buffers::BufferPool<Self>;
}

impl Float for f32 {
    const DTYPE: DType = DType::F32;
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn buffer_pool() -> &'static crate::buffers::BufferPool<Self> {
        &crate::buffers::F32_POOL
    }
}

impl Float for f64 {
    const DTYPE: DType = DType::F64;
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline]
    fn buffer_pool() -> &'static crate::buffers::BufferPool<Self> {
        &crate::buffers::F64_POOL
    }
}
