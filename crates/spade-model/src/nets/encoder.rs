//! The VAE style encoder (`ConvEncoder`): a photo to the mean and log-variance of its
//! style vector.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::io::config::Config;
use crate::nets::layers::{leaky_relu, resize_bilinear, Conv2d, ConvSpec, Linear, Mode, Norm};

/// The encoder always sees 256 x 256 photos; the official code resizes other sizes.
const INPUT_SIZE: usize = 256;
/// Width of `mu` / `logvar`, hard-coded to 256 in the official code (not `z_dim`).
pub const LATENT_DIM: usize = 256;

#[derive(Debug, Clone)]
pub struct Encoder {
    layers: Vec<(Conv2d, Option<Norm>)>,
    fc_mu: Linear,
    fc_var: Linear,
}

impl Encoder {
    /// The encoder for inference (PyTorch's `.eval()`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Self::with_mode(cfg, &Mode::Eval, vb)
    }

    pub fn with_mode(cfg: &Config, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        if cfg.crop_size < INPUT_SIZE {
            return Err(Error::config(
                "crop_size",
                format!(
                    "the style encoder needs crop_size >= 256 (its six stride-2 layers reduce \
                     256 to 4x4), got {}",
                    cfg.crop_size
                ),
            ));
        }
        let ndf = cfg.ngf;
        let widths = [3, ndf, 2 * ndf, 4 * ndf, 8 * ndf, 8 * ndf, 8 * ndf];
        let norm = cfg.norm_e.norm;
        let mut layers = Vec::with_capacity(6);
        for (i, pair) in widths.windows(2).enumerate() {
            let vb = vb.pp(format!("layer{}", i + 1));
            // With a norm the conv is item 0 of an nn.Sequential, and loses its bias.
            let (conv_vb, norm) = match norm {
                Some(kind) => (
                    vb.pp("0"),
                    Some(Norm::new(kind, pair[1], true, mode, vb.pp("1"))?),
                ),
                None => (vb, None),
            };
            let spec = ConvSpec {
                in_channels: pair[0],
                out_channels: pair[1],
                kernel: 3,
                stride: 2,
                padding: 1,
                bias: norm.is_none(),
                spectral: cfg.norm_e.spectral,
            };
            layers.push((Conv2d::new(spec, mode, conv_vb)?, norm));
        }
        let flat = 8 * ndf * 4 * 4;
        Ok(Self {
            layers,
            fc_mu: Linear::new(flat, LATENT_DIM, vb.pp("fc_mu"))?,
            fc_var: Linear::new(flat, LATENT_DIM, vb.pp("fc_var"))?,
        })
    }

    /// `image`: N x 3 x H x W in [-1, 1]. Returns `(mu, logvar)`, each N x 256.
    pub fn forward(&self, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = match *image.dims() {
            [n, 3, h, w] if n > 0 && h > 0 && w > 0 => n,
            _ => {
                return Err(Error::input(
                    "style image",
                    format!("expected N x 3 x H x W, got {:?}", image.dims()),
                ))
            }
        };
        let mut x = resize_bilinear(image, INPUT_SIZE, INPUT_SIZE)?;
        for (i, (conv, norm)) in self.layers.iter().enumerate() {
            if i > 0 {
                x = leaky_relu(&x)?;
            }
            x = conv.forward(&x)?;
            if let Some(norm) = norm {
                x = norm.forward(&x)?;
            }
        }
        let x = leaky_relu(&x)?.reshape((n, ()))?;
        Ok((self.fc_mu.forward(&x)?, self.fc_var.forward(&x)?))
    }
}

/// The reparameterisation trick: `z = eps * exp(0.5 * logvar) + mu`.
pub fn reparameterize(mu: &Tensor, logvar: &Tensor, eps: &Tensor) -> Result<Tensor> {
    Ok(((eps * (logvar * 0.5)?.exp()?)? + mu)?)
}
