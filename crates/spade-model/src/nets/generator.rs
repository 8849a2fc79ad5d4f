//! The SPADE generator: a feature map from the downsampled segmentation map (or from a
//! style vector `z`), grown by SPADE residual blocks and nearest x2 upsampling to an image.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::io::config::{Config, Upsampling};
use crate::nets::layers::{leaky_relu, resize_nearest, upsample2x, Conv2d, ConvSpec, Linear, Mode};
use crate::nets::resblock::SpadeResBlock;

/// Where the first feature map comes from.
#[derive(Debug, Clone)]
enum Head {
    /// 3x3 conv over the segmentation map resized to `sh x sw`.
    Segmap(Conv2d),
    /// Linear map of the style vector `z`, reshaped to `16 ngf x sh x sw`.
    Style(Linear),
}

#[derive(Debug, Clone)]
pub struct Generator {
    cfg: Config,
    fc: Head,
    /// `(name, block, upsample before it)` in the official order.
    blocks: Vec<(&'static str, SpadeResBlock, bool)>,
    conv_img: Conv2d,
}

impl Generator {
    /// The generator for inference (PyTorch's `.eval()`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Self::with_mode(cfg, &Mode::Eval, vb)
    }

    pub fn with_mode(cfg: &Config, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        let nf = cfg.ngf;
        let (sw, sh) = cfg.latent_size();
        let fc = if cfg.use_vae {
            Head::Style(Linear::new(cfg.z_dim, 16 * nf * sw * sh, vb.pp("fc"))?)
        } else {
            Head::Segmap(Conv2d::new(
                ConvSpec::same(cfg.semantic_nc(), 16 * nf, 3),
                mode,
                vb.pp("fc"),
            )?)
        };
        let extra_up = cfg.num_upsampling_layers != Upsampling::Normal;
        let mut layout = vec![
            ("head_0", 16 * nf, 16 * nf, false),
            ("G_middle_0", 16 * nf, 16 * nf, true),
            ("G_middle_1", 16 * nf, 16 * nf, extra_up),
            ("up_0", 16 * nf, 8 * nf, true),
            ("up_1", 8 * nf, 4 * nf, true),
            ("up_2", 4 * nf, 2 * nf, true),
            ("up_3", 2 * nf, nf, true),
        ];
        let mut final_nc = nf;
        if cfg.num_upsampling_layers == Upsampling::Most {
            layout.push(("up_4", nf, nf / 2, true));
            final_nc = nf / 2;
        }
        let blocks = layout
            .into_iter()
            .map(|(name, fin, fout, up)| {
                Ok((
                    name,
                    SpadeResBlock::new(cfg, fin, fout, mode, vb.pp(name))?,
                    up,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            fc,
            blocks,
            conv_img: Conv2d::new(ConvSpec::same(final_nc, 3, 3), mode, vb.pp("conv_img"))?,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// `seg`: N x semantic_nc x H x W; `z`: N x z_dim, required exactly when the model
    /// was trained with the VAE. Returns N x 3 x h x w in [-1, 1].
    pub fn forward(&self, seg: &Tensor, z: Option<&Tensor>) -> Result<Tensor> {
        self.forward_inspect(seg, z, &mut |_, _| {})
    }

    /// As [`forward`](Self::forward), handing every stage's output (`fc`, `head_0`, ...,
    /// `up_3`) to `inspect`.
    pub fn forward_inspect(
        &self,
        seg: &Tensor,
        z: Option<&Tensor>,
        inspect: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let n = self.check_semantics(seg)?;
        let (sw, sh) = self.cfg.latent_size();
        let mut x = match (&self.fc, z) {
            (Head::Segmap(conv), None) => conv.forward(&resize_nearest(seg, sh, sw)?)?,
            (Head::Style(fc), Some(z)) => {
                if z.dims() != [n, self.cfg.z_dim] {
                    return Err(Error::input(
                        "z",
                        format!(
                            "expected shape [{n}, {}] (batch x z_dim), got {:?}",
                            self.cfg.z_dim,
                            z.dims()
                        ),
                    ));
                }
                fc.forward(&z.to_dtype(seg.dtype())?)?
                    .reshape((n, 16 * self.cfg.ngf, sh, sw))?
            }
            (Head::Style(_), None) => {
                return Err(Error::input(
                    "z",
                    "this model was trained with the VAE (use_vae) and needs a style vector",
                ))
            }
            (Head::Segmap(_), Some(_)) => {
                return Err(Error::input(
                    "z",
                    "this model has no style encoder (use_vae is off) and takes no style vector",
                ))
            }
        };
        inspect("fc", &x);
        let mut seg_at_size = seg.clone();
        for (name, block, up) in &self.blocks {
            if *up {
                x = upsample2x(&x)?;
            }
            let (_, _, h, w) = x.dims4()?;
            if seg_at_size.dims()[2..] != [h, w] {
                seg_at_size = resize_nearest(seg, h, w)?;
            }
            x = block.forward(&x, &seg_at_size)?;
            inspect(name, &x);
        }
        Ok(self.conv_img.forward(&leaky_relu(&x)?)?.tanh()?)
    }

    fn check_semantics(&self, seg: &Tensor) -> Result<usize> {
        match *seg.dims() {
            [n, c, h, w] if c == self.cfg.semantic_nc() && n > 0 && h > 0 && w > 0 => Ok(n),
            _ => Err(Error::input(
                "semantics",
                format!(
                    "expected N x {} x H x W (label_nc {} + dontcare {} + instance edge {}), got {:?}",
                    self.cfg.semantic_nc(),
                    self.cfg.label_nc,
                    u8::from(self.cfg.contain_dontcare_label),
                    u8::from(!self.cfg.no_instance),
                    seg.dims()
                ),
            )),
        }
    }
}
