//! JPEG photos through libjpeg-turbo (the `mozjpeg` crate), the decoder Pillow uses: the
//! same pixels as the reference pipelines (other decoders round the inverse DCT and chroma
//! upsampling differently, by 1-2 levels on a quarter of the pixels of a 4:2:0 file), and a
//! decoder whose errors come back as errors (zune-jpeg, the `image` crate's, panics on some
//! malformed files). CMYK and YCCK files are converted to RGB as Pillow's `convert('RGB')`
//! does, reading the samples as Adobe's inverted CMYK as Pillow always does.

use mozjpeg::{ColorSpace, Decompress};

use super::preprocess::DecodeLimits;
use super::resample::Raster;
use crate::error::{Error, Result};

/// Whether the bytes start like a JPEG file (SOI followed by a marker).
pub(crate) fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes a JPEG to 8-bit RGB; the size is checked against `limits` before any pixel is
/// decoded. `what` names the input in errors.
pub(crate) fn decode_jpeg(bytes: &[u8], what: &str, limits: &DecodeLimits) -> Result<Raster<u8>> {
    let decode = || -> std::io::Result<Raster<u8>> {
        let jpeg = Decompress::new_mem(bytes)?;
        let (width, height) = jpeg.size();
        limits
            .check(width as u32, height as u32, what)
            .map_err(std::io::Error::other)?;
        let rgb = if matches!(
            jpeg.color_space(),
            ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK
        ) {
            let mut cmyk = jpeg.to_colorspace(ColorSpace::JCS_CMYK)?;
            let pixels: Vec<[u8; 4]> = cmyk.read_scanlines()?;
            cmyk.finish()?;
            pixels
                .into_iter()
                .flat_map(|p| cmyk_to_rgb(p.map(|v| 255 - v)))
                .collect()
        } else {
            let mut rgb = jpeg.rgb()?;
            let pixels: Vec<[u8; 3]> = rgb.read_scanlines()?;
            rgb.finish()?;
            pixels.into_flattened()
        };
        Ok(Raster::new(width, height, 3, rgb))
    };
    // libjpeg's fatal errors unwind out of the decoder (mozjpeg's `unwinding`) with their
    // message, without the panic hook.
    let reason = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(Ok(rgb)) => return Ok(rgb),
        Ok(Err(e)) => e.to_string(),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "libjpeg failed".to_string()),
    };
    Err(Error::input(what, format!("cannot decode JPEG: {reason}")))
}

/// Pillow's CMYK to RGB (of the inverted samples): each channel `(255 - k) - c (255 - k) /
/// 255`, rounded as its `MULDIV255`.
fn cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let nk = 255 - u32::from(k);
    let muldiv255 = |a: u32| {
        let t = a * nk + 128;
        ((t >> 8) + t) >> 8
    };
    [c, m, y].map(|v| nk.saturating_sub(muldiv255(u32::from(v))) as u8)
}
