//! Shapes: dimension lists with checked element counts and numpy-style broadcasting.

use crate::error::{Error, Result};
use std::fmt;

/// Largest element count a single tensor may have (2^40 elements). Anything past this is
/// treated as a corrupt or hostile size rather than allocated.
pub const MAX_ELEMENTS: usize = 1 << 40;

/// The dimensions of a contiguous, row-major (NCHW for images) tensor.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// A shape from its dimensions, checking that the element count fits.
    pub fn new(dims: &[usize]) -> Result<Self> {
        checked_numel(dims)?;
        Ok(Shape(dims.to_vec()))
    }

    /// The empty shape of a scalar (one element).
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The number of elements (the product of the dimensions; 1 for a scalar).
    pub fn numel(&self) -> usize {
        // Checked at construction.
        self.0.iter().product()
    }

    /// Row-major strides, in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1; self.0.len()];
        for i in (0..self.0.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1];
        }
        strides
    }

    /// The shape both operands broadcast to (numpy rules: align trailing dimensions; a
    /// dimension of 1 stretches).
    pub fn broadcast(op: &'static str, a: &Shape, b: &Shape) -> Result<Shape> {
        let rank = a.rank().max(b.rank());
        let mut out = vec![0; rank];
        for (i, o) in out.iter_mut().enumerate() {
            let da = dim_from_right(a, rank - 1 - i);
            let db = dim_from_right(b, rank - 1 - i);
            *o = match (da, db) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => {
                    return Err(Error::ShapeMismatch {
                        op,
                        lhs: a.0.clone(),
                        rhs: b.0.clone(),
                    });
                }
            };
        }
        Shape::new(&out)
    }

    /// Strides that read this shape as if broadcast to `target` (0 on stretched dimensions).
    /// `target` must be a broadcast of `self`.
    pub(crate) fn broadcast_strides(&self, target: &Shape) -> Vec<usize> {
        let own = self.strides();
        let offset = target.rank() - self.rank();
        (0..target.rank())
            .map(|i| {
                if i < offset || self.0[i - offset] == 1 {
                    0
                } else {
                    own[i - offset]
                }
            })
            .collect()
    }
}

fn dim_from_right(s: &Shape, k: usize) -> usize {
    if k < s.rank() {
        s.0[s.rank() - 1 - k]
    } else {
        1
    }
}

/// The element count of `dims`, or an error when it overflows or exceeds [`MAX_ELEMENTS`].
pub fn checked_numel(dims: &[usize]) -> Result<usize> {
    let mut n: usize = 1;
    for &d in dims {
        n = n.checked_mul(d).ok_or_else(|| Error::SizeOverflow {
            shape: dims.to_vec(),
        })?;
    }
    if n > MAX_ELEMENTS {
        return Err(Error::SizeOverflow {
            shape: dims.to_vec(),
        });
    }
    Ok(n)
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        let a = Shape::new(&[2, 3, 4, 5]).unwrap();
        let b = Shape::new(&[3, 1, 1]).unwrap();
        assert_eq!(Shape::broadcast("t", &a, &b).unwrap().dims(), &[2, 3, 4, 5]);
        assert_eq!(b.broadcast_strides(&a), vec![0, 1, 0, 0]);
        let c = Shape::new(&[4, 4]).unwrap();
        assert!(matches!(
            Shape::broadcast("t", &a, &c),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn overflowing_shapes_are_rejected() {
        assert!(matches!(
            Shape::new(&[usize::MAX, 2]),
            Err(Error::SizeOverflow { .. })
        ));
        assert!(matches!(
            Shape::new(&[1 << 30, 1 << 11]),
            Err(Error::SizeOverflow { .. })
        ));
        assert_eq!(Shape::new(&[2, 3]).unwrap().strides(), vec![3, 1]);
    }
}
