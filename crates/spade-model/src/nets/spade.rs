//! SPADE: normalise the activations without parameters, then modulate them with a
//! per-pixel scale and shift predicted from the segmentation map.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::io::config::Config;
use crate::nets::layers::{ConvSpec, Mode, Norm, SegConv2d, StackedConv2d};
use crate::ops::modulate::Modulate;
use crate::ops::modulate_train::ModulateTrain;

/// Hidden width of the SPADE convolutions, fixed in the official code.
const HIDDEN: usize = 128;

#[derive(Debug, Clone)]
pub struct Spade {
    param_free_norm: Norm,
    mlp_shared: SegConv2d,
    /// `mlp_gamma` and `mlp_beta`, run as one convolution.
    mlp_gamma_beta: StackedConv2d,
    /// The fused CPU kernel for normalisation, modulation and activation.
    fused: Option<(Modulate, Modulate)>,
}

impl Spade {
    pub fn new(cfg: &Config, channels: usize, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        let k = cfg.norm_g.kernel_size;
        let param_free_norm = Norm::new(
            cfg.norm_g.norm,
            channels,
            false,
            mode,
            vb.pp("param_free_norm"),
        )?;
        let fused = if vb.device().is_cpu() && !mode.is_train() && vb.dtype() == DType::F32 {
            let norm = param_free_norm.plane_norm()?;
            let modulate = |leaky_relu| Modulate {
                norm: norm.clone(),
                leaky_relu,
            };
            Some((modulate(false), modulate(true)))
        } else {
            None
        };
        Ok(Self {
            param_free_norm,
            fused,
            mlp_shared: SegConv2d::new(
                ConvSpec::same(cfg.semantic_nc(), HIDDEN, k),
                cfg.label_channels(),
                mode,
                vb.pp("mlp_shared.0"),
            )?,
            mlp_gamma_beta: StackedConv2d::new(
                (ConvSpec::same(HIDDEN, channels, k), vb.pp("mlp_gamma")),
                (ConvSpec::same(HIDDEN, channels, k), vb.pp("mlp_beta")),
                mode,
            )?,
        })
    }

    /// `seg` must already have the spatial size of `x` (the generator resizes it once per
    /// size). With `leaky_relu` the result goes through `leaky_relu(0.2)`, as the residual
    /// block does after `norm_0` and `norm_1`.
    pub fn forward(&self, x: &Tensor, seg: &Tensor, leaky_relu: bool) -> Result<Tensor> {
        let actv = self.mlp_shared.forward(seg)?;
        if let Some((plain, leaky)) = &self.fused {
            let op = if leaky_relu { leaky } else { plain };
            let gamma_beta = self.mlp_gamma_beta.forward_stacked(&actv)?;
            return Ok(x.contiguous()?.apply_op2_no_bwd(&gamma_beta, op)?);
        }
        let normalized = self.param_free_norm.forward(x)?;
        if normalized.device().is_cpu() && normalized.dtype() == DType::F32 {
            let gamma_beta = self.mlp_gamma_beta.forward_stacked(&actv)?;
            let op = ModulateTrain { leaky_relu };
            return Ok(normalized
                .contiguous()?
                .apply_op2(&gamma_beta.contiguous()?, op)?);
        }
        let (gamma, beta) = self.mlp_gamma_beta.forward(&actv)?;
        let out = ((normalized * (gamma + 1.0)?)? + beta)?;
        Ok(if leaky_relu {
            crate::nets::layers::leaky_relu(&out)?
        } else {
            out
        })
    }
}
