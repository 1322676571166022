//! Operations: each file holds an op's tape API and its backward, calling backend kernels.

pub mod geometry;
