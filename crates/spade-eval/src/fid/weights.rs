//! Where the FID Inception weights come from: pytorch-fid's own file
//! (`pt_inception-2015-12-05-6726825d.pth`), read with the checkpoint loader (no Python), and
//! looked for where a user of pytorch-fid already has it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use spade_model::io::checkpoint::StateDict;

/// The file name pytorch-fid downloads into the torch hub cache.
pub const FILE_NAME: &str = "pt_inception-2015-12-05-6726825d.pth";
/// Environment variable naming the weights file.
pub const ENV_VAR: &str = "SPADE_FID_WEIGHTS";

/// The weights file: `explicit` (`--inception`), else `$SPADE_FID_WEIGHTS`, else the torch hub
/// cache (`$TORCH_HOME/hub/checkpoints/`, `TORCH_HOME` defaulting to `~/.cache/torch`).
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("--inception {}: no such file", path.display());
        }
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{ENV_VAR}={}: no such file", path.display());
        }
        return Ok(path);
    }
    let hub = hub_cache();
    match &hub {
        Some(path) if path.is_file() => Ok(path.clone()),
        _ => bail!(
            "no FID Inception weights: looked in --inception (not given), {ENV_VAR} (not set) \
             and the torch hub cache ({}); pytorch-fid downloads {FILE_NAME} there on its first \
             run, or pass the file with --inception",
            hub.map_or_else(
                || "unknown: neither TORCH_HOME nor HOME is set".to_string(),
                |p| p.display().to_string()
            )
        ),
    }
}

fn hub_cache() -> Option<PathBuf> {
    let torch_home = std::env::var_os("TORCH_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("torch"))
        })?;
    Some(torch_home.join("hub").join("checkpoints").join(FILE_NAME))
}

/// The state dict of a weights file (`.pth`, or `.safetensors` with the same keys); a
/// `.pth`'s tensors are read as the network asks for them.
pub struct Weights {
    dict: StateDict,
}

impl Weights {
    pub fn read(path: &Path) -> Result<Self> {
        Ok(Self {
            dict: StateDict::open(path)?,
        })
    }

    /// The tensor `name` as float32 values, checked against `shape` and for NaN / infinity.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if self.dict.dims(name).is_none() {
            bail!(
                "FID Inception weights {}: no tensor `{name}` (is this pytorch-fid's {FILE_NAME}?)",
                self.dict.source.display()
            );
        }
        Ok(self
            .dict
            .tensor(name, shape)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;
    use std::collections::HashMap;

    #[test]
    fn missing_misshapen_and_non_finite_tensors_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let device = candle_core::Device::Cpu;
        let tensors = HashMap::from([
            (
                "a".to_string(),
                Tensor::zeros((2, 3), candle_core::DType::F32, &device).unwrap(),
            ),
            (
                "b".to_string(),
                Tensor::new(&[1.0f32, f32::INFINITY], &device).unwrap(),
            ),
        ]);
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let w = Weights::read(&path).unwrap();
        assert_eq!(w.get("a", &[2, 3]).unwrap(), vec![0.0; 6]);
        let err = w.get("a", &[3, 2]).unwrap_err().to_string();
        assert!(
            err.contains("`a` has shape [2, 3], expected [3, 2]"),
            "{err}"
        );
        let err = w.get("c", &[1]).unwrap_err().to_string();
        assert!(err.contains("no tensor `c`"), "{err}");
        let err = w.get("b", &[2]).unwrap_err().to_string();
        assert!(err.contains("`b` holds NaN or infinite values"), "{err}");
    }
}
