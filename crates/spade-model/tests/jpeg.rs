//! JPEG photos decode to the pixels Pillow gives (libjpeg-turbo), CMYK included, and
//! malformed files are errors, never panics. Data: `tests/data/make_jpegs.py`.

use std::path::PathBuf;

use spade_model::io::preprocess::{decode_photo, DecodeLimits};
use spade_model::Error;

fn data(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn jpegs_decode_to_pillows_pixels() {
    for (name, width, height) in [("rgb420", 20, 24), ("cmyk", 12, 10)] {
        let rgb = decode_photo(
            &data(&format!("{name}.jpg")),
            name,
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(
            (rgb.width, rgb.height, rgb.channels),
            (width, height, 3),
            "{name}"
        );
        // Bit for bit: the same decoder, upsampling and colour conversion as Pillow.
        assert_eq!(rgb.data, data(&format!("{name}.rgb")), "{name}");
    }
}

#[test]
fn malformed_jpegs_are_errors() {
    let good = data("rgb420.jpg");
    let cases = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("header only", good[..20].to_vec()),
        // Panicked zune-jpeg (the `image` crate's decoder) in its AVX2 inverse DCT.
        ("fuzzer finding", data("zune_idct_panic.jpg")),
    ];
    for (name, bytes) in cases {
        match decode_photo(&bytes, "style", &DecodeLimits::default()) {
            Err(Error::Input { .. }) => {}
            // libjpeg recovers some damaged scans with a warning; an image is fine too.
            Ok(rgb) => assert_eq!(rgb.data.len(), rgb.width * rgb.height * 3, "{name}"),
            Err(other) => panic!("{name}: {other}"),
        }
    }
}

#[test]
fn jpeg_size_is_checked_before_decoding() {
    let limits = DecodeLimits {
        max_side: 16,
        max_pixels: 16 * 16,
    };
    let err = decode_photo(&data("rgb420.jpg"), "style", &limits).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Input { .. }), "{text}");
    assert!(
        text.contains("style") && text.contains("20x24 exceeds"),
        "{text}"
    );
}
