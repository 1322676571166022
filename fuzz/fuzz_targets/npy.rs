//! Arbitrary bytes as a `.npy` file; what decodes must survive a write and a read unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smoothgrad_saliency::npy::{decode_npy, encode_npy};

fuzz_target!(|data: &[u8]| {
    if let Ok(tensor) = decode_npy(data) {
        let again = decode_npy(&encode_npy(&tensor)).expect("a written .npy reads back");
        assert_eq!(again.dims(), tensor.dims());
        let bits = |t: &smoothgrad_autodiff::Tensor<f32>| -> Vec<u32> {
            t.as_slice().iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(bits(&again), bits(&tensor));
    }
});
