//! The WGSL sources (`kernels/wgsl/*.wgsl`, compiled into the binary) and the entry points the
//! host launches, each named after the file that holds it.
//!
//! Every file declares the storage type of its tensors once, as `alias stored = f32;`, loads
//! through `f32(..)` and stores through `stored(..)`. The f16-storage variant of a file is that
//! same source with the alias replaced ([`source_for`]), made once when its module is built.

use super::tensor::Precision;
use std::borrow::Cow;

/// The declaration [`source_for`] replaces to make a file's f16-storage variant.
pub const STORED_F32: &str = "alias stored = f32;";

/// What replaces [`STORED_F32`] in the f16-storage variant.
pub const STORED_F16: &str = "enable f16;\nalias stored = f16;";

/// `(file stem, source)` of every kernel file.
pub const SOURCES: &[(&str, &str)] = &[
    (
        "avgpool2d",
        include_str!("../../../../../kernels/wgsl/avgpool2d.wgsl"),
    ),
    (
        "attribution",
        include_str!("../../../../../kernels/wgsl/attribution.wgsl"),
    ),
    (
        "batch_norm",
        include_str!("../../../../../kernels/wgsl/batch_norm.wgsl"),
    ),
    (
        "concat",
        include_str!("../../../../../kernels/wgsl/concat.wgsl"),
    ),
    (
        "conv2d",
        include_str!("../../../../../kernels/wgsl/conv2d.wgsl"),
    ),
    (
        "conv2d_bwd_input_reduce_copies",
        include_str!("../../../../../kernels/wgsl/conv2d_bwd_input_reduce_copies.wgsl"),
    ),
    (
        "conv2d_depthwise",
        include_str!("../../../../../kernels/wgsl/conv2d_depthwise.wgsl"),
    ),
    (
        "elementwise",
        include_str!("../../../../../kernels/wgsl/elementwise.wgsl"),
    ),
    (
        "matmul",
        include_str!("../../../../../kernels/wgsl/matmul.wgsl"),
    ),
    (
        "maxpool2d",
        include_str!("../../../../../kernels/wgsl/maxpool2d.wgsl"),
    ),
    (
        "noisy_copies",
        include_str!("../../../../../kernels/wgsl/noisy_copies.wgsl"),
    ),
    (
        "relu",
        include_str!("../../../../../kernels/wgsl/relu.wgsl"),
    ),
    (
        "softmax",
        include_str!("../../../../../kernels/wgsl/softmax.wgsl"),
    ),
];

/// One compute entry point: the file it lives in, its name there, and the storage type of the
/// variant to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub file: &'static str,
    pub entry: &'static str,
    pub precision: Precision,
}

impl Kernel {
    /// The same entry point in the variant storing tensors as `precision`.
    pub const fn with(self, precision: Precision) -> Kernel {
        Kernel { precision, ..self }
    }
}

const fn kernel(file: &'static str, entry: &'static str) -> Kernel {
    Kernel {
        file,
        entry,
        precision: Precision::F32,
    }
}

pub const CONV2D_FWD: Kernel = kernel("conv2d", "conv2d_fwd");
pub const CONV2D_FWD_RELU: Kernel = kernel("conv2d", "conv2d_fwd_relu");
pub const CONV2D_BWD_INPUT: Kernel = kernel("conv2d", "conv2d_bwd_input");
pub const CONV2D_BWD_WEIGHT: Kernel = kernel("conv2d", "conv2d_bwd_weight");
pub const CONV2D_BWD_BIAS: Kernel = kernel("conv2d", "conv2d_bwd_bias");
pub const DEPTHWISE_FWD: Kernel = kernel("conv2d_depthwise", "conv2d_depthwise_fwd");
pub const DEPTHWISE_FWD_RELU: Kernel = kernel("conv2d_depthwise", "conv2d_depthwise_fwd_relu");
pub const DEPTHWISE_BWD_INPUT: Kernel = kernel("conv2d_depthwise", "conv2d_depthwise_bwd_input");
pub const DEPTHWISE_BWD_WEIGHT: Kernel = kernel("conv2d_depthwise", "conv2d_depthwise_bwd_weight");
pub const CONV2D_BWD_INPUT_REDUCE_COPIES: Kernel = kernel(
    "conv2d_bwd_input_reduce_copies",
    "conv2d_bwd_input_reduce_copies",
);
pub const MATMUL_FWD: Kernel = kernel("matmul", "matmul_fwd");
pub const RELU_FWD: Kernel = kernel("relu", "relu_fwd");
pub const CLAMP_FWD: Kernel = kernel("relu", "clamp_fwd");
pub const RELU_BWD: Kernel = kernel("relu", "relu_bwd");
pub const MAXPOOL2D_FWD: Kernel = kernel("maxpool2d", "maxpool2d_fwd");
pub const MAXPOOL2D_BWD: Kernel = kernel("maxpool2d", "maxpool2d_bwd");
pub const AVGPOOL2D_FWD: Kernel = kernel("avgpool2d", "avgpool2d_fwd");
pub const AVGPOOL2D_BWD: Kernel = kernel("avgpool2d", "avgpool2d_bwd");
pub const GLOBAL_AVGPOOL2D_FWD: Kernel = kernel("avgpool2d", "global_avgpool2d_fwd");
pub const GLOBAL_AVGPOOL2D_BWD: Kernel = kernel("avgpool2d", "global_avgpool2d_bwd");
pub const BATCH_NORM_FWD: Kernel = kernel("batch_norm", "batch_norm_fwd");
pub const BATCH_NORM_BWD: Kernel = kernel("batch_norm", "batch_norm_bwd");
pub const SOFTMAX_FWD: Kernel = kernel("softmax", "softmax_fwd");
pub const SOFTMAX_BWD: Kernel = kernel("softmax", "softmax_bwd");
pub const ADD_FWD: Kernel = kernel("elementwise", "add_fwd");
pub const SUM_BATCH_FWD: Kernel = kernel("elementwise", "sum_batch_fwd");
pub const CONCAT_FWD: Kernel = kernel("concat", "concat_fwd");
pub const CONCAT_BWD: Kernel = kernel("concat", "concat_bwd");
pub const GRAD_X_INPUT_BWD: Kernel = kernel("attribution", "grad_x_input_bwd");
pub const IG_PATH_FWD: Kernel = kernel("attribution", "ig_path_fwd");
pub const IG_ACCUMULATE_BWD: Kernel = kernel("attribution", "ig_accumulate_bwd");
pub const NOISY_COPIES_FWD: Kernel = kernel("noisy_copies", "noisy_copies_fwd");
pub const NOISY_COPIES_GIVEN_FWD: Kernel = kernel("noisy_copies", "noisy_copies_given_fwd");
pub const NOISY_COPIES_BWD: Kernel = kernel("noisy_copies", "noisy_copies_bwd");
pub const NORMAL_FWD: Kernel = kernel("noisy_copies", "normal_fwd");
pub const PHILOX_FWD: Kernel = kernel("noisy_copies", "philox_fwd");

/// Every entry point the host launches.
pub const ALL: &[Kernel] = &[
    CONV2D_FWD,
    CONV2D_FWD_RELU,
    CONV2D_BWD_INPUT,
    CONV2D_BWD_WEIGHT,
    CONV2D_BWD_BIAS,
    DEPTHWISE_FWD,
    DEPTHWISE_FWD_RELU,
    DEPTHWISE_BWD_INPUT,
    DEPTHWISE_BWD_WEIGHT,
    CONV2D_BWD_INPUT_REDUCE_COPIES,
    MATMUL_FWD,
    RELU_FWD,
    CLAMP_FWD,
    RELU_BWD,
    MAXPOOL2D_FWD,
    MAXPOOL2D_BWD,
    AVGPOOL2D_FWD,
    AVGPOOL2D_BWD,
    GLOBAL_AVGPOOL2D_FWD,
    GLOBAL_AVGPOOL2D_BWD,
    BATCH_NORM_FWD,
    BATCH_NORM_BWD,
    SOFTMAX_FWD,
    SOFTMAX_BWD,
    ADD_FWD,
    SUM_BATCH_FWD,
    CONCAT_FWD,
    CONCAT_BWD,
    GRAD_X_INPUT_BWD,
    IG_PATH_FWD,
    IG_ACCUMULATE_BWD,
    NOISY_COPIES_FWD,
    NOISY_COPIES_GIVEN_FWD,
    NOISY_COPIES_BWD,
    NORMAL_FWD,
    PHILOX_FWD,
];

/// The source of a kernel file.
pub fn source(file: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(f, _)| *f == file).map(|(_, s)| *s)
}

/// The source of a kernel file in the variant storing tensors as `precision`: the file itself
/// for f32, its one [`STORED_F32`] declaration replaced by [`STORED_F16`] for f16. `None` when
/// there is no such file or it does not declare its storage type exactly once.
pub fn source_for(file: &str, precision: Precision) -> Option<Cow<'static, str>> {
    let src = source(file)?;
    match precision {
        Precision::F32 => Some(Cow::Borrowed(src)),
        Precision::F16Storage => (src.matches(STORED_F32).count() == 1)
            .then(|| Cow::Owned(src.replacen(STORED_F32, STORED_F16, 1))),
    }
}
