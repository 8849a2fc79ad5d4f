//! A loaded model: config, generator and optional style encoder on one device, plus the
//! seeded style-vector sampling shared by the CLI and the server.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::io::config::Config;
use crate::nets::encoder::{reparameterize, Encoder};
use crate::nets::generator::Generator;
use crate::nets::layers::Mode;
use crate::ops::gemm_bf16::Bf16Isa;

#[derive(Debug, Clone)]
pub struct SpadeModel {
    pub config: Config,
    pub generator: Generator,
    pub encoder: Option<Encoder>,
    pub device: Device,
    /// What the networks compute in; inputs and outputs are float32 whatever it is.
    pub dtype: DType,
}

impl SpadeModel {
    /// Loads a checkpoint folder or converted file onto `device` in float32.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::open(path)?, device, DType::F32)
    }

    /// `dtype`: float32, or float16 / bfloat16 (half the memory; on GPUs, tensor cores). On
    /// the CPU, bfloat16 means float32 networks whose convolutions multiply in bfloat16 on
    /// AMX or AVX512-BF16 ([`Mode::EvalBf16`]); CPUs with neither refuse it.
    pub fn from_checkpoint(ckpt: &Checkpoint, device: &Device, dtype: DType) -> Result<Self> {
        let mode = if device.is_cpu() && dtype == DType::BF16 {
            let isa = Bf16Isa::detect().ok_or_else(|| {
                Error::config(
                    "dtype",
                    "bf16 on the CPU needs AMX or AVX512-BF16, which this CPU has neither of; \
                     use f32 or f16",
                )
            })?;
            Mode::EvalBf16(isa)
        } else {
            Mode::Eval
        };
        let config = ckpt.config.clone();
        let tensors = tensor_dtype(device, dtype);
        let g = &ckpt.generator;
        let generator = Generator::with_mode(&config, &mode, g.var_builder(tensors, device))
            .map_err(|e| g.context(e))?;
        let encoder = match &ckpt.encoder {
            Some(e) => Some(
                Encoder::with_mode(&config, &mode, e.var_builder(tensors, device))
                    .map_err(|err| e.context(err))?,
            ),
            None => None,
        };
        Ok(Self {
            config,
            generator,
            encoder,
            device: device.clone(),
            dtype,
        })
    }

    /// The checkpoint trimmed to the tensors its networks read, as stored: what
    /// `spade convert` writes. Building the networks this way also proves that it runs.
    pub fn used_tensors(ckpt: &Checkpoint) -> Result<Checkpoint> {
        let config = &ckpt.config;
        let generator = ckpt
            .generator
            .used_by(|vb| Generator::new(config, vb).map(drop))?;
        let encoder = match &ckpt.encoder {
            Some(e) => Some(e.used_by(|vb| Encoder::new(config, vb).map(drop))?),
            None => None,
        };
        Ok(Checkpoint {
            config: config.clone(),
            generator,
            encoder,
            classes: ckpt.classes.clone(),
        })
    }

    /// The element type of the networks' tensors: `dtype`, except float32 for bfloat16 on
    /// the CPU (whose precision lives in the convolutions' products).
    pub fn tensor_dtype(&self) -> DType {
        tensor_dtype(&self.device, self.dtype)
    }

    /// Semantics (N x semantic_nc x H x W) to images (N x 3 x h x w in [-1, 1]).
    pub fn synthesize(&self, semantics: &Tensor, z: Option<&Tensor>) -> Result<Tensor> {
        let semantics = semantics
            .to_device(&self.device)?
            .to_dtype(self.tensor_dtype())?;
        let z = z.map(|z| z.to_device(&self.device)).transpose()?;
        Ok(self
            .generator
            .forward(&semantics, z.as_ref())?
            .to_dtype(DType::F32)?)
    }

    /// A photo batch (N x 3 x H x W in [-1, 1]) to `(mu, logvar)`.
    pub fn encode(&self, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let encoder = self.encoder.as_ref().ok_or_else(|| {
            Error::input(
                "style image",
                "this model has no style encoder (no latest_net_E.pth / netE tensors)",
            )
        })?;
        let image = image
            .to_device(&self.device)?
            .to_dtype(self.tensor_dtype())?;
        let (mu, logvar) = encoder.forward(&image)?;
        Ok((mu.to_dtype(DType::F32)?, logvar.to_dtype(DType::F32)?))
    }

    /// The style vector the official test code would draw for a photo: `mu + eps * std`
    /// with `eps` from `seed`.
    pub fn style_from_image(&self, image: &Tensor, seed: u64) -> Result<Tensor> {
        let (mu, logvar) = self.encode(image)?;
        let (n, d) = mu.dims2()?;
        let eps = standard_normal(seed, n, d, &self.device)?;
        reparameterize(&mu, &logvar, &eps)
    }

    /// A random style vector per image, `N(0, 1)`, reproducible from `seed` on any device.
    pub fn random_z(&self, seed: u64, n: usize) -> Result<Tensor> {
        standard_normal(seed, n, self.config.z_dim, &self.device)
    }
}

/// The element type of the networks' tensors for a compute precision: float32 for bfloat16
/// on the CPU, whose precision lives in the convolutions' products.
fn tensor_dtype(device: &Device, dtype: DType) -> DType {
    if device.is_cpu() && dtype == DType::BF16 {
        DType::F32
    } else {
        dtype
    }
}

/// A compute precision from its command-line name: `f32`, `f16` or `bf16`.
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(Error::config(
            "dtype",
            format!("`{other}`: expected f32, f16 or bf16"),
        )),
    }
}

/// A device from its command-line name: `cpu` or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = spec
        .strip_prefix("cuda:")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| Error::config("device", format!("`{spec}`: expected cpu or cuda:N")))?;
    Device::new_cuda(index).map_err(|e| Error::config("device", format!("`{spec}`: {e}")))
}

/// The official `--gpu_ids`: `-1` is the CPU, one id is that GPU. Several ids are refused:
/// one process drives one GPU (data-parallel training runs one process per GPU).
pub fn gpu_device(gpu_ids: &str) -> Result<Device> {
    match gpu_ids.trim() {
        "-1" | "" => Ok(Device::Cpu),
        id if id.parse::<usize>().is_ok() => parse_device(&format!("cuda:{id}")).map_err(|e| {
            Error::config(
                "gpu_ids",
                format!("GPU {id}: {e} (pass --gpu_ids -1 for the CPU)"),
            )
        }),
        other => Err(Error::config(
            "gpu_ids",
            format!(
                "`{other}`: give one GPU id per process (or -1 for the CPU); for several GPUs \
                 start one process per GPU with WORLD_SIZE / RANK / LOCAL_RANK set"
            ),
        )),
    }
}

/// `n x dim` standard-normal samples from a portable, seeded generator.
pub fn standard_normal(seed: u64, n: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..n * dim)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Ok(Tensor::from_vec(values, (n, dim), device)?)
}
