//! The official test-time input pipeline: label, instance and photo files to the tensors
//! the networks take, pixel for pixel as `Pix2pixDataset` + `preprocess_input` make them.
//!
//! * Label maps are PNGs of class ids (8-bit grey, or palette indices). Value 255 becomes
//!   `label_nc`, the dontcare class, as the reference does for every dataset.
//! * ADE20K: the reference means to shift ids by -1 but never stores the result, so its
//!   released models were trained on the PNG values as they are (0 = unknown); we do the same.
//! * Instance maps (8-bit or 16-bit grey) only contribute their edges.
//! * Geometry follows `preprocess_mode` with `load_size`; crops take the top-left corner
//!   (the reference crops at random, which is the top-left whenever `load_size == crop_size`,
//!   as at test time) and nothing is flipped.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use image::ImageReader;

use crate::error::{Error, Result};
use crate::io::config::{round_half_even, Config, PreprocessMode};
use crate::io::resample::Raster;

/// How large an input file may be once decoded: checked from the header, before any
/// pixel is decoded, so a small compressed file cannot claim gigabytes.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_side: u32,
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_side: 8192,
            max_pixels: 8192 * 8192,
        }
    }
}

impl DecodeLimits {
    /// Checks a header's dimensions against the limits.
    pub fn check(&self, width: u32, height: u32, what: &str) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::input(
                what,
                format!("empty image ({width}x{height})"),
            ));
        }
        if width > self.max_side
            || height > self.max_side
            || u64::from(width) * u64::from(height) > self.max_pixels
        {
            return Err(Error::input(
                what,
                format!(
                    "{width}x{height} exceeds the limit of {} pixels per side and {} pixels",
                    self.max_side, self.max_pixels
                ),
            ));
        }
        Ok(())
    }

    /// Bytes a decoder may allocate: RGBA at 16 bits for the largest allowed image.
    fn max_alloc(&self) -> u64 {
        self.max_pixels * 8
    }
}

/// A map of integer ids (one channel).
pub type IdMap = Raster<u16>;

/// Decodes a label or instance PNG to its raw ids: grey values (1 to 16 bit) or palette
/// indices (1 to 8 bit), never colours.
pub fn decode_id_png(bytes: &[u8], what: &str, limits: &DecodeLimits) -> Result<IdMap> {
    let fail = |reason: String| Error::input(what, reason);
    let png_limits = png::Limits {
        bytes: limits.max_alloc() as usize,
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), png_limits);
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| fail(format!("not a readable PNG: {e}")))?;
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    limits.check(width, height, what)?;
    let (color, depth) = (info.color_type, info.bit_depth);
    let bits = depth as u8;
    // Palette images give their indices; greyscale below 8 bits is scaled to 0-255, as
    // Pillow (and so the reference loader) reads it: 4-bit 15 is 255.
    let scale_grey = match (color, depth) {
        (png::ColorType::Indexed, png::BitDepth::Sixteen) => {
            return Err(fail("a palette PNG cannot have 16-bit indices".to_string()))
        }
        (png::ColorType::Indexed, _) => false,
        (png::ColorType::Grayscale, _) => bits < 8,
        _ => {
            return Err(fail(format!(
                "expected a greyscale or palette PNG of ids (1 to 16 bits), got {color:?} at \
                 {depth:?} bits"
            )))
        }
    };
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| fail("image too large".to_string()))?;
    let mut buf = vec![0; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| fail(format!("corrupt PNG data: {e}")))?;
    let buf = &buf[..frame.buffer_size()];
    let (w, h) = (width as usize, height as usize);
    let mut data = Vec::with_capacity(w * h);
    let max = (1u16 << bits.min(8)) - 1;
    for row in buf.chunks_exact(frame.line_size).take(h) {
        match bits {
            16 => data.extend(
                row.chunks_exact(2)
                    .take(w)
                    .map(|b| u16::from_be_bytes([b[0], b[1]])),
            ),
            8 => data.extend(row[..w].iter().map(|&v| u16::from(v))),
            // Packed rows: the leftmost pixel in the most significant bits.
            _ => data.extend((0..w).map(|x| {
                let bit = x * bits as usize;
                let v = u16::from(row[bit / 8] >> (8 - bits as usize - bit % 8)) & max;
                if scale_grey {
                    v * 255 / max
                } else {
                    v
                }
            })),
        }
    }
    Ok(Raster::new(w, h, 1, data))
}

/// Decodes a photo (PNG, JPEG, WebP, BMP or PNM) to 8-bit RGB, as PIL's `convert('RGB')`;
/// JPEGs through libjpeg-turbo as Pillow ([`super::jpeg`]).
pub fn decode_photo(bytes: &[u8], what: &str, limits: &DecodeLimits) -> Result<Raster<u8>> {
    if super::jpeg::is_jpeg(bytes) {
        return super::jpeg::decode_jpeg(bytes, what, limits);
    }
    let fail = |reason: String| Error::input(what, reason);
    let open = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| fail(e.to_string()))
    };
    let (width, height) = open()?
        .into_dimensions()
        .map_err(|e| fail(format!("cannot read image header: {e}")))?;
    limits.check(width, height, what)?;
    let mut reader = open()?;
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(limits.max_side);
    decode_limits.max_image_height = Some(limits.max_side);
    decode_limits.max_alloc = Some(limits.max_alloc());
    reader.limits(decode_limits);
    let image = reader
        .decode()
        .map_err(|e| fail(format!("cannot decode image: {e}")))?
        .to_rgb8();
    let (w, h) = (image.width() as usize, image.height() as usize);
    Ok(Raster::new(w, h, 3, image.into_raw()))
}

/// Resize and crop sizes derived from `preprocess_mode` for one input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    resize: (usize, usize),
    crop: Option<usize>,
}

/// Where one training sample is cropped and whether it is mirrored (the official
/// `get_params`); the default is what test time does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Augmentation {
    pub crop_x: usize,
    pub crop_y: usize,
    pub flip: bool,
}

/// The transforms of one model's config: test time by default, one training sample's
/// random crop and flip with [`with_augmentation`](Self::with_augmentation).
#[derive(Debug, Clone)]
pub struct Preprocessor {
    config: Config,
    augmentation: Augmentation,
}

impl Preprocessor {
    pub fn new(config: &Config) -> Self {
        Self {
            config: config.clone(),
            augmentation: Augmentation::default(),
        }
    }

    pub fn with_augmentation(&self, augmentation: Augmentation) -> Self {
        Self {
            config: self.config.clone(),
            augmentation,
        }
    }

    /// The largest crop offsets `(x, y)` for an input of this size: how far a random crop
    /// may move inside the resized image (0 when the mode does not crop).
    pub fn crop_room(&self, width: usize, height: usize) -> (usize, usize) {
        let g = self.geometry(width, height);
        match g.crop {
            Some(size) => (
                g.resize.0.saturating_sub(size),
                g.resize.1.saturating_sub(size),
            ),
            None => (0, 0),
        }
    }

    fn geometry(&self, width: usize, height: usize) -> Geometry {
        let cfg = &self.config;
        let load = cfg.load_size;
        let resize = match cfg.preprocess_mode {
            PreprocessMode::ResizeAndCrop => (load, load),
            PreprocessMode::ScaleWidth | PreprocessMode::ScaleWidthAndCrop if width != load => {
                (load, (load as f64 * height as f64 / width as f64) as usize)
            }
            PreprocessMode::ScaleShortside | PreprocessMode::ScaleShortsideAndCrop => {
                let short = width.min(height);
                if short == load {
                    (width, height)
                } else {
                    // As the reference: only the long side is rescaled, the short one is kept.
                    let long = (load as f64 * width.max(height) as f64 / short as f64) as usize;
                    if width == short {
                        (short, long)
                    } else {
                        (long, short)
                    }
                }
            }
            PreprocessMode::Fixed => (
                cfg.crop_size,
                round_half_even(cfg.crop_size as f64 / cfg.aspect_ratio),
            ),
            PreprocessMode::None => {
                let to_base = |v: usize| (round_half_even(v as f64 / 32.0) * 32).max(32);
                (to_base(width), to_base(height))
            }
            _ => (width, height),
        };
        let crop = matches!(
            cfg.preprocess_mode,
            PreprocessMode::ResizeAndCrop
                | PreprocessMode::Crop
                | PreprocessMode::ScaleWidthAndCrop
                | PreprocessMode::ScaleShortsideAndCrop
        )
        .then_some(cfg.crop_size);
        Geometry { resize, crop }
    }

    fn apply<T: Copy + Default>(
        &self,
        raster: &Raster<T>,
        resize: impl Fn(&Raster<T>, usize, usize) -> Raster<T>,
    ) -> Raster<T> {
        let g = self.geometry(raster.width, raster.height);
        let resized = resize(raster, g.resize.0, g.resize.1);
        let Augmentation {
            crop_x,
            crop_y,
            flip,
        } = self.augmentation;
        let cropped = match g.crop {
            Some(size) => resized.crop(crop_x, crop_y, size, size),
            None => resized,
        };
        if flip {
            cropped.flip_horizontal()
        } else {
            cropped
        }
    }

    /// Label ids after the geometric transforms, with 255 mapped to `label_nc`.
    pub fn label(&self, raw: &IdMap) -> IdMap {
        self.map_dontcare(self.apply(raw, Raster::resize_nearest))
    }

    /// Maps id 255 to `label_nc`, the dontcare class, as the reference loader does.
    pub fn map_dontcare(&self, mut label: IdMap) -> IdMap {
        for v in &mut label.data {
            if *v == 255 {
                // `label_nc` is at most 4096 (`Config`'s bound): it fits.
                *v = self.config.label_nc as u16;
            }
        }
        label
    }

    /// Instance ids after the geometric transforms.
    pub fn instance(&self, raw: &IdMap) -> IdMap {
        self.apply(raw, Raster::resize_nearest)
    }

    /// A photo as a 1 x 3 x H x W tensor in [-1, 1] (bicubic resize, `Normalize(0.5, 0.5)`).
    pub fn photo(&self, raw: &Raster<u8>, device: &Device) -> Result<Tensor> {
        let rgb = self.apply(raw, Raster::resize_bicubic);
        photo_tensor(&rgb, device)
    }

    /// The generator input for a batch: one-hot labels (plus dontcare) and, unless the
    /// model has `no_instance`, the instance edge channel.
    pub fn semantics(
        &self,
        labels: &[IdMap],
        instances: Option<&[IdMap]>,
        device: &Device,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let Some(first) = labels.first() else {
            return Err(Error::input("label", "empty batch"));
        };
        let (w, h) = (first.width, first.height);
        let instances = match (instances, cfg.no_instance) {
            (Some(_), true) => {
                return Err(Error::input(
                    "instance",
                    "this model was trained without instance maps (no_instance)",
                ))
            }
            (None, false) => {
                return Err(Error::input(
                    "instance",
                    "this model needs an instance map for every label map",
                ))
            }
            (Some(inst), false) if inst.len() != labels.len() => {
                return Err(Error::input(
                    "instance",
                    format!(
                        "{} instance maps for {} label maps",
                        inst.len(),
                        labels.len()
                    ),
                ))
            }
            (instances, _) => instances,
        };
        let classes = cfg.label_channels();
        let channels = cfg.semantic_nc();
        let plane = w * h;
        let mut data = vec![0f32; labels.len() * channels * plane];
        for (i, label) in labels.iter().enumerate() {
            check_size(label, w, h, "label")?;
            let sample = &mut data[i * channels * plane..(i + 1) * channels * plane];
            for (p, &id) in label.data.iter().enumerate() {
                if usize::from(id) >= classes {
                    return Err(Error::input(
                        "label",
                        format!(
                            "label id {id} at ({}, {}) is outside the model's {classes} classes \
                             (0..={}{})",
                            p % w,
                            p / w,
                            classes - 1,
                            if cfg.contain_dontcare_label {
                                "; 255 is the dontcare class"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                sample[id as usize * plane + p] = 1.0;
            }
            if let Some(instances) = instances {
                check_size(&instances[i], w, h, "instance")?;
                let edge = &mut sample[classes * plane..];
                mark_edges(&instances[i], edge);
            }
        }
        Ok(Tensor::from_vec(
            data,
            (labels.len(), channels, h, w),
            device,
        )?)
    }
}

fn check_size(map: &IdMap, w: usize, h: usize, what: &str) -> Result<()> {
    if (map.width, map.height) != (w, h) {
        return Err(Error::input(
            what,
            format!(
                "is {}x{} but the batch's label maps are {w}x{h}",
                map.width, map.height
            ),
        ));
    }
    Ok(())
}

/// The reference `get_edges`: both pixels of every horizontally or vertically adjacent
/// pair with different instance ids are edges.
fn mark_edges(instance: &IdMap, edge: &mut [f32]) {
    let (w, h) = (instance.width, instance.height);
    let t = &instance.data;
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            if x + 1 < w && t[p] != t[p + 1] {
                edge[p] = 1.0;
                edge[p + 1] = 1.0;
            }
            if y + 1 < h && t[p] != t[p + w] {
                edge[p] = 1.0;
                edge[p + w] = 1.0;
            }
        }
    }
}

/// `ToTensor` + `Normalize((0.5,)*3, (0.5,)*3)`: 1 x 3 x H x W in [-1, 1].
pub fn photo_tensor(rgb: &Raster<u8>, device: &Device) -> Result<Tensor> {
    let (w, h) = (rgb.width, rgb.height);
    let mut data = vec![0f32; 3 * w * h];
    for (p, px) in rgb.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * w * h + p] = (f32::from(px[c]) / 255.0 - 0.5) / 0.5;
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
}

/// Images in [-1, 1] (N x 3 x H x W) to 8-bit RGB rasters as the reference's `tensor2im`
/// does it: `(x + 1) / 2 * 255`, clipped, truncated.
pub fn to_rgb8(images: &Tensor) -> Result<Vec<Raster<u8>>> {
    let (n, c, h, w) = images.dims4()?;
    if c != 3 {
        return Err(Error::input(
            "image",
            format!("expected 3 channels, got {c}"),
        ));
    }
    let values = images
        .to_dtype(candle_core::DType::F32)?
        .permute((0, 2, 3, 1))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(values
        .chunks_exact(h * w * 3)
        .take(n)
        .map(|img| {
            let data = img
                .iter()
                .map(|&v| ((v + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0) as u8)
                .collect();
            Raster::new(w, h, 3, data)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(mode: &str, load: usize, crop: usize, w: usize, h: usize) -> Geometry {
        let config = Config {
            preprocess_mode: mode.parse().unwrap(),
            load_size: load,
            crop_size: crop,
            aspect_ratio: 2.0,
            ..Config::default()
        };
        Preprocessor::new(&config).geometry(w, h)
    }

    #[test]
    fn geometry_follows_the_reference_transforms() {
        let g = geometry("resize_and_crop", 256, 256, 640, 480);
        assert_eq!((g.resize, g.crop), ((256, 256), Some(256)));
        let g = geometry("scale_width_and_crop", 256, 256, 640, 480);
        assert_eq!((g.resize, g.crop), ((256, 192), Some(256)));
        let g = geometry("scale_width", 256, 256, 256, 100);
        assert_eq!((g.resize, g.crop), ((256, 100), None));
        // The reference keeps the short side and rescales only the long one.
        let g = geometry("scale_shortside_and_crop", 256, 256, 640, 480);
        assert_eq!(g.resize, (341, 480));
        let g = geometry("fixed", 512, 512, 2048, 1024);
        assert_eq!((g.resize, g.crop), ((512, 256), None));
        let g = geometry("none", 256, 256, 100, 47);
        assert_eq!((g.resize, g.crop), ((96, 32), None));
        let g = geometry("crop", 256, 128, 300, 200);
        assert_eq!((g.resize, g.crop), ((300, 200), Some(128)));
    }

    #[test]
    fn edges_mark_both_sides_of_each_boundary() {
        let inst = IdMap::new(3, 2, 1, vec![1, 1, 2, 1, 1, 1]);
        let mut edge = vec![0f32; 6];
        mark_edges(&inst, &mut edge);
        assert_eq!(edge, vec![0., 1., 1., 0., 0., 1.]);
    }

    #[test]
    fn dontcare_255_becomes_label_nc() {
        let config = Config {
            label_nc: 12,
            crop_size: 64,
            load_size: 64,
            ..Config::default()
        };
        let label = Preprocessor::new(&config).label(&IdMap::new(64, 64, 1, vec![255; 64 * 64]));
        assert!(label.data.iter().all(|&v| v == 12));
    }
}
