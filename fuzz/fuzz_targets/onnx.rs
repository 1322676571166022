//! Arbitrary bytes as an ONNX file: decode and validate, build the model, run it if small.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smoothgrad_layers::onnx::{build_model, read_onnx};

#[path = "forward.rs"]
mod forward;

fuzz_target!(|data: &[u8]| {
    let Ok(graph) = read_onnx(data, "fuzz.onnx") else {
        return;
    };
    if let Ok(model) = build_model(&graph) {
        forward::forward_if_small(&model);
    }
});
