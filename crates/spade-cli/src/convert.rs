//! `spade convert`: an official checkpoint folder to one safetensors file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use spade_model::io::checkpoint::read_classes;
use spade_model::{Checkpoint, SpadeModel};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (opt.txt, latest_net_G.pth, optional latest_net_E.pth).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Store the weights in half precision (f16): half the file; they load back into the
    /// compute precision.
    #[arg(long)]
    half: bool,
    /// Class list (`classes.txt`: `id name #rrggbb` per line) to carry in the file, for
    /// models of custom datasets; a `classes.txt` in the checkpoint folder is carried anyway.
    #[arg(long)]
    classes: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let mut ckpt = Checkpoint::open(&args.checkpoint)?;
    if let Some(path) = &args.classes {
        ckpt.classes = Some(read_classes(path, &ckpt.config)?);
    }
    // Only what the networks read is written (an official file also keeps, say, batch
    // norm's `num_batches_tracked`, which inference never uses); building them on the way
    // means a checkpoint that cannot run is never converted.
    ckpt = SpadeModel::used_tensors(&ckpt)?;
    if args.half {
        ckpt = ckpt.with_storage_dtype(DType::F16)?;
        // Half precision may overflow a weight to infinity: check the file as it will load.
        SpadeModel::from_checkpoint(&ckpt, &Device::Cpu, DType::F32)?;
    }
    ckpt.save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} generator tensors{})",
        args.out.display(),
        ckpt.generator.len(),
        match &ckpt.encoder {
            Some(e) => format!(", {} encoder tensors", e.len()),
            None => String::new(),
        }
    );
    Ok(())
}
