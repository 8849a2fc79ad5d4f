//! Pixel-exact re-implementations of the PIL operations the official data loader uses:
//! `Image.resize` with NEAREST (label and instance maps) and BICUBIC (photos), and
//! `Image.crop` (zero fill outside the image).
//!
//! The networks were trained on PIL's output, so "a" nearest or bicubic resize is not
//! enough: PIL picks source pixels with an accumulated float64 coordinate, and its bicubic
//! filter is antialiased (the kernel widens when shrinking) with 22-bit fixed-point
//! coefficients and 8-bit rounding after each pass.

/// An interleaved image: `channels` values per pixel, rows top to bottom.
#[derive(Debug, Clone, PartialEq)]
pub struct Raster<T> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<T>,
}

impl<T: Copy + Default> Raster<T> {
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<T>) -> Self {
        assert_eq!(data.len(), width * height * channels, "raster size");
        Self {
            width,
            height,
            channels,
            data,
        }
    }

    fn pixel(&self, x: usize, y: usize) -> &[T] {
        let start = (y * self.width + x) * self.channels;
        &self.data[start..start + self.channels]
    }

    /// `Image.crop((x, y, x + width, y + height))`: areas outside the image are zero.
    pub fn crop(&self, x: usize, y: usize, width: usize, height: usize) -> Self {
        if (x, y, width, height) == (0, 0, self.width, self.height) {
            return self.clone();
        }
        let mut data = vec![T::default(); width * height * self.channels];
        for row in 0..height.min(self.height.saturating_sub(y)) {
            let cols = width.min(self.width.saturating_sub(x));
            let src = ((y + row) * self.width + x) * self.channels;
            let dst = row * width * self.channels;
            data[dst..dst + cols * self.channels]
                .copy_from_slice(&self.data[src..src + cols * self.channels]);
        }
        Self::new(width, height, self.channels, data)
    }

    /// `Image.transpose(FLIP_LEFT_RIGHT)`.
    pub fn flip_horizontal(&self) -> Self {
        let row_len = self.width * self.channels;
        let mut data = Vec::with_capacity(self.data.len());
        for row in self.data.chunks_exact(row_len) {
            for px in row.chunks_exact(self.channels).rev() {
                data.extend_from_slice(px);
            }
        }
        Self::new(self.width, self.height, self.channels, data)
    }

    /// `Image.resize(size, NEAREST)`.
    pub fn resize_nearest(&self, width: usize, height: usize) -> Self {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let cols = pil_nearest_sources(self.width, width);
        let rows = pil_nearest_sources(self.height, height);
        let mut data = Vec::with_capacity(width * height * self.channels);
        for &row in &rows {
            for &col in &cols {
                match (row, col) {
                    (Some(r), Some(c)) => data.extend_from_slice(self.pixel(c, r)),
                    _ => data.extend(std::iter::repeat_n(T::default(), self.channels)),
                }
            }
        }
        Self::new(width, height, self.channels, data)
    }
}

/// Source index per output index as PIL's `ImagingScaleAffine` computes it: the coordinate
/// starts at half a step and is advanced by adding the step (so rounding accumulates).
fn pil_nearest_sources(input: usize, output: usize) -> Vec<Option<usize>> {
    let step = input as f64 / output as f64;
    let mut coord = step * 0.5;
    (0..output)
        .map(|_| {
            let index = (coord >= 0.0 && (coord as usize) < input).then_some(coord as usize);
            coord += step;
            index
        })
        .collect()
}

/// Fixed-point precision of PIL's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's bicubic kernel (`a = -0.5`), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// One output pixel's window into the input and its fixed-point weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` for a 1-D resize.
fn bicubic_taps(input: usize, output: usize) -> Vec<Taps> {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..output)
        .map(|out| {
            let center = (out as f64 + 0.5) * scale;
            let start = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let raw: Vec<f64> = (start..end)
                .map(|i| bicubic((i as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = raw.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let weights = raw
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            Taps { start, weights }
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

impl Raster<u8> {
    /// `Image.resize(size, BICUBIC)` for 8-bit images: horizontal pass, then vertical.
    pub fn resize_bicubic(&self, width: usize, height: usize) -> Self {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let ch = self.channels;
        let round = 1i64 << (PRECISION_BITS - 1);
        let mut current = self.clone();
        if width != self.width {
            let taps = bicubic_taps(self.width, width);
            let mut data = Vec::with_capacity(width * self.height * ch);
            for y in 0..self.height {
                for t in &taps {
                    for c in 0..ch {
                        let acc = t.weights.iter().enumerate().fold(round, |acc, (i, &w)| {
                            acc + i64::from(current.pixel(t.start + i, y)[c]) * i64::from(w)
                        });
                        data.push(clip8(acc));
                    }
                }
            }
            current = Self::new(width, self.height, ch, data);
        }
        if height != self.height {
            let taps = bicubic_taps(self.height, height);
            let mut data = Vec::with_capacity(width * height * ch);
            for t in &taps {
                for x in 0..width {
                    for c in 0..ch {
                        let acc = t.weights.iter().enumerate().fold(round, |acc, (i, &w)| {
                            acc + i64::from(current.pixel(x, t.start + i)[c]) * i64::from(w)
                        });
                        data.push(clip8(acc));
                    }
                }
            }
            current = Self::new(width, height, ch, data);
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_picks_pixel_centres() {
        let img = Raster::new(4, 1, 1, vec![10u8, 20, 30, 40]);
        assert_eq!(img.resize_nearest(2, 1).data, vec![20, 40]);
        assert_eq!(
            img.resize_nearest(8, 1).data,
            vec![10, 10, 20, 20, 30, 30, 40, 40]
        );
    }

    /// A 7 x 5 RGB test pattern; the expected bytes below were produced by Pillow 13
    /// (`Image.frombytes('RGB', (7, 5), pattern).resize(size, Image.BICUBIC).tobytes()`).
    fn pattern() -> Raster<u8> {
        let data = (0..5usize)
            .flat_map(|y| (0..7usize).flat_map(move |x| (0..3usize).map(move |c| (x, y, c))))
            .map(|(x, y, c)| (((x * 37 + y * 91 + c * 53) * 7) % 256) as u8)
            .collect();
        Raster::new(7, 5, 3, data)
    }

    #[test]
    fn bicubic_shrink_matches_pillow_bytes() {
        let expected = [
            21, 147, 201, 39, 156, 208, 46, 138, 215, 167, 188, 153, 82, 199, 160, 87, 139, 167,
            155, 184, 149, 72, 191, 156, 83, 204, 163, 225, 136, 190, 176, 143, 197, 32, 150, 204,
        ];
        assert_eq!(pattern().resize_bicubic(3, 4).data, expected);
    }

    #[test]
    fn bicubic_enlarge_matches_pillow_bytes() {
        let out = pattern().resize_bicubic(11, 9);
        // First row and the start of the last row, from Pillow.
        let first_row = [
            0, 105, 241, 0, 106, 242, 0, 108, 244, 0, 110, 246, 0, 112, 248, 0, 114, 250, 1, 116,
            252, 3, 118, 254, 5, 120, 255, 7, 134, 255, 8, 144, 255,
        ];
        assert_eq!(out.data[..33], first_row);
        let last_row_start = [254, 92, 228, 255, 93, 229, 255, 95, 231, 255, 97, 233];
        assert_eq!(out.data[8 * 33..8 * 33 + 12], last_row_start);
    }

    #[test]
    fn nearest_matches_pillow_indices() {
        let grey = Raster::new(26, 3, 1, (0..78u8).collect());
        let expected: Vec<u8> = vec![
            0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 17, 18, 19, 20, 21, 23, 24, 25, 52, 53,
            54, 56, 57, 58, 59, 60, 62, 63, 64, 65, 66, 67, 69, 70, 71, 72, 73, 75, 76, 77,
        ];
        assert_eq!(grey.resize_nearest(22, 2).data, expected);
        let expected: Vec<u8> = vec![
            1, 4, 7, 10, 13, 15, 18, 21, 24, 1, 4, 7, 10, 13, 15, 18, 21, 24, 27, 30, 33, 36, 39,
            41, 44, 47, 50, 53, 56, 59, 62, 65, 67, 70, 73, 76, 53, 56, 59, 62, 65, 67, 70, 73, 76,
        ];
        assert_eq!(grey.resize_nearest(9, 5).data, expected);
    }

    #[test]
    fn bicubic_keeps_constant_images() {
        let img = Raster::new(5, 3, 3, vec![77u8; 45]);
        let out = img.resize_bicubic(11, 7);
        assert!(out.data.iter().all(|&v| v == 77));
    }

    #[test]
    fn crop_fills_outside_with_zero() {
        let img = Raster::new(2, 2, 1, vec![1u8, 2, 3, 4]);
        assert_eq!(img.crop(1, 1, 2, 2).data, vec![4, 0, 0, 0]);
    }
}
