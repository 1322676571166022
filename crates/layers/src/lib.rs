//! Layers and model graphs for smoothgrad (see the crate README).
