//! A fixed per-pixel segmenter for landscape photos, standing in for the paper's pretrained
//! segmenters: each pixel's local colour and texture (opponent colours at two window sizes,
//! luminance contrast, horizontal and vertical edge energy, the colour a little above and
//! below) scored by one Gaussian per class
//! with a full covariance (quadratic discriminant analysis), fitted on procedural photos.
//! It looks at the image only, never at where a pixel is.

use anyhow::{bail, ensure, Result};
use nalgebra::{SMatrix, SVector};

use crate::classes::NUM_CLASSES;

/// Features per pixel.
pub const FEATURES: usize = 17;
type Vector = SVector<f64, FEATURES>;
type Matrix = SMatrix<f64, FEATURES, FEATURES>;

/// Box sums over one channel through a summed-area table (windows clipped at the border).
struct Integral {
    size: usize,
    table: Vec<f64>,
}

impl Integral {
    fn new(values: &[f32], size: usize) -> Self {
        let w = size + 1;
        let mut table = vec![0.0; w * w];
        for y in 0..size {
            let mut row = 0.0;
            for x in 0..size {
                row += values[y * size + x] as f64;
                table[(y + 1) * w + x + 1] = table[y * w + x + 1] + row;
            }
        }
        Self { size, table }
    }

    /// Mean over the (2r+1)^2 window round (x, y).
    fn mean(&self, x: usize, y: usize, r: usize) -> f64 {
        self.mean_at(x, y as isize, r)
    }

    /// Mean over the (2r+1)^2 window round (x, y), `y` possibly outside the image (the
    /// window is clipped to it, and to its nearest row when it lies wholly outside).
    fn mean_at(&self, x: usize, y: isize, r: usize) -> f64 {
        let w = self.size + 1;
        let y = y.clamp(0, self.size as isize - 1) as usize;
        let (x0, y0) = (x.saturating_sub(r), y.saturating_sub(r));
        let (x1, y1) = ((x + r + 1).min(self.size), (y + r + 1).min(self.size));
        let t = &self.table;
        let sum = t[y1 * w + x1] - t[y0 * w + x1] - t[y1 * w + x0] + t[y0 * w + x0];
        sum / ((x1 - x0) * (y1 - y0)) as f64
    }
}

/// The feature vector of every pixel of an RGB image, row-major.
pub fn features(image: &[u8], size: usize) -> Result<Vec<Vector>> {
    ensure!(
        image.len() == size * size * 3,
        "image has {} bytes, expected {size}x{size}x3 = {}",
        image.len(),
        size * size * 3
    );
    let n = size * size;
    let px = |i: usize, c: usize| image[i * 3 + c] as f32 / 255.0;
    let lum: Vec<f32> = (0..n)
        .map(|i| (px(i, 0) + px(i, 1) + px(i, 2)) / 3.0)
        .collect();
    let rg: Vec<f32> = (0..n).map(|i| px(i, 0) - px(i, 1)).collect();
    let by: Vec<f32> = (0..n)
        .map(|i| (px(i, 0) + px(i, 1)) / 2.0 - px(i, 2))
        .collect();
    let lum_sq: Vec<f32> = lum.iter().map(|v| v * v).collect();
    let grad = |dx: usize, dy: usize| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let (x, y) = (i % size, i / size);
                let j = (y + dy).min(size - 1) * size + (x + dx).min(size - 1);
                (lum[j] - lum[i]).abs()
            })
            .collect()
    };
    let (gx, gy) = (grad(1, 0), grad(0, 1));
    let [lum, rg, by, lum_sq, gx, gy] =
        [&lum, &rg, &by, &lum_sq, &gx, &gy].map(|v| Integral::new(v, size));
    Ok((0..n)
        .map(|i| {
            let (x, y) = (i % size, i / size);
            let std = |r: usize| {
                let m = lum.mean(x, y, r);
                (lum_sq.mean(x, y, r) - m * m).max(0.0).sqrt()
            };
            Vector::from([
                lum.mean(x, y, 1),
                rg.mean(x, y, 1),
                by.mean(x, y, 1),
                lum.mean(x, y, 7),
                rg.mean(x, y, 7),
                by.mean(x, y, 7),
                lum.mean(x, y, 15),
                rg.mean(x, y, 15),
                by.mean(x, y, 15),
                std(2),
                std(7),
                gx.mean(x, y, 3),
                gy.mean(x, y, 3),
                // What lies above and below: sea under sky, cloud in sky, snow over rock.
                lum.mean_at(x, y as isize - 12, 4),
                by.mean_at(x, y as isize - 12, 4),
                lum.mean_at(x, y as isize + 12, 4),
                by.mean_at(x, y as isize + 12, 4),
            ])
        })
        .collect())
}

/// One class's Gaussian: `score(x) = log prior - log det / 2 - |L^-1 (x - mean)|^2 / 2`.
#[derive(Debug, Clone)]
struct ClassModel {
    log_prior: f64,
    mean: Vector,
    /// Inverse of the Cholesky factor of the covariance.
    whiten: Matrix,
    half_log_det: f64,
}

#[derive(Debug, Clone)]
pub struct Segmenter {
    /// `None` for classes never seen while fitting: they are never predicted.
    classes: Vec<Option<ClassModel>>,
}

/// Covariance floor: keeps a flat class (a clear sky) from a singular covariance.
const RIDGE: f64 = 1e-5;

impl Segmenter {
    /// Fits the class Gaussians on `(rgb, labels)` pairs of `size` x `size`, using every
    /// `stride`-th pixel in each direction.
    pub fn fit<'a>(
        pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        size: usize,
        stride: usize,
    ) -> Result<Self> {
        let stride = stride.max(1);
        let mut count = [0f64; NUM_CLASSES];
        let mut sum = [Vector::zeros(); NUM_CLASSES];
        let mut outer = [Matrix::zeros(); NUM_CLASSES];
        for (image, labels) in pairs {
            ensure!(
                labels.len() == size * size,
                "label map has {} pixels, expected {}",
                labels.len(),
                size * size
            );
            let f = features(image, size)?;
            for y in (0..size).step_by(stride) {
                for x in (0..size).step_by(stride) {
                    let i = y * size + x;
                    let c = labels[i] as usize;
                    ensure!(
                        c < NUM_CLASSES,
                        "label {c} at ({x}, {y}) is not below {NUM_CLASSES}"
                    );
                    count[c] += 1.0;
                    sum[c] += f[i];
                    outer[c] += f[i] * f[i].transpose();
                }
            }
        }
        let total: f64 = count.iter().sum();
        if total == 0.0 {
            bail!("no pixels to fit the segmenter on");
        }
        let classes = (0..NUM_CLASSES)
            .map(|c| {
                // Too few pixels for a covariance: leave the class out rather than guess.
                if count[c] < 2.0 * FEATURES as f64 {
                    return None;
                }
                let mean = sum[c] / count[c];
                let cov =
                    outer[c] / count[c] - mean * mean.transpose() + Matrix::identity() * RIDGE;
                let chol = cov.cholesky()?;
                let l = chol.l();
                let whiten = l.try_inverse()?;
                let half_log_det = l.diagonal().iter().map(|d| d.ln()).sum();
                Some(ClassModel {
                    log_prior: (count[c] / total).ln(),
                    mean,
                    whiten,
                    half_log_det,
                })
            })
            .collect();
        Ok(Self { classes })
    }

    /// The most likely class of every pixel.
    pub fn predict(&self, image: &[u8], size: usize) -> Result<Vec<u8>> {
        Ok(features(image, size)?
            .iter()
            .map(|f| {
                let mut best = (f64::NEG_INFINITY, 0u8);
                for (c, model) in self.classes.iter().enumerate() {
                    if let Some(m) = model {
                        let z = m.whiten * (f - m.mean);
                        let score = m.log_prior - m.half_log_det - 0.5 * z.norm_squared();
                        if score > best.0 {
                            best = (score, c as u8);
                        }
                    }
                }
                best.1
            })
            .collect())
    }
}

/// Confusion counts of predicted against true labels.
#[derive(Debug, Clone)]
pub struct Confusion {
    /// `counts[truth * NUM_CLASSES + predicted]`.
    counts: Vec<u64>,
}

impl Default for Confusion {
    fn default() -> Self {
        Self {
            counts: vec![0; NUM_CLASSES * NUM_CLASSES],
        }
    }
}

impl Confusion {
    pub fn add(&mut self, predicted: &[u8], truth: &[u8]) {
        for (&p, &t) in predicted.iter().zip(truth) {
            self.counts[t as usize * NUM_CLASSES + p as usize] += 1;
        }
    }

    /// Correct pixels over all pixels.
    pub fn pixel_accuracy(&self) -> f64 {
        let correct: u64 = (0..NUM_CLASSES)
            .map(|c| self.counts[c * NUM_CLASSES + c])
            .sum();
        correct as f64 / self.counts.iter().sum::<u64>().max(1) as f64
    }

    /// Intersection over union per class; `None` where the class is in neither map.
    pub fn iou(&self) -> Vec<Option<f64>> {
        (0..NUM_CLASSES)
            .map(|c| {
                let tp = self.counts[c * NUM_CLASSES + c];
                let truth: u64 = self.counts[c * NUM_CLASSES..(c + 1) * NUM_CLASSES]
                    .iter()
                    .sum();
                let predicted: u64 = (0..NUM_CLASSES)
                    .map(|t| self.counts[t * NUM_CLASSES + c])
                    .sum();
                let union = truth + predicted - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over the classes present in either map.
    pub fn mean_iou(&self) -> f64 {
        let present: Vec<f64> = self.iou().into_iter().flatten().collect();
        present.iter().sum::<f64>() / present.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_scores_follow_their_definitions() {
        let mut c = Confusion::default();
        // truth: 0 0 1 1, predicted: 0 1 1 1 -> accuracy 3/4; IoU(0) = 1/2, IoU(1) = 2/3.
        c.add(&[0, 1, 1, 1], &[0, 0, 1, 1]);
        assert!((c.pixel_accuracy() - 0.75).abs() < 1e-12);
        let iou = c.iou();
        assert_eq!(iou[2], None);
        assert!(
            (iou[0].unwrap() - 0.5).abs() < 1e-12 && (iou[1].unwrap() - 2.0 / 3.0).abs() < 1e-12
        );
        assert!((c.mean_iou() - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn segmenter_separates_flat_colours_and_textures() {
        // Left half flat blue (sky), right half noisy green (grass).
        let size = 32;
        let noise = crate::noise::Noise::new(5);
        let mut image = vec![0u8; size * size * 3];
        let mut labels = vec![0u8; size * size];
        for y in 0..size {
            for x in 0..size {
                let i = y * size + x;
                let (rgb, class) = if x < size / 2 {
                    ([90, 170, 240], crate::classes::SKY)
                } else {
                    let g = (120.0 + 60.0 * noise.grain(x, y)) as u8;
                    ([40, g, 30], crate::classes::GRASS)
                };
                image[i * 3..i * 3 + 3].copy_from_slice(&rgb);
                labels[i] = class;
            }
        }
        let seg = Segmenter::fit([(&image[..], &labels[..])], size, 1).unwrap();
        let predicted = seg.predict(&image, size).unwrap();
        let mut c = Confusion::default();
        c.add(&predicted, &labels);
        assert!(c.pixel_accuracy() > 0.9, "accuracy {}", c.pixel_accuracy());
        assert!(seg.predict(&image[..10], size).is_err());
    }
}
