//! Style photos: PNG / JPEG / WebP / BMP / PNM bytes to RGB, within the decode limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spade_model::io::preprocess::{decode_photo, DecodeLimits};

const LIMITS: DecodeLimits = DecodeLimits {
    max_side: 1024,
    max_pixels: 512 * 512,
};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(rgb) = decode_photo(bytes, "style", &LIMITS) {
        let pixels = rgb.width as u64 * rgb.height as u64;
        assert!(pixels <= LIMITS.max_pixels);
        assert_eq!(rgb.data.len() as u64, pixels * rgb.channels as u64);
    }
});
