//! Style photos: PNG / JPEG / WebP / BMP / PNM bytes to RGB, within the decode limits.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use spade_model::io::preprocess::decode_photo;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(rgb) = decode_photo(bytes, "style", &common::LIMITS) {
        common::assert_fits(&rgb);
    }
});
