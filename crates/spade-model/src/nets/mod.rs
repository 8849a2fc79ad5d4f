//! The networks the paper defines, in the candle-transformers manner (a config, `new(cfg,
//! vb)`, `forward`, tensor names as in the official state dicts): the SPADE generator and its
//! blocks, the style encoder, the discriminator, VGG19 for the perceptual loss, and the
//! building blocks in [`layers`]. Uses `ops` (through `layers`) and `io`, never `train`.

pub mod discriminator;
pub mod encoder;
pub mod generator;
pub mod layers;
pub mod resblock;
pub mod spade;
pub mod vgg;
