//! Label and instance maps: PNG bytes to 16-bit ids, within the decode limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spade_model::io::preprocess::{decode_id_png, DecodeLimits};

/// Small enough that a run explores many inputs; the bound scales with it.
const LIMITS: DecodeLimits = DecodeLimits {
    max_side: 1024,
    max_pixels: 512 * 512,
};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(ids) = decode_id_png(bytes, "label", &LIMITS) {
        let pixels = ids.width as u64 * ids.height as u64;
        assert!(ids.width.max(ids.height) as u64 <= u64::from(LIMITS.max_side));
        assert!(pixels <= LIMITS.max_pixels);
        assert_eq!(ids.data.len() as u64, pixels * ids.channels as u64);
    }
});
