//! Criterion benchmarks for smoothgrad; see `benches/*.rs`.
