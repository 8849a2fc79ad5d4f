//! The training objectives of the official `Pix2PixModel`: the adversarial loss in its four
//! `gan_mode`s, discriminator feature matching, the VGG perceptual loss and the VAE's KL term,
//! reduced over scales and layers exactly as the reference reduces them.

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use crate::error::Result;
use crate::nets::vgg::Vgg19;

/// `gan_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GanMode {
    Hinge,
    /// Least squares.
    Ls,
    /// Binary cross-entropy on logits.
    Original,
    /// Wasserstein.
    W,
}

impl FromStr for GanMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hinge" => Ok(GanMode::Hinge),
            "ls" => Ok(GanMode::Ls),
            "original" => Ok(GanMode::Original),
            "w" => Ok(GanMode::W),
            other => Err(format!(
                "unknown gan_mode `{other}` (hinge, ls, original, w)"
            )),
        }
    }
}

impl fmt::Display for GanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GanMode::Hinge => "hinge",
            GanMode::Ls => "ls",
            GanMode::Original => "original",
            GanMode::W => "w",
        })
    }
}

/// What a prediction is scored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The generator's objective on its fakes (scored as real).
    Generator,
    /// The discriminator's objective on real inputs.
    Real,
    /// The discriminator's objective on fake inputs.
    Fake,
}

impl GanMode {
    /// The adversarial loss over all scales: each scale's last output reduced to its mean
    /// loss, averaged over scales.
    pub fn loss(self, outputs: &[Vec<Tensor>], target: Target) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for scale in outputs {
            let pred = scale.last().expect("every scale has outputs");
            let loss = self.scale_loss(pred, target)?;
            total = Some(match total {
                Some(t) => (t + loss)?,
                None => loss,
            });
        }
        let total = total.expect("at least one scale");
        Ok((total / outputs.len() as f64)?)
    }

    fn scale_loss(self, pred: &Tensor, target: Target) -> Result<Tensor> {
        let label = if target == Target::Fake { 0.0 } else { 1.0 };
        let loss = match (self, target) {
            (GanMode::Hinge, Target::Generator) => pred.mean_all()?.neg()?,
            (GanMode::Hinge, Target::Real) => (pred - 1.0)?.minimum(0.0)?.mean_all()?.neg()?,
            (GanMode::Hinge, Target::Fake) => {
                (pred.neg()? - 1.0)?.minimum(0.0)?.mean_all()?.neg()?
            }
            (GanMode::Ls, _) => (pred - label)?.sqr()?.mean_all()?,
            (GanMode::Original, _) => {
                // max(x, 0) - x * t + log(1 + exp(-|x|)), the stable BCE-with-logits.
                let softplus = (pred.abs()?.neg()?.exp()? + 1.0)?.log()?;
                ((pred.relu()? - (pred * label)?)? + softplus)?.mean_all()?
            }
            (GanMode::W, Target::Fake) => pred.mean_all()?,
            (GanMode::W, _) => pred.mean_all()?.neg()?,
        };
        Ok(loss)
    }
}

/// Mean absolute difference, `nn.L1Loss()`.
pub fn l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a - b)?.abs()?.mean_all()?)
}

/// `GAN_Feat`: L1 between the fake and (detached) real outputs of every layer but the last,
/// summed over layers and scales, times `lambda_feat / num_D`.
pub fn feature_matching(
    fake: &[Vec<Tensor>],
    real: &[Vec<Tensor>],
    lambda_feat: f64,
) -> Result<Tensor> {
    let weight = lambda_feat / fake.len() as f64;
    let mut total = fake[0][0].zeros_like()?.sum_all()?;
    for (f_scale, r_scale) in fake.iter().zip(real) {
        for (f, r) in f_scale.iter().zip(r_scale).take(f_scale.len() - 1) {
            total = (total + (l1(f, &r.detach())? * weight)?)?;
        }
    }
    Ok(total)
}

/// Weights of relu1_1 .. relu5_1 in the perceptual loss.
const VGG_WEIGHTS: [f64; 5] = [1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0, 1.0];

/// `VGG`: weighted L1 between the VGG19 features of fake and (detached) real images, times
/// `lambda_vgg`.
pub fn perceptual(vgg: &Vgg19, fake: &Tensor, real: &Tensor, lambda_vgg: f64) -> Result<Tensor> {
    let fake_features = vgg.features(fake)?;
    let real_features = vgg.features(real)?;
    let mut total: Option<Tensor> = None;
    for ((f, r), w) in fake_features.iter().zip(&real_features).zip(VGG_WEIGHTS) {
        let term = (l1(f, &r.detach())? * w)?;
        total = Some(match total {
            Some(t) => (t + term)?,
            None => term,
        });
    }
    Ok((total.expect("five VGG features") * lambda_vgg)?)
}

/// `KLD`: `-0.5 * sum(1 + logvar - mu^2 - exp(logvar))` over batch and dimensions, times
/// `lambda_kld`.
pub fn kl_divergence(mu: &Tensor, logvar: &Tensor, lambda_kld: f64) -> Result<Tensor> {
    let terms = (((logvar + 1.0)? - mu.sqr()?)? - logvar.exp()?)?;
    Ok((terms.sum_all()? * (-0.5 * lambda_kld))?)
}
