//! SPADE: normalise the activations without parameters, then modulate them with a
//! per-pixel scale and shift predicted from the segmentation map.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::config::Config;
use crate::error::Result;
use crate::layers::{Conv2d, ConvSpec, Norm};

/// Hidden width of the SPADE convolutions, fixed in the official code.
const HIDDEN: usize = 128;

#[derive(Debug, Clone)]
pub struct Spade {
    param_free_norm: Norm,
    mlp_shared: Conv2d,
    mlp_gamma: Conv2d,
    mlp_beta: Conv2d,
}

impl Spade {
    pub fn new(cfg: &Config, channels: usize, vb: VarBuilder) -> Result<Self> {
        let k = cfg.norm_g.kernel_size;
        Ok(Self {
            param_free_norm: Norm::new(cfg.norm_g.norm, channels, false, vb.pp("param_free_norm"))?,
            mlp_shared: Conv2d::new(
                ConvSpec::same(cfg.semantic_nc(), HIDDEN, k),
                vb.pp("mlp_shared.0"),
            )?,
            mlp_gamma: Conv2d::new(ConvSpec::same(HIDDEN, channels, k), vb.pp("mlp_gamma"))?,
            mlp_beta: Conv2d::new(ConvSpec::same(HIDDEN, channels, k), vb.pp("mlp_beta"))?,
        })
    }

    /// `seg` must already have the spatial size of `x` (the generator resizes it once per size).
    pub fn forward(&self, x: &Tensor, seg: &Tensor) -> Result<Tensor> {
        let normalized = self.param_free_norm.forward(x)?;
        let actv = self.mlp_shared.forward(seg)?.relu()?;
        let gamma = self.mlp_gamma.forward(&actv)?;
        let beta = self.mlp_beta.forward(&actv)?;
        Ok(((normalized * (gamma + 1.0)?)? + beta)?)
    }
}
