//! Arbitrary bytes as a JSON architecture and a safetensors file, separated by the first NUL
//! byte (which JSON text cannot contain): build the model, run it if small.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smoothgrad_layers::build_safetensors_model;

#[path = "forward.rs"]
mod forward;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (arch, weights) = data.split_at(split);
    let Ok(arch) = std::str::from_utf8(arch) else {
        return;
    };
    let weights = weights.get(1..).unwrap_or_default();
    if let Ok(model) = build_safetensors_model(weights, "fuzz.safetensors", arch, "fuzz.arch.json")
    {
        forward::forward_if_small(&model);
    }
});
