//! `spade fid`: the Fréchet Inception Distance between two folders of images (or saved
//! statistics), exactly as pytorch-fid 0.3.0 computes it.

use std::path::PathBuf;

use anyhow::{bail, Result};
use spade_eval::fid::{self, images, npy, weights, Dims, FidInception, Statistics};

#[derive(clap::Args)]
#[command(after_help = "\
PATH is a folder of images (*.png, *.jpg, ... in lower case, not recursive) or an .npz of \
statistics (mu, sigma) as pytorch-fid saves them. The last line printed is `FID: <value>`.
The weights are pytorch-fid's pt_inception-2015-12-05-6726825d.pth: --inception, else \
$SPADE_FID_WEIGHTS, else the torch hub cache ($TORCH_HOME/hub/checkpoints/, TORCH_HOME \
defaulting to ~/.cache/torch), where pytorch-fid downloads it.")]
pub struct Args {
    /// Two paths: the sets to compare; with --save-stats or --activations, the folder and
    /// the file to write.
    #[arg(num_args = 2, value_names = ["PATH1", "PATH2"], required = true)]
    paths: Vec<PathBuf>,
    /// Features: 2048 (pool3, the standard FID), 768, 192 or 64 (earlier blocks).
    #[arg(long, default_value_t = 2048)]
    dims: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// The FID Inception weights file.
    #[arg(long)]
    inception: Option<PathBuf>,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the statistics of PATH1 (a folder) to PATH2 (.npz, pytorch-fid's format).
    #[arg(long, conflicts_with = "activations")]
    save_stats: bool,
    /// Write the features of PATH1 (a folder) to PATH2 (.npy, N x dims float32, file order).
    #[arg(long)]
    activations: bool,
    /// Also print the result as one JSON line (before the `FID:` line).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let dims = Dims::parse(args.dims)?;
    let device = crate::parse_device(&args.device)?;
    let weights_path = weights::locate(args.inception.as_deref())?;
    let model = FidInception::new(&weights::Weights::read(&weights_path)?, dims, &device)?;
    let (first, second) = (&args.paths[0], &args.paths[1]);

    if args.save_stats || args.activations {
        if !first.is_dir() {
            bail!("{}: expected a folder of images", first.display());
        }
        let files = images::list(first)?;
        let bar = crate::image_progress(files.len(), &first.display().to_string());
        let features = fid::activations(&model, &files, args.batch_size, |done| {
            bar.set_position(done as u64)
        })?;
        bar.finish_and_clear();
        if args.activations {
            let bytes = npy::encode_f32(&[files.len(), dims.size()], &features);
            std::fs::write(second, bytes)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", second.display()))?;
        } else {
            Statistics::from_activations(&features, files.len(), dims.size())?.write_npz(second)?;
        }
        println!(
            "wrote {} ({} images, {} dims)",
            second.display(),
            files.len(),
            dims.size()
        );
        return Ok(());
    }

    let mut stats = Vec::new();
    for path in [first, second] {
        let bar = crate::image_progress(0, &path.display().to_string());
        stats.push(fid::statistics_of(
            &model,
            path,
            args.batch_size,
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64)
            },
        )?);
        bar.finish_and_clear();
    }
    let d = fid::frechet_distance(&stats[0], &stats[1])?;
    if args.json {
        println!(
            "{{\"fid\": {}, \"dims\": {}, \"mean_term\": {}, \"trace1\": {}, \"trace2\": {}, \
             \"trace_sqrt\": {}}}",
            d.fid,
            dims.size(),
            d.mean_term,
            d.trace1,
            d.trace2,
            d.trace_sqrt
        );
    }
    println!("FID: {}", d.fid);
    Ok(())
}
