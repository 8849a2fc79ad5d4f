//! Winograd F(4x4, 3x3): the 3 x 3, stride-1, pad-1 convolutions of SPADE with 4x fewer
//! multiplications than im2col + GEMM (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016).
//!
//! Each 4 x 4 block of output pixels ("tile") is computed from the 6 x 6 input window around
//! it. In the transformed domain the convolution becomes, for each of the 36 window
//! positions `xi`, one GEMM `M[xi] = U[xi] (out x in) * V[xi] (in x tiles)`, where
//! `U = G g G^T` is the transformed kernel (all kernels in one GEMM) and `V = B^T d B` the
//! transformed input window; the output tile is `A^T m A`. The transforms are written
//! across whole rows of tiles so that they vectorise; the image is processed a band of tile
//! rows at a time so that the transformed band stays in cache.
//!
//! With the points 0, +-1, +-2 the float32 error is about 16x the direct convolution's
//! (3.6e-5 vs 2.2e-6 at 128 input channels, outputs of order 1; see the tests), which the
//! parity fixtures' tolerances absorb with room to spare.

use rayon::prelude::*;

use super::gemm::{gemm, Strided};
use super::scratch::with_scratch;

/// Output pixels per tile side.
const TILE: usize = 4;
/// Input window side: `TILE + 3 - 1`.
const WINDOW: usize = 6;
/// Transformed positions per tile (one GEMM each).
const POSITIONS: usize = WINDOW * WINDOW;
/// Tiles per image from which Winograd beats im2col + GEMM (measured on the COCO
/// generator; see BENCHMARKS.md).
const MIN_TILES: usize = 64;
/// Floats of transformed input and output per band (32 MiB; measured best of 4-128 MiB).
const BAND_ELEMENTS: usize = 8 << 20;

/// `B^T`, applied to each 6-vector of the input window.
fn input_transform(d: [&[f32]; WINDOW], out: [&mut [f32]; WINDOW]) {
    // All slices cut to one length up front: with no bounds check left in the loop, it
    // vectorises (it compiled to scalar code before).
    let n = out[0].len();
    let [d0, d1, d2, d3, d4, d5] = d.map(|s| &s[..n]);
    let [o0, o1, o2, o3, o4, o5] = out.map(|s| &mut s[..n]);
    for i in 0..n {
        let (a, b, c, e, f, g) = (d0[i], d1[i], d2[i], d3[i], d4[i], d5[i]);
        o0[i] = 4.0 * a - 5.0 * c + f;
        o1[i] = -4.0 * b - 4.0 * c + e + f;
        o2[i] = 4.0 * b - 4.0 * c - e + f;
        o3[i] = -2.0 * b - c + 2.0 * e + f;
        o4[i] = 2.0 * b - c - 2.0 * e + f;
        o5[i] = 4.0 * b - 5.0 * e + g;
    }
}

/// `A^T`, folding each 6-vector of the transformed output into 4 pixels.
fn output_transform(m: [&[f32]; WINDOW], out: [&mut [f32]; TILE]) {
    // One length for all slices, as in `input_transform`.
    let n = out[0].len();
    let [m0, m1, m2, m3, m4, m5] = m.map(|s| &s[..n]);
    let [o0, o1, o2, o3] = out.map(|s| &mut s[..n]);
    for i in 0..n {
        let (s1, d1) = (m1[i] + m2[i], m1[i] - m2[i]);
        let (s2, d2) = (m3[i] + m4[i], m3[i] - m4[i]);
        o0[i] = m0[i] + s1 + s2;
        o1[i] = d1 + 2.0 * d2;
        o2[i] = s1 + 4.0 * s2;
        o3[i] = d1 + 8.0 * d2 + m5[i];
    }
}

/// `G`: row `i` weighs a 3-tap kernel row into transformed tap `i` (`U = G g G^T`).
const G: [[f64; 3]; WINDOW] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `A`, the adjoint of [`output_transform`]: spreads 4 output-gradient pixels over the 6
/// transformed positions.
fn output_transform_adjoint(t: [f32; TILE]) -> [f32; WINDOW] {
    let [t0, t1, t2, t3] = t;
    [
        t0,
        t0 + t1 + t2 + t3,
        t0 - t1 + t2 - t3,
        t0 + 2.0 * t1 + 4.0 * t2 + 8.0 * t3,
        t0 - 2.0 * t1 + 4.0 * t2 - 8.0 * t3,
        t3,
    ]
}

/// `G^T`, the adjoint of the kernel transform: folds 6 transformed taps into a 3-tap row.
fn kernel_transform_adjoint(u: [f64; WINDOW]) -> [f64; 3] {
    std::array::from_fn(|k| (0..WINDOW).map(|i| G[i][k] * u[i]).sum())
}

/// Tile rows per band with `channels` transformed planes (input and output): as many as fit
/// [`BAND_ELEMENTS`], at least one.
fn band_rows(channels: usize, tiles_x: usize, tiles_y: usize) -> usize {
    (BAND_ELEMENTS / (POSITIONS * channels * tiles_x)).clamp(1, tiles_y)
}

/// Splits a slice into `N` consecutive chunks of `len`.
fn split<const N: usize, T>(s: &mut [T], len: usize) -> [&mut [T]; N] {
    let mut rest = s;
    std::array::from_fn(|_| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        head
    })
}

/// A 3 x 3, stride-1, pad-1 convolution by Winograd F(4x4, 3x3).
#[derive(Debug, Clone)]
pub struct Winograd {
    in_channels: usize,
    out_channels: usize,
    /// `[xi][out][in]`: the transformed kernels.
    u: Vec<f32>,
}

impl Winograd {
    /// `weight`: `out x in x 3 x 3`, row-major.
    pub fn new(weight: &[f32], out_channels: usize, in_channels: usize) -> Self {
        let _time = super::profile::scope("winograd kernels");
        let pairs = out_channels * in_channels;
        assert_eq!(
            weight.len(),
            pairs * 9,
            "Winograd weights must be out x in x 3 x 3"
        );
        // U[(i, j)] = sum over taps (r, k) of G[i][r] G[j][k] g[r][k] for every (out, in)
        // pair at once: the 36 x 9 products of G's entries times the weights as
        // 9 x (out * in), one GEMM. Training transforms every weight on every step.
        let products: Vec<f32> = (0..POSITIONS * 9)
            .map(|e| {
                let ((i, j), (r, k)) = ((e / 9 / WINDOW, e / 9 % WINDOW), (e % 9 / 3, e % 3));
                (G[i][r] * G[j][k]) as f32
            })
            .collect();
        // Written in full by the GEMM (which does not read it): no zero-filling pass.
        let mut u = Vec::<f32>::with_capacity(POSITIONS * pairs);
        // SAFETY: `u` has room for 36 x pairs values, `products` holds 36 x 9, and tap `t`
        // of pair `p` is `weight[p * 9 + t]` (asserted length). The GEMM writes every
        // element of `u` (it overwrites, not accumulates), so all are initialised.
        unsafe {
            gemm(
                (POSITIONS, pairs, 9),
                Strided {
                    ptr: u.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
                    row: pairs,
                    col: 1,
                },
                Strided {
                    ptr: products.as_ptr(),
                    row: 9,
                    col: 1,
                },
                Strided {
                    ptr: weight.as_ptr(),
                    row: 1,
                    col: 9,
                },
                false,
                true,
            );
            u.set_len(POSITIONS * pairs);
        }
        Self {
            in_channels,
            out_channels,
            u,
        }
    }

    /// Whether an `h x w` map has enough tiles for the GEMMs to run efficiently. Below
    /// that, reading the (4x larger) transformed kernels costs more than the
    /// multiplications saved.
    pub fn pays_off(h: usize, w: usize) -> bool {
        h.div_ceil(TILE) * w.div_ceil(TILE) >= MIN_TILES
    }

    /// Convolves one image (`in x h x w`) into `out` (`out x h x w`), adding `bias`.
    pub fn image(&self, x: &[f32], h: usize, w: usize, bias: Option<&[f32]>, out: &mut [f32]) {
        let channels = self.in_channels + self.out_channels;
        let band_rows = band_rows(channels, w.div_ceil(TILE), h.div_ceil(TILE));
        self.image_in_bands(x, h, w, bias, out, band_rows);
    }

    fn image_in_bands(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
        band_rows: usize,
    ) {
        let (tiles_y, tiles_x) = (h.div_ceil(TILE), w.div_ceil(TILE));
        let band = POSITIONS * band_rows * tiles_x;
        with_scratch((self.in_channels + self.out_channels) * band, |scratch| {
            let (v, m) = scratch.split_at_mut(self.in_channels * band);
            for ty0 in (0..tiles_y).step_by(band_rows) {
                let rows = band_rows.min(tiles_y - ty0);
                let tiles = rows * tiles_x;
                let v = &mut v[..self.in_channels * POSITIONS * tiles];
                let m = &mut m[..self.out_channels * POSITIONS * tiles];
                v.par_chunks_mut(POSITIONS * tiles)
                    .enumerate()
                    .for_each(|(c, vc)| {
                        transform_input(&x[c * h * w..][..h * w], h, w, ty0, rows, vc);
                    });
                self.multiply(v, m, tiles);
                m.par_chunks_mut(POSITIONS * tiles)
                    .zip(out.par_chunks_mut(h * w))
                    .enumerate()
                    .for_each(|(o, (mo, plane))| {
                        let b = bias.map_or(0.0, |b| b[o]);
                        transform_output(mo, h, w, ty0, rows, b, plane);
                    });
            }
        });
    }

    /// The weight gradient of a 3 x 3, stride-1, pad-1 convolution, `dW` (`out x in x 3 x 3`)
    /// from the inputs `x` (`N x in x h x w`) and output gradients `dy` (`N x out x h x w`),
    /// as the adjoint of the Winograd forward: `dU[xi] = sum over tiles of dM[xi] V[xi]^T`
    /// with `dM = A dY A^T` and `V = B^T d B` (the forward's input transform), then
    /// `dW = G^T dU G`. 36 multiplications per tile and channel pair, as in the forward.
    pub fn weight_gradient(
        x: &[f32],
        dy: &[f32],
        (in_channels, out_channels): (usize, usize),
        (h, w): (usize, usize),
    ) -> Vec<f32> {
        let (ci, co) = (in_channels, out_channels);
        let (tiles_y, tiles_x) = (h.div_ceil(TILE), w.div_ceil(TILE));
        let band_rows = band_rows(ci + co, tiles_x, tiles_y);
        let band = POSITIONS * band_rows * tiles_x;
        // `[xi][out][in]`, accumulated over every tile of every image.
        let mut du = vec![0f32; POSITIONS * co * ci];
        with_scratch((ci + co) * band, |scratch| {
            let (v, m) = scratch.split_at_mut(ci * band);
            for (img, grad) in x.chunks_exact(ci * h * w).zip(dy.chunks_exact(co * h * w)) {
                for ty0 in (0..tiles_y).step_by(band_rows) {
                    let rows = band_rows.min(tiles_y - ty0);
                    let tiles = rows * tiles_x;
                    let v = &mut v[..ci * POSITIONS * tiles];
                    let m = &mut m[..co * POSITIONS * tiles];
                    v.par_chunks_mut(POSITIONS * tiles)
                        .enumerate()
                        .for_each(|(c, vc)| {
                            transform_input(&img[c * h * w..][..h * w], h, w, ty0, rows, vc);
                        });
                    m.par_chunks_mut(POSITIONS * tiles)
                        .enumerate()
                        .for_each(|(o, mo)| {
                            transform_gradient(&grad[o * h * w..][..h * w], h, w, ty0, rows, mo);
                        });
                    accumulate_kernel_gradient(v, m, &mut du, (ci, co), tiles);
                }
            }
        });
        let mut dw = vec![0f32; co * ci * 9];
        for (oc, g) in dw.chunks_exact_mut(9).enumerate() {
            let u = |i: usize, j: usize| f64::from(du[(i * WINDOW + j) * co * ci + oc]);
            // G^T dU G: fold the columns of each row, then the rows of the result.
            let rows: [[f64; 3]; WINDOW] =
                std::array::from_fn(|i| kernel_transform_adjoint(std::array::from_fn(|j| u(i, j))));
            for k in 0..3 {
                let column = kernel_transform_adjoint(rows.map(|r| r[k]));
                for (r, value) in column.into_iter().enumerate() {
                    g[r * 3 + k] = value as f32;
                }
            }
        }
        dw
    }

    /// `m[out][xi][tile] = sum_in u[xi][out][in] * v[in][xi][tile]`, one GEMM per position.
    fn multiply(&self, v: &[f32], m: &mut [f32], tiles: usize) {
        let (ci, co) = (self.in_channels, self.out_channels);
        let stride = POSITIONS * tiles;
        let m_ptr = SendPtr(m.as_mut_ptr());
        (0..POSITIONS).into_par_iter().for_each(|xi| {
            let m_ptr = &m_ptr;
            // SAFETY: position `xi` writes only the columns `xi * tiles..(xi + 1) * tiles` of
            // each row of `m`, disjoint from every other position's; `u` and `v` are read.
            unsafe {
                gemm(
                    (co, tiles, ci),
                    Strided {
                        ptr: m_ptr.0.add(xi * tiles),
                        row: stride,
                        col: 1,
                    },
                    Strided {
                        ptr: self.u.as_ptr().add(xi * co * ci),
                        row: ci,
                        col: 1,
                    },
                    Strided {
                        ptr: v.as_ptr().add(xi * tiles),
                        row: stride,
                        col: 1,
                    },
                    false,
                    false,
                );
            }
        });
    }
}

/// A raw pointer that rayon tasks may share; each task writes a disjoint part.
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `B^T d B` of every 6 x 6 input window of tile rows `ty0..ty0 + rows` of one channel, into
/// `v` (`[xi][tile]`).
fn transform_input(plane: &[f32], h: usize, w: usize, ty0: usize, rows: usize, v: &mut [f32]) {
    let tiles_x = w.div_ceil(TILE);
    let tiles = rows * tiles_x;
    // Rows of the vertically transformed window, zero-padded: column `j` is input column
    // `j - 1`. The padding columns stay zero (the transform of zeros).
    let padded = TILE * tiles_x + 2;
    let mut vertical = vec![0f32; WINDOW * padded];
    let zeros = vec![0f32; w];
    // `[i][j][tx]`: column `j` of every tile's window after the vertical transform.
    let mut gathered = vec![0f32; WINDOW * WINDOW * tiles_x];
    for r in 0..rows {
        let top = ((ty0 + r) * TILE) as isize - 1;
        let inputs: [&[f32]; WINDOW] = std::array::from_fn(|k| {
            let y = top + k as isize;
            if (0..h as isize).contains(&y) {
                &plane[y as usize * w..][..w]
            } else {
                &zeros[..]
            }
        });
        input_transform(
            inputs,
            split(&mut vertical, padded).map(|row| &mut row[1..=w]),
        );
        for (i, row) in vertical.chunks_exact(padded).enumerate() {
            for j in 0..WINDOW {
                let dst = &mut gathered[(i * WINDOW + j) * tiles_x..][..tiles_x];
                for (tx, d) in dst.iter_mut().enumerate() {
                    *d = row[tx * TILE + j];
                }
            }
        }
        for i in 0..WINDOW {
            let columns: [&[f32]; WINDOW] =
                std::array::from_fn(|j| &gathered[(i * WINDOW + j) * tiles_x..][..tiles_x]);
            let positions = &mut v[i * WINDOW * tiles..][..WINDOW * tiles];
            input_transform(
                columns,
                split(positions, tiles).map(|p| &mut p[r * tiles_x..][..tiles_x]),
            );
        }
    }
}

/// `A dY A^T` of every 4 x 4 tile of one output-gradient plane (zero beyond the image) in
/// tile rows `ty0..ty0 + rows`, into `m` (`[xi][tile]`): the adjoint of `transform_output`.
fn transform_gradient(plane: &[f32], h: usize, w: usize, ty0: usize, rows: usize, m: &mut [f32]) {
    let tiles_x = w.div_ceil(TILE);
    let tiles = rows * tiles_x;
    for r in 0..rows {
        for tx in 0..tiles_x {
            let pixel = |ii: usize, jj: usize| {
                let (y, x) = ((ty0 + r) * TILE + ii, tx * TILE + jj);
                if y < h && x < w {
                    plane[y * w + x]
                } else {
                    0.0
                }
            };
            // Along each row of the tile, then along each of the 6 resulting columns.
            let spread: [[f32; WINDOW]; TILE] = std::array::from_fn(|ii| {
                output_transform_adjoint(std::array::from_fn(|jj| pixel(ii, jj)))
            });
            let tile = r * tiles_x + tx;
            for j in 0..WINDOW {
                let column = output_transform_adjoint(spread.map(|row| row[j]));
                for (i, value) in column.into_iter().enumerate() {
                    m[(i * WINDOW + j) * tiles + tile] = value;
                }
            }
        }
    }
}

/// `du[xi] (out x in) += m[xi] (out x tiles) * v[xi]^T (tiles x in)` for every position.
fn accumulate_kernel_gradient(
    v: &[f32],
    m: &[f32],
    du: &mut [f32],
    (ci, co): (usize, usize),
    tiles: usize,
) {
    let stride = POSITIONS * tiles;
    let du_ptr = SendPtr(du.as_mut_ptr());
    (0..POSITIONS).into_par_iter().for_each(|xi| {
        let du_ptr = &du_ptr;
        // SAFETY: position `xi` writes only its own `co x ci` block of `du`; `v` (`[in][xi]
        // [tile]`) and `m` (`[out][xi][tile]`) are read.
        unsafe {
            gemm(
                (co, ci, tiles),
                Strided {
                    ptr: du_ptr.0.add(xi * co * ci),
                    row: ci,
                    col: 1,
                },
                Strided {
                    ptr: m.as_ptr().add(xi * tiles),
                    row: stride,
                    col: 1,
                },
                Strided {
                    ptr: v.as_ptr().add(xi * tiles),
                    row: 1,
                    col: stride,
                },
                true,
                false,
            );
        }
    });
}

/// `A^T m A` of every tile of one output channel (`m`: `[xi][tile]`), plus `bias`, into the
/// output plane.
fn transform_output(
    m: &[f32],
    h: usize,
    w: usize,
    ty0: usize,
    rows: usize,
    bias: f32,
    plane: &mut [f32],
) {
    let tiles_x = w.div_ceil(TILE);
    let tiles = rows * tiles_x;
    // `[i][jj][tx]`: row `i` of each tile folded to its 4 output columns.
    let mut folded = vec![0f32; WINDOW * TILE * tiles_x];
    let mut pixels = vec![0f32; TILE * TILE * tiles_x];
    for r in 0..rows {
        for i in 0..WINDOW {
            let row: [&[f32]; WINDOW] =
                std::array::from_fn(|j| &m[(i * WINDOW + j) * tiles + r * tiles_x..][..tiles_x]);
            let dst = &mut folded[i * TILE * tiles_x..][..TILE * tiles_x];
            output_transform(row, split(dst, tiles_x));
        }
        for jj in 0..TILE {
            let column: [&[f32]; WINDOW] =
                std::array::from_fn(|i| &folded[(i * TILE + jj) * tiles_x..][..tiles_x]);
            let out = split::<TILE, f32>(&mut pixels, TILE * tiles_x)
                .map(|s| &mut s[jj * tiles_x..(jj + 1) * tiles_x]);
            output_transform(column, out);
        }
        // pixels: [ii][jj][tx] -> plane[y][x], whole tiles first.
        let full = w / TILE;
        for ii in 0..TILE {
            let y = (ty0 + r) * TILE + ii;
            if y >= h {
                break;
            }
            let src: [&[f32]; TILE] =
                std::array::from_fn(|jj| &pixels[(ii * TILE + jj) * tiles_x..][..tiles_x]);
            let (whole, rest) = plane[y * w..][..w].split_at_mut(full * TILE);
            for (tx, px) in whole.chunks_exact_mut(TILE).enumerate() {
                for (jj, o) in px.iter_mut().enumerate() {
                    *o = src[jj][tx] + bias;
                }
            }
            for (jj, o) in rest.iter_mut().enumerate() {
                *o = src[jj][full] + bias;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, seeded_randn};
    use candle_core::{Device, Tensor};

    fn run(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let (n, c, h, w) = x.dims4().unwrap();
        let (co, ci, _, _) = weight.dims4().unwrap();
        let conv = Winograd::new(&weight.flatten_all().unwrap().to_vec1().unwrap(), co, ci);
        let bias = bias.map(|b| b.to_vec1::<f32>().unwrap());
        let data = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut out = vec![0f32; n * co * h * w];
        for (img, dst) in data
            .chunks_exact(c * h * w)
            .zip(out.chunks_exact_mut(co * h * w))
        {
            conv.image(img, h, w, bias.as_deref(), dst);
        }
        Tensor::from_vec(out, (n, co, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_the_direct_convolution_on_any_size() {
        // Sizes that are and are not multiples of the tile, down to a single pixel.
        for (ci, co, h, w) in [(3, 5, 8, 8), (4, 6, 9, 7), (2, 3, 1, 1), (5, 2, 6, 13)] {
            let x = seeded_randn(11, &[2, ci, h, w]);
            let wt = seeded_randn(12, &[co, ci, 3, 3]);
            let b = seeded_randn(13, &[co]);
            let expected = x
                .conv2d(&wt, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            let err = max_abs_diff(&run(&x, &wt, Some(&b)), &expected);
            assert!(err < 1e-4, "{ci} {co} {h}x{w}: {err}");
        }
    }

    /// On a SPADE-sized layer (128 input channels), against float64: F(4x4, 3x3) loses about
    /// 4 bits to its transforms (measured 3.6e-5 vs 2.2e-6 for the direct float32
    /// convolution, outputs of order 1), far below the fixtures' 1e-4, and nothing like
    /// the O(1) error of a wrong coefficient.
    #[test]
    fn float32_error_is_close_to_the_direct_convolutions() {
        let (ci, co, h, w) = (128, 16, 64, 40);
        let x = seeded_randn(14, &[1, ci, h, w]);
        // Kaiming-like scale: outputs of order 1, as in the network.
        let wt = (seeded_randn(15, &[co, ci, 3, 3]) / 34.0).unwrap();
        let exact = x
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .conv2d(&wt.to_dtype(candle_core::DType::F64).unwrap(), 1, 1, 1, 1)
            .unwrap();
        let direct = max_abs_diff(&x.conv2d(&wt, 1, 1, 1, 1).unwrap(), &exact);
        let ours = max_abs_diff(&run(&x, &wt, None), &exact);
        println!("max abs error vs f64: direct {direct:.2e}, winograd {ours:.2e}");
        assert!(ours < 32.0 * direct.max(1e-7), "{ours} vs {direct}");
        assert!(ours < 1e-4, "{ours}");
    }

    #[test]
    fn bands_of_tile_rows_give_the_same_result() {
        let dev = Device::Cpu;
        let (ci, co, h, w) = (6, 5, 26, 19);
        let x = seeded_randn(16, &[ci, h, w]);
        let wt = seeded_randn(17, &[co, ci, 3, 3]);
        let expected = x.unsqueeze(0).unwrap().conv2d(&wt, 1, 1, 1, 1).unwrap();
        let conv = Winograd::new(&wt.flatten_all().unwrap().to_vec1().unwrap(), co, ci);
        let data = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // 7 tile rows (the last half outside the image): bands of 1, of 3 (3 + 3 + 1), of 7.
        for band_rows in [1, 3, 7] {
            let mut out = vec![0f32; co * h * w];
            conv.image_in_bands(&data, h, w, None, &mut out, band_rows);
            let out = Tensor::from_vec(out, (1, co, h, w), &dev).unwrap();
            assert!(max_abs_diff(&out, &expected) < 1e-4, "bands of {band_rows}");
        }
        // SPADE's largest layers at 256 x 256 (128 -> 256 channels) are cut into bands.
        assert_eq!(band_rows(128 + 256, 64, 64), 9);
    }

    #[test]
    fn weight_gradient_matches_the_direct_sum() {
        use crate::test_util::seeded_randn;
        // 9 x 10 tiles, the last row and column of tiles partial; and 2 images.
        let (n, ci, co, h, w) = (2, 7, 5, 35, 38);
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let x = flat(seeded_randn(1, &[n, ci, h, w]));
        let dy = flat(seeded_randn(2, &[n, co, h, w]));
        let ours = Winograd::weight_gradient(&x, &dy, (ci, co), (h, w));
        // dW[o][c][ky][kx] = sum over images and pixels of dY[o](y, x) X[c](y + ky - 1, x + kx - 1).
        let mut worst = 0f64;
        let mut scale = 0f64;
        for o in 0..co {
            for c in 0..ci {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let mut sum = 0f64;
                        for img in 0..n {
                            for y in 0..h {
                                for xx in 0..w {
                                    let (iy, ix) = (y + ky, xx + kx);
                                    if iy < 1 || ix < 1 || iy > h || ix > w {
                                        continue;
                                    }
                                    let g = dy[((img * co + o) * h + y) * w + xx];
                                    let v = x[((img * ci + c) * h + iy - 1) * w + ix - 1];
                                    sum += f64::from(g) * f64::from(v);
                                }
                            }
                        }
                        let got = f64::from(ours[((o * ci + c) * 3 + ky) * 3 + kx]);
                        worst = worst.max((got - sum).abs());
                        scale = scale.max(sum.abs());
                    }
                }
            }
        }
        assert!(
            worst < 1e-5 * scale.max(1.0),
            "error {worst} at scale {scale}"
        );
    }
}
