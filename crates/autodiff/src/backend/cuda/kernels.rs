//! The PTX sources (`kernels/cuda/*.ptx`, compiled into the binary) and the table of every kernel
//! the launcher uses: which entry point of which file. Tests check each entry exists in its file
//! and that every file assembles with ptxas.

/// One kernel: an `.entry` of a PTX file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// File name under `kernels/cuda/`, one module per file.
    pub file: &'static str,
    /// The `.visible .entry` name.
    pub entry: &'static str,
}

const fn kernel(file: &'static str, entry: &'static str) -> Kernel {
    Kernel { file, entry }
}

pub const RELU_FWD: Kernel = kernel("relu.ptx", "relu_fwd_f32");
pub const CLAMP_FWD: Kernel = kernel("relu.ptx", "clamp_fwd_f32");
pub const RELU_BWD: Kernel = kernel("relu.ptx", "relu_bwd_f32");
pub const ADD_FWD: Kernel = kernel("elementwise.ptx", "add_fwd_f32");
pub const SUM_BATCH: Kernel = kernel("elementwise.ptx", "sum_batch_f32");
pub const CONV2D_FWD: Kernel = kernel("conv2d.ptx", "conv2d_fwd_f32");
pub const CONV2D_BWD_INPUT: Kernel = kernel("conv2d.ptx", "conv2d_bwd_input_f32");
pub const CONV2D_BWD_WEIGHT: Kernel = kernel("conv2d.ptx", "conv2d_bwd_weight_f32");
pub const CONV2D_BWD_BIAS: Kernel = kernel("conv2d.ptx", "conv2d_bwd_bias_f32");
pub const DEPTHWISE_FWD: Kernel = kernel("conv2d_depthwise.ptx", "conv2d_depthwise_fwd_f32");
pub const DEPTHWISE_BWD_INPUT: Kernel =
    kernel("conv2d_depthwise.ptx", "conv2d_depthwise_bwd_input_f32");
pub const DEPTHWISE_BWD_WEIGHT: Kernel =
    kernel("conv2d_depthwise.ptx", "conv2d_depthwise_bwd_weight_f32");
pub const CONV2D_BWD_INPUT_REDUCE_COPIES: Kernel = kernel(
    "conv2d_bwd_input_reduce_copies.ptx",
    "conv2d_bwd_input_reduce_copies_f32",
);
pub const MATMUL_FWD: Kernel = kernel("matmul.ptx", "matmul_fwd_f32");
pub const MAXPOOL2D_FWD: Kernel = kernel("maxpool2d.ptx", "maxpool2d_fwd_f32");
pub const MAXPOOL2D_BWD: Kernel = kernel("maxpool2d.ptx", "maxpool2d_bwd_f32");
pub const AVGPOOL2D_FWD: Kernel = kernel("avgpool2d.ptx", "avgpool2d_fwd_f32");
pub const AVGPOOL2D_BWD: Kernel = kernel("avgpool2d.ptx", "avgpool2d_bwd_f32");
pub const GLOBAL_AVG_POOL_FWD: Kernel = kernel("avgpool2d.ptx", "global_avg_pool_fwd_f32");
pub const GLOBAL_AVG_POOL_BWD: Kernel = kernel("avgpool2d.ptx", "global_avg_pool_bwd_f32");
pub const BATCH_NORM_FWD: Kernel = kernel("batch_norm.ptx", "batch_norm_fwd_f32");
pub const BATCH_NORM_BWD: Kernel = kernel("batch_norm.ptx", "batch_norm_bwd_f32");
pub const SOFTMAX_FWD: Kernel = kernel("softmax.ptx", "softmax_fwd_f32");
pub const SOFTMAX_BWD: Kernel = kernel("softmax.ptx", "softmax_bwd_f32");
pub const NOISY_COPIES: Kernel = kernel("noisy_copies.ptx", "noisy_copies_f32");
pub const NOISY_COPIES_GIVEN: Kernel = kernel("noisy_copies.ptx", "noisy_copies_given_f32");
pub const NOISY_COPIES_BWD: Kernel = kernel("noisy_copies.ptx", "noisy_copies_bwd_f32");
pub const PHILOX: Kernel = kernel("noisy_copies.ptx", "philox4x32_10_u32");
pub const NORMAL: Kernel = kernel("noisy_copies.ptx", "normal_f32");

/// Every kernel the launcher uses.
pub const KERNELS: &[Kernel] = &[
    RELU_FWD,
    CLAMP_FWD,
    RELU_BWD,
    ADD_FWD,
    SUM_BATCH,
    CONV2D_FWD,
    CONV2D_BWD_INPUT,
    CONV2D_BWD_WEIGHT,
    CONV2D_BWD_BIAS,
    DEPTHWISE_FWD,
    DEPTHWISE_BWD_INPUT,
    DEPTHWISE_BWD_WEIGHT,
    CONV2D_BWD_INPUT_REDUCE_COPIES,
    MATMUL_FWD,
    MAXPOOL2D_FWD,
    MAXPOOL2D_BWD,
    AVGPOOL2D_FWD,
    AVGPOOL2D_BWD,
    GLOBAL_AVG_POOL_FWD,
    GLOBAL_AVG_POOL_BWD,
    BATCH_NORM_FWD,
    BATCH_NORM_BWD,
    SOFTMAX_FWD,
    SOFTMAX_BWD,
    NOISY_COPIES,
    NOISY_COPIES_GIVEN,
    NOISY_COPIES_BWD,
    PHILOX,
    NORMAL,
];

macro_rules! ptx {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../../../kernels/cuda/", $name)),
        )
    };
}

/// (file name, PTX text) of every kernel file.
pub const SOURCES: &[(&str, &str)] = &[
    ptx!("relu.ptx"),
    ptx!("elementwise.ptx"),
    ptx!("conv2d.ptx"),
    ptx!("conv2d_depthwise.ptx"),
    ptx!("conv2d_bwd_input_reduce_copies.ptx"),
    ptx!("matmul.ptx"),
    ptx!("maxpool2d.ptx"),
    ptx!("avgpool2d.ptx"),
    ptx!("batch_norm.ptx"),
    ptx!("softmax.ptx"),
    ptx!("noisy_copies.ptx"),
];

/// The PTX text of `file`.
pub fn source(file: &str) -> Option<&'static str> {
    SOURCES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, text)| *text)
}

/// The names of the `.visible .entry` points of a PTX text, in order.
pub fn entries(ptx: &str) -> Vec<&str> {
    ptx.lines()
        .filter_map(|line| line.trim_start().strip_prefix(".visible .entry "))
        .map(|rest| rest.split(['(', ' ']).next().unwrap_or(rest).trim())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_launched_kernel_is_an_entry_of_its_file() {
        for k in KERNELS {
            let text = source(k.file).unwrap_or_else(|| panic!("{} is not in SOURCES", k.file));
            assert!(
                entries(text).contains(&k.entry),
                "{} has no `.visible .entry {}`",
                k.file,
                k.entry
            );
        }
    }

    #[test]
    fn every_entry_of_every_file_is_launched() {
        for (file, text) in SOURCES {
            for entry in entries(text) {
                assert!(
                    KERNELS.iter().any(|k| k.file == *file && k.entry == entry),
                    "{file}: entry {entry} is not in the launcher's table"
                );
            }
        }
    }
}
