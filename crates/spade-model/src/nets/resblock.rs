//! The SPADE residual block: two SPADE-normalised 3x3 convolutions and a shortcut that
//! is learned (SPADE + 1x1 conv) when the block changes the channel count.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::io::config::Config;
use crate::nets::layers::{Conv2d, ConvSpec, Mode};
use crate::nets::spade::Spade;

#[derive(Debug, Clone)]
pub struct SpadeResBlock {
    conv_0: Conv2d,
    conv_1: Conv2d,
    norm_0: Spade,
    norm_1: Spade,
    shortcut: Option<(Spade, Conv2d)>,
}

impl SpadeResBlock {
    pub fn new(cfg: &Config, fin: usize, fout: usize, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        let fmiddle = fin.min(fout);
        let spectral = cfg.norm_g.spectral;
        let conv = |cin, cout, kernel, bias| ConvSpec {
            bias,
            spectral,
            ..ConvSpec::same(cin, cout, kernel)
        };
        let shortcut = if fin != fout {
            Some((
                Spade::new(cfg, fin, mode, vb.pp("norm_s"))?,
                Conv2d::new(conv(fin, fout, 1, false), mode, vb.pp("conv_s"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv_0: Conv2d::new(conv(fin, fmiddle, 3, true), mode, vb.pp("conv_0"))?,
            conv_1: Conv2d::new(conv(fmiddle, fout, 3, true), mode, vb.pp("conv_1"))?,
            norm_0: Spade::new(cfg, fin, mode, vb.pp("norm_0"))?,
            norm_1: Spade::new(cfg, fmiddle, mode, vb.pp("norm_1"))?,
            shortcut,
        })
    }

    /// `seg` has the spatial size of `x`.
    pub fn forward(&self, x: &Tensor, seg: &Tensor) -> Result<Tensor> {
        let x_s = match &self.shortcut {
            Some((norm_s, conv_s)) => conv_s.forward(&norm_s.forward(x, seg, false)?)?,
            None => x.clone(),
        };
        let dx = self.conv_0.forward(&self.norm_0.forward(x, seg, true)?)?;
        let dx = self.conv_1.forward(&self.norm_1.forward(&dx, seg, true)?)?;
        Ok((x_s + dx)?)
    }
}
