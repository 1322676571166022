//! Bounds on what a model file may declare, checked before anything is allocated or computed from
//! the declaration: a file can claim any size for free, and a service that loads files from its
//! users must not reserve memory, loop or overflow because of a claim.
//!
//! Every loader has a `*_with_limits` entry point taking a [`LoadLimits`]; the plain entry points
//! use [`LoadLimits::default`].
//!
//! ```
//! use smoothgrad_layers::{LayersError, LoadLimits, build_safetensors_model_with_limits};
//!
//! // An architecture whose input claims 10^12 elements is refused before anything is built.
//! let arch = r#"{"format": "smoothgrad-arch/1", "input": [1000000, 1000000], "layers": [{"type": "relu"}]}"#;
//! let weights = b"\x02\x00\x00\x00\x00\x00\x00\x00{}";
//! let err = build_safetensors_model_with_limits(weights, "w.safetensors", arch, "a.json", &LoadLimits::default())
//!     .unwrap_err();
//! assert!(matches!(err, LayersError::Limit { .. }), "{err}");
//! assert!(err.to_string().contains("max_input_elements"), "{err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::{LayersError, Result};

/// Upper bounds on the sizes a model file may declare. The defaults admit every model this
/// project runs with room to spare (VGG-16 has 138 M weights, 553 MB) and refuse claims that
/// cannot be honest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadLimits {
    /// Elements of one stored tensor (a weight, an initializer, a constant).
    pub max_tensor_elements: usize,
    /// Bytes of all stored tensors together, as their payloads declare them.
    pub max_total_weight_bytes: u64,
    /// Nodes of the graph (ONNX nodes, entries of a JSON architecture's `layers`).
    pub max_nodes: usize,
    /// Axes of any tensor or value, the batch axis included.
    pub max_rank: usize,
    /// Any single size: an axis of a tensor or value, a kernel size, stride, padding, dilation or
    /// group count. Keeping each below 2^24 keeps every sum and product of a few of them exact.
    pub max_dim: usize,
    /// Elements of one input sample (the model input without its batch axis).
    pub max_input_elements: usize,
    /// Elements of any value the model computes, for a batch of one.
    pub max_value_elements: usize,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_tensor_elements: 1 << 28,
            max_total_weight_bytes: 4 << 30,
            max_nodes: 100_000,
            max_rank: 8,
            max_dim: 1 << 24,
            max_input_elements: 1 << 26,
            max_value_elements: 1 << 28,
        }
    }
}

impl LoadLimits {
    /// The error for `what` (in `file`) being `value`, over the limit `limit` of `max`.
    pub(crate) fn exceeded(
        file: &str,
        what: impl Into<String>,
        limit: &'static str,
        value: u128,
        max: u128,
    ) -> LayersError {
        // Counts past u64 (a product of several huge sizes) are reported as u64::MAX.
        let narrow = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        LayersError::Limit {
            source_name: file.to_owned(),
            what: what.into(),
            limit,
            value: narrow(value),
            max: narrow(max),
        }
    }

    /// Checks a declared shape (of a tensor or a value named by `what`): its rank, every axis and
    /// its element count against `max_elements` (named `limit` in the message).
    pub(crate) fn check_shape(
        &self,
        file: &str,
        what: &str,
        dims: &[usize],
        limit: &'static str,
        max_elements: usize,
    ) -> Result<usize> {
        let fail = |l: &'static str, value: u128, max: u128| {
            Self::exceeded(file, format!("{what} with shape {dims:?}"), l, value, max)
        };
        if dims.len() > self.max_rank {
            return Err(fail("max_rank", dims.len() as u128, self.max_rank as u128));
        }
        if let Some(&d) = dims.iter().find(|&&d| d > self.max_dim) {
            return Err(fail("max_dim", d as u128, self.max_dim as u128));
        }
        let count = dims
            .iter()
            .try_fold(1u128, |n, &d| n.checked_mul(d as u128))
            .unwrap_or(u128::MAX);
        if count > max_elements as u128 {
            return Err(fail(limit, count, max_elements as u128));
        }
        usize::try_from(count).map_err(|_| fail(limit, count, max_elements as u128))
    }

    /// Checks one size (an option or attribute such as a padding) against `max_dim`.
    pub(crate) fn check_size(&self, file: &str, what: &str, value: u128) -> Result<()> {
        if value > self.max_dim as u128 {
            return Err(Self::exceeded(
                file,
                what,
                "max_dim",
                value,
                self.max_dim as u128,
            ));
        }
        Ok(())
    }

    /// Checks the node count of a graph.
    pub(crate) fn check_nodes(&self, file: &str, count: usize) -> Result<()> {
        if count > self.max_nodes {
            return Err(Self::exceeded(
                file,
                "the graph",
                "max_nodes",
                count as u128,
                self.max_nodes as u128,
            ));
        }
        Ok(())
    }

    /// Adds `bytes` of a stored tensor named `what` to `total`, failing past
    /// `max_total_weight_bytes`.
    pub(crate) fn add_weight_bytes(
        &self,
        file: &str,
        what: &str,
        total: &mut u64,
        bytes: u64,
    ) -> Result<()> {
        *total = total.saturating_add(bytes);
        if *total > self.max_total_weight_bytes {
            return Err(Self::exceeded(
                file,
                format!("the weights up to `{what}`"),
                "max_total_weight_bytes",
                u128::from(*total),
                u128::from(self.max_total_weight_bytes),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_axis_by_axis_and_in_total() {
        let limits = LoadLimits {
            max_rank: 3,
            max_dim: 100,
            ..LoadLimits::default()
        };
        assert_eq!(
            limits
                .check_shape("f", "t", &[2, 3], "max_tensor_elements", 6)
                .unwrap(),
            6
        );
        let msg = |r: Result<usize>| r.unwrap_err().to_string();
        assert_eq!(
            msg(limits.check_shape("f", "t", &[2, 4], "max_tensor_elements", 6)),
            "f: t with shape [2, 4]: 8 exceeds the limit max_tensor_elements = 6"
        );
        assert!(msg(limits.check_shape("f", "t", &[1, 1, 1, 1], "x", 6)).contains("max_rank = 3"));
        assert!(
            msg(limits.check_shape("f", "t", &[0, 101], "x", 6))
                .contains("101 exceeds the limit max_dim = 100")
        );
        // Products past u64 are compared exactly, not wrapped.
        let big = LoadLimits::default();
        let dims = [1 << 24; 5];
        assert!(
            msg(big.check_shape("f", "t", &dims, "max_value_elements", usize::MAX))
                .contains("max_value_elements")
        );
    }

    #[test]
    fn weight_bytes_accumulate() {
        let limits = LoadLimits {
            max_total_weight_bytes: 10,
            ..LoadLimits::default()
        };
        let mut total = 0;
        limits.add_weight_bytes("f", "a", &mut total, 8).unwrap();
        let err = limits
            .add_weight_bytes("f", "b", &mut total, 8)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "f: the weights up to `b`: 16 exceeds the limit max_total_weight_bytes = 10"
        );
    }
}
