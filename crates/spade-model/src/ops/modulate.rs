//! SPADE's parameter-free normalisation, `(1 + gamma) * x + beta` and the leaky ReLU that
//! follows it in one pass over memory instead of six temporaries (inference only).

use std::sync::Arc;

use candle_core::{CpuStorage, Layout, Shape};
use rayon::prelude::*;

use super::fused::SLOPE;
use super::layout::nchw;

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
                SLOPE * y
            } else {
                y
            };
        }
    }
}

/// `(n, c, plane)` of `x` (N x C x H x W) once `gamma_beta` is checked to be N x 2C x H x W.
pub(super) fn gamma_beta_fits(
    x: [usize; 4],
    gamma_beta: [usize; 4],
) -> candle_core::Result<(usize, usize, usize)> {
    let [n, c, h, w] = x;
    if gamma_beta != [n, 2 * c, h, w] {
        candle_core::bail!(
            "modulation needs gamma/beta of shape {:?}, got {gamma_beta:?}",
            [n, 2 * c, h, w]
        );
    }
    Ok((n, c, h * w))
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
        let _time = super::profile::scope(self.name());
        let (x, x_dims) = nchw(s1, l1)?;
        let (gb, gb_dims) = nchw(s2, l2)?;
        let (n, c, plane) = gamma_beta_fits(x_dims, gb_dims)?;
        let [_, _, h, w] = x_dims;
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
    use candle_core::{Device, Tensor, D};

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

    #[test]
    fn misshapen_inputs_are_errors_that_say_what_was_expected() {
        let dev = Device::Cpu;
        let err = |r: candle_core::Result<Tensor>| r.unwrap_err().to_string();
        let x = Tensor::zeros((1, 4, 6, 6), candle_core::DType::F32, &dev).unwrap();

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
}
