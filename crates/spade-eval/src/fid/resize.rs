//! The input pytorch-fid's `InceptionV3` makes of an image: `ToTensor` (`/ 255`), then
//! `F.interpolate(size=(299, 299), mode='bilinear', align_corners=False)` with no
//! antialiasing even when shrinking, then `2x - 1`.
//!
//! PyTorch does the coordinate arithmetic of a float32 tensor in float32; doing it in float64
//! moves the input by up to 4e-5, which the network amplifies a hundredfold, so every step
//! here stays in float32 in PyTorch's order.

/// The side of the network's input.
pub const SIDE: usize = 299;

/// One axis of the resize: for each output index, the two source indices and the weight of
/// the second one.
fn taps(in_size: usize, out_size: usize) -> Vec<(usize, usize, f32)> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(in_size - 1);
            let i1 = (i0 + 1).min(in_size - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// An 8-bit RGB image (`h x w x 3`, row-major) as the network's input: `3 x 299 x 299`,
/// planar, in `[-1, 1]`.
pub fn network_input(rgb: &[u8], width: usize, height: usize) -> Vec<f32> {
    assert_eq!(
        rgb.len(),
        width * height * 3,
        "RGB buffer of {width}x{height}"
    );
    let xs = taps(width, SIDE);
    let ys = taps(height, SIDE);
    let mut out = vec![0f32; 3 * SIDE * SIDE];
    for (c, plane) in out.chunks_exact_mut(SIDE * SIDE).enumerate() {
        let p = |y: usize, x: usize| f32::from(rgb[(y * width + x) * 3 + c]) / 255.0;
        for (row, &(y0, y1, wy)) in plane.chunks_exact_mut(SIDE).zip(&ys) {
            for (v, &(x0, x1, wx)) in row.iter_mut().zip(&xs) {
                let top = (1.0 - wx) * p(y0, x0) + wx * p(y0, x1);
                let bottom = (1.0 - wx) * p(y1, x0) + wx * p(y1, x1);
                let value = (1.0 - wy) * top + wy * bottom;
                *v = 2.0 * value - 1.0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_299_image_passes_unchanged() {
        let rgb: Vec<u8> = (0..SIDE * SIDE * 3).map(|i| (i * 7 % 256) as u8).collect();
        let input = network_input(&rgb, SIDE, SIDE);
        for (i, &v) in input.iter().enumerate() {
            let (c, yx) = (i / (SIDE * SIDE), i % (SIDE * SIDE));
            let expected = 2.0 * (f32::from(rgb[yx * 3 + c]) / 255.0) - 1.0;
            assert_eq!(v, expected, "value {i}");
        }
    }

    #[test]
    fn a_one_pixel_wide_image_copies_its_column() {
        let rgb: Vec<u8> = (0..40 * 3).map(|i| (i * 5 % 256) as u8).collect();
        let input = network_input(&rgb, 1, 40);
        // Both taps are the one column; `(1 - w) p + w p` rounds within an ulp of p.
        for row in input.chunks_exact(SIDE) {
            assert!(row.iter().all(|&v| (v - row[0]).abs() <= 1e-6), "{row:?}");
        }
    }

    #[test]
    fn shrinking_interpolates_between_the_two_nearest_pixels_without_antialiasing() {
        // 598 -> 299: src = 2d + 0.5, halfway between pixels 2d and 2d + 1; a stripe pattern
        // of period 4 would average away under antialiasing.
        let width = 2 * SIDE;
        let rgb: Vec<u8> = (0..width)
            .flat_map(|x| [if x % 4 < 2 { 255u8 } else { 0 }; 3])
            .collect();
        let input = network_input(&rgb, width, 1);
        assert_eq!(input[0], 1.0);
        assert_eq!(input[1], -1.0);
    }
}
