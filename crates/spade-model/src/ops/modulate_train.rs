//! SPADE's modulation in training: `x * (1 + gamma) + beta`, optionally through
//! `leaky_relu(0.2)`, as one op with a hand-written gradient. Composed from candle ops it is
//! four ops forward (and the split of the stacked `mlp_gamma`/`mlp_beta` output) and about
//! twice that backward, each a full-size temporary; here it is one pass each way.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused::SLOPE;
use super::layout::nchw;
use super::modulate::gamma_beta_fits;

/// `x * (1 + gamma) + beta` (then `leaky_relu(0.2)` when `leaky_relu`), with `gamma` and
/// `beta` the two channel halves of the second input; differentiable in both inputs.
#[derive(Debug, Clone, Copy)]
pub struct ModulateTrain {
    pub leaky_relu: bool,
}

impl ModulateTrain {
    fn pre_activation(x: f32, gamma: f32, beta: f32) -> f32 {
        x * (1.0 + gamma) + beta
    }
}

impl CustomOp2 for ModulateTrain {
    fn name(&self) -> &'static str {
        "spade-modulate-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (x, x_dims) = nchw(xs, xl)?;
        let (gb, gb_dims) = nchw(gs, gl)?;
        let (_, c, plane) = gamma_beta_fits(x_dims, gb_dims)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
            let (img, ch) = (i / c, i % c);
            let gamma = &gb[(img * 2 * c + ch) * plane..][..plane];
            let beta = &gb[(img * 2 * c + c + ch) * plane..][..plane];
            let src = &x[i * plane..][..plane];
            for (((o, &v), &g), &b) in dst.iter_mut().zip(src).zip(gamma).zip(beta) {
                let y = Self::pre_activation(v, g, b);
                *o = if self.leaky_relu && y < 0.0 {
                    SLOPE * y
                } else {
                    y
                };
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(x_dims.to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let both = x.contiguous()?.apply_op3_no_bwd(
            &gb.contiguous()?,
            &grad.contiguous()?,
            &ModulateGrad(*self),
        )?;
        let c = x.dim(1)?;
        Ok((Some(both.narrow(1, 0, c)?), Some(both.narrow(1, c, 2 * c)?)))
    }
}

/// `[dx | dgamma | dbeta]` along the channels (N x 3C x H x W) from `(x, gamma_beta, dy)`.
struct ModulateGrad(ModulateTrain);

impl CustomOp3 for ModulateGrad {
    fn name(&self) -> &'static str {
        "spade-modulate-train-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (x, x_dims) = nchw(xs, xl)?;
        let (gb, gb_dims) = nchw(gs, gl)?;
        let (dy, dy_dims) = nchw(ds, dl)?;
        let (n, c, plane) = gamma_beta_fits(x_dims, gb_dims)?;
        if dy_dims != x_dims {
            candle_core::bail!("modulation gradient of shape {dy_dims:?} for {x_dims:?}");
        }
        let mut out = vec![0f32; 3 * x.len()];
        // One task per image: its dx, dgamma and dbeta planes are disjoint runs of `out`.
        out.par_chunks_mut(3 * c * plane)
            .enumerate()
            .for_each(|(img, dst)| {
                let (dx, dgb) = dst.split_at_mut(c * plane);
                let (dgamma, dbeta) = dgb.split_at_mut(c * plane);
                for ch in 0..c {
                    fn at(t: &[f32], base: usize, plane: usize) -> &[f32] {
                        &t[base * plane..][..plane]
                    }
                    let (xs, g, b) = (
                        at(x, img * c + ch, plane),
                        at(gb, img * 2 * c + ch, plane),
                        at(gb, img * 2 * c + c + ch, plane),
                    );
                    let d = at(dy, img * c + ch, plane);
                    let p = ch * plane..(ch + 1) * plane;
                    let (dx, dgamma, dbeta) =
                        (&mut dx[p.clone()], &mut dgamma[p.clone()], &mut dbeta[p]);
                    for i in 0..plane {
                        let mut g_out = d[i];
                        if self.0.leaky_relu
                            && ModulateTrain::pre_activation(xs[i], g[i], b[i]) < 0.0
                        {
                            g_out *= SLOPE;
                        }
                        dx[i] = g_out * (1.0 + g[i]);
                        dgamma[i] = g_out * xs[i];
                        dbeta[i] = g_out;
                    }
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, 3 * c, x_dims[2], x_dims[3])),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, probed_gradients};
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradients_match_the_composed_ops() {
        let dev = Device::Cpu;
        for leaky_relu in [false, true] {
            let x = Var::randn(0f32, 1., (2, 3, 5, 4), &dev).unwrap();
            let gb = Var::randn(0f32, 1., (2, 6, 5, 4), &dev).unwrap();
            let probe = Tensor::randn(0f32, 1., (2, 3, 5, 4), &dev).unwrap();
            let ours = x
                .as_tensor()
                .apply_op2(gb.as_tensor(), ModulateTrain { leaky_relu })
                .unwrap();
            let (gamma, beta) = (
                gb.as_tensor().narrow(1, 0, 3).unwrap(),
                gb.as_tensor().narrow(1, 3, 3).unwrap(),
            );
            let mut reference = ((x.as_tensor() * (gamma + 1.0).unwrap()).unwrap() + beta).unwrap();
            if leaky_relu {
                reference = candle_nn::ops::leaky_relu(&reference, 0.2).unwrap();
            }
            assert!(
                max_abs_diff(&ours, &reference) < 1e-6,
                "forward, leaky {leaky_relu}"
            );
            let grads = |y: &Tensor| probed_gradients(y, &probe);
            let (g_ours, g_ref) = (grads(&ours), grads(&reference));
            for (what, v) in [("x", &x), ("gamma/beta", &gb)] {
                let diff = max_abs_diff(
                    g_ours.get(v.as_tensor()).unwrap(),
                    g_ref.get(v.as_tensor()).unwrap(),
                );
                assert!(diff < 1e-6, "d{what}, leaky {leaky_relu}: {diff}");
            }
        }
    }

    #[test]
    fn misshapen_gamma_beta_is_an_error_that_says_what_was_expected() {
        let x = Tensor::zeros((1, 4, 6, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
        let op = ModulateTrain { leaky_relu: false };
        let msg = x.apply_op2_no_bwd(&x, &op).unwrap_err().to_string();
        assert!(
            msg.contains("gamma/beta of shape [1, 8, 6, 6], got [1, 4, 6, 6]"),
            "{msg}"
        );
    }
}
