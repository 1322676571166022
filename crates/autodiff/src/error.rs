//! The one error type of the engine: every fallible call returns [`Result`].

use thiserror::Error;

/// Everything that can go wrong when building or differentiating a computation.
///
/// Variants name the operation and the shapes involved, so that a message read in a log
/// says which call was wrong and how.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Error {
    /// Two operands whose shapes cannot be combined by this operation.
    #[error("{op}: shapes {lhs:?} and {rhs:?} are incompatible")]
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
    },
    /// A shape that this operation does not accept (wrong rank, zero or too-small size, ...).
    #[error("{op}: invalid shape {shape:?}: {reason}")]
    InvalidShape {
        op: &'static str,
        shape: Vec<usize>,
        reason: String,
    },
    /// The number of values given does not match the number of elements of the shape.
    #[error("tensor of shape {shape:?} needs {expected} values, got {got}")]
    DataLength {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    /// The element count of a shape does not fit in `usize` (or exceeds the engine's limit).
    #[error("shape {shape:?} has too many elements")]
    SizeOverflow { shape: Vec<usize> },
    /// An axis that the tensor does not have.
    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank}")]
    InvalidAxis {
        op: &'static str,
        axis: usize,
        rank: usize,
    },
    /// A parameter outside its domain (stride 0, groups not dividing channels, a class index past
    /// the number of classes, ...).
    #[error("{op}: {reason}")]
    InvalidArgument { op: &'static str, reason: String },
    /// A variable recorded on a different tape was passed to this tape.
    #[error("variable belongs to tape #{found}, not to this tape #{expected}")]
    ForeignVariable { expected: u64, found: u64 },
    /// `backward_from` was called on a value that does not depend on any variable requiring grad.
    #[error("backward: the output does not depend on any variable that requires a gradient")]
    NotDifferentiable,
    /// A compute device that was asked for is absent or failed (no adapter, a kernel that did
    /// not build, a buffer past the device's limits). Never answered by a silent CPU fallback.
    #[error("{device} device: {reason}")]
    Device {
        device: &'static str,
        reason: String,
    },
}

/// Shorthand for `std::result::Result<T, Error>`.
pub type Result<T> = std::result::Result<T, Error>;
