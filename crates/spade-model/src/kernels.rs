//! CPU kernels for the convolutions that dominate SPADE, as candle custom ops.
//!
//! * [`CpuConv2d`]: a convolution as im2col + one GEMM per tile of output rows, written
//!   straight into the NCHW output, or for 3 x 3 kernels on larger maps by Winograd
//!   ([`crate::winograd`]). candle's built-in CPU conv2d re-packs its weights on every call
//!   and copies single-threaded; this runs at the speed of the GEMM.
//! * [`SegmapConv`]: the `mlp_shared` convolution over a segmentation map, and its ReLU.
//!   When the input is one-hot labels (plus an optional binary edge channel), each output
//!   pixel is a sum of `k * k` weight rows picked by the neighbours' labels: `semantic_nc`
//!   times less work than the dense convolution, and a table lookup inside regions of one
//!   label. Other inputs (any float semantics) take the dense path.
//! * [`Modulate`]: SPADE's parameter-free normalisation, `(1 + gamma) * x + beta` and the
//!   leaky ReLU that follows it in one pass over memory instead of six temporaries.
//!
//! Every image of a batch is computed alone with the same tiling, so an image's result never
//! depends on its batch mates.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::winograd::Winograd;

/// Elements of the im2col buffer per tile (16 MiB of f32).
const TILE_ELEMENTS: usize = 4 << 20;

/// Geometry of a square-kernel convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvShape {
    pub(crate) fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let k = self.kernel;
        (
            (h + 2 * self.padding - k) / self.stride + 1,
            (w + 2 * self.padding - k) / self.stride + 1,
        )
    }

    pub(crate) fn patch(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }
}

/// A dense convolution: Winograd F(4x4, 3x3) where it applies and pays, else im2col + GEMM.
#[derive(Debug, Clone)]
pub struct CpuConv2d {
    shape: ConvShape,
    /// `out_channels x (in_channels * k * k)`, row-major.
    weight: Arc<Vec<f32>>,
    bias: Option<Arc<Vec<f32>>>,
    /// For 3 x 3 / stride 1 / pad 1 shapes: the same convolution by Winograd F(4x4, 3x3),
    /// built on the first input large enough to use it. Its transformed kernels take 4x the
    /// memory of the weights, so layers that only ever see small maps never build them.
    winograd: Option<Arc<OnceLock<Winograd>>>,
}

impl CpuConv2d {
    /// `weight`: out x in x k x k; `bias`: out.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> candle_core::Result<Self> {
        let (out_channels, in_channels, kernel, kw) = weight.dims4()?;
        if kernel != kw {
            candle_core::bail!("only square kernels, got {kernel}x{kw}");
        }
        let flat = |t: &Tensor| -> candle_core::Result<Arc<Vec<f32>>> {
            Ok(Arc::new(
                t.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?,
            ))
        };
        let weight = flat(weight)?;
        let winograd = (kernel == 3 && stride == 1 && padding == 1).then(Default::default);
        Ok(Self {
            shape: ConvShape {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            },
            weight,
            bias: bias.map(flat).transpose()?,
            winograd,
        })
    }

    /// Convolves one image (`in x h x w`) into `out` (`out_channels x ho x wo`).
    fn image(&self, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let bias = self.bias.as_deref().map(Vec::as_slice);
        if let Some(winograd) = self.winograd.as_ref().filter(|_| Winograd::pays_off(h, w)) {
            let s = self.shape;
            return winograd
                .get_or_init(|| Winograd::new(&self.weight, s.out_channels, s.in_channels))
                .image(x, h, w, bias, out);
        }
        convolve_image(&self.shape, &self.weight, bias, x, h, w, out);
    }

    fn run(&self, x: &[f32], n: usize, h: usize, w: usize) -> (Vec<f32>, Shape) {
        let s = self.shape;
        let (ho, wo) = s.out_size(h, w);
        let mut out = vec![0f32; n * s.out_channels * ho * wo];
        for (img, dst) in x
            .chunks_exact(s.in_channels * h * w)
            .zip(out.chunks_exact_mut(s.out_channels * ho * wo))
        {
            self.image(img, h, w, dst);
        }
        (out, Shape::from((n, s.out_channels, ho, wo)))
    }
}

/// A matrix operand of [`gemm`]: element `(i, j)` at `ptr + i * row + j * col`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided<P> {
    pub ptr: P,
    pub row: usize,
    pub col: usize,
}

/// `dst (m x n) = lhs (m x k) * rhs (k x n)`, plus the old `dst` when `accumulate`; across the
/// rayon pool when `parallel`.
///
/// # Safety
/// Every element the sizes and strides address must lie inside its operand's allocation, and
/// `dst` must not overlap `lhs` or `rhs` nor be written by anyone else meanwhile.
pub(crate) unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    accumulate: bool,
    parallel: bool,
) {
    let parallelism = if parallel {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col as isize,
            dst.row as isize,
            accumulate,
            lhs.ptr,
            lhs.col as isize,
            lhs.row as isize,
            rhs.ptr,
            rhs.col as isize,
            rhs.row as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Runs `f` on `len` floats of this thread's scratch memory, whose contents are left over
/// from earlier calls: `f` must write before it reads. A fresh allocation of this size costs
/// one page fault per 4 KiB on first touch, which measured as much as the arithmetic of
/// some layers; reusing it keeps at most the largest request per thread resident.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local!(static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) });
    // Taken out while in use, so that a nested call (rayon may run another op's task on
    // this thread while it waits) gets a fresh buffer instead of aliasing this one.
    let mut buf = SCRATCH.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let result = f(&mut buf[..len]);
    SCRATCH.set(buf);
    result
}

/// Output rows per im2col tile for an output `wo` wide.
pub(crate) fn rows_per_tile(s: &ConvShape, ho: usize, wo: usize) -> usize {
    (TILE_ELEMENTS / (s.patch() * wo)).clamp(1, ho)
}

/// One image (`in x h x w`) convolved with `weight` (`out x patch`, row-major) into `out`
/// (`out x ho x wo`), tile by tile of output rows.
pub(crate) fn convolve_image(
    s: &ConvShape,
    weight: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
) {
    let (ho, wo) = s.out_size(h, w);
    let patch = s.patch();
    let tile_rows = rows_per_tile(s, ho, wo);
    if let Some(bias) = bias {
        for (o, plane) in out.chunks_exact_mut(ho * wo).enumerate() {
            plane.fill(bias[o]);
        }
    }
    with_scratch(patch * tile_rows * wo, |cols| {
        for y0 in (0..ho).step_by(tile_rows) {
            let rows = tile_rows.min(ho - y0);
            let pixels = rows * wo;
            let cols = &mut cols[..patch * pixels];
            im2col(x, h, w, s, y0, rows, wo, cols);
            // out[:, y0.., :] (+)= weight (out x patch) * cols (patch x pixels)
            // SAFETY: `out` is out x (ho * wo), this tile's columns start at `y0 * wo`.
            unsafe {
                gemm(
                    (s.out_channels, pixels, patch),
                    Strided {
                        ptr: out.as_mut_ptr().add(y0 * wo),
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
            }
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
    let k = s.kernel;
    for ky in 0..k {
        for kx in 0..k {
            // ix = ox * stride + kx - padding must lie in [0, w).
            let first = s.padding.saturating_sub(kx).div_ceil(s.stride);
            let end = ((w + s.padding).saturating_sub(kx))
                .div_ceil(s.stride)
                .min(wo);
            if first >= end {
                continue;
            }
            let ix0 = first * s.stride + kx - s.padding;
            for r in 0..rows {
                let iy = ((y0 + r) * s.stride + ky) as isize - s.padding as isize;
                if (0..h as isize).contains(&iy) {
                    visit(ky * k + kx, r, iy as usize, first..end, ix0);
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
    let k = s.kernel;
    let pixels = rows * wo;
    cols.par_chunks_mut(k * k * pixels)
        .enumerate()
        .for_each(|(c, channel_cols)| {
            let plane = &x[c * h * w..(c + 1) * h * w];
            channel_cols.fill(0.0);
            for_each_tap_row(s, (h, w), y0, rows, wo, |tap, r, iy, oxs, ix0| {
                let dst = &mut channel_cols[tap * pixels + r * wo..];
                let src = &plane[iy * w + ix0..];
                for (j, ox) in oxs.enumerate() {
                    dst[ox] = src[j * s.stride];
                }
            });
        });
}

/// The input of a custom op as a contiguous f32 slice with its NCHW dims.
pub(crate) fn nchw<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<(&'a [f32], [usize; 4])> {
    let data = match storage {
        CpuStorage::F32(data) => data.as_slice(),
        _ => candle_core::bail!("the CPU convolution kernels take f32"),
    };
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("the CPU convolution kernels take contiguous input".into())
    })?;
    let [n, c, h, w] = *layout.dims() else {
        candle_core::bail!("expected an NCHW tensor, got {:?}", layout.dims());
    };
    Ok((&data[start..end], [n, c, h, w]))
}

impl CustomOp1 for CpuConv2d {
    fn name(&self) -> &'static str {
        "cpu-conv2d"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, [n, c, h, w]) = nchw(storage, layout)?;
        if c != self.shape.in_channels {
            candle_core::bail!(
                "conv expects {} input channels, got {c}",
                self.shape.in_channels
            );
        }
        let (out, shape) = self.run(x, n, h, w);
        Ok((CpuStorage::F32(out), shape))
    }
}

/// `mlp_shared` (convolution, then ReLU): gathers weight rows by label where the input is
/// one-hot, else convolves.
#[derive(Debug, Clone)]
pub struct SegmapConv {
    dense: CpuConv2d,
    /// `[label][ky][kx][out]`: the weight column of each input channel, per tap.
    table: Arc<Vec<f32>>,
    /// `[out][label]`: `relu(bias + the sum over all taps)`, the output of any pixel whose
    /// whole neighbourhood has its label and no edge (most pixels of a real label map).
    interior: Arc<Vec<f32>>,
    /// Channels that are one-hot labels (the rest, at most one, is the edge channel).
    classes: usize,
}

impl SegmapConv {
    /// `classes`: the one-hot channels; a remaining last channel is the binary edge map.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        classes: usize,
    ) -> candle_core::Result<Self> {
        let (_, _, k, _) = weight.dims4()?;
        let dense = CpuConv2d::new(weight, bias, 1, k / 2)?;
        let s = dense.shape;
        if classes > s.in_channels || s.in_channels - classes > 1 {
            candle_core::bail!(
                "{classes} label channels do not fit {} input channels",
                s.in_channels
            );
        }
        let mut table = vec![0f32; s.in_channels * k * k * s.out_channels];
        for o in 0..s.out_channels {
            for c in 0..s.in_channels {
                for t in 0..k * k {
                    table[(c * k * k + t) * s.out_channels + o] =
                        dense.weight[o * s.patch() + c * k * k + t];
                }
            }
        }
        let co = s.out_channels;
        let mut interior = vec![0f32; co * classes];
        for (o, row) in interior.chunks_exact_mut(classes).enumerate() {
            let bias = dense.bias.as_ref().map_or(0.0, |b| b[o]);
            for (label, v) in row.iter_mut().enumerate() {
                let taps = (0..k * k).map(|t| table[(label * k * k + t) * co + o]);
                *v = taps.fold(bias, |a, w| a + w).max(0.0);
            }
        }
        Ok(Self {
            dense,
            table: Arc::new(table),
            interior: Arc::new(interior),
            classes,
        })
    }

    /// Per pixel: its label, or `None` if any pixel is not exactly one-hot; and its edge bit.
    fn decode(&self, x: &[f32], plane: usize) -> Option<(Vec<u32>, Vec<bool>)> {
        const PIXELS: usize = 4096;
        let mut labels = vec![0u32; plane];
        let one_hot = labels
            .par_chunks_mut(PIXELS)
            .enumerate()
            .all(|(i, labels)| {
                let start = i * PIXELS;
                // Branch-free over each channel so that it vectorises: the label is the sum
                // of the hot channels' indices, valid where exactly one channel is hot.
                let mut hot = vec![0u32; labels.len()];
                let mut other = false;
                for c in 0..self.classes {
                    let values = &x[c * plane + start..][..labels.len()];
                    for ((l, n), &v) in labels.iter_mut().zip(hot.iter_mut()).zip(values) {
                        let one = u32::from(v == 1.0);
                        *l += one * c as u32;
                        *n += one;
                        other |= v != 0.0 && v != 1.0;
                    }
                }
                !other && hot.iter().all(|&n| n == 1)
            });
        if !one_hot {
            return None;
        }
        let edges = if self.classes < self.dense.shape.in_channels {
            let edge = &x[self.classes * plane..(self.classes + 1) * plane];
            if edge.iter().any(|&v| v != 0.0 && v != 1.0) {
                return None;
            }
            edge.iter().map(|&v| v == 1.0).collect()
        } else {
            vec![false; plane]
        };
        Some((labels, edges))
    }

    fn gather(&self, labels: &[u32], edges: &[bool], h: usize, w: usize, out: &mut [f32]) {
        let co = self.dense.shape.out_channels;
        // The pixels whose window is not uniform, and their full sums, pixel-major.
        let border: Vec<usize> = (0..h * w)
            .into_par_iter()
            .filter(|&p| !self.is_interior(labels, edges, h, w, p % w, p / w))
            .collect();
        let mut sums = vec![0f32; border.len() * co];
        sums.par_chunks_mut(co)
            .zip(&border)
            .for_each(|(acc, &p)| self.border_pixel(labels, edges, h, w, p % w, p / w, acc));
        // Runs of one label along rows: label maps are piecewise constant, so each output
        // plane is filled run by run at memset speed.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (p, &label) in labels.iter().enumerate() {
            if p % w == 0 || labels[p - 1] != label {
                runs.push((p, 1));
            } else if let Some(run) = runs.last_mut() {
                run.1 += 1;
            }
        }
        out.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(o, plane)| {
                let interior = &self.interior[o * self.classes..][..self.classes];
                for &(start, len) in &runs {
                    plane[start..start + len].fill(interior[labels[start] as usize]);
                }
                for (i, &p) in border.iter().enumerate() {
                    plane[p] = sums[i * co + o].max(0.0);
                }
            });
    }

    /// Whether the `k x k` window around `(x, y)` lies inside the map, has one label and
    /// no edge pixel.
    fn is_interior(
        &self,
        labels: &[u32],
        edges: &[bool],
        h: usize,
        w: usize,
        x: usize,
        y: usize,
    ) -> bool {
        let pad = self.dense.shape.padding;
        if x < pad || y < pad || x + pad >= w || y + pad >= h {
            return false;
        }
        let label = labels[y * w + x];
        (y - pad..=y + pad).all(|qy| {
            let row = qy * w;
            (x - pad..=x + pad).all(|qx| labels[row + qx] == label && !edges[row + qx])
        })
    }

    /// The full sum over the taps that fall inside the map.
    #[allow(clippy::too_many_arguments)]
    fn border_pixel(
        &self,
        labels: &[u32],
        edges: &[bool],
        h: usize,
        w: usize,
        x: usize,
        y: usize,
        acc: &mut [f32],
    ) {
        let s = self.dense.shape;
        let (k, pad, co) = (s.kernel, s.padding as isize, s.out_channels);
        match &self.dense.bias {
            Some(bias) => acc.copy_from_slice(bias),
            None => acc.fill(0.0),
        }
        let mut add = |channel: usize, tap: usize| {
            let row = &self.table[(channel * k * k + tap) * co..][..co];
            acc.iter_mut().zip(row).for_each(|(a, r)| *a += r);
        };
        for ky in 0..k {
            let iy = y as isize + ky as isize - pad;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for kx in 0..k {
                let ix = x as isize + kx as isize - pad;
                if ix < 0 || ix >= w as isize {
                    continue;
                }
                let q = iy as usize * w + ix as usize;
                add(labels[q] as usize, ky * k + kx);
                if edges[q] {
                    add(self.classes, ky * k + kx);
                }
            }
        }
    }
}

impl CustomOp1 for SegmapConv {
    fn name(&self) -> &'static str {
        "segmap-conv2d"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, [n, c, h, w]) = nchw(storage, layout)?;
        let s = self.dense.shape;
        if c != s.in_channels {
            candle_core::bail!(
                "mlp_shared expects {} input channels, got {c}",
                s.in_channels
            );
        }
        let plane = h * w;
        let decoded: Option<Vec<_>> = x
            .chunks_exact(c * plane)
            .map(|img| self.decode(img, plane))
            .collect();
        let Some(decoded) = decoded else {
            let (mut out, shape) = self.dense.run(x, n, h, w);
            out.par_iter_mut().for_each(|v| *v = v.max(0.0));
            return Ok((CpuStorage::F32(out), shape));
        };
        let mut out = vec![0f32; n * s.out_channels * plane];
        for ((labels, edges), dst) in decoded
            .iter()
            .zip(out.chunks_exact_mut(s.out_channels * plane))
        {
            self.gather(labels, edges, h, w, dst);
        }
        Ok((CpuStorage::F32(out), Shape::from((n, s.out_channels, h, w))))
    }
}

/// The parameter-free normalisation inside SPADE.
#[derive(Debug, Clone)]
pub enum PlaneNorm {
    /// Per image and channel, biased variance, eps 1e-5.
    Instance,
    /// Eval-mode batch norm folded to `x * scale + shift` per channel.
    Batch {
        scale: Arc<Vec<f32>>,
        shift: Arc<Vec<f32>>,
    },
}

/// `norm(x) * (1 + gamma) + beta`, then optionally `leaky_relu(0.2)`; `gamma` and `beta`
/// are the two channel halves of the second input (the stacked `mlp_gamma`/`mlp_beta`).
#[derive(Debug, Clone)]
pub struct Modulate {
    pub norm: PlaneNorm,
    pub leaky_relu: bool,
}

impl Modulate {
    fn plane(&self, x: &[f32], gamma: &[f32], beta: &[f32], channel: usize, out: &mut [f32]) {
        let (scale, shift) = match &self.norm {
            PlaneNorm::Batch { scale, shift } => (scale[channel], shift[channel]),
            PlaneNorm::Instance => {
                let n = x.len() as f64;
                let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                let var = x
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                let inv = 1.0 / (var + 1e-5).sqrt();
                (inv as f32, (-mean * inv) as f32)
            }
        };
        for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
            let y = (v * scale + shift) * (1.0 + g) + b;
            *o = if self.leaky_relu && y < 0.0 {
                0.2 * y
            } else {
                y
            };
        }
    }
}

impl candle_core::CustomOp2 for Modulate {
    fn name(&self) -> &'static str {
        "spade-modulate"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, [n, c, h, w]) = nchw(s1, l1)?;
        let (gb, dims) = nchw(s2, l2)?;
        if dims != [n, 2 * c, h, w] {
            candle_core::bail!(
                "modulation needs gamma/beta of shape {:?}, got {dims:?}",
                [n, 2 * c, h, w]
            );
        }
        let plane = h * w;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
            let (img, ch) = (i / c, i % c);
            let gamma = &gb[(img * 2 * c + ch) * plane..][..plane];
            let beta = &gb[(img * 2 * c + c + ch) * plane..][..plane];
            self.plane(&x[i * plane..(i + 1) * plane], gamma, beta, ch, dst);
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs_diff;
    use candle_core::{Device, D};

    #[test]
    fn im2col_conv_matches_candle_conv2d() {
        let dev = Device::Cpu;
        for (cin, cout, k, stride, pad, h, w) in [
            (3, 5, 3, 1, 1, 9, 7),
            (4, 6, 3, 2, 1, 16, 11),
            (2, 3, 5, 1, 2, 6, 6),
            (7, 2, 1, 1, 0, 5, 4),
            // 8 x 9 tiles of 4 x 4: the Winograd path.
            (3, 5, 3, 1, 1, 32, 36),
        ] {
            let x = Tensor::randn(0f32, 1., (2, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (cout, cin, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., cout, &dev).unwrap();
            let expected = x
                .conv2d(&wt, pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            let op = CpuConv2d::new(&wt, Some(&b), stride, pad).unwrap();
            let ours = x.apply_op1_no_bwd(&op).unwrap();
            assert_eq!(ours.dims(), expected.dims());
            assert!(
                max_abs_diff(&ours, &expected) < 1e-4,
                "{cin} {cout} {k} {stride}"
            );
            let no_bias = CpuConv2d::new(&wt, None, stride, pad).unwrap();
            let plain = x.conv2d(&wt, pad, stride, 1, 1).unwrap();
            assert!(max_abs_diff(&x.apply_op1_no_bwd(&no_bias).unwrap(), &plain) < 1e-4);
        }
    }

    #[test]
    fn tiling_over_rows_gives_the_same_result() {
        // 64 channels x 9 taps x 2048 pixels per row: 3 rows per tile, so 8 rows take
        // tiles of 3, 3 and 2.
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 64, 8, 2048), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1., (4, 64, 3, 3), &dev).unwrap();
        let op = CpuConv2d::new(&wt, None, 1, 1).unwrap();
        assert_eq!(TILE_ELEMENTS / (op.shape.patch() * 2048), 3);
        let expected = x.conv2d(&wt, 1, 1, 1, 1).unwrap();
        assert!(max_abs_diff(&x.apply_op1_no_bwd(&op).unwrap(), &expected) < 1e-3);
    }

    #[test]
    fn modulation_matches_the_composed_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2., (2, 3, 5, 4), &dev).unwrap();
        let gb = Tensor::randn(0f32, 1., (2, 6, 5, 4), &dev).unwrap();
        let (gamma, beta) = (gb.narrow(1, 0, 3).unwrap(), gb.narrow(1, 3, 3).unwrap());
        let mean = x
            .mean_keepdim(D::Minus1)
            .unwrap()
            .mean_keepdim(D::Minus2)
            .unwrap();
        let centered = x.broadcast_sub(&mean).unwrap();
        let var = centered
            .sqr()
            .unwrap()
            .mean_keepdim(D::Minus1)
            .unwrap()
            .mean_keepdim(D::Minus2)
            .unwrap();
        let normalized = centered
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap();
        let expected = ((normalized * (gamma + 1.0).unwrap()).unwrap() + beta).unwrap();
        let op = Modulate {
            norm: PlaneNorm::Instance,
            leaky_relu: false,
        };
        assert!(max_abs_diff(&x.apply_op2_no_bwd(&gb, &op).unwrap(), &expected) < 1e-5);
        let leaky = Modulate {
            norm: PlaneNorm::Instance,
            leaky_relu: true,
        };
        let expected = candle_nn::ops::leaky_relu(&expected, 0.2).unwrap();
        assert!(max_abs_diff(&x.apply_op2_no_bwd(&gb, &leaky).unwrap(), &expected) < 1e-5);
    }

    fn one_hot(labels: &[u32], edges: &[f32], classes: usize, h: usize, w: usize) -> Tensor {
        let plane = h * w;
        let mut data = vec![0f32; (classes + 1) * plane];
        for (p, &l) in labels.iter().enumerate() {
            data[l as usize * plane + p] = 1.0;
        }
        data[classes * plane..].copy_from_slice(edges);
        Tensor::from_vec(data, (1, classes + 1, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn gather_matches_the_dense_convolution_and_relu_on_one_hot_maps() {
        let dev = Device::Cpu;
        let (classes, h, w) = (6, 13, 17);
        // Noisy labels (every pixel a border) and blocky ones (mostly interior pixels).
        let noisy: Vec<u32> = (0..h * w)
            .map(|p| ((p * 7 + p / 5) % classes) as u32)
            .collect();
        let blocky: Vec<u32> = (0..h * w)
            .map(|p| (((p % w) / 6 + (p / w) / 5) % classes) as u32)
            .collect();
        let sparse_edges: Vec<f32> = (0..h * w).map(|p| (p % 29 == 0) as u8 as f32).collect();
        for (labels, edges) in [
            (noisy, vec![0.0; h * w]),
            (blocky.clone(), vec![0.0; h * w]),
            (blocky, sparse_edges),
        ] {
            let x = one_hot(&labels, &edges, classes, h, w);
            for k in [3, 5] {
                let wt = Tensor::randn(0f32, 1., (20, classes + 1, k, k), &dev).unwrap();
                let b = Tensor::randn(0f32, 1., 20, &dev).unwrap();
                let expected = x
                    .conv2d(&wt, k / 2, 1, 1, 1)
                    .unwrap()
                    .broadcast_add(&b.reshape((1, 20, 1, 1)).unwrap())
                    .unwrap()
                    .relu()
                    .unwrap();
                let op = SegmapConv::new(&wt, Some(&b), classes).unwrap();
                let data = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(
                    op.decode(&data, h * w).is_some(),
                    "one-hot input takes the gather path"
                );
                assert!(max_abs_diff(&x.apply_op1_no_bwd(&op).unwrap(), &expected) < 1e-4);
            }
        }
    }

    #[test]
    fn non_one_hot_input_takes_the_dense_path() {
        let dev = Device::Cpu;
        let x = Tensor::rand(0f32, 1., (2, 5, 6, 6), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1., (3, 5, 3, 3), &dev).unwrap();
        let op = SegmapConv::new(&wt, None, 4).unwrap();
        let data = x
            .narrow(0, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(op.decode(&data, 36).is_none());
        let expected = x.conv2d(&wt, 1, 1, 1, 1).unwrap().relu().unwrap();
        assert!(max_abs_diff(&x.apply_op1_no_bwd(&op).unwrap(), &expected) < 1e-4);

        // One-hot everywhere but one pixel with two labels, or with none.
        let labels: Vec<u32> = (0..36).map(|p| (p % 4) as u32).collect();
        let map = one_hot(&labels, &[0.0; 36], 4, 6, 6);
        let mut data = map.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(op.decode(&data, 36).is_some());
        data[2 * 36 + 7] = 1.0;
        assert!(op.decode(&data, 36).is_none(), "two labels");
        data[2 * 36 + 7] = 0.0;
        data[36 + 5] = 0.0;
        assert!(op.decode(&data, 36).is_none(), "no label");
    }

    #[test]
    fn misshapen_inputs_are_errors_that_say_what_was_expected() {
        let dev = Device::Cpu;
        let err = |r: candle_core::Result<Tensor>| r.unwrap_err().to_string();
        let x = Tensor::zeros((1, 4, 6, 6), candle_core::DType::F32, &dev).unwrap();

        let wt = Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let conv = CpuConv2d::new(&wt, None, 1, 1).unwrap();
        let msg = err(x.apply_op1_no_bwd(&conv));
        assert!(
            msg.contains("conv expects 3 input channels, got 4"),
            "{msg}"
        );
        let oblong = Tensor::zeros((2, 3, 3, 1), candle_core::DType::F32, &dev).unwrap();
        let msg = CpuConv2d::new(&oblong, None, 1, 1).unwrap_err().to_string();
        assert!(msg.contains("only square kernels, got 3x1"), "{msg}");

        let seg = SegmapConv::new(&wt, None, 2).unwrap();
        let msg = err(x.apply_op1_no_bwd(&seg));
        assert!(
            msg.contains("mlp_shared expects 3 input channels, got 4"),
            "{msg}"
        );
        let msg = SegmapConv::new(&wt, None, 1).unwrap_err().to_string();
        assert!(
            msg.contains("1 label channels do not fit 3 input channels"),
            "{msg}"
        );

        let modulate = Modulate {
            norm: PlaneNorm::Instance,
            leaky_relu: false,
        };
        let msg = err(x.apply_op2_no_bwd(&x, &modulate));
        assert!(
            msg.contains("gamma/beta of shape [1, 8, 6, 6], got [1, 4, 6, 6]"),
            "{msg}"
        );
    }

    #[test]
    fn scratch_is_reused_and_never_shared_by_nested_calls() {
        let first = with_scratch(64, |buf| {
            buf.fill(7.0);
            with_scratch(64, |inner| {
                inner.fill(1.0);
                inner.as_ptr()
            });
            assert!(buf.iter().all(|&v| v == 7.0));
            buf.as_ptr()
        });
        // The outer buffer went back last: the next call gets it, contents and all.
        with_scratch(32, |buf| {
            assert_eq!(buf.as_ptr(), first);
            assert_eq!(buf[0], 7.0);
        });
    }
}
