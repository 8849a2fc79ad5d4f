//! Converted checkpoints: one safetensors file holding the generator (`netG.` prefix),
//! the encoder if any (`netE.`), and the config as JSON in the header metadata. Also the
//! plain tensor files of training (VGG weights, optimiser state).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::io::classes::ClassList;
use crate::io::config::Config;

/// Metadata key holding the config JSON.
const CONFIG_KEY: &str = "spade_config";
/// Metadata key holding the class list (`classes.txt` text), where the model has one.
const CLASSES_KEY: &str = "spade_classes";

/// Reads the tensors (prefixes kept), the config and the class list stored in the header of
/// a converted file held in memory; `path` names it in errors.
pub fn read_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<(Config, Option<ClassList>, HashMap<String, Tensor>)> {
    let fail = |reason: String| Error::checkpoint(path, reason);
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
    let config_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| {
            fail(format!(
                "no `{CONFIG_KEY}` in the header metadata; convert checkpoints with `spade convert`"
            ))
        })?;
    let config = Config::from_json_str(config_json).map_err(|e| fail(e.to_string()))?;
    let classes = match header.metadata().as_ref().and_then(|m| m.get(CLASSES_KEY)) {
        Some(text) => {
            Some(ClassList::parse(text).map_err(|e| fail(format!("`{CLASSES_KEY}`: {e}")))?)
        }
        None => None,
    };
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
        .map_err(|e| fail(e.to_string()))?;
    Ok((config, classes, tensors))
}

/// Reads every tensor of a safetensors file, whatever its metadata.
pub fn read_plain(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::checkpoint(path, format!("not a valid safetensors file: {e}")))
}

/// Writes a converted checkpoint (config and class list in the metadata), atomically.
pub fn write(
    path: &Path,
    config: &Config,
    classes: Option<&ClassList>,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let mut metadata = HashMap::from([(CONFIG_KEY.to_string(), config.to_json())]);
    if let Some(classes) = classes {
        metadata.insert(CLASSES_KEY.to_string(), classes.to_text());
    }
    write_plain(path, metadata, tensors)
}

/// Writes tensors with the given header metadata, atomically.
pub fn write_plain(
    path: &Path,
    metadata: HashMap<String, String>,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    super::write_atomically(path, |tmp| {
        safetensors::serialize_to_file(tensors.iter(), Some(metadata), tmp)
            .map_err(|e| Error::checkpoint(tmp, e.to_string()))
    })
}
