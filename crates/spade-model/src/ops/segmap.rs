//! `mlp_shared` (the first convolution of SPADE, over the segmentation map) and its ReLU as
//! one custom op. When the input is one-hot labels (plus an optional binary edge channel),
//! each output pixel is a sum of `k * k` weight rows picked by the neighbours' labels:
//! `semantic_nc` times less work than the dense convolution, and a table lookup inside
//! regions of one label. Other inputs (any float semantics) take the dense path.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::conv::CpuConv2d;
use super::layout::nchw;

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
        let weight = dense.weight_f32().expect("a new convolution is float32");
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
                        weight[o * s.patch() + c * k * k + t];
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
        decode_one_hot(x, plane, self.classes, self.dense.shape.in_channels)
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
        // SPADE's `mlp_shared` kernels are square with same padding.
        let pad = self.dense.shape.padding[0];
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
        let (k, pad, co) = (s.kernel[0], s.padding[0] as isize, s.out_channels);
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
        let _time = super::profile::scope(self.name());
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

/// One image's `channels` planes of `plane` pixels as labels and edge bits: the first
/// `classes` channels must be exactly one-hot, a remaining channel a binary edge map; `None`
/// for any other input.
pub(crate) fn decode_one_hot(
    x: &[f32],
    plane: usize,
    classes: usize,
    channels: usize,
) -> Option<(Vec<u32>, Vec<bool>)> {
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
            for c in 0..classes {
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
    let edges = if classes < channels {
        let edge = &x[classes * plane..(classes + 1) * plane];
        if edge.iter().any(|&v| v != 0.0 && v != 1.0) {
            return None;
        }
        edge.iter().map(|&v| v == 1.0).collect()
    } else {
        vec![false; plane]
    };
    Some((labels, edges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, seeded_randn};
    use candle_core::Device;

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
                let wt = seeded_randn(11, &[20, classes + 1, k, k]);
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
        let wt = seeded_randn(12, &[3, 5, 3, 3]);
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
    }
}
