//! The bundled default model: SPADE trained by our own `trainer` on these landscapes
//! (256x256, ngf 16, with the style encoder; how it was made: docs/landscapes.md), stored in
//! half precision with its class list, and compiled into the binaries that serve it so that
//! a fresh clone, an installed binary and the container all have it.

use std::path::Path;

use spade_model::{Checkpoint, Result};

/// The name it is served under.
pub const NAME: &str = "landscapes";

static SAFETENSORS: &[u8] = include_bytes!("../model/landscapes.safetensors");

/// How errors and logs name it.
pub const SOURCE: &str = "<bundled landscapes model>";

/// The model, its config, encoder and class list.
pub fn checkpoint() -> Result<Checkpoint> {
    Checkpoint::from_static_safetensors(SAFETENSORS, Path::new(SOURCE))
}
