//! SPADE (GauGAN, Park et al., CVPR 2019) semantic image synthesis in candle, numerically
//! matching the official PyTorch networks and loading their checkpoints as they are.
//!
//! Data flow: [`preprocess`] turns label/instance/photo files into tensors, [`model`]
//! holds the [`generator`] and [`encoder`] built from a [`checkpoint`] and a [`config`].

pub mod checkpoint;
pub mod config;
pub mod encoder;
pub mod error;
pub mod generator;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod preprocess;
pub mod resample;
pub mod resblock;
pub mod spade;

pub use checkpoint::Checkpoint;
pub use config::Config;
pub use error::{Error, Result};
pub use model::SpadeModel;
