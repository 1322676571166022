//! The exit status of a failed run, found by walking the error's chain to the library error
//! that caused it, so a script or a service can tell a bad input from a fault of the model.

use smoothgrad_layers::LayersError;
use smoothgrad_saliency::{Limit, SaliencyError};
use std::fmt;
use std::process::ExitCode;

/// What kind of failure ended the run; the discriminant is the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Anything else: an output that cannot be written, a device that fails, a bug.
    Other = 1,
    /// A bad command line: an unknown flag, flags that do not go together, an option value
    /// outside its domain (n = 0, a negative noise level, a class the model does not have).
    Usage = 2,
    /// An input file (model, image, .npy) that cannot be read, is malformed, or does not fit.
    BadInput = 3,
    /// A NaN or ±Inf produced by the model or the method (logits, gradients, the map).
    Numerical = 4,
    /// A request over a limit (--max-samples, --max-ig-steps, --max-work, --max-memory).
    Limit = 5,
}

/// The exit statuses as `--help` lists them.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  other failure (an output that cannot be written, a device error)
  2  usage: a bad flag, flags that do not go together, an option value outside its domain
  3  bad input file: a model, image or .npy that cannot be read, is malformed or does not fit
  4  numerical fault: NaN or ±Inf in the logits, the gradients or the map
  5  limit exceeded: --max-samples, --max-ig-steps, --max-work or --max-memory";

impl Status {
    pub fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// An error of the command line itself, with its status.
#[derive(Debug)]
pub struct CliError {
    status: Status,
    message: String,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// A usage error (status 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    CliError {
        status: Status::Usage,
        message: message.into(),
    }
    .into()
}

/// A bad input file (status 3).
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    CliError {
        status: Status::BadInput,
        message: message.into(),
    }
    .into()
}

/// The status of `error`: that of the outermost error in its chain whose kind is known.
pub fn status_of(error: &anyhow::Error) -> Status {
    error
        .chain()
        .find_map(|cause| {
            if let Some(e) = cause.downcast_ref::<CliError>() {
                Some(e.status)
            } else if let Some(e) = cause.downcast_ref::<SaliencyError>() {
                Some(saliency_status(e))
            } else if let Some(e) = cause.downcast_ref::<LayersError>() {
                Some(layers_status(e))
            } else {
                cause
                    .downcast_ref::<smoothgrad_autodiff::Error>()
                    .map(autodiff_status)
            }
        })
        .unwrap_or(Status::Other)
}

/// The flag that raises the limit `error` exceeded, when it is one.
pub fn limit_hint(error: &anyhow::Error) -> Option<&'static str> {
    error.chain().find_map(|cause| match cause.downcast_ref() {
        Some(SaliencyError::LimitExceeded { limit, .. }) => Some(match limit {
            Limit::Copies => "--max-samples N",
            Limit::IgSteps => "--max-ig-steps N",
            Limit::Work => "--max-work GFLOP",
            Limit::Memory => "--max-memory MB",
        }),
        _ => None,
    })
}

// Exhaustive on purpose: a new error variant must be given its status here.
fn saliency_status(e: &SaliencyError) -> Status {
    match e {
        SaliencyError::Input(_) | SaliencyError::Npy { .. } | SaliencyError::Image { .. } => {
            Status::BadInput
        }
        SaliencyError::Option { .. } => Status::Usage,
        SaliencyError::NonFinite { .. } => Status::Numerical,
        SaliencyError::LimitExceeded { .. } => Status::Limit,
        SaliencyError::Io { action, .. } if *action == "read" => Status::BadInput,
        SaliencyError::Io { .. } => Status::Other,
        SaliencyError::Model(e) => layers_status(e),
        SaliencyError::Autodiff(e) => autodiff_status(e),
    }
}

// Exhaustive on purpose, as above.
fn layers_status(e: &LayersError) -> Status {
    match e {
        LayersError::Io { .. }
        | LayersError::Decode { .. }
        | LayersError::UnsupportedOpset { .. }
        | LayersError::UnsupportedOp { .. }
        | LayersError::MissingInput { .. }
        | LayersError::MissingOutput { .. }
        | LayersError::DuplicateValue { .. }
        | LayersError::Cycle { .. }
        | LayersError::TensorSize { .. }
        | LayersError::UnsupportedDataType { .. }
        | LayersError::ExternalData { .. }
        | LayersError::NotConstant { .. }
        | LayersError::UnsupportedNode { .. }
        | LayersError::Attribute { .. }
        | LayersError::Graph { .. }
        | LayersError::InputShape { .. }
        | LayersError::Forward { .. }
        | LayersError::Arch { .. }
        | LayersError::Safetensors { .. }
        | LayersError::MissingWeight { .. }
        | LayersError::WeightShape { .. }
        | LayersError::WeightDType { .. } => Status::BadInput,
        LayersError::Limit { .. } => Status::Limit,
        LayersError::NonFinite { .. } => Status::Numerical,
        LayersError::Autodiff(e) => autodiff_status(e),
    }
}

fn autodiff_status(e: &smoothgrad_autodiff::Error) -> Status {
    use smoothgrad_autodiff::Error;
    match e {
        // Shapes come from the model file and the input: a shape that cannot be is theirs.
        Error::ShapeMismatch { .. }
        | Error::InvalidShape { .. }
        | Error::DataLength { .. }
        | Error::SizeOverflow { .. }
        | Error::InvalidAxis { .. } => Status::BadInput,
        _ => Status::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_outermost_known_error_decides() {
        let nan = SaliencyError::NonFinite {
            what: "input gradient of copy 3".into(),
            index: 0,
            value: f64::NAN,
        };
        let e = anyhow::Error::from(nan).context("digit-3.png");
        assert_eq!(status_of(&e), Status::Numerical);
        let e = anyhow::Error::from(SaliencyError::Model(LayersError::MissingWeight {
            source_name: "w.safetensors".into(),
            tensor: "fc.weight".into(),
        }));
        assert_eq!(status_of(&e), Status::BadInput);
        assert_eq!(status_of(&usage("--resume needs --out-dir")), Status::Usage);
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::from(SaliencyError::Io {
            action: "write",
            path: "map.npy".into(),
            source: io,
        });
        assert_eq!(status_of(&e), Status::Other);
        let plain: anyhow::Result<()> = Err(anyhow::anyhow!("something")).context("while");
        assert_eq!(status_of(&plain.unwrap_err()), Status::Other);
    }

    #[test]
    fn limits_name_their_flag() {
        let e = anyhow::Error::from(SaliencyError::LimitExceeded {
            limit: Limit::Work,
            message: "too much".into(),
        });
        assert_eq!(status_of(&e), Status::Limit);
        assert_eq!(limit_hint(&e), Some("--max-work GFLOP"));
        assert_eq!(limit_hint(&usage("x")), None);
        assert_eq!(Status::Limit as u8, 5);
    }
}
