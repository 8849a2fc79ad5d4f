//! Converted checkpoints: one safetensors file holding the generator (`netG.` prefix),
//! the encoder if any (`netE.`), and the config as JSON in the header metadata. Also the
//! plain tensor files of training (VGG weights, optimiser state).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::state_dict::Bytes;
use super::StateDict;
use crate::error::{Error, Result};
use crate::io::classes::ClassList;
use crate::io::config::Config;

/// Metadata key holding the config JSON.
const CONFIG_KEY: &str = "spade_config";
/// Metadata key holding the class list (`classes.txt` text), where the model has one.
const CLASSES_KEY: &str = "spade_classes";

/// A safetensors file's tensors as `(name, dtype, shape, byte range in bytes)`, the header
/// checked against the bytes (every range inside them, sizes consistent), none read yet.
pub(super) type Slices = Vec<(String, DType, Vec<usize>, Range<usize>)>;

/// The tensors (prefixes kept), the config and the class list stored in the header of a
/// converted file; `path` names it in errors.
pub(super) fn read(bytes: &Bytes, path: &Path) -> Result<(Config, Option<ClassList>, Slices)> {
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
    Ok((config, classes, slices(bytes, path)?))
}

/// Every tensor of a safetensors file, whatever its metadata, mapped from disk and read
/// when asked for.
pub fn open_plain(path: &Path) -> Result<StateDict> {
    let bytes = map(path)?;
    let slices = slices(&bytes, path)?;
    Ok(StateDict::from_slices(path, &bytes, slices))
}

/// The file mapped into memory: only the pages of the tensors read are ever loaded.
pub(super) fn map(path: &Path) -> Result<Bytes> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is only read. A file truncated or rewritten in place while a model
    // loads from it could fault the process, the hazard of every mapped file; our writers
    // (`spade convert`, the trainer) write a new file and rename it over the old one, which
    // leaves a mapped file as it was.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Bytes::Mapped(Arc::new(map)))
}

fn slices(bytes: &[u8], path: &Path) -> Result<Slices> {
    let fail = |reason: String| Error::checkpoint(path, reason);
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = DType::try_from(view.dtype()).map_err(|_| {
                fail(format!(
                    "tensor `{name}` has element type {:?}, which SPADE checkpoints never use",
                    view.dtype()
                ))
            })?;
            let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
            let range = start..start + view.data().len();
            Ok((name, dtype, view.shape().to_vec(), range))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};

    /// A tensor whose element type candle cannot hold (here bool) is refused with the file,
    /// the tensor and the type named, not read as something else.
    #[test]
    fn an_element_type_spade_never_uses_is_named() {
        let data = [1u8, 0, 1, 1];
        let view = TensorView::new(Dtype::BOOL, vec![2, 2], &data).unwrap();
        let bytes = safetensors::serialize([("fc.weight", view)], None).unwrap();
        let path = Path::new("model.safetensors");
        let msg = slices(&bytes, path).unwrap_err().to_string();
        for part in ["model.safetensors", "`fc.weight`", "BOOL", "never use"] {
            assert!(msg.contains(part), "`{part}` missing from: {msg}");
        }
    }
}
