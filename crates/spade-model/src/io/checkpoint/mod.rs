//! Checkpoint files: an official folder (`opt.txt`, `latest_net_G.pth`, optionally
//! `latest_net_E.pth` and our `classes.txt`) or one converted safetensors file (mapped into
//! memory), as named CPU tensors read only when a network asks for them.

pub mod pth;
pub mod pth_write;
pub mod safetensors;
mod state_dict;

use state_dict::Bytes;
pub use state_dict::StateDict;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::io::classes::ClassList;
use crate::io::config::Config;

/// Prefix of the generator tensors in a converted file (the official model attribute).
pub const GENERATOR_PREFIX: &str = "netG";
/// Prefix of the encoder tensors in a converted file.
pub const ENCODER_PREFIX: &str = "netE";

/// A model's config with the state dicts of its generator and (optional) encoder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub config: Config,
    pub generator: StateDict,
    pub encoder: Option<StateDict>,
    /// Names and colours of the label ids, where the checkpoint carries them.
    pub classes: Option<ClassList>,
}

/// Largest `classes.txt` read: far above [`crate::io::classes::MAX_CLASSES`] short lines.
const MAX_CLASSES_TXT_BYTES: u64 = 1 << 20;

impl Checkpoint {
    /// Opens a checkpoint folder or a `.safetensors` file written by [`Checkpoint::save`].
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::open_epoch(path, "latest")
        } else if path.is_file() {
            Self::open_safetensors(path)
        } else {
            Err(Error::checkpoint(
                path,
                "no such folder or file (expected a folder with opt.txt and latest_net_G.pth, \
                 or a converted .safetensors file)",
            ))
        }
    }

    /// A checkpoint folder's networks saved at `epoch` (`latest`, or a number):
    /// `{epoch}_net_G.pth` and `{epoch}_net_E.pth`, as the official `--which_epoch` picks them.
    pub fn open_epoch(dir: &Path, epoch: &str) -> Result<Self> {
        let opt = dir.join("opt.txt");
        if !opt.is_file() {
            return Err(Error::checkpoint(dir, "missing opt.txt"));
        }
        let config = Config::from_opt_txt(&opt).map_err(|e| Error::checkpoint(&opt, e))?;
        let g_path = dir.join(format!("{epoch}_net_G.pth"));
        if !g_path.is_file() {
            return Err(Error::checkpoint(dir, format!("missing {epoch}_net_G.pth")));
        }
        let generator = pth::open(&g_path)?;
        let e_path = dir.join(format!("{epoch}_net_E.pth"));
        let encoder = if e_path.is_file() {
            Some(pth::open(&e_path)?)
        } else {
            None
        };
        let classes_txt = dir.join("classes.txt");
        let classes = if classes_txt.is_file() {
            Some(read_classes(&classes_txt, &config)?)
        } else {
            None
        };
        Ok(Self {
            config,
            generator,
            encoder,
            classes,
        })
    }

    fn open_safetensors(path: &Path) -> Result<Self> {
        Self::from_converted(safetensors::map(path)?, path)
    }

    /// A converted checkpoint built into the binary (the bundled model); `path` names it
    /// in errors.
    pub fn from_static_safetensors(bytes: &'static [u8], path: &Path) -> Result<Self> {
        Self::from_converted(Bytes::Static(bytes), path)
    }

    /// A converted checkpoint held in memory; `path` names it in errors.
    pub fn from_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        Self::from_converted(Bytes::Owned(bytes.into()), path)
    }

    fn from_converted(bytes: Bytes, path: &Path) -> Result<Self> {
        let (config, classes, tensors) = safetensors::read(&bytes, path)?;
        if let Some(list) = &classes {
            check_class_count(list, &config).map_err(|e| Error::checkpoint(path, e))?;
        }
        let mut generator = Vec::new();
        let mut encoder = Vec::new();
        for (name, dtype, dims, range) in tensors {
            let (prefix, rest) = name.split_once('.').unwrap_or(("", &name));
            let entry = (rest.to_string(), dtype, dims, range);
            match prefix {
                GENERATOR_PREFIX => generator.push(entry),
                ENCODER_PREFIX => encoder.push(entry),
                _ => {
                    return Err(Error::checkpoint(
                        path,
                        format!("tensor `{name}` is neither under `netG.` nor `netE.`"),
                    ))
                }
            };
        }
        if generator.is_empty() {
            return Err(Error::checkpoint(path, "holds no `netG.` tensors"));
        }
        let dict = |tensors| StateDict::from_slices(path, &bytes, tensors);
        Ok(Self {
            config,
            generator: dict(generator),
            encoder: (!encoder.is_empty()).then(|| dict(encoder)),
            classes,
        })
    }

    /// The same checkpoint with every floating-point tensor stored as `dtype` (half precision
    /// halves a converted file; loading widens it back to the compute precision).
    pub fn with_storage_dtype(mut self, dtype: DType) -> Result<Self> {
        self.generator = self.generator.to_storage_dtype(dtype)?;
        self.encoder = self
            .encoder
            .map(|e| e.to_storage_dtype(dtype))
            .transpose()?;
        Ok(self)
    }

    /// Writes everything to one safetensors file, config included.
    pub fn save(&self, path: &Path) -> Result<()> {
        let prefixed = |prefix: &str, dict: &StateDict| -> Result<Vec<(String, Tensor)>> {
            Ok(dict
                .read_all()?
                .into_iter()
                .map(|(k, v)| (format!("{prefix}.{k}"), v))
                .collect())
        };
        let mut all: HashMap<String, Tensor> = prefixed(GENERATOR_PREFIX, &self.generator)?
            .into_iter()
            .collect();
        if let Some(encoder) = &self.encoder {
            all.extend(prefixed(ENCODER_PREFIX, encoder)?);
        }
        safetensors::write(path, &self.config, self.classes.as_ref(), &all)
    }
}

/// Reads a folder's `classes.txt`, bounded in size, with as many classes as the model has ids.
pub fn read_classes(path: &Path, config: &Config) -> Result<ClassList> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    file.take(MAX_CLASSES_TXT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    if text.len() as u64 > MAX_CLASSES_TXT_BYTES {
        return Err(Error::checkpoint(
            path,
            format!("larger than {MAX_CLASSES_TXT_BYTES} bytes"),
        ));
    }
    let list = ClassList::parse(&text).map_err(|e| Error::checkpoint(path, e))?;
    check_class_count(&list, config).map_err(|e| Error::checkpoint(path, e))?;
    Ok(list)
}

/// A class list names exactly the model's label ids (`label_nc`, plus the don't-care id).
fn check_class_count(list: &ClassList, config: &Config) -> std::result::Result<(), String> {
    let ids = config.label_nc + usize::from(config.contain_dontcare_label);
    if list.0.len() == ids || list.0.len() == config.label_nc {
        Ok(())
    } else {
        Err(format!(
            "names {} classes, the model has label_nc {}{}",
            list.0.len(),
            config.label_nc,
            if config.contain_dontcare_label {
                " plus a don't-care label"
            } else {
                ""
            }
        ))
    }
}

/// The temporary file beside `path` that a write goes to before it replaces `path`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Writes through `write` into [`partial_path`]`(path)` and flushes it to disk; returns it.
pub fn write_partial(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let tmp = partial_path(path);
    write(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    Ok(tmp)
}

/// Writes `path` through `write` into a temporary file beside it, flushed to disk and then
/// renamed over `path`: a reader (or a job killed mid-write) sees the old file or the new
/// one, never a torn one.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = write_partial(path, write)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A writer for [`write_atomically`] that puts `bytes` in the file.
pub fn bytes(bytes: &[u8]) -> impl FnOnce(&Path) -> Result<()> + '_ {
    move |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
}
