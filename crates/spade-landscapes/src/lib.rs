//! Procedural landscapes for the bundled model: photo-like images with pixel-exact label
//! maps (sky, cloud, mountain, snow, rock, grass, tree, bush, sea, water, sand, dirt), the
//! dataset writer behind `spade make-dataset landscapes`, and a per-pixel segmenter that
//! scores synthesized landscapes the way the paper scores its outputs; and the bundled
//! default model trained on them.
//!
//! `noise` → `style`, `scene` (layout) → `render` → `dataset`; `segmenter` reads images only.

pub mod bundled;
pub mod classes;
pub mod dataset;
pub mod noise;
pub mod quality;
pub mod render;
pub mod scene;
pub mod segmenter;
pub mod style;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use classes::{LandscapeClass, CLASSES, NUM_CLASSES};

/// One generated pair: class ids and RGB bytes, row-major, `size * size` pixels.
pub struct Landscape {
    pub size: usize,
    pub labels: Vec<u8>,
    pub image: Vec<u8>,
    pub time: style::TimeOfDay,
}

/// Sample `index` of the stream of landscapes for `seed`: the same pair for the same
/// arguments, whatever the thread or the order they are made in.
pub fn generate(seed: u64, index: u64, size: usize) -> Landscape {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let scene = scene::Scene::sample(&mut rng, size);
    let (labels, aux) = scene.layout();
    let image = render::render(&scene, &labels, &aux);
    Landscape {
        size,
        labels,
        image,
        time: scene.style.time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::style::TimeOfDay;

    #[test]
    fn generation_is_deterministic_per_seed_and_index() {
        let a = generate(7, 3, 64);
        let b = generate(7, 3, 64);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.image, b.image);
        let other_index = generate(7, 4, 64);
        let other_seed = generate(8, 3, 64);
        assert_ne!(a.image, other_index.image);
        assert_ne!(a.image, other_seed.image);
        assert_eq!(a.labels.len(), 64 * 64);
        assert_eq!(a.image.len(), 64 * 64 * 3);
    }

    #[test]
    fn every_class_and_time_of_day_appears_and_labels_are_in_range() {
        let mut pixels = [0usize; NUM_CLASSES];
        let mut times = Vec::new();
        for i in 0..300 {
            let pair = generate(11, i, 64);
            for &l in &pair.labels {
                assert!((l as usize) < NUM_CLASSES, "label {l} out of range");
                pixels[l as usize] += 1;
            }
            if !times.contains(&pair.time) {
                times.push(pair.time);
            }
        }
        for (c, count) in CLASSES.iter().zip(pixels) {
            assert!(count > 0, "class {} never appears in 300 samples", c.name);
        }
        assert_eq!(times.len(), style::TIMES_OF_DAY.len());
        assert!(times.contains(&TimeOfDay::GoldenHour));
    }

    #[test]
    fn sky_is_above_and_ground_below_the_horizon() {
        // Row 0 is sky or cloud (or a peak, a tall tree); the bottom row is never sky or cloud.
        for i in 0..50 {
            let pair = generate(5, i, 64);
            let top = &pair.labels[..64];
            let bottom = &pair.labels[63 * 64..];
            let up = top
                .iter()
                .filter(|&&l| l == classes::SKY || l == classes::CLOUD)
                .count();
            assert!(up > 32, "sample {i}: the top row is mostly not sky");
            assert!(
                bottom
                    .iter()
                    .all(|&l| l != classes::SKY && l != classes::CLOUD),
                "sample {i}"
            );
        }
    }
}
