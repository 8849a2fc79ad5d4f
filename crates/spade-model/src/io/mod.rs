//! What comes from and goes to files: checkpoints (official `.pth`, safetensors), the
//! official `opt.txt` config, JPEG decoding, the test-time input pipeline and PIL's
//! resampling, and the label colour map and class lists. Uses only `error`.

pub mod checkpoint;
pub mod classes;
pub mod config;
pub(crate) mod jpeg;
pub mod palette;
pub mod preprocess;
pub mod resample;
