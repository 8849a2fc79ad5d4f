//! One trainable network's tensors as variables under the official state-dict names:
//! parameters (what the optimiser moves) and buffers (running statistics, spectral-norm
//! vectors, which the train-mode layers update themselves). Networks are built on an empty
//! store, which fixes the expected names and shapes; a checkpoint is then loaded strictly
//! into it, or the official initialisation is applied.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};
use crate::io::checkpoint::{pth, pth_write};

/// State-dict names ending in these are buffers, not parameters.
const BUFFER_SUFFIXES: [&str; 5] = [
    "weight_u",
    "weight_v",
    "running_mean",
    "running_var",
    "num_batches_tracked",
];

/// Gain of the official `init_weights('xavier', 0.02)`.
const INIT_GAIN: f64 = 0.02;

pub struct NetworkState {
    /// `G`, `D` or `E`, as in the official file names (`latest_net_G.pth`).
    pub label: &'static str,
    vars: VarMap,
    device: Device,
    dtype: DType,
}

impl NetworkState {
    /// `dtype`: float32 for training; float64 lets tests separate rounding from mistakes.
    pub fn new(label: &'static str, device: &Device, dtype: DType) -> Self {
        Self {
            label,
            vars: VarMap::new(),
            device: device.clone(),
            dtype,
        }
    }

    /// The builder a network is constructed with (in [`Mode::Train`](crate::nets::layers::Mode)).
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_varmap(&self.vars, self.dtype, &self.device)
    }

    fn sorted(&self) -> Vec<(String, Var)> {
        let data = self.vars.data().lock().expect("var map lock");
        let mut all: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The parameters, sorted by name.
    pub fn parameters(&self) -> Vec<(String, Var)> {
        self.sorted()
            .into_iter()
            .filter(|(name, _)| !is_buffer(name))
            .collect()
    }

    /// Every tensor (parameters and buffers) by name, sorted.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.sorted()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().detach()))
            .collect()
    }

    /// The official initialisation: conv/linear weights xavier-normal (gain 0.02), biases 0,
    /// affine batch-norm weights N(1, 0.02), spectral-norm `u`, `v` normalised N(0, 1),
    /// running statistics 0 / 1. Deterministic for a seed.
    pub fn initialize(&self, seed: u64) -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for (name, var) in self.sorted() {
            let dims = var.dims().to_vec();
            let numel: usize = dims.iter().product();
            let mut normal = |mean: f64, std: f64| -> Result<Tensor> {
                let dist = Normal::new(mean, std).expect("positive std");
                let values: Vec<f32> = (0..numel).map(|_| dist.sample(&mut rng) as f32).collect();
                Ok(
                    Tensor::from_vec(values, dims.as_slice(), &self.device)?
                        .to_dtype(self.dtype)?,
                )
            };
            let leaf = name.rsplit('.').next().unwrap_or(&name);
            let value = match leaf {
                "weight" | "weight_orig" if dims.len() >= 2 => {
                    let receptive: usize = dims[2..].iter().product();
                    let fan_in = dims[1] * receptive;
                    let fan_out = dims[0] * receptive;
                    normal(0.0, INIT_GAIN * (2.0 / (fan_in + fan_out) as f64).sqrt())?
                }
                "weight" => normal(1.0, INIT_GAIN)?,
                "weight_u" | "weight_v" => {
                    let v = normal(0.0, 1.0)?;
                    let norm = v.sqr()?.sum_all()?.sqrt()?.maximum(1e-12)?;
                    v.broadcast_div(&norm)?
                }
                "running_var" => Tensor::ones(dims.as_slice(), self.dtype, &self.device)?,
                "num_batches_tracked" => Tensor::zeros((), DType::I64, &self.device)?,
                _ => Tensor::zeros(dims.as_slice(), self.dtype, &self.device)?,
            };
            var.set(&value)?;
        }
        Ok(())
    }

    /// Copies a state dict in, as PyTorch's strict `load_state_dict`: every name must be
    /// there with its shape, and no other name may be.
    pub fn load(&self, tensors: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
        let fail = |reason: String| Error::checkpoint(source, reason);
        let expected = self.sorted();
        for (name, var) in &expected {
            let t = tensors.get(name).ok_or_else(|| {
                fail(format!(
                    "missing `{name}` (shape {:?}) for network {}: was it trained with the same \
                     options (ngf, ndf, norm_G, label_nc, ...)?",
                    var.dims(),
                    self.label
                ))
            })?;
            if t.dims() != var.dims() {
                return Err(fail(format!(
                    "`{name}` has shape {:?}, network {} expects {:?} (check the options the \
                     checkpoint was trained with)",
                    t.dims(),
                    self.label,
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(&self.device)?)?;
        }
        if let Some(extra) = tensors
            .keys()
            .find(|k| !expected.iter().any(|(n, _)| n == *k))
        {
            return Err(fail(format!(
                "unexpected `{extra}`: network {} has no such tensor",
                self.label
            )));
        }
        Ok(())
    }

    pub fn load_pth(&self, path: &Path) -> Result<()> {
        self.load(&pth::read(path)?, path)
    }

    pub fn save_pth(&self, path: &Path) -> Result<()> {
        pth_write::write(path, &self.state_dict())
    }
}

pub fn is_buffer(name: &str) -> bool {
    BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s))
}
