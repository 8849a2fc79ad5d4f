//! Request validation, in one place: decoding and checking the uploaded images against a
//! model, and turning them into queued tasks. Runs on a blocking thread (decoding is CPU work).

use std::io::Cursor;

use spade_model::io::preprocess::{decode_id_png, decode_photo, DecodeLimits, IdMap};
use spade_model::io::resample::Raster;

use crate::error::ApiError;
use crate::job::{EncodeTask, ImageFormat, OutputSpec, Style, SynthesizeTask};
use crate::models::ModelInfo;
use crate::request::{Fit, SynthesizeUpload};

/// The most pixels per side of a requested output image.
const MAX_OUTPUT_SIDE: u32 = 4096;

pub fn synthesize(
    model: &ModelInfo,
    upload: SynthesizeUpload,
    seed: u64,
    limits: &DecodeLimits,
) -> Result<SynthesizeTask, ApiError> {
    let cfg = &model.config;
    let (h, w) = cfg.output_size();
    let raw_label = decode_label(model, &upload.label, limits)?;
    let mask_size = (raw_label.width, raw_label.height);
    let label = model
        .preprocessor
        .map_dontcare(raw_label.resize_nearest(w, h));
    check_ids(model, &label)?;

    let instance = match (&upload.instance, cfg.no_instance) {
        (Some(_), true) => {
            return Err(ApiError::Unprocessable(
                "instance: this model was trained without instance maps".into(),
            ))
        }
        (Some(bytes), false) => {
            let raw = decode_id_png(bytes, "instance", limits)?;
            Some(raw.resize_nearest(w, h))
        }
        // A painted mask has no instances: each region of one class is one instance.
        (None, false) => Some(label.clone()),
        (None, true) => None,
    };

    let style = match (&upload.options.latent, &upload.style, cfg.use_vae) {
        (Some(_), _, false) | (_, Some(_), false) => {
            return Err(ApiError::Conflict(
                "this model was trained without the VAE: it takes no latent or style image".into(),
            ))
        }
        (Some(_), Some(_), true) => {
            return Err(ApiError::Unprocessable(
                "give either `latent` or `style`, not both".into(),
            ))
        }
        (Some(latent), None, true) => {
            if latent.len() != cfg.z_dim || latent.iter().any(|v| !v.is_finite()) {
                return Err(ApiError::Unprocessable(format!(
                    "latent: expected {} finite numbers, got {}",
                    cfg.z_dim,
                    latent.len()
                )));
            }
            Style::Latent(latent.clone())
        }
        (None, Some(bytes), true) => {
            if !model.has_encoder {
                return Err(no_encoder(model));
            }
            Style::Photo {
                image: photo(model, bytes, limits)?,
                seed,
            }
        }
        (None, None, true) => Style::Seed(seed),
        (None, None, false) => Style::None,
    };

    let opts = &upload.options;
    let size = match (opts.width, opts.height, opts.fit) {
        (Some(w), Some(h), _) => Some(output_size(w, h, limits)?),
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(ApiError::Unprocessable(
                "give both `width` and `height`".into(),
            ))
        }
        (None, None, Some(Fit::Mask)) => {
            Some(output_size(mask_size.0 as u32, mask_size.1 as u32, limits)?)
        }
        (None, None, Some(Fit::Model) | None) => None,
    };
    Ok(SynthesizeTask {
        label,
        instance,
        style,
        output: OutputSpec {
            format: opts.format.unwrap_or(ImageFormat::Png),
            size,
        },
    })
}

pub fn encode_style(
    model: &ModelInfo,
    bytes: &[u8],
    seed: u64,
    limits: &DecodeLimits,
) -> Result<EncodeTask, ApiError> {
    if !model.has_encoder {
        return Err(no_encoder(model));
    }
    Ok(EncodeTask {
        photo: photo(model, bytes, limits)?,
        seed,
    })
}

fn no_encoder(model: &ModelInfo) -> ApiError {
    ApiError::Conflict(format!(
        "model `{}` has no style encoder (it was not trained with --use_vae, or latest_net_E.pth \
         was not provided)",
        model.name
    ))
}

fn photo(
    model: &ModelInfo,
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<candle_core::Tensor, ApiError> {
    let raw = decode_photo(bytes, "style", limits)?;
    Ok(model.preprocessor.photo(&raw, &candle_core::Device::Cpu)?)
}

fn output_size(w: u32, h: u32, limits: &DecodeLimits) -> Result<(usize, usize), ApiError> {
    if w == 0
        || h == 0
        || w > MAX_OUTPUT_SIDE
        || h > MAX_OUTPUT_SIDE
        || u64::from(w) * u64::from(h) > limits.max_pixels
    {
        return Err(ApiError::Unprocessable(format!(
            "output size {w}x{h}: each side must be 1..={MAX_OUTPUT_SIDE} and at most {} pixels in all",
            limits.max_pixels
        )));
    }
    Ok((w as usize, h as usize))
}

/// A label map: ids as grey or palette PNG, or colours of the model's palette.
fn decode_label(model: &ModelInfo, bytes: &[u8], limits: &DecodeLimits) -> Result<IdMap, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::Unprocessable("label: the mask is empty".into()));
    }
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    let header = decoder
        .read_header_info()
        .map_err(|e| ApiError::Unprocessable(format!("label: not a readable PNG: {e}")))?;
    limits.check(header.width, header.height, "label")?;
    match (header.color_type, header.bit_depth) {
        (png::ColorType::Rgb | png::ColorType::Rgba, png::BitDepth::Eight) => {
            let rgb = decode_photo(bytes, "label", limits)?;
            ids_from_colors(model, &rgb)
        }
        (png::ColorType::Grayscale, png::BitDepth::Sixteen) => Err(ApiError::Unprocessable(
            "label: 16-bit label maps are not supported; label ids are 8-bit (grey or palette)"
                .into(),
        )),
        _ => Ok(decode_id_png(bytes, "label", limits)?),
    }
}

fn ids_from_colors(model: &ModelInfo, rgb: &Raster<u8>) -> Result<IdMap, ApiError> {
    let mut ids = Vec::with_capacity(rgb.width * rgb.height);
    for (p, px) in rgb.data.chunks_exact(3).enumerate() {
        let color = [px[0], px[1], px[2]];
        let id = model.classes.id_of_color(color).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "label: colour #{:02x}{:02x}{:02x} at ({}, {}) is not in the palette of model `{}` \
                 (GET /v1/models lists the class colours)",
                color[0],
                color[1],
                color[2],
                p % rgb.width,
                p / rgb.width,
                model.name
            ))
        })?;
        // Class lists hold at most 4096 ids; anything wider fails `check_ids`.
        ids.push(u16::try_from(id).unwrap_or(u16::MAX));
    }
    Ok(Raster::new(rgb.width, rgb.height, 1, ids))
}

fn check_ids(model: &ModelInfo, label: &IdMap) -> Result<(), ApiError> {
    let classes = model.config.label_channels() as i64;
    if let Some(bad) = label.data.iter().find(|&&id| i64::from(id) >= classes) {
        return Err(ApiError::Unprocessable(format!(
            "label: id {bad} is outside the {classes} classes of model `{}` (ids 0..={}{})",
            model.name,
            classes - 1,
            if model.config.contain_dontcare_label {
                ", and 255 for unlabeled"
            } else {
                ""
            }
        )));
    }
    Ok(())
}
