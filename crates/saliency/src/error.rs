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
    /// The model produced a non-finite value.
    #[error("the model produced a non-finite {what} (first at element {index})")]
    NonFinite { what: &'static str, index: usize },
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
