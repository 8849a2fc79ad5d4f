//! `spade encode`: a style photo to the VAE encoder's `mu` and `logvar`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Tensor;
use spade_model::io::preprocess::{decode_photo, Preprocessor};
use spade_model::SpadeModel;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("inputs").required(true).args(["image", "image_npy"])))]
pub struct Args {
    /// Checkpoint folder or converted .safetensors file with an encoder; without it, the
    /// bundled landscapes model.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Style photo (PNG, JPEG, WebP), preprocessed like the official loader.
    #[arg(long)]
    image: Option<PathBuf>,
    /// N x 3 x H x W float32 tensor in [-1, 1], used as is.
    #[arg(long)]
    image_npy: Option<PathBuf>,
    /// Output .npz with arrays `mu` and `logvar` (N x 256).
    #[arg(long)]
    out_npy: PathBuf,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute precision: f32; bf16 (GPUs, and CPUs with AMX or AVX512-BF16: products in
    /// bfloat16, the rest float32); f16 (meant for GPUs).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::parse_device(&args.device)?;
    let model = crate::load_model(args.checkpoint.as_deref(), &device, &args.dtype)?;
    let image = match (&args.image, &args.image_npy) {
        (Some(path), _) => load_photo(&model, path)?,
        (None, Some(path)) => {
            Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, None) => unreachable!("clap requires one input"),
    };
    let (mu, logvar) = model.encode(&image)?;
    Tensor::write_npz(&[("mu", &mu), ("logvar", &logvar)], &args.out_npy)
        .with_context(|| format!("writing {}", args.out_npy.display()))?;
    println!(
        "wrote {} (mu, logvar: {:?})",
        args.out_npy.display(),
        mu.dims()
    );
    Ok(())
}

/// A photo file as the model's loader would give it: 1 x 3 x H x W in [-1, 1].
pub fn load_photo(model: &SpadeModel, path: &std::path::Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let raw = decode_photo(&bytes, &path.display().to_string(), &Default::default())?;
    Ok(Preprocessor::new(&model.config).photo(&raw, &model.device)?)
}
