//! A differentiable CPU convolution for training: the im2col + GEMM forward of
//! [`im2col`](super::im2col) with the weight as an input, and a backward written the same
//! way. candle's own conv backward goes through its direct conv-transpose and a tiled
//! convolution with the whole gradient map as kernel, which made a training step 9x slower
//! than PyTorch's.
//!
//! For an image with patches `cols` (`patch x pixels`) and output gradient `dY`
//! (`out x pixels`): `dW += dY cols^T`, and `dX = col2im(W^T dY)`.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{gemm, Strided};
use super::im2col::{convolve_image, for_each_tap_row, im2col, rows_per_tile, ConvShape};
use super::layout::nchw;

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
        Ok(ConvShape {
            in_channels,
            out_channels,
            kernel,
            stride: self.stride,
            padding: self.padding,
        })
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
        let (x, [n, c, h, w]) = nchw(xs, xl)?;
        let (weight, w_dims) = nchw(ws, wl)?;
        let s = self.shape(&w_dims)?;
        if c != s.in_channels {
            candle_core::bail!("conv expects {} input channels, got {c}", s.in_channels);
        }
        let (ho, wo) = s.out_size(h, w);
        let mut out = vec![0f32; n * s.out_channels * ho * wo];
        for (img, dst) in x
            .chunks_exact(c * h * w)
            .zip(out.chunks_exact_mut(s.out_channels * ho * wo))
        {
            convolve_image(&s, weight, None, img, h, w, dst);
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, s.out_channels, ho, wo)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
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
        let dw = x.contiguous()?.apply_op2_no_bwd(
            &grad,
            &WeightGrad {
                conv: *self,
                kernel: w.dim(2)?,
            },
        )?;
        Ok((dx, Some(dw)))
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
        let (grad, [n, _, ho, wo]) = nchw(gs, gl)?;
        let (weight, w_dims) = nchw(ws, wl)?;
        let s = self.conv.shape(&w_dims)?;
        let (h, w) = (self.height, self.width);
        let patch = s.patch();
        let tile_rows = rows_per_tile(&s, ho, wo);
        let mut dx = vec![0f32; n * s.in_channels * h * w];
        let mut dcols = vec![0f32; patch * tile_rows * wo];
        for (g, dst) in grad
            .chunks_exact(s.out_channels * ho * wo)
            .zip(dx.chunks_exact_mut(s.in_channels * h * w))
        {
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
        }
        Ok((CpuStorage::F32(dx), Shape::from((n, s.in_channels, h, w))))
    }
}

/// `dW` from `X` and `dY`.
struct WeightGrad {
    conv: TrainableConv,
    kernel: usize,
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
        let (x, [_, c, h, w]) = nchw(xs, xl)?;
        let (grad, [_, out_channels, _, _]) = nchw(gs, gl)?;
        let s = ConvShape {
            in_channels: c,
            out_channels,
            kernel: self.kernel,
            stride: self.conv.stride,
            padding: self.conv.padding,
        };
        let dw = weight_grad(&s, x, grad, (h, w));
        Ok((
            CpuStorage::F32(dw),
            Shape::from((out_channels, c, self.kernel, self.kernel)),
        ))
    }
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
    let (ho, wo) = s.out_size(h, w);
    let (c, out_channels) = (s.in_channels, s.out_channels);
    let patch = s.patch();
    let tile_rows = rows_per_tile(s, ho, wo);
    let mut dw = vec![0f32; out_channels * patch];
    let mut cols = vec![0f32; patch * tile_rows * wo];
    for (img, g) in x
        .chunks_exact(c * h * w)
        .zip(grad.chunks_exact(out_channels * ho * wo))
    {
        for y0 in (0..ho).step_by(tile_rows) {
            let rows = tile_rows.min(ho - y0);
            let pixels = rows * wo;
            let cols = &mut cols[..patch * pixels];
            im2col(img, h, w, s, y0, rows, wo, cols);
            // dW (out x patch) += dY[:, y0..] (out x pixels) * cols^T (pixels x patch)
            // SAFETY: `g` is out x (ho * wo) from column `y0 * wo`, `cols` patch x pixels.
            unsafe {
                gemm(
                    (out_channels, patch, pixels),
                    Strided {
                        ptr: dw.as_mut_ptr(),
                        row: patch,
                        col: 1,
                    },
                    Strided {
                        ptr: g.as_ptr().add(y0 * wo),
                        row: ho * wo,
                        col: 1,
                    },
                    Strided {
                        ptr: cols.as_ptr(),
                        row: 1,
                        col: pixels,
                    },
                    true,
                    true,
                );
            }
        }
    }
    dw
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
        .zip(dcols.par_chunks(s.kernel * s.kernel * pixels))
        .for_each(|(plane, channel_cols)| {
            for_each_tap_row(s, (h, w), y0, rows, wo, |tap, r, iy, oxs, ix0| {
                let src = &channel_cols[tap * pixels + r * wo..];
                let dst = &mut plane[iy * w + ix0..];
                for (j, ox) in oxs.enumerate() {
                    dst[j * s.stride] += src[ox];
                }
            });
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs_diff;
    use candle_core::{DType, Device, Var};

    /// The forward against candle's conv2d, and both gradients through the adjoint
    /// identities of a linear map: for `L = sum(conv(x, w) * p)`,
    /// `<dL/dx, d> = sum(conv(d, w) * p)` and `<dL/dw, e> = sum(conv(x, e) * p)` for any `d`, `e`.
    /// (candle's own conv backward cannot serve as reference: it fails on non-square inputs.)
    #[test]
    fn forward_and_gradients_are_exact() {
        let dev = Device::Cpu;
        for (c, o, k, stride, padding, h, w) in [
            (3, 5, 3, 1, 1, 9, 7),
            (4, 6, 4, 2, 2, 11, 8),
            (2, 3, 4, 1, 2, 6, 6),
            (5, 4, 1, 1, 0, 5, 9),
            (3, 2, 3, 2, 1, 8, 13),
        ] {
            let case = format!("c{c} o{o} k{k} s{stride} p{padding} {h}x{w}");
            let rand = |dims: &[usize]| Tensor::randn(0f32, 1., dims, &dev).unwrap();
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
            let grads = (&ours * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
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
}
