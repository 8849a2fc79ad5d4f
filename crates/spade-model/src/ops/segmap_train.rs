//! `mlp_shared` in training: `relu(conv(seg, W) + b)` with gradients for `W` and `b` only.
//! The segmentation map is data, so it needs no gradient; and where it is one-hot, the
//! weight gradient is the adjoint of the forward gather: every output-gradient value adds to
//! the weight row of the label its tap saw. Along an image row a label map is a few runs of
//! one label, so with prefix sums of the output gradient each run adds in O(1) per tap:
//! about `semantic_nc * k * k` times less work than `dY cols^T` over the dense map, and no
//! im2col. Other semantics (any floats) take the dense weight gradient.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::im2col::ConvShape;
use super::layout::nchw;
use super::reduce::sum_f64;
use super::segmap::{decode_one_hot, SegmapConv};
use super::trainable_conv::{weight_grad, with_bias_gradient};

/// `relu(conv(seg, W) + b)` over a segmentation map, differentiable in `W` and `b`; the
/// forward is [`SegmapConv`] built from the current weights.
#[derive(Debug, Clone)]
pub struct SegmapTrain {
    forward: SegmapConv,
    /// Channels that are one-hot labels (the rest, at most one, is the edge channel).
    classes: usize,
}

impl SegmapTrain {
    /// `weight`: out x in x k x k (odd k, same padding); `bias`: out.
    pub fn new(weight: &Tensor, bias: &Tensor, classes: usize) -> candle_core::Result<Self> {
        Ok(Self {
            forward: SegmapConv::new(weight, Some(bias), classes)?,
            classes,
        })
    }

    /// Applies it to `seg` (N x in x H x W) with the `weight` and `bias` it was built from.
    pub fn apply(
        &self,
        seg: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> candle_core::Result<Tensor> {
        seg.contiguous()?.apply_op3(weight, bias, self.clone())
    }
}

impl CustomOp3 for SegmapTrain {
    fn name(&self) -> &'static str {
        "segmap-conv2d-train"
    }

    fn cpu_fwd(
        &self,
        seg: &CpuStorage,
        seg_layout: &Layout,
        _weight: &CpuStorage,
        _weight_layout: &Layout,
        _bias: &CpuStorage,
        _bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::CustomOp1::cpu_fwd(&self.forward, seg, seg_layout)
    }

    fn bwd(
        &self,
        seg: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (out_channels, in_channels, kernel, _) = weight.dims4()?;
        let op = WeightGrad {
            shape: ConvShape::square(in_channels, out_channels, kernel, 1, kernel / 2),
            classes: self.classes,
        };
        let both =
            seg.contiguous()?
                .apply_op3_no_bwd(&grad.contiguous()?, &res.contiguous()?, &op)?;
        let patch = in_channels * kernel * kernel;
        let dw = both
            .narrow(1, 0, patch)?
            .reshape((out_channels, in_channels, kernel, kernel))?;
        let db = both.narrow(1, patch, 1)?.flatten_all()?;
        Ok((None, Some(dw), Some(db)))
    }
}

/// `[dW | db]` (`out x (patch + 1)`) from the map, the output gradient and the output (whose
/// zeros are where the ReLU cut the gradient).
struct WeightGrad {
    shape: ConvShape,
    classes: usize,
}

impl CustomOp3 for WeightGrad {
    fn name(&self) -> &'static str {
        "segmap-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        seg_s: &CpuStorage,
        seg_l: &Layout,
        grad_s: &CpuStorage,
        grad_l: &Layout,
        res_s: &CpuStorage,
        res_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (seg, [n, c, h, w]) = nchw(seg_s, seg_l)?;
        let (grad, grad_dims) = nchw(grad_s, grad_l)?;
        let (res, res_dims) = nchw(res_s, res_l)?;
        let s = self.shape;
        if c != s.in_channels || grad_dims != [n, s.out_channels, h, w] || res_dims != grad_dims {
            candle_core::bail!(
                "mlp_shared gradient: map {:?}, output gradient {grad_dims:?} and output \
                 {res_dims:?} do not fit {} -> {} channels",
                [n, c, h, w],
                s.in_channels,
                s.out_channels
            );
        }
        // The gradient through the ReLU.
        let masked: Vec<f32> = grad
            .par_iter()
            .zip(res)
            .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
            .collect();
        let plane = h * w;
        let decoded: Option<Vec<_>> = seg
            .chunks_exact(c * plane)
            .map(|img| decode_one_hot(img, plane, self.classes, c))
            .collect();
        let patch = s.patch();
        let out = match decoded {
            Some(maps) => {
                let runs: Vec<RowRuns> = maps
                    .iter()
                    .map(|(labels, edges)| RowRuns::new(labels, edges, self.classes, &s, h, w))
                    .collect();
                let mut out = vec![0f32; s.out_channels * (patch + 1)];
                out.par_chunks_mut(patch + 1)
                    .enumerate()
                    .for_each(|(o, row)| self.scatter(&masked, &runs, o, (n, h, w), row));
                out
            }
            None => {
                let dw = weight_grad(&s, seg, &masked, (h, w));
                with_bias_gradient(&dw, &masked, s.out_channels, plane)
            }
        };
        Ok((
            CpuStorage::F32(out),
            Shape::from((s.out_channels, patch + 1)),
        ))
    }
}

/// One image's label map as runs along its rows.
struct RowRuns {
    /// Per row, the runs of each input channel that is 1: `(start, end, channel)`.
    runs: Vec<Vec<(usize, usize, usize)>>,
    /// Per output row, the sorted columns at which the weight gradient reads prefix sums of
    /// that row's output gradient: where a run, seen through a tap, begins or ends; and `w`.
    boundaries: Vec<Vec<usize>>,
}

impl RowRuns {
    fn new(
        labels: &[u32],
        edges: &[bool],
        classes: usize,
        s: &ConvShape,
        h: usize,
        w: usize,
    ) -> Self {
        let rows = (0..h)
            .map(|y| {
                let (labels, edges) = (&labels[y * w..][..w], &edges[y * w..][..w]);
                let mut runs = Vec::new();
                let mut start = 0;
                for x in 1..=w {
                    if x == w || labels[x] != labels[start] {
                        runs.push((start, x, labels[start] as usize));
                        start = x;
                    }
                }
                let mut x = 0;
                while x < w {
                    if edges[x] {
                        let end = (x..w).find(|&e| !edges[e]).unwrap_or(w);
                        runs.push((x, end, classes));
                        x = end;
                    } else {
                        x += 1;
                    }
                }
                runs
            })
            .collect::<Vec<_>>();
        let (k, pad) = (s.kernel[0], s.padding[0]);
        let boundaries = (0..h)
            .map(|y| {
                let mut points = vec![w];
                for (_, iy) in input_rows(y, k, pad, h) {
                    for &(start, end, _) in &rows[iy] {
                        for kx in 0..k {
                            points.push((start + pad).saturating_sub(kx).min(w));
                            points.push((end + pad).saturating_sub(kx).min(w));
                        }
                    }
                }
                points.sort_unstable();
                points.dedup();
                points
            })
            .collect();
        Self {
            runs: rows,
            boundaries,
        }
    }
}

/// `(ky, iy)`: the input rows that output row `y` reads through the kernel rows `ky`.
fn input_rows(y: usize, k: usize, pad: usize, h: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k).filter_map(move |ky| {
        (y + ky)
            .checked_sub(pad)
            .filter(|&iy| iy < h)
            .map(|iy| (ky, iy))
    })
}

impl WeightGrad {
    /// Output channel `o`'s row of `[dW | db]`, summed over the images.
    fn scatter(
        &self,
        masked: &[f32],
        runs: &[RowRuns],
        o: usize,
        (n, h, w): (usize, usize, usize),
        row: &mut [f32],
    ) {
        let s = self.shape;
        let (k, pad) = (s.kernel[0], s.padding[0]);
        let mut acc = vec![0f64; s.patch() + 1];
        // Prefix sums of an output-gradient row, valid at the row's boundary columns.
        let mut prefix = vec![0f64; w + 1];
        for (img, runs) in runs.iter().enumerate().take(n) {
            let plane = &masked[(img * s.out_channels + o) * h * w..][..h * w];
            for y in 0..h {
                let row = &plane[y * w..(y + 1) * w];
                let mut last = (0, 0f64);
                for &x in &runs.boundaries[y] {
                    last = (x, last.1 + sum_f64(&row[last.0..x]));
                    prefix[x] = last.1;
                }
                prefix[0] = 0.0;
                acc[s.patch()] += prefix[w];
                for (ky, iy) in input_rows(y, k, pad, h) {
                    for &(start, end, channel) in &runs.runs[iy] {
                        for kx in 0..k {
                            // Output columns x with x + kx - pad in [start, end).
                            let lo = (start + pad).saturating_sub(kx).min(w);
                            let hi = (end + pad).saturating_sub(kx).min(w);
                            if lo < hi {
                                acc[(channel * k + ky) * k + kx] += prefix[hi] - prefix[lo];
                            }
                        }
                    }
                }
            }
        }
        for (dst, v) in row.iter_mut().zip(acc) {
            *dst = v as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, probed_gradients, seeded_randn};
    use candle_core::{Device, Var};

    /// Gradients of `sum(relu(conv(seg, W) + b) * probe)` by [`SegmapTrain`] and by candle's
    /// own conv2d autograd.
    fn both_gradients(seg: &Tensor, classes: usize, k: usize) -> [(f64, f64); 3] {
        let dev = Device::Cpu;
        let c = seg.dim(1).unwrap();
        let (n, _, h, w) = seg.dims4().unwrap();
        let weight = Var::randn(0f32, 1., (16, c, k, k), &dev).unwrap();
        let bias = Var::randn(0f32, 1., 16, &dev).unwrap();
        let probe = seeded_randn(11, &[n, 16, h, w]);
        let op = SegmapTrain::new(weight.as_tensor(), bias.as_tensor(), classes).unwrap();
        let ours = op.apply(seg, weight.as_tensor(), bias.as_tensor()).unwrap();
        let reference = seg
            .conv2d(weight.as_tensor(), k / 2, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.as_tensor().reshape((1, 16, 1, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        let grads = |y: &Tensor| {
            let g = probed_gradients(y, &probe);
            (
                g.get(weight.as_tensor()).unwrap().clone(),
                g.get(bias.as_tensor()).unwrap().clone(),
                g.get(seg).is_none(),
            )
        };
        let (dw, db, no_seg_grad) = grads(&ours);
        let (dw_ref, db_ref, _) = grads(&reference);
        assert!(no_seg_grad, "the map gets no gradient");
        let scale = |t: &Tensor| max_abs_diff(t, &t.zeros_like().unwrap());
        [
            (max_abs_diff(&ours, &reference), scale(&reference)),
            (max_abs_diff(&dw, &dw_ref), scale(&dw_ref)),
            (max_abs_diff(&db, &db_ref), scale(&db_ref)),
        ]
    }

    fn one_hot(labels: &[usize], edges: &[bool], classes: usize, h: usize, w: usize) -> Tensor {
        let n = labels.len() / (h * w);
        let plane = h * w;
        let mut data = vec![0f32; n * (classes + 1) * plane];
        for (i, (&l, &e)) in labels.iter().zip(edges).enumerate() {
            let (img, p) = (i / plane, i % plane);
            data[(img * (classes + 1) + l) * plane + p] = 1.0;
            data[(img * (classes + 1) + classes) * plane + p] = f32::from(u8::from(e));
        }
        Tensor::from_vec(data, (n, classes + 1, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn gradients_match_candle_on_one_hot_maps_with_edges() {
        let (classes, h, w) = (5, 11, 14);
        // Two images: blocky regions (long runs) and noisy labels (runs of one pixel).
        let labels: Vec<usize> = (0..2 * h * w)
            .map(|i| {
                let (img, p) = (i / (h * w), i % (h * w));
                if img == 0 {
                    ((p % w) / 4 + (p / w) / 3) % classes
                } else {
                    (p * 7 + p / 3) % classes
                }
            })
            .collect();
        let edges: Vec<bool> = (0..2 * h * w).map(|i| i % 13 == 0 || i % 13 == 1).collect();
        let seg = one_hot(&labels, &edges, classes, h, w);
        for k in [1, 3, 5] {
            for (what, (diff, scale)) in ["output", "dW", "db"]
                .iter()
                .zip(both_gradients(&seg, classes, k))
            {
                assert!(diff <= 1e-5 * scale.max(1.0), "k {k}: {what} off by {diff}");
            }
        }
    }

    #[test]
    fn float_semantics_take_the_dense_gradient() {
        let seg = Tensor::rand(0f32, 1., (2, 4, 7, 9), &Device::Cpu).unwrap();
        for (what, (diff, scale)) in ["output", "dW", "db"]
            .iter()
            .zip(both_gradients(&seg, 3, 3))
        {
            assert!(diff <= 1e-5 * scale.max(1.0), "{what} off by {diff}");
        }
    }
}
