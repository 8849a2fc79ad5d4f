//! The pictures of docs/landscapes.md and the README, from a landscape checkpoint (default:
//! the bundled model):
//! `cargo run --release -p spade-landscapes --example grid -- OUT_DIR [CHECKPOINT]`.
//! `grid.png`: held-out label maps | their procedural photos | the model with three style
//! seeds. `painted.png`: a simple painted map (as on the page) and what the model makes of it.

use anyhow::Result;
use image::{Rgb, RgbImage};
use spade_landscapes::classes::*;
use spade_landscapes::quality::{held_out, synthesize};
use spade_landscapes::Landscape;

fn colour_labels(labels: &[u8], size: usize) -> RgbImage {
    RgbImage::from_fn(size as u32, size as u32, |x, y| {
        Rgb(CLASSES[labels[y as usize * size + x as usize] as usize].rgb)
    })
}

fn rgb_image(data: &[u8], size: usize) -> RgbImage {
    RgbImage::from_raw(size as u32, size as u32, data.to_vec()).expect("size matches")
}

/// A map as a person paints it: flat regions with straight and round edges.
fn painted(size: usize) -> Landscape {
    let s = size as f32;
    let mut labels = vec![SKY; size * size];
    for y in 0..size {
        for x in 0..size {
            let (xf, yf) = (x as f32 / s, y as f32 / s);
            let peak = 0.5
                - 0.28 * (1.0 - ((xf - 0.3) / 0.3).abs()).max(0.0)
                - 0.18 * (1.0 - ((xf - 0.75) / 0.2).abs()).max(0.0);
            let class = if yf > 0.62 + 0.12 * xf {
                if xf < 0.55 - 0.3 * (yf - 0.62) {
                    GRASS
                } else {
                    SEA
                }
            } else if yf > 0.6 + 0.12 * xf {
                SAND
            } else if yf > 0.56 {
                if xf < 0.5 {
                    GRASS
                } else {
                    SEA
                }
            } else if yf > peak {
                if yf < peak + 0.06 && xf > 0.18 && xf < 0.42 {
                    SNOW
                } else {
                    MOUNTAIN
                }
            } else if ((xf - 0.7) / 0.16).powi(2) + ((yf - 0.15) / 0.05).powi(2) < 1.0 {
                CLOUD
            } else {
                SKY
            };
            labels[y * size + x] = class;
        }
    }
    // A clump of trees on the grass.
    for (cx, cy, r) in [(0.12, 0.68, 0.07), (0.22, 0.7, 0.06), (0.3, 0.66, 0.05)] {
        for y in 0..size {
            for x in 0..size {
                let (dx, dy) = (x as f32 / s - cx, y as f32 / s - cy);
                if dx * dx + dy * dy < r * r {
                    labels[y * size + x] = TREE;
                }
            }
        }
    }
    Landscape {
        size,
        labels,
        image: vec![0; size * size * 3],
        time: spade_landscapes::style::TimeOfDay::Noon,
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = std::path::PathBuf::from(args.first().map_or("docs/landscapes", String::as_str));
    std::fs::create_dir_all(&out)?;
    let checkpoint = match args.get(1) {
        Some(path) => spade_model::Checkpoint::open(std::path::Path::new(path))?,
        None => spade_landscapes::bundled::checkpoint()?,
    };
    let model = spade_model::SpadeModel::from_checkpoint(
        &checkpoint,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )?;
    let size = model.config.crop_size;
    let pairs = held_out(4, size);
    let styles: Vec<Vec<Vec<u8>>> = [0, 100, 200]
        .iter()
        .map(|&seed| synthesize(&model, &pairs, seed))
        .collect::<Result<_>>()?;
    let (cols, pad) = (5u32, 4u32);
    let cell = size as u32 + pad;
    let mut grid =
        RgbImage::from_pixel(cols * cell, pairs.len() as u32 * cell, Rgb([255, 255, 255]));
    for (row, pair) in pairs.iter().enumerate() {
        let mut tiles = vec![
            colour_labels(&pair.labels, size),
            rgb_image(&pair.image, size),
        ];
        tiles.extend(styles.iter().map(|s| rgb_image(&s[row], size)));
        for (col, tile) in tiles.iter().enumerate() {
            image::imageops::replace(
                &mut grid,
                tile,
                (col as u32 * cell) as i64,
                (row as u32 * cell) as i64,
            );
        }
    }
    grid.save(out.join("grid.png"))?;
    let map = [painted(size)];
    let made = synthesize(&model, &map, 7)?;
    let mut pic = RgbImage::from_pixel(2 * cell, size as u32, Rgb([255, 255, 255]));
    image::imageops::replace(&mut pic, &colour_labels(&map[0].labels, size), 0, 0);
    image::imageops::replace(&mut pic, &rgb_image(&made[0], size), cell as i64, 0);
    pic.save(out.join("painted.png"))?;
    println!(
        "wrote {} and {}",
        out.join("grid.png").display(),
        out.join("painted.png").display()
    );
    Ok(())
}
