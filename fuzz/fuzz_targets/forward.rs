//! Shared by the model targets: run one forward pass when the model is small enough to be quick,
//! so that shape-inference bugs (a shape the builder accepted but a layer cannot run) surface.

use smoothgrad_autodiff::{Tape, Tensor};
use smoothgrad_layers::Model;

/// Largest input sample, any intermediate value, and forward FLOPs a fuzzed model may have and
/// still be run: bounds each execution to well under a millisecond of arithmetic.
const MAX_INPUT_ELEMENTS: usize = 1 << 12;
const MAX_VALUE_ELEMENTS: usize = 1 << 16;
const MAX_FORWARD_FLOPS: u64 = 1 << 22;

/// Runs `model` once on a batch of one deterministic sample if it is small; errors are fine
/// (they are typed), panics are what the fuzzer looks for.
pub fn forward_if_small(model: &Model<f32>) {
    let elements = |dims: &[usize]| {
        dims.iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .unwrap_or(usize::MAX)
    };
    if elements(model.input_dims()) > MAX_INPUT_ELEMENTS
        || model
            .value_dims()
            .iter()
            .any(|d| elements(d) > MAX_VALUE_ELEMENTS)
        || model.flops_per_sample().forward > MAX_FORWARD_FLOPS
    {
        return;
    }
    let dims: Vec<usize> = [&[1], model.input_dims()].concat();
    let n = elements(&dims);
    let values: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    let Ok(x) = Tensor::from_vec(values, &dims) else {
        return;
    };
    let mut tape = Tape::new();
    let x = tape.var(x);
    let _ = model.forward(&mut tape, &x);
}
