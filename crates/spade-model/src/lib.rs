//! SPADE (GauGAN, Park et al., CVPR 2019) semantic image synthesis in candle, numerically
//! matching the official PyTorch networks and loading their checkpoints as they are.
//!
//! The map, with the direction of use `train → nets → ops`, `io` beside them:
//! * [`model`] — the entry point: a loaded generator (+ style encoder) from a checkpoint.
//! * [`nets`] — the networks the paper defines: generator, SPADE, encoder, discriminator, VGG.
//! * [`ops`] — the CPU custom ops under them: convolutions, Winograd, gather, fused norms.
//! * [`io`] — checkpoints, `opt.txt` config, input preprocessing, PIL resampling, palette.
//! * [`train`] — losses, Adam, collectives, options, datasets, one step and the loop.

pub mod error;
pub mod io;
pub mod model;
pub mod nets;
pub mod ops;
#[cfg(test)]
mod test_util;
pub mod train;

pub use error::{Error, Result};
pub use io::checkpoint::Checkpoint;
pub use io::config::Config;
pub use model::SpadeModel;
