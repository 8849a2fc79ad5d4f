//! `spade`: run SPADE checkpoints from the command line.

mod bench;
mod bench_train;
mod convert;
mod encode;
mod evaluate;
mod fid;
mod make_dataset;
mod seg_metrics;
mod synthesize;
mod test;

use anyhow::Result;
use candle_core::Device;
use clap::{Parser, Subcommand};
use spade_model::ops::profile;

#[derive(Parser)]
#[command(version, about = "SPADE / GauGAN semantic image synthesis")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn a label map (or a semantics tensor) into an image.
    Synthesize(synthesize::Args),
    /// Encode a style photo into the VAE's mu and logvar.
    Encode(encode::Args),
    /// Convert a checkpoint folder into one safetensors file.
    Convert(convert::Args),
    /// Measure generator throughput on random weights of an official architecture.
    Bench(bench::Args),
    /// Measure training iterations/s (G step + D step) on random weights and data; with
    /// `SPADE_PROFILE` set, also the time per op and per phase of an iteration.
    BenchTrain(bench_train::Args),
    /// Write a training dataset (procedural landscapes) in the custom dataset layout.
    MakeDataset(make_dataset::Args),
    /// Fréchet Inception Distance between two image folders (or saved statistics), as
    /// pytorch-fid 0.3.0 computes it.
    Fid(fid::Args),
    /// mIoU and accuracies of predicted label maps against the ground truth.
    SegMetrics(seg_metrics::Args),
    /// The official test.py: synthesize a dataset's validation split into a results folder.
    Test(test::Args),
    /// The paper's scores for one model: test, then FID (and mIoU / accuracy with --pred).
    Evaluate(evaluate::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Synthesize(args) => synthesize::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchTrain(args) => bench_train::run(args),
        Command::MakeDataset(args) => make_dataset::run(args),
        Command::Fid(args) => fid::run(args),
        Command::SegMetrics(args) => seg_metrics::run(args),
        Command::Test(args) => test::run(args),
        Command::Evaluate(args) => evaluate::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// A progress bar over `total` images, labelled `what`.
pub fn image_progress(total: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64).with_message(what.to_string());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} images ({per_sec}, {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// `cpu` or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    Ok(spade_model::model::parse_device(spec)?)
}

/// A checkpoint folder or converted file (the bundled landscapes model without one) on
/// `device`, computing in `dtype` (`f32`, `f16`, `bf16`).
pub fn load_model(
    path: Option<&std::path::Path>,
    device: &Device,
    dtype: &str,
) -> Result<spade_model::SpadeModel> {
    let dtype = spade_model::model::parse_dtype(dtype)?;
    let checkpoint = {
        let _time = profile::scope("open checkpoint");
        match path {
            Some(path) => spade_model::Checkpoint::open(path)?,
            None => spade_landscapes::bundled::checkpoint()?,
        }
    };
    let _time = profile::scope("build networks (reads the weights)");
    Ok(spade_model::SpadeModel::from_checkpoint(
        &checkpoint,
        device,
        dtype,
    )?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
