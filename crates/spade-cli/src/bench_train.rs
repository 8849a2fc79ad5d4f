//! `spade bench-train`: training iterations per second (one G step and one D step, as the
//! official loop runs them) on random weights and random label maps. For BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use clap::Parser;
use spade_model::train::options::TrainOptions;
use spade_model::train::step::{Batch, Start, Trainer};

#[derive(clap::Args)]
pub struct Args {
    /// `small` (label_nc 8, ngf 8, ndf 16, 64x64), `landscape` (the shape planned for a bundled
    /// model: label_nc 12, no instance maps, ngf 16, ndf 32, 128x128) or `coco` (the official
    /// COCO-Stuff architecture: label_nc 182 + dontcare + instance, ngf 64, ndf 64, 256x256).
    #[arg(long, default_value = "small")]
    config: String,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed iterations (after one warm-up iteration).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// VGG19 weights for the perceptual loss; without them the VGG loss is off.
    #[arg(long)]
    vgg_weights: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    // As the trainer runs.
    spade_model::train::run::serial_candle_elementwise();
    spade_model::train::run::retain_freed_memory();
    let device = crate::parse_device(&args.device)?;
    let batch_size = args.batch.to_string();
    let mut options: Vec<&str> = match args.config.as_str() {
        "small" => vec![
            "--label_nc",
            "8",
            "--ngf",
            "8",
            "--ndf",
            "16",
            "--crop_size",
            "64",
        ],
        "landscape" => vec![
            "--dataset_mode",
            "custom",
            "--label_nc",
            "12",
            "--no_instance",
            "--ngf",
            "16",
            "--ndf",
            "32",
            "--crop_size",
            "128",
            "--load_size",
            "128",
        ],
        "coco" => vec![],
        other => anyhow::bail!("unknown config `{other}` (small, landscape, coco)"),
    };
    options.extend(["--batchSize", &batch_size]);
    let vgg = args.vgg_weights.as_ref().map(|p| p.display().to_string());
    match &vgg {
        Some(path) => options.extend(["--vgg_weights", path]),
        None => options.push("--no_vgg_loss"),
    }
    let mut argv = vec!["trainer"];
    argv.extend(options);
    let options = TrainOptions::try_parse_from(argv)?;
    let config = options.resolve()?;
    let model = config.model.clone();
    let mut trainer = Trainer::new(
        config,
        Start::Fresh { seed: 0 },
        options.vgg_weights.as_deref(),
        &device,
        DType::F32,
        None,
    )
    .context("building the networks")?;
    let semantics = crate::bench::random_semantics(&model, args.batch, &device)?;
    let (h, w) = model.output_size();
    let image = Tensor::rand(-1f32, 1f32, (args.batch, 3, h, w), &device)?;
    let batch = Batch { semantics, image };
    println!(
        "config {} ({} input channels, ngf {}, ndf {}, {h}x{w}), batch {}, VGG loss {}, device {}",
        args.config,
        model.semantic_nc(),
        model.ngf,
        options.ndf,
        args.batch,
        if vgg.is_some() { "on" } else { "off" },
        args.device
    );
    let mut step = || -> Result<(f64, f64)> {
        let start = Instant::now();
        trainer.generator_step(&batch, None)?;
        let g = start.elapsed().as_secs_f64();
        trainer.discriminator_step(&batch, None)?;
        Ok((g, start.elapsed().as_secs_f64() - g))
    };
    // As the trainer runs its loop.
    let mut times = spade_model::train::run::on_rayon_worker(|| {
        step()?;
        (0..args.iters).map(|_| step()).collect::<Result<Vec<_>>>()
    })?;
    times.sort_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)));
    let (g, d) = times[times.len() / 2];
    crate::bench::print_profile("iteration", args.iters + 1);
    println!(
        "median {:.3} s per iteration (G step {g:.3} s, D step {d:.3} s) -> {:.3} iterations/s; peak RSS {} MiB",
        g + d,
        1.0 / (g + d),
        crate::bench::peak_rss_mib().map_or("n/a".to_string(), |m| m.to_string())
    );
    Ok(())
}
