//! Element-wise ops of the networks as single CPU passes with hand-written gradients:
//! `leaky_relu(0.2)` and the parameter-free normalisations (instance norm, train-mode batch
//! norm). Built from candle primitives each costs five to seven ops forward and twice that
//! backward, every one allocating a full-size tensor; they dominated training steps once the
//! convolutions were fast. Other devices and dtypes keep the candle formulation.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::reduce::{dot_f64, sum_by, sum_f64};

/// `F.leaky_relu(x, 0.2)`; the gradient is `dy` where `x > 0`, else `0.2 dy` (PyTorch's).
pub fn leaky_relu(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(LeakyRelu)
    } else {
        candle_nn::ops::leaky_relu(x, f64::from(SLOPE))
    }
}

/// The negative slope of SPADE's leaky ReLU.
pub(crate) const SLOPE: f32 = 0.2;

fn slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{what} takes f32");
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} takes contiguous tensors")))?;
    Ok(&data[start..end])
}

struct LeakyRelu;

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let x = slice(s, l, "leaky-relu")?;
        let y = x
            .par_iter()
            .map(|&v| if v > 0.0 { v } else { SLOPE * v })
            .collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(x, &LeakyReluGrad)?))
    }
}

struct LeakyReluGrad;

impl CustomOp2 for LeakyReluGrad {
    fn name(&self) -> &'static str {
        "leaky-relu-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (dy, x) = (slice(gs, gl, "leaky-relu")?, slice(xs, xl, "leaky-relu")?);
        let dx = dy
            .par_iter()
            .zip(x.par_iter())
            .map(|(&g, &v)| if v > 0.0 { g } else { SLOPE * g })
            .collect();
        Ok((CpuStorage::F32(dx), gl.shape().clone()))
    }
}

/// Which elements share their statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistics {
    /// Per sample and channel, over H x W (instance norm).
    Instance,
    /// Per channel, over N x H x W (train-mode batch norm).
    Batch,
}

/// `(x - mean) / sqrt(var + eps)` with the biased variance over the groups of `stats`.
/// The gradient is `(dy - mean(dy) - y * mean(dy * y)) / sqrt(var + eps)` per group.
pub fn normalize(x: &Tensor, stats: Statistics, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Normalize { stats, eps })
}

#[derive(Debug, Clone, Copy)]
struct Normalize {
    stats: Statistics,
    eps: f64,
}

impl Normalize {
    /// Plane `p` (of `n * c` planes) belongs to group...
    fn group_of(&self, plane: usize, channels: usize) -> usize {
        match self.stats {
            Statistics::Instance => plane,
            Statistics::Batch => plane % channels,
        }
    }

    fn groups(&self, n: usize, c: usize) -> usize {
        match self.stats {
            Statistics::Instance => n * c,
            Statistics::Batch => c,
        }
    }

    /// The mean over each group of `plane_sum(plane)`, the f64 sum of a function of that
    /// plane's elements.
    fn group_means(&self, dims: [usize; 4], plane_sum: impl Fn(usize) -> f64 + Sync) -> Vec<f64> {
        let [n, c, _, _] = dims;
        let count = self.count(dims);
        (0..self.groups(n, c))
            .into_par_iter()
            .map(|g| {
                let sum: f64 = match self.stats {
                    Statistics::Instance => plane_sum(g),
                    Statistics::Batch => (0..n).map(|i| plane_sum(i * c + g)).sum(),
                };
                sum / count
            })
            .collect()
    }

    fn count(&self, dims: [usize; 4]) -> f64 {
        let [n, _, h, w] = dims;
        (match self.stats {
            Statistics::Instance => h * w,
            Statistics::Batch => n * h * w,
        }) as f64
    }

    /// Mean and biased variance per group.
    fn moments(&self, x: &[f32], dims: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
        let plane = dims[2] * dims[3];
        let values = |p: usize| &x[p * plane..][..plane];
        let mean = self.group_means(dims, |p| sum_f64(values(p)));
        let var = self.group_means(dims, |p| {
            let m = mean[self.group_of(p, dims[1])];
            sum_by(values(p), |v| (f64::from(v) - m).powi(2))
        });
        (mean, var)
    }

    fn inv_std(&self, var: &[f64]) -> Vec<f64> {
        var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect()
    }
}

/// The per-channel mean and biased variance over N x H x W (C values each) that train-mode
/// batch norm normalises with, for its running statistics: one pass, no graph.
pub fn channel_moments(x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let x = x.contiguous()?;
    let dims = dims4(x.layout())?;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("channel moments are computed on the CPU");
    };
    let op = Normalize {
        stats: Statistics::Batch,
        eps: 0.0,
    };
    let (mean, var) = op.moments(slice(cpu, layout, "channel moments")?, dims);
    let to_tensor = |v: Vec<f64>| {
        let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
        Tensor::from_vec(v, dims[1], x.device())
    };
    Ok((to_tensor(mean)?, to_tensor(var)?))
}

fn dims4(l: &Layout) -> candle_core::Result<[usize; 4]> {
    match *l.dims() {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref other => candle_core::bail!("normalisation takes N x C x H x W, got {other:?}"),
    }
}

impl CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "normalize"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope("normalize");
        let x = slice(s, l, "normalize")?;
        let dims = dims4(l)?;
        let (mean, var) = self.moments(x, dims);
        let inv_std = self.inv_std(&var);
        let plane = dims[2] * dims[3];
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(plane).enumerate().for_each(|(p, out)| {
            let g = self.group_of(p, dims[1]);
            for (o, &v) in out.iter_mut().zip(&x[p * plane..(p + 1) * plane]) {
                *o = ((f64::from(v) - mean[g]) * inv_std[g]) as f32;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op3_no_bwd(y, &dy.contiguous()?, self)?))
    }
}

/// The gradient, as an op of `(x, y, dy)`.
impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "normalize-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope("normalize-backward");
        let x = slice(xs, xl, "normalize")?;
        let y = slice(ys, yl, "normalize")?;
        let dy = slice(gs, gl, "normalize")?;
        let dims = dims4(xl)?;
        let inv_std = self.inv_std(&self.moments(x, dims).1);
        let plane = dims[2] * dims[3];
        let (dy_plane, y_plane) = (
            |p: usize| &dy[p * plane..][..plane],
            |p: usize| &y[p * plane..][..plane],
        );
        let mean_dy = self.group_means(dims, |p| sum_f64(dy_plane(p)));
        let mean_dy_y = self.group_means(dims, |p| dot_f64(dy_plane(p), y_plane(p)));
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(plane).enumerate().for_each(|(p, out)| {
            let g = self.group_of(p, dims[1]);
            let range = p * plane..(p + 1) * plane;
            for ((o, &gy), &yy) in out.iter_mut().zip(&dy[range.clone()]).zip(&y[range]) {
                *o = ((f64::from(gy) - mean_dy[g] - f64::from(yy) * mean_dy_y[g]) * inv_std[g])
                    as f32;
            }
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, probed_gradients, seeded_randn};
    use candle_core::{DType, Device, Var};

    fn reference_normalize(x: &Tensor, stats: Statistics) -> Tensor {
        let dims: &[usize] = match stats {
            Statistics::Instance => &[2, 3],
            Statistics::Batch => &[0, 2, 3],
        };
        let mut mean = x.clone();
        for &d in dims.iter().rev() {
            mean = mean.mean_keepdim(d).unwrap();
        }
        let centered = x.broadcast_sub(&mean).unwrap();
        let mut var = centered.sqr().unwrap();
        for &d in dims.iter().rev() {
            var = var.mean_keepdim(d).unwrap();
        }
        centered
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
    }

    /// Forward and gradient against the same formula in candle ops, in float64.
    #[test]
    fn fused_ops_match_candle_formulations() {
        let dev = Device::Cpu;
        let x = Tensor::randn(1.5f32, 3., (3, 4, 5, 6), &dev).unwrap();
        let probe = seeded_randn(11, &[3, 4, 5, 6]);
        let x64 = x.to_dtype(DType::F64).unwrap();
        let probe64 = probe.to_dtype(DType::F64).unwrap();
        type Op = fn(&Tensor) -> Tensor;
        let cases: [(&str, Op, Op); 3] = [
            (
                "leaky_relu",
                |t| leaky_relu(t).unwrap(),
                |t| candle_nn::ops::leaky_relu(t, 0.2).unwrap(),
            ),
            (
                "instance",
                |t| normalize(t, Statistics::Instance, 1e-5).unwrap(),
                |t| reference_normalize(t, Statistics::Instance),
            ),
            (
                "batch",
                |t| normalize(t, Statistics::Batch, 1e-5).unwrap(),
                |t| reference_normalize(t, Statistics::Batch),
            ),
        ];
        for (name, ours, theirs) in cases {
            let (v, v64) = (
                Var::from_tensor(&x).unwrap(),
                Var::from_tensor(&x64).unwrap(),
            );
            let (a, b) = (ours(v.as_tensor()), theirs(v64.as_tensor()));
            assert!(max_abs_diff(&a, &b) < 1e-5, "{name}: forward");
            let ga = probed_gradients(&a, &probe);
            let gb = probed_gradients(&b, &probe64);
            let err = max_abs_diff(
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v64.as_tensor()).unwrap(),
            );
            assert!(err < 1e-5, "{name}: gradient error {err}");
        }
    }
}
