//! Scores a landscape model the way the paper scores semantic image synthesis: run a fixed
//! segmenter on the images it synthesizes for held-out label maps and compare with those
//! maps (pixel accuracy, mean IoU). The ceiling is the segmenter on the real procedural
//! photos of the same maps; a random-weight model of the same architecture is the floor.

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use spade_model::io::preprocess::{to_rgb8, IdMap, Preprocessor};
use spade_model::{Checkpoint, SpadeModel};

use crate::segmenter::{Confusion, Segmenter};
use crate::Landscape;

/// Seed of the held-out maps: the bundled model was trained on seed 1.
pub const HELD_OUT_SEED: u64 = 2;
/// Seed of the photos the segmenter is fitted on.
pub const SEGMENTER_SEED: u64 = 3;

/// Pixel accuracy and mean IoU of one set of images.
#[derive(Debug, Clone, Copy)]
pub struct Score {
    pub pixel_accuracy: f64,
    pub mean_iou: f64,
    /// Per class, `None` where the class is in neither the maps nor the predictions.
    pub iou: [Option<f64>; crate::NUM_CLASSES],
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pixel accuracy {:.3}, mIoU {:.3}",
            self.pixel_accuracy, self.mean_iou
        )
    }
}

/// The segmenter fitted on `count` procedural photos of `size`.
pub fn fit_segmenter(count: usize, size: usize) -> Result<Segmenter> {
    let photos: Vec<Landscape> = (0..count as u64)
        .map(|i| crate::generate(SEGMENTER_SEED, i, size))
        .collect();
    Segmenter::fit(
        photos.iter().map(|p| (&p.image[..], &p.labels[..])),
        size,
        2,
    )
}

/// The first `count` held-out pairs at `size`.
pub fn held_out(count: usize, size: usize) -> Vec<Landscape> {
    (0..count as u64)
        .map(|i| crate::generate(HELD_OUT_SEED, i, size))
        .collect()
}

/// The segmenter's score on `images` (RGB bytes) against the maps of `pairs`.
pub fn score(segmenter: &Segmenter, pairs: &[Landscape], images: &[Vec<u8>]) -> Result<Score> {
    ensure!(
        pairs.len() == images.len(),
        "{} images for {} maps",
        images.len(),
        pairs.len()
    );
    let mut confusion = Confusion::default();
    for (pair, image) in pairs.iter().zip(images) {
        confusion.add(&segmenter.predict(image, pair.size)?, &pair.labels);
    }
    let mut iou = [None; crate::NUM_CLASSES];
    iou.copy_from_slice(&confusion.iou());
    Ok(Score {
        pixel_accuracy: confusion.pixel_accuracy(),
        mean_iou: confusion.mean_iou(),
        iou,
    })
}

/// What `model` synthesizes for each pair's label map, image `i` with style seed `seed + i`
/// (for models with a style encoder), as RGB bytes.
pub fn synthesize(model: &SpadeModel, pairs: &[Landscape], seed: u64) -> Result<Vec<Vec<u8>>> {
    let pre = Preprocessor::new(&model.config);
    pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let ids = IdMap::new(
                pair.size,
                pair.size,
                1,
                pair.labels.iter().map(|&l| u16::from(l)).collect(),
            );
            let semantics = pre.semantics(&[pre.label(&ids)], None, &model.device)?;
            let z = model
                .config
                .use_vae
                .then(|| model.random_z(seed + i as u64, 1))
                .transpose()?;
            let image = model.synthesize(&semantics, z.as_ref())?;
            let rgb = to_rgb8(&image)?.remove(0);
            ensure!(
                (rgb.width, rgb.height) == (pair.size, pair.size),
                "the model makes {}x{} images, the maps are {}x{}",
                rgb.width,
                rgb.height,
                pair.size,
                pair.size
            );
            Ok(rgb.data)
        })
        .collect()
}

/// Mean absolute difference, in 8-bit levels, between two sets of images of the same maps.
pub fn style_difference(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for (x, y) in a.iter().zip(b) {
        sum += x
            .iter()
            .zip(y)
            .map(|(&p, &q)| (f64::from(p) - f64::from(q)).abs())
            .sum::<f64>();
        n += x.len();
    }
    sum / n.max(1) as f64
}

/// The same architecture as `checkpoint` with N(0, 0.02) weights (unit running variances):
/// the floor a trained model must rise above.
pub fn random_weights(checkpoint: &Checkpoint, seed: u64, device: &Device) -> Result<SpadeModel> {
    let mut random = checkpoint.clone();
    let mut n = 0u64;
    for dict in std::iter::once(&mut random.generator).chain(random.encoder.as_mut()) {
        let shapes: Vec<(String, Vec<usize>)> = dict
            .names()
            .map(|name| {
                (
                    name.to_string(),
                    dict.dims(name).unwrap_or_default().to_vec(),
                )
            })
            .collect();
        for (name, shape) in shapes {
            let value = if name.ends_with("running_var") {
                Tensor::ones(shape, DType::F32, device)?
            } else {
                n += 1;
                let count = shape.iter().product();
                Tensor::from_vec(normal(seed.wrapping_add(n), count, 0.02), shape, device)?
            };
            dict.insert(name, value);
        }
    }
    Ok(SpadeModel::from_checkpoint(&random, device, DType::F32)?)
}

fn normal(seed: u64, n: usize, std: f32) -> Vec<f32> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| std * Distribution::<f32>::sample(&rand_distr::StandardNormal, &mut rng))
        .collect()
}
