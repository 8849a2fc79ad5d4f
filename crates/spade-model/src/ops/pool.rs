//! Average and max pooling with zero padding left out of the window, as PyTorch's
//! `avg_pool2d(count_include_pad=False)` and `max_pool2d(padding=p)` compute them: one pass
//! over the input, a plane per task, where candle needs a padded copy, a pool and a divide.
//! Average pooling has its gradient too (the discriminator pools between its scales).

use super::layout::{map_planes, nchw};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// What a window keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// The mean of the window's pixels inside the image (padding not counted).
    Average,
    /// The largest of the window's pixels inside the image (NaN wins, as in PyTorch).
    Max,
}

/// A `kernel x kernel` pool with `stride` and `padding` on every side.
#[derive(Debug, Clone, Copy)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Pool2d {
    fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// The input indices `[start, end)` a window at output index `o` covers, clipped to the
    /// image.
    fn window(&self, o: usize, n: usize) -> (usize, usize) {
        let start = (o * self.stride).saturating_sub(self.padding);
        let end = (o * self.stride + self.kernel - self.padding).min(n);
        (start, end)
    }

    fn plane(&self, src: &[f32], (h, w): (usize, usize), dst: &mut [f32]) {
        let wo = self.out_size(w);
        for (oy, row) in dst.chunks_exact_mut(wo).enumerate() {
            let (y0, y1) = self.window(oy, h);
            for (ox, out) in row.iter_mut().enumerate() {
                let (x0, x1) = self.window(ox, w);
                // PyTorch's order: rows, then columns; the sum in f32, then one divide.
                let values = (y0..y1).flat_map(|y| &src[y * w + x0..y * w + x1]);
                *out = match self.kind {
                    PoolKind::Average => {
                        let count = ((y1 - y0) * (x1 - x0)) as f32;
                        values.fold(0f32, |acc, &v| acc + v) / count
                    }
                    PoolKind::Max => values.fold(f32::NEG_INFINITY, |acc, &v| {
                        if v > acc || v.is_nan() {
                            v
                        } else {
                            acc
                        }
                    }),
                };
            }
        }
    }
}

impl CustomOp1 for Pool2d {
    fn name(&self) -> &'static str {
        "pool2d"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (x, [n, c, h, w]) = nchw(storage, layout)?;
        let k = self.kernel;
        // Every window must hold at least one pixel of the image: PyTorch's own conditions.
        let fits = |n: usize| n + 2 * self.padding >= k;
        if k == 0 || self.stride == 0 || 2 * self.padding > k || !fits(h) || !fits(w) {
            candle_core::bail!(
                "pool of {k}x{k}, stride {}, padding {} does not fit a {h}x{w} input",
                self.stride,
                self.padding
            );
        }
        let (ho, wo) = (self.out_size(h), self.out_size(w));
        let out = map_planes(x, h * w, ho * wo, |src, dst| self.plane(src, (h, w), dst));
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        if self.kind != PoolKind::Average {
            candle_core::bail!("max pooling has no gradient here");
        }
        let (_, _, h, w) = arg.dims4()?;
        let op = AveragePoolGrad {
            pool: *self,
            size: (h, w),
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// The input gradient of an average pool: each output's gradient, divided by its window's
/// pixel count, added to every pixel of the window.
struct AveragePoolGrad {
    pool: Pool2d,
    size: (usize, usize),
}

impl CustomOp1 for AveragePoolGrad {
    fn name(&self) -> &'static str {
        "average-pool-grad"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (grad, [n, c, ho, wo]) = nchw(storage, layout)?;
        let (h, w) = self.size;
        let p = &self.pool;
        let dx = map_planes(grad, ho * wo, h * w, |g, plane| {
            for (oy, row) in g.chunks_exact(wo).enumerate() {
                let (y0, y1) = p.window(oy, h);
                for (ox, &value) in row.iter().enumerate() {
                    let (x0, x1) = p.window(ox, w);
                    let share = value / ((y1 - y0) * (x1 - x0)) as f32;
                    for y in y0..y1 {
                        for d in &mut plane[y * w + x0..y * w + x1] {
                            *d += share;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, seeded_randn};
    use candle_core::{Device, Tensor};

    fn pool(kind: PoolKind, kernel: usize, stride: usize, padding: usize) -> Pool2d {
        Pool2d {
            kind,
            kernel,
            stride,
            padding,
        }
    }

    /// The mean over the pixels inside the image, written out with explicit padding.
    fn average_excluding_padding(x: &Tensor, k: usize, stride: usize, pad: usize) -> Tensor {
        let (_, _, h, w) = x.dims4().unwrap();
        let padded = x
            .pad_with_zeros(2, pad, pad)
            .unwrap()
            .pad_with_zeros(3, pad, pad)
            .unwrap();
        let ones = Tensor::ones((1, 1, h, w), x.dtype(), x.device())
            .unwrap()
            .pad_with_zeros(2, pad, pad)
            .unwrap()
            .pad_with_zeros(3, pad, pad)
            .unwrap();
        let area = (k * k) as f64;
        let sums = (padded.avg_pool2d_with_stride(k, stride).unwrap() * area).unwrap();
        let counts = (ones.avg_pool2d_with_stride(k, stride).unwrap() * area).unwrap();
        sums.broadcast_div(&counts).unwrap()
    }

    #[test]
    fn average_pool_divides_by_the_pixels_inside_the_image() {
        for (k, stride, pad, h, w) in [(3, 1, 1, 7, 5), (3, 2, 1, 9, 8), (2, 2, 0, 6, 6)] {
            let x = seeded_randn(21, &[2, 3, h, w]);
            let op = pool(PoolKind::Average, k, stride, pad);
            let ours = x.apply_op1_no_bwd(&op).unwrap();
            let expected = average_excluding_padding(&x, k, stride, pad);
            assert_eq!(ours.dims(), expected.dims());
            assert!(max_abs_diff(&ours, &expected) < 1e-6, "{k} {stride} {pad}");
        }
        // A corner of a 3 x 3 pool over ones and a 2 in the corner: (2 + 1 + 1 + 1) / 4.
        let mut values = vec![1f32; 9];
        values[0] = 2.0;
        let x = Tensor::from_vec(values, (1, 1, 3, 3), &Device::Cpu).unwrap();
        let op = pool(PoolKind::Average, 3, 1, 1);
        let out = x.apply_op1_no_bwd(&op).unwrap().flatten_all().unwrap();
        assert_eq!(out.to_vec1::<f32>().unwrap()[0], 1.25);
    }

    #[test]
    fn max_pool_ignores_padding_even_when_every_value_is_negative() {
        let x = seeded_randn(22, &[2, 3, 9, 7])
            .abs()
            .unwrap()
            .affine(-1.0, -0.5)
            .unwrap();
        for (k, stride, pad) in [(3, 1, 1), (3, 2, 0), (3, 2, 1)] {
            let op = pool(PoolKind::Max, k, stride, pad);
            let ours = x.apply_op1_no_bwd(&op).unwrap();
            // Replicated borders are the same as padding with minus infinity.
            let expected = x
                .pad_with_same(2, pad, pad)
                .unwrap()
                .pad_with_same(3, pad, pad)
                .unwrap()
                .max_pool2d_with_stride(k, stride)
                .unwrap();
            assert_eq!(ours.dims(), expected.dims());
            assert_eq!(max_abs_diff(&ours, &expected), 0.0, "{k} {stride} {pad}");
        }
    }

    /// The gradient of the average pool is the adjoint of the pool: for any `d` and
    /// probe `p`, `<dL/dx, d> = <pool(d), p>` with `L = <pool(x), p>`.
    #[test]
    fn average_pool_gradient_is_the_adjoint_of_the_pool() {
        for (k, stride, pad, h, w) in [(3, 2, 1, 9, 8), (3, 2, 1, 16, 16), (3, 1, 1, 7, 5)] {
            let x = candle_core::Var::from_tensor(&seeded_randn(31, &[2, 3, h, w])).unwrap();
            let op = pool(PoolKind::Average, k, stride, pad);
            let y = x.as_tensor().apply_op1(op).unwrap();
            let probe = seeded_randn(32, y.dims());
            let grads = crate::test_util::probed_gradients(&y, &probe);
            let d = seeded_randn(33, &[2, 3, h, w]);
            let dot = |a: &Tensor, b: &Tensor| {
                (a * b)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let got = dot(grads.get(x.as_tensor()).unwrap(), &d);
            let want = dot(&d.apply_op1_no_bwd(&op).unwrap(), &probe);
            assert!(
                (got - want).abs() < 1e-4 * want.abs().max(1.0),
                "{k} {stride} {pad}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn max_pooling_refuses_to_differentiate() {
        let x = candle_core::Var::from_tensor(&seeded_randn(34, &[1, 1, 4, 4])).unwrap();
        let y = x
            .as_tensor()
            .apply_op1(pool(PoolKind::Max, 2, 2, 0))
            .unwrap();
        let msg = y.sum_all().unwrap().backward().unwrap_err().to_string();
        assert!(msg.contains("max pooling has no gradient"), "{msg}");
    }

    #[test]
    fn pools_that_do_not_fit_are_errors() {
        let x = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let op = pool(PoolKind::Max, 3, 2, 0);
        let msg = x.apply_op1_no_bwd(&op).unwrap_err().to_string();
        assert!(msg.contains("does not fit a 2x2 input"), "{msg}");
        for bad in [
            pool(PoolKind::Average, 3, 0, 1),
            pool(PoolKind::Max, 2, 1, 2),
        ] {
            let msg = x.apply_op1_no_bwd(&bad).unwrap_err().to_string();
            assert!(msg.contains("does not fit a 2x2 input"), "{msg}");
        }
    }
}
