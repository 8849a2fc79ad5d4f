//! SPADE (GauGAN, Park et al., CVPR 2019) semantic image synthesis in candle, numerically
//! matching the official PyTorch networks and loading their checkpoints as they are.
//!
//! Data flow: [`preprocess`] turns label/instance/photo files into tensors, [`model`]
//! holds the [`generator`] and [`encoder`] built from a [`checkpoint`] and a [`config`].
//! [`train`] adds the [`discriminator`], the [`loss`]es, the [`vgg`] features and the
//! [`optim`]iser of the official training loop.

pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod conv_grad;
pub mod discriminator;
pub mod encoder;
pub mod error;
pub mod fused;
pub mod generator;
pub mod kernels;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optim;
pub mod palette;
pub mod preprocess;
pub mod resample;
pub mod resblock;
pub mod spade;
#[cfg(test)]
mod test_util;
pub mod train;
pub mod vgg;
pub mod winograd;

pub use checkpoint::Checkpoint;
pub use config::Config;
pub use error::{Error, Result};
pub use model::SpadeModel;
