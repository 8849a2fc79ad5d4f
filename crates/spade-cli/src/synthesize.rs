//! `spade synthesize`: a label map (or semantics tensor) to an image.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use spade_model::io::preprocess::{decode_id_png, to_rgb8, Preprocessor};
use spade_model::ops::profile;
use spade_model::SpadeModel;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("inputs").required(true).args(["label", "semantics"])))]
#[command(group(clap::ArgGroup::new("style_source").args(["z", "seed", "style"])))]
#[command(group(clap::ArgGroup::new("outputs").required(true).multiple(true).args(["out", "out_npy"])))]
pub struct Args {
    /// Checkpoint folder (opt.txt + latest_net_G.pth) or converted .safetensors file;
    /// without it, the bundled landscapes model.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Label map PNG of class ids, preprocessed like the official test loader.
    #[arg(long)]
    label: Option<PathBuf>,
    /// Instance map PNG (for models trained with instance maps).
    #[arg(long, requires = "label")]
    instance: Option<PathBuf>,
    /// N x semantic_nc x H x W float32 tensor, used as is.
    #[arg(long)]
    semantics: Option<PathBuf>,
    /// N x z_dim float32 style vectors (VAE models).
    #[arg(long)]
    z: Option<PathBuf>,
    /// Seed of the random style vector (VAE models); default 0.
    #[arg(long)]
    seed: Option<u64>,
    /// Style photo encoded by the model's encoder (VAE models); its sample uses --seed.
    #[arg(long)]
    style: Option<PathBuf>,
    /// Output PNG (with several images: NAME_0.png, NAME_1.png, ...).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Raw N x 3 x H x W float32 output in [-1, 1].
    #[arg(long)]
    out_npy: Option<PathBuf>,
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
    let input = profile::scope("read input");
    let semantics = match (&args.label, &args.semantics) {
        (Some(label), _) => semantics_from_pngs(&model, label, args.instance.as_deref())?,
        (None, Some(path)) => read_npy(path)?,
        (None, None) => unreachable!("clap requires one input"),
    };
    let n = semantics.dim(0)?;
    let z = style_vector(&model, &args, n)?;
    drop(input);
    let forward = profile::scope("forward");
    let images = model.synthesize(&semantics, z.as_ref())?;
    drop(forward);
    let _output = profile::scope("write output");

    if let Some(path) = &args.out_npy {
        images
            .write_npy(path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.out {
        for (i, rgb) in to_rgb8(&images)?.into_iter().enumerate() {
            let file = numbered(path, i, n);
            image::RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data)
                .expect("raster size matches")
                .save(&file)
                .with_context(|| format!("writing {}", file.display()))?;
            println!("wrote {}", file.display());
        }
    }
    drop(_output);
    crate::bench::print_profile("run", 1);
    Ok(())
}

fn read_npy(path: &Path) -> Result<Tensor> {
    Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))
}

fn semantics_from_pngs(
    model: &SpadeModel,
    label: &Path,
    instance: Option<&Path>,
) -> Result<Tensor> {
    let pre = Preprocessor::new(&model.config);
    let read_ids = |path: &Path| -> Result<_> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(decode_id_png(
            &bytes,
            &path.display().to_string(),
            &Default::default(),
        )?)
    };
    let labels = [pre.label(&read_ids(label)?)];
    let instances = instance
        .map(|p| read_ids(p).map(|raw| [pre.instance(&raw)]))
        .transpose()?;
    Ok(pre.semantics(&labels, instances.as_ref().map(|i| &i[..]), &model.device)?)
}

/// The style vector for VAE models: given, encoded from a photo, or drawn from a seed.
fn style_vector(model: &SpadeModel, args: &Args, n: usize) -> Result<Option<Tensor>> {
    if !model.config.use_vae {
        if args.z.is_some() || args.style.is_some() {
            bail!("this model was trained without the VAE (use_vae is off): --z and --style do not apply");
        }
        return Ok(None);
    }
    let seed = args.seed.unwrap_or(0);
    Ok(Some(match (&args.z, &args.style) {
        (Some(path), _) => read_npy(path)?,
        (None, Some(path)) => {
            let photo = crate::encode::load_photo(model, path)?;
            let z = model.style_from_image(&photo, seed)?;
            z.repeat((n, 1))?
        }
        (None, None) => model.random_z(seed, n)?,
    }))
}

/// `out.png` for one image, `out_0.png`, `out_1.png`, ... for several.
fn numbered(path: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy())
        .unwrap_or("png".into());
    path.with_file_name(format!("{stem}_{i}.{ext}"))
}
