//! Typed reads of node attributes with ONNX's defaults, each failure an
//! [`LayersError::Attribute`] naming the file, the node and the attribute.

use super::ir::{Attribute, OnnxNode};
use crate::error::{LayersError, Result};

/// A node's attributes, with the file name for messages.
pub(crate) struct NodeAttributes<'a> {
    pub source_name: &'a str,
    pub node: &'a OnnxNode,
}

impl<'a> NodeAttributes<'a> {
    pub fn error(&self, attribute: &str, reason: impl Into<String>) -> LayersError {
        LayersError::Attribute {
            source_name: self.source_name.to_owned(),
            node: self.node.name.clone(),
            attribute: attribute.to_owned(),
            reason: reason.into(),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Attribute> {
        self.node.attributes.get(name)
    }

    fn wrong_kind(&self, name: &str, expected: &str, found: &Attribute) -> LayersError {
        self.error(name, format!("expected {expected}, found {}", found.kind()))
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.get(name) {
            None => Ok(default),
            Some(a) => a.as_int().ok_or_else(|| self.wrong_kind(name, "an int", a)),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Option<&'a [i64]>> {
        match self.get(name) {
            None => Ok(None),
            Some(a) => a
                .as_ints()
                .map(Some)
                .ok_or_else(|| self.wrong_kind(name, "a list of ints", a)),
        }
    }

    /// A float attribute as the shortest decimal that rounds to the stored f32, which is what
    /// exporters wrote (`epsilon` 1e-5 rather than 9.99999974e-6).
    pub fn float(&self, name: &str, default: f64) -> Result<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(a) => a
                .as_float()
                .map(f32_as_written)
                .ok_or_else(|| self.wrong_kind(name, "a float", a)),
        }
    }

    pub fn string(&self, name: &str, default: &'a str) -> Result<&'a str> {
        match self.get(name) {
            None => Ok(default),
            Some(a) => a
                .as_str()
                .ok_or_else(|| self.wrong_kind(name, "a string", a)),
        }
    }

    /// A boolean given as an int attribute (0 or 1).
    pub fn flag(&self, name: &str, default: bool) -> Result<bool> {
        match self.int(name, i64::from(default))? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.error(name, format!("must be 0 or 1, got {other}"))),
        }
    }

    /// A two-element list of non-negative ints (the two spatial axes), `default` when absent.
    pub fn pair(&self, name: &str, default: [usize; 2]) -> Result<[usize; 2]> {
        match self.ints(name)? {
            None => Ok(default),
            Some(values) => {
                let v = self.sizes(name, values)?;
                <[usize; 2]>::try_from(v.as_slice()).map_err(|_| {
                    self.error(
                        name,
                        format!("has {values:?}; only 2-D (two spatial axes) is supported"),
                    )
                })
            }
        }
    }

    /// A list of ints that must all be non-negative.
    pub fn sizes(&self, name: &str, values: &[i64]) -> Result<Vec<usize>> {
        values
            .iter()
            .map(|&v| {
                usize::try_from(v)
                    .map_err(|_| self.error(name, format!("has a negative entry: {values:?}")))
            })
            .collect()
    }
}

/// `value` widened to f64 through its shortest decimal form (exact for 0, 6, 1, ±inf).
pub(crate) fn f32_as_written(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(f64::from(value))
}

#[cfg(test)]
mod tests {
    use super::f32_as_written;

    #[test]
    fn floats_widen_as_written() {
        assert_eq!(f32_as_written(1e-5), 1e-5);
        assert_eq!(f32_as_written(1e-3), 1e-3);
        assert_eq!(f32_as_written(6.0), 6.0);
        assert_eq!(f32_as_written(f32::INFINITY), f64::INFINITY);
        assert_eq!(f32_as_written(f32::NEG_INFINITY), f64::NEG_INFINITY);
        assert_ne!(f64::from(1e-5f32), 1e-5);
    }
}
