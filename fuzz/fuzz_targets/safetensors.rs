//! Converted checkpoints: a safetensors file with the config, classes and `netG.` / `netE.`
//! tensors.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spade_model::Checkpoint;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(checkpoint) = Checkpoint::from_safetensors_bytes(bytes, Path::new("fuzz.safetensors"))
    {
        assert!(checkpoint.generator.byte_len() <= bytes.len() as u64);
    }
});
