//! `spade convert`: an official checkpoint folder to one safetensors file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use spade_model::{Checkpoint, SpadeModel};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (opt.txt, latest_net_G.pth, optional latest_net_E.pth).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let ckpt = Checkpoint::open(&args.checkpoint)?;
    // Build the networks once so a checkpoint that cannot run is never converted.
    SpadeModel::from_checkpoint(&ckpt, &Device::Cpu, candle_core::DType::F32)?;
    ckpt.save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} generator tensors{})",
        args.out.display(),
        ckpt.generator.tensors.len(),
        match &ckpt.encoder {
            Some(e) => format!(", {} encoder tensors", e.tensors.len()),
            None => String::new(),
        }
    );
    Ok(())
}
