//! A differentiable CPU convolution for training: the im2col + GEMM forward of
//! [`im2col`](super::im2col) with the weight as an input, and a backward written the same
//! way. candle's own conv backward goes through its direct conv-transpose and a tiled
//! convolution with the whole gradient map as kernel, which made a training step 9x slower
//! than PyTorch's.
//!
//! For an image with patches `cols` (`patch x pixels`) and output gradient `dY`
//! (`out x pixels`): `dW += dY cols^T`, and `dX = col2im(W^T dY)`. The 3 x 3 / stride-1
//! convolutions on maps where Winograd pays (as at inference) run their forward and `dX` by
//! Winograd F(4x4, 3x3), `dX` as the convolution of `dY` with the flipped, transposed kernel,
//! `dW` as the adjoint of the Winograd forward.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{gemm, Strided};
use super::im2col::{convolve_image, for_each_tap_row, im2col, rows_per_tile, ConvShape, Weights};
use super::layout::nchw;
use super::reduce::sum_f64;
use super::scratch::with_scratch;
use super::winograd::Winograd;

/// `conv2d(x, w)` (no bias) with stride and padding; `x`: N x C x H x W, `w`: O x C x k x k.
#[derive(Debug, Clone, Copy)]
pub struct TrainableConv {
    pub stride: usize,
    pub padding: usize,
}

impl TrainableConv {
    fn shape(&self, w_dims: &[usize]) -> candle_core::Result<ConvShape> {
        let [out_channels, in_channels, kernel, kw] = *w_dims else {
            candle_core::bail!("conv weight must be O x C x k x k, got {w_dims:?}");
        };
        if kernel != kw {
            candle_core::bail!("only square kernels, got {kernel}x{kw}");
        }
        Ok(ConvShape::square(
            in_channels,
            out_channels,
            kernel,
            self.stride,
            self.padding,
        ))
    }
}

impl TrainableConv {
    /// The forward of both arities: `conv(x, w)` (+ `bias`).
    fn forward(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope("trainable-conv2d");
        let (x, [n, c, h, w]) = nchw(xs, xl)?;
        let (weight, w_dims) = nchw(ws, wl)?;
        let s = self.shape(&w_dims)?;
        if c != s.in_channels {
            candle_core::bail!("conv expects {} input channels, got {c}", s.in_channels);
        }
        if let Some(bias) = bias.filter(|b| b.len() != s.out_channels) {
            candle_core::bail!(
                "conv bias has {} values for {} output channels",
                bias.len(),
                s.out_channels
            );
        }
        let (ho, wo) = s.out_size(h, w);
        let mut out = vec![0f32; n * s.out_channels * ho * wo];
        let winograd = winograd_pays(&s, h, w).then(|| Winograd::new(weight, s.out_channels, c));
        // The images in parallel as well as within each: the GEMMs of small maps (the
        // discriminator's, the generator's first blocks) barely gain from a second thread.
        x.par_chunks_exact(c * h * w)
            .zip(out.par_chunks_exact_mut(s.out_channels * ho * wo))
            .for_each(|(img, dst)| match &winograd {
                Some(winograd) => winograd.image(img, h, w, bias, dst),
                None => convolve_image(&s, Weights::F32(weight), bias, img, h, w, dst),
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, s.out_channels, ho, wo)),
        ))
    }

    /// `dX` (when `x` needs one) and, when `parameters` need one, `dW`, as `out x (patch + 1)`
    /// rows `[dW | db]` when `bias`. Frozen parameters (the discriminator's in the generator
    /// step) cost no weight gradient.
    fn gradients(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        bias: bool,
        parameters: bool,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = if x.track_op() {
            let (_, _, h, w_in) = x.dims4()?;
            let op = InputGrad {
                conv: *self,
                height: h,
                width: w_in,
            };
            Some(grad.apply_op2_no_bwd(&w.contiguous()?, &op)?)
        } else {
            None
        };
        if !parameters {
            return Ok((dx, None));
        }
        let op = WeightGrad {
            conv: *self,
            kernel: w.dim(2)?,
            bias,
        };
        Ok((dx, Some(x.contiguous()?.apply_op2_no_bwd(&grad, &op)?)))
    }
}

impl CustomOp2 for TrainableConv {
    fn name(&self) -> &'static str {
        "trainable-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward(xs, xl, ws, wl, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        self.gradients(x, w, grad, false, w.track_op())
    }
}

/// With a bias, `(x, w, b)`: the bias is added in the output pass and its gradient summed
/// in the weight-gradient pass, instead of a broadcast add and candle's reduction over
/// three dimensions.
impl CustomOp3 for TrainableConv {
    fn name(&self) -> &'static str {
        "trainable-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(bias) = bs else {
            candle_core::bail!("conv bias must be f32");
        };
        let (start, end) = bl
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("conv bias must be contiguous".into()))?;
        self.forward(xs, xl, ws, wl, Some(&bias[start..end]))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let parameters = w.track_op() || b.track_op();
        let (dx, both) = self.gradients(x, w, grad, true, parameters)?;
        let Some(both) = both else {
            return Ok((dx, None, None));
        };
        let (o, c, k, _) = w.dims4()?;
        let patch = c * k * k;
        let dw = both.narrow(1, 0, patch)?.reshape((o, c, k, k))?;
        let db = both.narrow(1, patch, 1)?.flatten_all()?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `dX` from `dY` and `W`.
struct InputGrad {
    conv: TrainableConv,
    height: usize,
    width: usize,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "trainable-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (grad, [n, _, ho, wo]) = nchw(gs, gl)?;
        let (weight, w_dims) = nchw(ws, wl)?;
        let s = self.conv.shape(&w_dims)?;
        let (h, w) = (self.height, self.width);
        let mut dx = vec![0f32; n * s.in_channels * h * w];
        if winograd_pays(&s, h, w) {
            // dX is the same-padded 3 x 3 convolution of dY with the kernel flipped in space
            // and transposed in channels: Winograd again.
            let mut flipped = vec![0f32; weight.len()];
            for o in 0..s.out_channels {
                for c in 0..s.in_channels {
                    for t in 0..9 {
                        flipped[(c * s.out_channels + o) * 9 + t] =
                            weight[(o * s.in_channels + c) * 9 + 8 - t];
                    }
                }
            }
            let winograd = Winograd::new(&flipped, s.in_channels, s.out_channels);
            grad.par_chunks_exact(s.out_channels * ho * wo)
                .zip(dx.par_chunks_exact_mut(s.in_channels * h * w))
                .for_each(|(g, dst)| winograd.image(g, h, w, None, dst));
            return Ok((CpuStorage::F32(dx), Shape::from((n, s.in_channels, h, w))));
        }
        let patch = s.patch();
        let tile_rows = rows_per_tile(&s, ho, wo);
        grad.par_chunks_exact(s.out_channels * ho * wo)
            .zip(dx.par_chunks_exact_mut(s.in_channels * h * w))
            .for_each(|(g, dst)| {
                with_scratch(patch * tile_rows * wo, |dcols| {
                    for y0 in (0..ho).step_by(tile_rows) {
                        let rows = tile_rows.min(ho - y0);
                        let pixels = rows * wo;
                        let dcols = &mut dcols[..patch * pixels];
                        // dcols (patch x pixels) = W^T (patch x out) * dY[:, y0..] (out x pixels)
                        // SAFETY: `weight` is out x patch, `g` out x (ho * wo) from column `y0 * wo`.
                        unsafe {
                            gemm(
                                (patch, pixels, s.out_channels),
                                Strided {
                                    ptr: dcols.as_mut_ptr(),
                                    row: pixels,
                                    col: 1,
                                },
                                Strided {
                                    ptr: weight.as_ptr(),
                                    row: 1,
                                    col: patch,
                                },
                                Strided {
                                    ptr: g.as_ptr().add(y0 * wo),
                                    row: ho * wo,
                                    col: 1,
                                },
                                false,
                                true,
                            );
                        }
                        col2im(dcols, h, w, &s, y0, rows, wo, dst);
                    }
                })
            });
        Ok((CpuStorage::F32(dx), Shape::from((n, s.in_channels, h, w))))
    }
}

/// `dW` from `X` and `dY`; with `bias`, `[dW | db]` rows.
struct WeightGrad {
    conv: TrainableConv,
    kernel: usize,
    bias: bool,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "trainable-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (x, [_, c, h, w]) = nchw(xs, xl)?;
        let (grad, [_, out_channels, ho, wo]) = nchw(gs, gl)?;
        let s = ConvShape::square(
            c,
            out_channels,
            self.kernel,
            self.conv.stride,
            self.conv.padding,
        );
        let dw = weight_grad(&s, x, grad, (h, w));
        if self.bias {
            let rows = with_bias_gradient(&dw, grad, out_channels, ho * wo);
            return Ok((
                CpuStorage::F32(rows),
                Shape::from((out_channels, s.patch() + 1)),
            ));
        }
        Ok((
            CpuStorage::F32(dw),
            Shape::from((out_channels, c, self.kernel, self.kernel)),
        ))
    }
}

/// `dw` (`out x patch`) with each row extended by its bias gradient: the sum of that output
/// channel's gradient `grad` (`N x out x plane`) over the images and pixels, in float64.
pub(crate) fn with_bias_gradient(
    dw: &[f32],
    grad: &[f32],
    out_channels: usize,
    plane: usize,
) -> Vec<f32> {
    let patch = dw.len() / out_channels;
    let mut sums = vec![0f64; out_channels];
    for (i, values) in grad.chunks_exact(plane).enumerate() {
        sums[i % out_channels] += sum_f64(values);
    }
    let mut rows = Vec::with_capacity(out_channels * (patch + 1));
    for (o, sum) in sums.into_iter().enumerate() {
        rows.extend_from_slice(&dw[o * patch..(o + 1) * patch]);
        rows.push(sum as f32);
    }
    rows
}

/// Whether a convolution of shape `s` on `h x w` maps runs by Winograd F(4x4, 3x3): 3 x 3,
/// stride 1, same padding, on maps with enough tiles (as the inference convolution decides).
fn winograd_pays(s: &ConvShape, h: usize, w: usize) -> bool {
    (s.kernel, s.stride, s.padding) == ([3, 3], 1, [1, 1]) && Winograd::pays_off(h, w)
}

/// `dW` (`out x patch`) of a convolution of shape `s` from the input images `x`
/// (`N x in x h x w`) and the output gradients `grad` (`N x out x ho x wo`):
/// `dY cols^T`, summed over the images.
pub(crate) fn weight_grad(
    s: &ConvShape,
    x: &[f32],
    grad: &[f32],
    (h, w): (usize, usize),
) -> Vec<f32> {
    if winograd_pays(s, h, w) {
        return Winograd::weight_gradient(x, grad, (s.in_channels, s.out_channels), (h, w));
    }
    let (ho, wo) = s.out_size(h, w);
    let (c, out_channels) = (s.in_channels, s.out_channels);
    let patch = s.patch();
    let tile_rows = rows_per_tile(s, ho, wo);
    // The images in contiguous groups, one per thread, each group accumulating its images'
    // shares in order (see the forward); the groups' sums are added in order, so the result
    // depends on the thread count only, and memory on it, not on the batch.
    let image = c * h * w;
    let images = x.len() / image;
    let groups = rayon::current_num_threads().clamp(1, images.max(1));
    let per_group = images.div_ceil(groups).max(1);
    let sums: Vec<Vec<f32>> = x
        .par_chunks(per_group * image)
        .zip(grad.par_chunks(per_group * out_channels * ho * wo))
        .map(|(images, grads)| {
            let mut dw = vec![0f32; out_channels * patch];
            with_scratch(patch * tile_rows * wo, |cols| {
                for (img, g) in images
                    .chunks_exact(image)
                    .zip(grads.chunks_exact(out_channels * ho * wo))
                {
                    add_image_weight_grad(s, img, g, (h, w), tile_rows, cols, &mut dw);
                }
            });
            dw
        })
        .collect();
    let mut sums = sums.into_iter();
    let mut dw = sums
        .next()
        .unwrap_or_else(|| vec![0f32; out_channels * patch]);
    for sum in sums {
        for (d, v) in dw.iter_mut().zip(sum) {
            *d += v;
        }
    }
    dw
}

/// `dw` (`out x patch`) `+= dY cols^T` for one image `img` (`in x h x w`) and its output
/// gradient `g` (`out x ho x wo`), im2col tile by tile of `tile_rows` output rows in `cols`.
fn add_image_weight_grad(
    s: &ConvShape,
    img: &[f32],
    g: &[f32],
    (h, w): (usize, usize),
    tile_rows: usize,
    cols: &mut [f32],
    dw: &mut [f32],
) {
    let (ho, wo) = s.out_size(h, w);
    let patch = s.patch();
    assert!(g.len() >= s.out_channels * ho * wo && dw.len() >= s.out_channels * patch);
    for y0 in (0..ho).step_by(tile_rows) {
        let rows = tile_rows.min(ho - y0);
        let pixels = rows * wo;
        let cols = &mut cols[..patch * pixels];
        im2col(img, h, w, s, y0, rows, wo, cols);
        // dW^T (patch x out) += cols (patch x pixels) * dY[:, y0..]^T (pixels x out): the long
        // dimension (patch) as the GEMM's rows, which it splits across threads; with `out` as
        // rows (often 32 or 64) it ran 2x slower.
        // SAFETY: `g` is out x (ho * wo) from column `y0 * wo`, `cols` patch x pixels, `dw`
        // out x patch (asserted above).
        unsafe {
            gemm(
                (patch, s.out_channels, pixels),
                Strided {
                    ptr: dw.as_mut_ptr(),
                    row: 1,
                    col: patch,
                },
                Strided {
                    ptr: cols.as_ptr(),
                    row: pixels,
                    col: 1,
                },
                Strided {
                    ptr: g.as_ptr().add(y0 * wo),
                    row: 1,
                    col: ho * wo,
                },
                true,
                true,
            );
        }
    }
}

/// Adds the patch gradients `dcols` (`patch x (rows * wo)`) of output rows `y0..y0+rows`
/// back onto the input planes they were gathered from (the adjoint of `im2col`).
#[allow(clippy::too_many_arguments)]
fn col2im(
    dcols: &[f32],
    h: usize,
    w: usize,
    s: &ConvShape,
    y0: usize,
    rows: usize,
    wo: usize,
    dx: &mut [f32],
) {
    let pixels = rows * wo;
    dx.par_chunks_mut(h * w)
        .zip(dcols.par_chunks(s.taps() * pixels))
        .for_each(|(plane, channel_cols)| {
            for_each_tap_row(s, (h, w), y0, rows, wo, |tap, r, iy, oxs, ix0| {
                let src = &channel_cols[tap * pixels + r * wo..];
                let dst = &mut plane[iy * w + ix0..];
                if s.stride == 1 {
                    // Contiguous on both sides, so that the adds vectorise.
                    let src = &src[oxs];
                    for (d, v) in dst[..src.len()].iter_mut().zip(src) {
                        *d += v;
                    }
                } else {
                    for (j, ox) in oxs.enumerate() {
                        dst[j * s.stride] += src[ox];
                    }
                }
            });
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, probed_gradients, seeded_randn};
    use candle_core::{DType, Var};

    /// The forward against candle's conv2d, and both gradients through the adjoint
    /// identities of a linear map: for `L = sum(conv(x, w) * p)`,
    /// `<dL/dx, d> = sum(conv(d, w) * p)` and `<dL/dw, e> = sum(conv(x, e) * p)` for any `d`, `e`.
    /// (candle's own conv backward cannot serve as reference: it fails on non-square inputs.)
    #[test]
    fn forward_and_gradients_are_exact() {
        for (c, o, k, stride, padding, h, w) in [
            (3, 5, 3, 1, 1, 9, 7),
            (4, 6, 4, 2, 2, 11, 8),
            (2, 3, 4, 1, 2, 6, 6),
            (5, 4, 1, 1, 0, 5, 9),
            (3, 2, 3, 2, 1, 8, 13),
            // 9 x 10 tiles of 4 x 4: forward and dx by Winograd.
            (6, 5, 3, 1, 1, 33, 40),
        ] {
            let case = format!("c{c} o{o} k{k} s{stride} p{padding} {h}x{w}");
            let mut seed = 0;
            let mut rand = |dims: &[usize]| {
                seed += 1;
                seeded_randn(seed, dims)
            };
            let (x, wt) = (rand(&[2, c, h, w]), rand(&[o, c, k, k]));
            let conv = TrainableConv { stride, padding };
            let f64_conv = |a: &Tensor, b: &Tensor| {
                a.to_dtype(DType::F64)
                    .unwrap()
                    .conv2d(&b.to_dtype(DType::F64).unwrap(), padding, stride, 1, 1)
                    .unwrap()
            };
            let (xv, wv) = (
                Var::from_tensor(&x).unwrap(),
                Var::from_tensor(&wt).unwrap(),
            );
            let ours = xv.as_tensor().apply_op2(wv.as_tensor(), conv).unwrap();
            let forward_err = max_abs_diff(&ours, &f64_conv(&x, &wt));
            assert!(forward_err < 1e-4, "{case}: forward error {forward_err}");

            let probe = rand(ours.dims());
            let grads = probed_gradients(&ours, &probe);
            let dot = |a: &Tensor, b: &Tensor| {
                (a.to_dtype(DType::F64).unwrap() * b.to_dtype(DType::F64).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let (d, e) = (rand(&[2, c, h, w]), rand(&[o, c, k, k]));
            let checks = [
                (
                    "dx",
                    dot(grads.get(xv.as_tensor()).unwrap(), &d),
                    dot(&f64_conv(&d, &wt), &probe),
                ),
                (
                    "dw",
                    dot(grads.get(wv.as_tensor()).unwrap(), &e),
                    dot(&f64_conv(&x, &e), &probe),
                ),
            ];
            for (what, got, want) in checks {
                assert!(
                    (got - want).abs() < 1e-4 * want.abs().max(1.0),
                    "{case}: {what} {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn the_bias_is_added_and_gets_the_summed_gradient() {
        for (k, stride, padding, h, w) in [(3, 1, 1, 9, 7), (3, 1, 1, 33, 40), (4, 2, 2, 11, 8)] {
            let x = Var::from_tensor(&seeded_randn(1, &[2, 4, h, w])).unwrap();
            let wt = Var::from_tensor(&seeded_randn(2, &[5, 4, k, k])).unwrap();
            let b = Var::from_tensor(&seeded_randn(3, &[5])).unwrap();
            let conv = TrainableConv { stride, padding };
            let (x_, w_, b_) = (x.as_tensor(), wt.as_tensor(), b.as_tensor());
            let ours = x_.apply_op3(w_, b_, conv).unwrap();
            let reference = x_
                .apply_op2(w_, conv)
                .unwrap()
                .broadcast_add(&b_.reshape((1, 5, 1, 1)).unwrap())
                .unwrap();
            assert!(
                max_abs_diff(&ours, &reference) < 1e-5,
                "forward k{k} {h}x{w}"
            );
            let probe = seeded_randn(4, ours.dims());
            let grads = |y: &Tensor| probed_gradients(y, &probe);
            let (g, r) = (grads(&ours), grads(&reference));
            for (what, v) in [("x", x_), ("w", w_), ("b", b_)] {
                let diff = max_abs_diff(g.get(v).unwrap(), r.get(v).unwrap());
                assert!(diff < 1e-4, "d{what} k{k} {h}x{w}: {diff}");
            }
        }
    }

    #[test]
    fn a_bias_that_does_not_fit_is_an_error_that_says_what_was_expected() {
        let x = seeded_randn(1, &[1, 4, 6, 6]);
        let wt = seeded_randn(2, &[5, 4, 3, 3]);
        let conv = TrainableConv {
            stride: 1,
            padding: 1,
        };
        let msg = x
            .apply_op3(&wt, &seeded_randn(3, &[4]), conv)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("conv bias has 4 values for 5 output channels"),
            "{msg}"
        );
    }
}
