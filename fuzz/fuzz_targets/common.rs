//! What the decoding targets share: small decode limits, and the check that a decoded image
//! fits them.

use spade_model::io::preprocess::DecodeLimits;
use spade_model::io::resample::Raster;

/// Small enough that a run explores many inputs; the memory bound per input scales with it.
pub const LIMITS: DecodeLimits = DecodeLimits {
    max_side: 1024,
    max_pixels: 512 * 512,
};

/// A decoded image is within [`LIMITS`] and holds exactly its pixels.
#[allow(dead_code)] // `request` decodes through the server's validation instead.
pub fn assert_fits<T>(image: &Raster<T>) {
    let pixels = (image.width * image.height) as u64;
    assert!(image.width.max(image.height) as u64 <= u64::from(LIMITS.max_side));
    assert!(pixels <= LIMITS.max_pixels);
    assert_eq!(image.data.len() as u64, pixels * image.channels as u64);
}
