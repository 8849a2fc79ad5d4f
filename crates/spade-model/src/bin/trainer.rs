//! `trainer`: trains SPADE with the options, dataset layouts and checkpoint folders of the
//! official `train.py` (see `trainer --help`).
//!
//! Data-parallel over the GPUs of a node (built with `--features nccl`): one process per GPU,
//! started as torchrun or a Kubernetes indexed Job starts them, with `WORLD_SIZE`, `RANK`
//! (or `JOB_COMPLETION_INDEX`) and `LOCAL_RANK` in the environment; rank 0 hands the NCCL id
//! to the others through `SPADE_NCCL_ID_FILE` (default: `nccl_id` in the experiment folder).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use candle_core::Device;
use clap::Parser;
use spade_model::model::gpu_device;
use spade_model::train::collective::Collective;
use spade_model::train::options::TrainOptions;
use spade_model::train::run::train;
use spade_model::{Error, Result};

fn env_number(names: &[&str]) -> Result<Option<usize>> {
    for name in names {
        if let Ok(value) = std::env::var(name) {
            let parsed = value
                .parse()
                .map_err(|_| Error::config(*name, format!("`{value}` is not a number")))?;
            return Ok(Some(parsed));
        }
    }
    Ok(None)
}

/// The device and data-parallel group this process trains with.
fn setup(options: &TrainOptions) -> Result<(Device, Option<Arc<dyn Collective>>)> {
    let world = env_number(&["WORLD_SIZE"])?.unwrap_or(1);
    if world <= 1 {
        return Ok((gpu_device(&options.gpu_ids)?, None));
    }
    let rank = env_number(&["RANK", "JOB_COMPLETION_INDEX"])?.unwrap_or(0);
    let local_rank = env_number(&["LOCAL_RANK"])?.unwrap_or(rank);
    join_group(options, rank, local_rank, world)
}

#[cfg(feature = "nccl")]
fn join_group(
    options: &TrainOptions,
    rank: usize,
    local_rank: usize,
    world: usize,
) -> Result<(Device, Option<Arc<dyn Collective>>)> {
    let device = spade_model::model::parse_device(&format!("cuda:{local_rank}"))?;
    let id_file = std::env::var_os("SPADE_NCCL_ID_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| options.experiment_dir().join("nccl_id"));
    if rank == 0 {
        std::fs::create_dir_all(options.experiment_dir())
            .map_err(|e| Error::io(&options.experiment_dir(), e))?;
    }
    let group = spade_model::train::collective::Nccl::join(&device, rank, world, &id_file)?;
    Ok((device, Some(Arc::new(group))))
}

#[cfg(not(feature = "nccl"))]
fn join_group(
    _options: &TrainOptions,
    _rank: usize,
    _local_rank: usize,
    world: usize,
) -> Result<(Device, Option<Arc<dyn Collective>>)> {
    Err(Error::config(
        "WORLD_SIZE",
        format!("{world} ranks requested, but this trainer was built without the `nccl` feature"),
    ))
}

/// Set by SIGTERM and SIGINT: the run saves `latest` after the current iteration and exits.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| Error::config("signals", format!("cannot install a handler: {e}")))?;
    }
    Ok(stop)
}

fn main() -> ExitCode {
    spade_model::train::run::serial_candle_elementwise();
    spade_model::train::run::retain_freed_memory();
    let options = TrainOptions::parse();
    let result = stop_flag().and_then(|stop| {
        let (device, group) = setup(&options)?;
        if device.is_cpu() {
            // Our CPU kernels run on rayon; on a GPU the loop stays on the thread that
            // created the device (and the NCCL communicator).
            spade_model::train::run::on_rayon_worker(|| {
                train(&options, &device, group, Some(&stop))
            })
        } else {
            train(&options, &device, group, Some(&stop))
        }
    });
    match result {
        Ok(summary) => {
            eprintln!(
                "{}: {} iterations in {:.1} s ({:.3} iterations/s)",
                if summary.interrupted {
                    "stopped"
                } else {
                    "finished"
                },
                summary.iterations,
                summary.seconds,
                summary.iterations as f64 / summary.seconds.max(1e-9)
            );
            if summary.interrupted {
                // 128 + SIGTERM, so that a Job counts the pod as failed and runs it again.
                ExitCode::from(143)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
