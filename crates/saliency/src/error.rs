//! The one error type of the saliency crate.

use thiserror::Error;

/// Everything that can go wrong while explaining.
#[derive(Debug, Error)]
pub enum SaliencyError {
    /// The image does not fit the model, or holds values that cannot be explained.
    #[error("input: {0}")]
    Input(String),
    /// A method option outside its domain (n = 0, a negative noise level, a target class past
    /// the number of classes, ...).
    #[error("{option}: {reason}")]
    Option {
        option: &'static str,
        reason: String,
    },
    /// A value that is not a finite number (NaN or ±Inf) where the explanation needs one:
    /// `what` says which tensor and at which stage of the method (`"input gradient of copy
    /// 17"`), `index` is the first bad element of that tensor (row-major) and `value` its value.
    /// No map holding such a value is ever returned.
    #[error("non-finite value ({value}) in the {what}, first at element {index}")]
    NonFinite {
        what: String,
        index: usize,
        value: f64,
    },
    /// The request exceeds one of the explainer's [`Limits`](crate::Limits); it was refused
    /// before anything was allocated. `message` gives the numbers.
    #[error("{message} (Limits::{})", .limit.field())]
    LimitExceeded {
        limit: crate::limits::Limit,
        message: String,
    },
    /// An error from the model.
    #[error(transparent)]
    Model(#[from] smoothgrad_layers::LayersError),
    /// An error from the autodiff engine.
    #[error(transparent)]
    Autodiff(#[from] smoothgrad_autodiff::Error),
    /// A file could not be read, written or renamed into place.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `.npy` file this reader cannot take (malformed, or a layout or dtype it does not read).
    #[error("{}: {problem}", path.display())]
    Npy {
        path: std::path::PathBuf,
        problem: crate::npy::NpyProblem,
    },
    /// An image file that cannot be decoded or encoded.
    #[error("{}: {reason}", path.display())]
    Image {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, SaliencyError>;
