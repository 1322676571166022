//! Compute backends. The CPU backend is always built; GPU backends come behind cargo features.

pub mod cpu;
