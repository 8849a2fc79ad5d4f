//! Label and instance maps: PNG bytes to 16-bit ids, within the decode limits.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use spade_model::io::preprocess::decode_id_png;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(ids) = decode_id_png(bytes, "label", &common::LIMITS) {
        common::assert_fits(&ids);
    }
});
