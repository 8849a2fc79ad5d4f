//! `spade make-dataset`: write training data in the custom dataset layout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(clap::Subcommand)]
enum Kind {
    /// Procedural landscapes (the bundled model's data): `DIR/label/*.png` (class ids),
    /// `DIR/image/*.png` and `DIR/classes.txt`. Train on it with
    /// `trainer --dataset_mode custom --label_dir DIR/label --image_dir DIR/image --label_nc 12 --no_instance`.
    Landscapes(Landscapes),
}

#[derive(clap::Args)]
struct Landscapes {
    /// Number of pairs.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Side of the square images, pixels.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Same seed, same pairs (pair i does not depend on --count or the thread count).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    match args.kind {
        Kind::Landscapes(a) => {
            let start = Instant::now();
            let n = spade_landscapes::dataset::write_dataset(&a.out, a.count, a.size, a.seed)?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "wrote {n} {size}x{size} pairs to {} in {secs:.1} s ({:.0} pairs/s)",
                a.out.display(),
                n as f64 / secs,
                size = a.size
            );
            Ok(())
        }
    }
}
