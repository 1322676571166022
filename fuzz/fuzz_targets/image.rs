//! Arbitrary bytes as a PNG or JPEG picture. The first byte picks the options (1 or 3 channels,
//! resized or not), the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smoothgrad_saliency::image_io::{ImageOptions, decode_image};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&options, file)) = data.split_first() else {
        return;
    };
    let options = ImageOptions {
        channels: if options & 1 == 0 { 3 } else { 1 },
        resize: (options & 2 != 0).then(|| {
            [
                usize::from(options >> 4) + 1,
                usize::from(options >> 2 & 3) + 1,
            ]
        }),
    };
    if let Ok(x) = decode_image(file, Path::new("fuzz.png"), &options) {
        assert_eq!(x.dims().first(), Some(&options.channels));
        assert!(x.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));
    }
});
