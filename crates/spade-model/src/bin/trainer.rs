//! `trainer`: trains SPADE with the options, dataset layouts and checkpoint folders of the
//! official `train.py` (see `trainer --help`).

use std::process::ExitCode;

use candle_core::Device;
use clap::Parser;
use spade_model::model::parse_device;
use spade_model::train::options::TrainOptions;
use spade_model::train::run::train;
use spade_model::{Error, Result};

/// `--gpu_ids`: `-1` is the CPU; one id is that GPU. Several ids in one process are refused:
/// data-parallel training runs one process per GPU.
fn device(gpu_ids: &str) -> Result<Device> {
    match gpu_ids.trim() {
        "-1" | "" => Ok(Device::Cpu),
        id if id.parse::<usize>().is_ok() => parse_device(&format!("cuda:{id}")),
        other => Err(Error::config(
            "gpu_ids",
            format!("`{other}`: give one GPU id per process (or -1 for the CPU)"),
        )),
    }
}

fn main() -> ExitCode {
    let options = TrainOptions::parse();
    let result = device(&options.gpu_ids).and_then(|device| train(&options, &device));
    match result {
        Ok(summary) => {
            eprintln!(
                "finished: {} iterations in {:.1} s ({:.3} iterations/s)",
                summary.iterations,
                summary.seconds,
                summary.iterations as f64 / summary.seconds.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
