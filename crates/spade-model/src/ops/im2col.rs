//! im2col: the input patches of a convolution as the columns of a matrix, tile by tile of
//! output rows, and the convolution of one image as im2col + GEMM.

use rayon::prelude::*;

use super::gemm::{gemm, Strided};
use super::gemm_bf16::{self, Base, Bf16Isa, PackedLhs, Rhs};
use super::scratch::with_scratch;

/// Elements of the im2col buffer per tile (16 MiB of f32).
pub(crate) const TILE_ELEMENTS: usize = 4 << 20;

/// Geometry of a convolution: kernel and padding as `[height, width]` (SPADE's networks
/// use square kernels; Inception's Mixed blocks have `1 x n` and `n x 1` ones).
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: usize,
    pub padding: [usize; 2],
}

impl ConvShape {
    /// A `k x k` kernel padded by `padding` on every side.
    pub fn square(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel: [kernel; 2],
            stride,
            padding: [padding; 2],
        }
    }

    /// Whether the output is `weight x input` itself (a 1 x 1, stride-1, unpadded kernel):
    /// the image's planes are already the im2col matrix.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == 1 && self.padding == [0, 0]
    }

    pub(crate) fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let ([kh, kw], [ph, pw]) = (self.kernel, self.padding);
        (
            (h + 2 * ph - kh) / self.stride + 1,
            (w + 2 * pw - kw) / self.stride + 1,
        )
    }

    /// Kernel taps per input channel.
    pub(crate) fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    pub(crate) fn patch(&self) -> usize {
        self.in_channels * self.taps()
    }
}

/// Output rows per im2col tile for an output `wo` wide.
pub(crate) fn rows_per_tile(s: &ConvShape, ho: usize, wo: usize) -> usize {
    (TILE_ELEMENTS / (s.patch() * wo)).clamp(1, ho)
}

/// A convolution's weights as its GEMM takes them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Weights<'a> {
    /// `out x patch`, row-major.
    F32(&'a [f32]),
    /// Rounded to bfloat16 and packed, multiplied on `Bf16Isa`.
    Bf16(Bf16Isa, &'a PackedLhs),
}

/// One image (`in x h x w`) convolved with `weight` into `out` (`out x ho x wo`), tile by
/// tile of output rows.
pub(crate) fn convolve_image(
    s: &ConvShape,
    weight: Weights,
    bias: Option<&[f32]>,
    x: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
) {
    let (ho, wo) = s.out_size(h, w);
    let patch = s.patch();
    let tile_rows = rows_per_tile(s, ho, wo);
    // The float32 GEMM accumulates onto the bias; the bfloat16 one adds it as it writes.
    if let (Weights::F32(_), Some(bias)) = (weight, bias) {
        for (o, plane) in out.chunks_exact_mut(ho * wo).enumerate() {
            plane.fill(bias[o]);
        }
    }
    let bf16_base = bias.map_or(Base::Zero, Base::RowBias);
    // out[:, y0.., :] (+)= weight (out x patch) * cols (patch x pixels)
    let multiply = |out: &mut [f32], y0: usize, pixels: usize, cols: &[f32]| {
        assert!(cols.len() >= patch * pixels && out.len() >= s.out_channels * ho * wo);
        let dst = out[y0 * wo..].as_mut_ptr();
        match weight {
            // SAFETY: `out` is out x (ho * wo), this tile's columns start at `y0 * wo`;
            // `cols` holds patch x pixels.
            Weights::F32(weight) => unsafe {
                gemm(
                    (s.out_channels, pixels, patch),
                    Strided {
                        ptr: dst,
                        row: ho * wo,
                        col: 1,
                    },
                    Strided {
                        ptr: weight.as_ptr(),
                        row: patch,
                        col: 1,
                    },
                    Strided {
                        ptr: cols.as_ptr(),
                        row: pixels,
                        col: 1,
                    },
                    bias.is_some(),
                    true,
                );
            },
            // SAFETY: as above, with `lhs` out x patch.
            Weights::Bf16(isa, lhs) => unsafe {
                let rhs = Rhs::Matrix {
                    ptr: cols.as_ptr(),
                    row: pixels,
                };
                gemm_bf16::gemm(isa, lhs, pixels, rhs, dst, ho * wo, bf16_base);
            },
        }
    };
    if let Weights::Bf16(isa, lhs) = weight {
        if Rhs::patches_apply(s.kernel, s.stride, wo) {
            // The bfloat16 GEMM reads its columns straight from the image: no im2col.
            assert!(x.len() >= s.in_channels * h * w && out.len() >= s.out_channels * ho * wo);
            let rhs = Rhs::Patches {
                image: x.as_ptr(),
                h,
                w,
                kernel: s.kernel,
                padding: s.padding,
                y0: 0,
                wo,
            };
            // SAFETY: `x` is the in x h x w image, `out` out x (ho * wo).
            unsafe {
                gemm_bf16::gemm(isa, lhs, ho * wo, rhs, out.as_mut_ptr(), ho * wo, bf16_base);
            }
            return;
        }
    }
    if s.is_pointwise() {
        // The image's planes are the whole im2col matrix already.
        return multiply(out, 0, h * w, x);
    }
    with_scratch(patch * tile_rows * wo, |cols| {
        for y0 in (0..ho).step_by(tile_rows) {
            let rows = tile_rows.min(ho - y0);
            let pixels = rows * wo;
            let cols = &mut cols[..patch * pixels];
            im2col(x, h, w, s, y0, rows, wo, cols);
            multiply(out, y0, pixels, cols);
        }
    });
}

/// Which output columns of a tile row a kernel tap reads from inside the image: for tap
/// `(ky, kx)` and output row `r`, input row `iy` and the output columns `ox` whose input
/// column `ix0 + (ox - start) * stride` is not padding. `visit(tap, r, iy, ox_range, ix0)` is
/// called for every (tap, row) with its input row inside the image; everything else reads
/// padding (zeros).
pub(crate) fn for_each_tap_row(
    s: &ConvShape,
    (h, w): (usize, usize),
    y0: usize,
    rows: usize,
    wo: usize,
    mut visit: impl FnMut(usize, usize, usize, std::ops::Range<usize>, usize),
) {
    let ([kh, kw], [ph, pw]) = (s.kernel, s.padding);
    for ky in 0..kh {
        for kx in 0..kw {
            // ix = ox * stride + kx - padding must lie in [0, w).
            let first = pw.saturating_sub(kx).div_ceil(s.stride);
            let end = ((w + pw).saturating_sub(kx)).div_ceil(s.stride).min(wo);
            if first >= end {
                continue;
            }
            let ix0 = first * s.stride + kx - pw;
            for r in 0..rows {
                let iy = ((y0 + r) * s.stride + ky) as isize - ph as isize;
                if (0..h as isize).contains(&iy) {
                    visit(ky * kw + kx, r, iy as usize, first..end, ix0);
                }
            }
        }
    }
}

/// Fills `cols` (`patch x (rows * wo)`) with the input patches of output rows `y0..y0+rows`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col(
    x: &[f32],
    h: usize,
    w: usize,
    s: &ConvShape,
    y0: usize,
    rows: usize,
    wo: usize,
    cols: &mut [f32],
) {
    let _time = super::profile::scope("im2col");
    let pixels = rows * wo;
    cols.par_chunks_mut(s.taps() * pixels)
        .enumerate()
        .for_each(|(c, channel_cols)| {
            let plane = &x[c * h * w..(c + 1) * h * w];
            channel_cols.fill(0.0);
            for_each_tap_row(s, (h, w), y0, rows, wo, |tap, r, iy, oxs, ix0| {
                let dst = &mut channel_cols[tap * pixels + r * wo..];
                let src = &plane[iy * w + ix0..];
                if s.stride == 1 {
                    // One contiguous run: a memcpy instead of an element loop.
                    let len = oxs.len();
                    dst[oxs].copy_from_slice(&src[..len]);
                } else {
                    for (j, ox) in oxs.enumerate() {
                        dst[ox] = src[j * s.stride];
                    }
                }
            });
        });
}
