//! `spade bench`: generator throughput, per-stage time and peak memory on random weights
//! of an official architecture. Timings are for BENCHMARKS.md, never for tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use spade_model::io::checkpoint::StateDict;
use spade_model::io::preprocess::Preprocessor;
use spade_model::io::resample::Raster;
use spade_model::nets::generator::Generator;
use spade_model::{Checkpoint, Config, SpadeModel};

#[derive(clap::Args)]
pub struct Args {
    /// Official architecture: coco, ade20k or cityscapes.
    #[arg(long, default_value = "coco")]
    arch: String,
    /// Time this checkpoint (folder or converted file) instead of random weights of `--arch`.
    #[arg(long)]
    checkpoint: Option<std::path::PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed forward passes (after one warm-up pass).
    #[arg(long, default_value_t = 3)]
    iters: usize,
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
    let dtype = spade_model::model::parse_dtype(&args.dtype)?;
    let (model, params) = match &args.checkpoint {
        Some(path) => {
            let checkpoint = Checkpoint::open(path)?;
            let dict = &checkpoint.generator;
            let params = dict
                .names()
                .filter_map(|name| dict.dims(name))
                .map(|dims| dims.iter().product::<usize>())
                .sum();
            (
                SpadeModel::from_checkpoint(&checkpoint, &device, dtype)?,
                params,
            )
        }
        None => random_model(&Config::official(&args.arch)?, &device, dtype)?,
    };
    let config = model.config.clone();
    let generator = &model.generator;
    let semantics =
        random_semantics(&config, args.batch, &device)?.to_dtype(model.tensor_dtype())?;
    let (h, w) = config.output_size();
    println!(
        "arch {} ({} input channels, ngf {}, {h}x{w}), {:.1} M parameters, batch {}, device {}, {}",
        args.checkpoint
            .as_ref()
            .map_or(args.arch.clone(), |p| p.display().to_string()),
        config.semantic_nc(),
        config.ngf,
        params as f64 / 1e6,
        args.batch,
        args.device,
        args.dtype
    );

    run_once(generator, &semantics)?; // warm-up: allocations, lazy initialisation
    let mut totals = Vec::new();
    let mut stages: Vec<(String, Duration)> = Vec::new();
    for _ in 0..args.iters {
        let (total, times) = run_once(generator, &semantics)?;
        totals.push(total);
        for (i, (name, t)) in times.into_iter().enumerate() {
            match stages.get_mut(i) {
                Some(slot) => slot.1 += t,
                None => stages.push((name, t)),
            }
        }
    }
    totals.sort();
    let median = totals[totals.len() / 2].as_secs_f64();
    let sum: f64 = stages.iter().map(|(_, t)| t.as_secs_f64()).sum();
    println!("stage          share");
    for (name, t) in &stages {
        println!("{name:<14} {:5.1} %", 100.0 * t.as_secs_f64() / sum);
    }
    print_profile("forward pass", args.iters + 1);
    let peak = peak_rss_mib();
    println!(
        "median {:.3} s per batch -> {:.3} images/s; peak RSS {} MiB (weights {:.0} MiB)",
        median,
        args.batch as f64 / median,
        peak.map_or("n/a".to_string(), |m| m.to_string()),
        params as f64 * 4.0 / (1 << 20) as f64
    );
    Ok(())
}

/// With `SPADE_PROFILE` set, the time and calls of each op per `unit` (`runs` of them).
pub fn print_profile(unit: &str, runs: usize) {
    if !spade_model::ops::profile::enabled() {
        return;
    }
    let per = runs as f64;
    println!("per {unit} (SPADE_PROFILE; scopes nest, ops inside phases):");
    for (name, time, calls) in spade_model::ops::profile::take() {
        println!(
            "  {:>8.1} ms  {:>6.1} calls  {name}",
            time.as_secs_f64() * 1e3 / per,
            calls as f64 / per
        );
    }
}

/// One forward pass; the time of each stage is the time since the previous one finished.
fn run_once(
    generator: &Generator,
    semantics: &Tensor,
) -> Result<(Duration, Vec<(String, Duration)>)> {
    let start = Instant::now();
    let mut last = start;
    let mut times = Vec::new();
    let out = generator.forward_inspect(semantics, None, &mut |name, t| {
        // Reading a value forces asynchronous devices to finish the stage.
        let _ = t
            .flatten_all()
            .and_then(|t| t.get(0))
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_scalar::<f32>());
        times.push((name.to_string(), last.elapsed()));
        last = Instant::now();
    })?;
    out.flatten_all()?
        .get(0)?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    times.push(("conv_img".to_string(), last.elapsed()));
    Ok((start.elapsed(), times))
}

/// A model of the generator with N(0, 0.02) weights (unit running variances, so batch norm
/// stays finite), loaded as a checkpoint would be in `dtype`.
fn random_model(config: &Config, device: &Device, dtype: DType) -> Result<(SpadeModel, usize)> {
    let varmap = VarMap::new();
    Generator::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    let mut tensors = HashMap::new();
    let mut params = 0;
    for (name, var) in varmap.data().lock().expect("varmap lock").iter() {
        let shape = var.shape().clone();
        let value = if name.ends_with("running_var") {
            Tensor::ones(shape, DType::F32, device)?
        } else {
            Tensor::randn(0f32, 0.02, shape, device)?
        };
        if !name.starts_with("running") && !name.contains("weight_u") && !name.contains("weight_v")
        {
            params += value.elem_count();
        }
        tensors.insert(name.clone(), value);
    }
    let checkpoint = Checkpoint {
        config: config.clone(),
        generator: StateDict::from_tensors("random weights", tensors),
        encoder: None,
        classes: None,
    };
    let model = SpadeModel::from_checkpoint(&checkpoint, device, dtype)
        .context("building the random generator")?;
    Ok((model, params))
}

/// A label map of random rectangles (and matching instance map) at the network's size.
pub fn random_semantics(config: &Config, batch: usize, device: &Device) -> Result<Tensor> {
    let (h, w) = config.output_size();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let labels: Vec<_> = (0..batch)
        .map(|_| {
            let mut data = vec![0u16; h * w];
            for _ in 0..12 {
                let class = rng.random_range(0..config.label_nc as u16);
                let (x0, y0) = (rng.random_range(0..w), rng.random_range(0..h));
                let (x1, y1) = (rng.random_range(x0..w) + 1, rng.random_range(y0..h) + 1);
                for y in y0..y1 {
                    data[y * w + x0..y * w + x1].fill(class);
                }
            }
            Raster::new(w, h, 1, data)
        })
        .collect();
    let pre = Preprocessor::new(config);
    let instances = (!config.no_instance).then(|| labels.clone());
    Ok(pre.semantics(&labels, instances.as_deref(), device)?)
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
