//! Writes a landscape dataset in the custom layout the trainer reads:
//! `DIR/label/NNNNNN.png` (8-bit class ids), `DIR/image/NNNNNN.png` (RGB), `DIR/classes.txt`.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use rayon::prelude::*;

use crate::classes::class_list;

/// Smallest and largest image side: below 16 nothing is recognisable, above 2048 a single
/// pair is tens of MB.
pub const SIZE_RANGE: std::ops::RangeInclusive<usize> = 16..=2048;
/// More pairs than any training run here needs; bounds the disk a typo can fill.
pub const MAX_COUNT: usize = 1_000_000;

/// Writes `count` pairs of `size` x `size` made from `seed`; returns the number written.
pub fn write_dataset(out: &Path, count: usize, size: usize, seed: u64) -> Result<usize> {
    if !SIZE_RANGE.contains(&size) {
        bail!(
            "--size {size}: expected {} to {}",
            SIZE_RANGE.start(),
            SIZE_RANGE.end()
        );
    }
    if count == 0 || count > MAX_COUNT {
        bail!("--count {count}: expected 1 to {MAX_COUNT}");
    }
    let (labels, images) = (out.join("label"), out.join("image"));
    for dir in [&labels, &images] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out.join("classes.txt"), class_list().to_text())
        .with_context(|| format!("writing {}", out.join("classes.txt").display()))?;
    let width = count.saturating_sub(1).to_string().len().max(6);
    (0..count).into_par_iter().try_for_each(|i| {
        let pair = crate::generate(seed, i as u64, size);
        let stem = format!("{i:0width$}");
        write_png(
            &labels.join(format!("{stem}.png")),
            &pair.labels,
            size,
            ExtendedColorType::L8,
        )?;
        write_png(
            &images.join(format!("{stem}.png")),
            &pair.image,
            size,
            ExtendedColorType::Rgb8,
        )
    })?;
    Ok(count)
}

fn write_png(path: &Path, data: &[u8], size: usize, colour: ExtendedColorType) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // Fast compression: PNG deflate would otherwise cost more than making the picture.
    PngEncoder::new_with_quality(BufWriter::new(file), CompressionType::Fast, FilterType::Sub)
        .write_image(data, size as u32, size as u32, colour)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_custom_layout_and_refuses_bad_sizes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_dataset(dir.path(), 3, 32, 1).unwrap(), 3);
        let label = image::open(dir.path().join("label/000001.png")).unwrap();
        assert_eq!(
            (label.width(), label.height(), label.color()),
            (32, 32, image::ColorType::L8)
        );
        let photo = image::open(dir.path().join("image/000001.png")).unwrap();
        assert_eq!(photo.color(), image::ColorType::Rgb8);
        assert_eq!(label.as_bytes(), &crate::generate(1, 1, 32).labels[..]);
        let classes = std::fs::read_to_string(dir.path().join("classes.txt")).unwrap();
        assert!(classes.starts_with("0 sky #5fdbff\n"));
        for (count, size, needle) in [(0, 32, "--count"), (1, 8, "--size"), (1, 4096, "--size")] {
            let err = write_dataset(dir.path(), count, size, 1)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
