//! The served models: loaded once per device, with their class tables.

use anyhow::{Context, Result};
use candle_core::Device;
use serde::Serialize;
use spade_model::io::preprocess::Preprocessor;
use spade_model::{Config, SpadeModel};

use crate::classes::{Class, ClassTable};
use crate::config::ModelSpec;
use crate::error::ApiError;

/// What request handling needs to know about a model (the weights live in the engine).
pub struct ModelInfo {
    pub name: String,
    pub config: Config,
    pub classes: ClassTable,
    pub has_encoder: bool,
    pub preprocessor: Preprocessor,
}

#[derive(Serialize)]
pub struct ModelSummary<'a> {
    pub name: &'a str,
    pub default: bool,
    pub dataset_mode: &'a str,
    pub width: usize,
    pub height: usize,
    pub label_nc: usize,
    pub contain_dontcare_label: bool,
    pub uses_instance_maps: bool,
    pub use_vae: bool,
    pub has_encoder: bool,
    pub classes: &'a [Class],
}

impl ModelInfo {
    pub fn summary(&self, default: bool) -> ModelSummary<'_> {
        let (height, width) = self.config.output_size();
        ModelSummary {
            name: &self.name,
            default,
            dataset_mode: &self.config.dataset_mode,
            width,
            height,
            label_nc: self.config.label_nc,
            contain_dontcare_label: self.config.contain_dontcare_label,
            uses_instance_maps: !self.config.no_instance,
            use_vae: self.config.use_vae,
            has_encoder: self.has_encoder,
            classes: &self.classes.classes,
        }
    }
}

/// Loads every model on every device: `(infos, models[device][model])`.
pub fn load(
    specs: &[ModelSpec],
    devices: &[Device],
    dtype: candle_core::DType,
) -> Result<(Vec<ModelInfo>, Vec<Vec<SpadeModel>>)> {
    let mut infos = Vec::new();
    let mut per_device: Vec<Vec<SpadeModel>> = devices.iter().map(|_| Vec::new()).collect();
    for spec in specs {
        let ckpt = spec.open()?;
        for (device, models) in devices.iter().zip(&mut per_device) {
            let model = SpadeModel::from_checkpoint(&ckpt, device, dtype)
                .with_context(|| format!("model `{}` on {device:?}", spec.name))?;
            models.push(model);
        }
        tracing::info!(model = %spec.name, from = %spec.location(), "loaded");
        infos.push(ModelInfo {
            name: spec.name.clone(),
            classes: ClassTable::for_checkpoint(&ckpt),
            has_encoder: ckpt.encoder.is_some(),
            preprocessor: Preprocessor::new(&ckpt.config),
            config: ckpt.config,
        });
    }
    Ok((infos, per_device))
}

/// The model a request names, or the default (first) one.
pub fn resolve<'a>(
    models: &'a [ModelInfo],
    name: Option<&str>,
) -> Result<(usize, &'a ModelInfo), ApiError> {
    match name {
        None => Ok((0, &models[0])),
        Some(name) => models
            .iter()
            .enumerate()
            .find(|(_, m)| m.name == name)
            .ok_or_else(|| ApiError::UnknownModel(name.to_string())),
    }
}
