//! VGG19 features for the perceptual loss: torchvision's `vgg19().features` up to `relu5_1`,
//! with frozen weights from a `.pth` or safetensors file (`--vgg_weights`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::io::checkpoint::StateDict;

/// `(index in features, in channels, out channels)` of the convolutions used, in order, and
/// after which of them a 2x2 max-pool follows.
const CONVS: [(usize, usize, usize, bool); 13] = [
    (0, 3, 64, false),
    (2, 64, 64, true),
    (5, 64, 128, false),
    (7, 128, 128, true),
    (10, 128, 256, false),
    (12, 256, 256, false),
    (14, 256, 256, false),
    (16, 256, 256, true),
    (19, 256, 512, false),
    (21, 512, 512, false),
    (23, 512, 512, false),
    (25, 512, 512, true),
    (28, 512, 512, false),
];
/// The relu outputs the loss compares: relu1_1 .. relu5_1 (after these convs).
const TAPS: [usize; 5] = [0, 5, 10, 19, 28];

#[derive(Debug, Clone)]
pub struct Vgg19 {
    convs: Vec<(Tensor, Tensor, usize, bool)>,
}

impl Vgg19 {
    /// Loads the 26 tensors `features.{i}.{weight,bias}`; other keys (the classifier of a
    /// full torchvision checkpoint, most of its bytes) are never read.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let dict = StateDict::open(path)?;
        let fetch = |key: String, shape: &[usize]| -> Result<Tensor> {
            if dict.dims(&key).is_none() {
                return Err(Error::checkpoint(
                    path,
                    format!("missing `{key}` (expected torchvision VGG19 weights)"),
                ));
            }
            Ok(dict
                .tensor(&key, shape)?
                .to_dtype(dtype)?
                .to_device(device)?)
        };
        let convs = CONVS
            .iter()
            .map(|&(i, cin, cout, pool)| {
                Ok((
                    fetch(format!("features.{i}.weight"), &[cout, cin, 3, 3])?,
                    fetch(format!("features.{i}.bias"), &[cout])?,
                    i,
                    pool,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { convs })
    }

    /// The five relu features of `x` (N x 3 x H x W, used as it is: the official loss feeds
    /// images in [-1, 1] without ImageNet normalisation).
    pub fn features(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut taps = Vec::with_capacity(TAPS.len());
        let mut x = x.clone();
        for (weight, bias, index, pool) in &self.convs {
            x = x
                .conv2d(weight, 1, 1, 1, 1)?
                .broadcast_add(&bias.reshape((1, (), 1, 1))?)?
                .relu()?;
            if TAPS.contains(index) {
                taps.push(x.clone());
            }
            if *pool && taps.len() < TAPS.len() {
                x = max_pool_2x2(&x)?;
            }
        }
        Ok(taps)
    }
}

/// `nn.MaxPool2d(2, 2)` as a max over reshaped 2x2 blocks. candle's own max-pool backward
/// scales the gradient by the share of maxima in the window (a quarter for a unique maximum)
/// instead of routing it whole to the maximum.
fn max_pool_2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    x.narrow(2, 0, 2 * ho)?
        .narrow(3, 0, 2 * wo)?
        .reshape((n, c, ho, 2, wo, 2))?
        .max(5)?
        .max(3)
}
