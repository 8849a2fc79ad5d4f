//! The multiscale PatchGAN discriminator (`MultiscaleDiscriminator` of
//! `NLayerDiscriminator`s): judges `semantics ++ image` at `num_D` scales and returns every
//! layer's output, which the feature-matching loss compares between fake and real.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::io::config::ConvNorm;
use crate::nets::layers::{avg_pool3x3_s2, leaky_relu, Conv2d, ConvSpec, Mode, Norm};

/// Kernel size and padding of every discriminator convolution.
const KERNEL: usize = 4;
const PADDING: usize = 2;
/// Widths stop doubling here.
const MAX_WIDTH: usize = 512;

/// The discriminator options of the official `opt.txt`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscriminatorConfig {
    /// Channels of the input: `semantic_nc + 3`.
    pub input_nc: usize,
    pub ndf: usize,
    pub n_layers_d: usize,
    pub num_d: usize,
    pub norm_d: ConvNorm,
}

/// One conv group (`model<i>` in the state dict), with its norm and whether a leaky ReLU follows.
#[derive(Debug, Clone)]
struct Group {
    conv: Conv2d,
    norm: Option<Norm>,
    activation: bool,
}

/// One `NLayerDiscriminator`.
#[derive(Debug, Clone)]
pub struct PatchDiscriminator {
    groups: Vec<Group>,
}

impl PatchDiscriminator {
    pub fn new(cfg: &DiscriminatorConfig, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        let mut groups = Vec::with_capacity(cfg.n_layers_d + 1);
        let plain = |cin, cout, stride| ConvSpec {
            in_channels: cin,
            out_channels: cout,
            kernel: KERNEL,
            stride,
            padding: PADDING,
            bias: true,
            spectral: false,
        };
        groups.push(Group {
            conv: Conv2d::new(plain(cfg.input_nc, cfg.ndf, 2), mode, vb.pp("model0.0"))?,
            norm: None,
            activation: true,
        });
        let mut nf = cfg.ndf;
        for n in 1..cfg.n_layers_d {
            let nf_prev = nf;
            nf = (nf * 2).min(MAX_WIDTH);
            let stride = if n == cfg.n_layers_d - 1 { 1 } else { 2 };
            let vb = vb.pp(format!("model{n}.0"));
            // With a norm the conv sits in an inner nn.Sequential and loses its bias.
            let (conv_vb, norm) = match cfg.norm_d.norm {
                Some(kind) => (
                    vb.pp("0"),
                    Some(Norm::new(kind, nf, true, mode, vb.pp("1"))?),
                ),
                None => (vb, None),
            };
            let spec = ConvSpec {
                bias: norm.is_none(),
                spectral: cfg.norm_d.spectral,
                ..plain(nf_prev, nf, stride)
            };
            groups.push(Group {
                conv: Conv2d::new(spec, mode, conv_vb)?,
                norm,
                activation: true,
            });
        }
        let last = format!("model{}.0", cfg.n_layers_d);
        groups.push(Group {
            conv: Conv2d::new(plain(nf, 1, 1), mode, vb.pp(last))?,
            norm: None,
            activation: false,
        });
        Ok(Self { groups })
    }

    /// Every group's output, the last being the patch predictions.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut outputs = Vec::with_capacity(self.groups.len());
        let mut x = x.clone();
        for group in &self.groups {
            x = group.conv.forward(&x)?;
            if let Some(norm) = &group.norm {
                x = norm.forward(&x)?;
            }
            if group.activation {
                x = leaky_relu(&x)?;
            }
            outputs.push(x.clone());
        }
        Ok(outputs)
    }
}

#[derive(Debug, Clone)]
pub struct MultiscaleDiscriminator {
    scales: Vec<PatchDiscriminator>,
}

impl MultiscaleDiscriminator {
    pub fn new(cfg: &DiscriminatorConfig, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        if cfg.num_d == 0 || cfg.n_layers_d == 0 || cfg.ndf == 0 {
            return Err(Error::config(
                "num_D / n_layers_D / ndf",
                format!(
                    "must all be at least 1, got {} / {} / {}",
                    cfg.num_d, cfg.n_layers_d, cfg.ndf
                ),
            ));
        }
        let scales = (0..cfg.num_d)
            .map(|i| PatchDiscriminator::new(cfg, mode, vb.pp(format!("discriminator_{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self { scales })
    }

    /// Per scale (full size first), every layer's output.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Vec<Tensor>>> {
        let mut x = x.clone();
        let mut outputs = Vec::with_capacity(self.scales.len());
        for (i, scale) in self.scales.iter().enumerate() {
            if i > 0 {
                x = avg_pool3x3_s2(&x)?;
            }
            outputs.push(scale.forward(&x)?);
        }
        Ok(outputs)
    }
}
