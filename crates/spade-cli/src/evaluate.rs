//! `spade evaluate`: the paper's Table 1 for one model. Runs `spade test` on the validation
//! split, then FID of the synthesized images against the real ones, and, given a
//! segmenter's predictions of the synthesized images, mIoU and pixel accuracy against the
//! input labels.

use std::path::PathBuf;

use anyhow::{Context, Result};
use spade_eval::fid::{self, weights, Dims, FidInception};
use spade_eval::seg_metrics::compare_folders;

use crate::test::{synthesize_split, LABEL_IDS, REAL, SYNTHESIZED};

#[derive(clap::Args)]
#[group(id = "evaluate")]
#[command(after_help = "\
Writes what `spade test` writes, plus images/label_ids/ (the input labels as 8-bit ids, 255 \
unlabelled) and metrics.json next to index.html; prints a Markdown row: name | mIoU | \
accuracy | FID. Segment images/synthesized_image/ with the segmenter of your choice (the \
paper: DeepLabV2 for COCO-Stuff, UperNet for ADE20K, DRN for Cityscapes) into PNGs of ids with \
the same stems, and pass that folder as --pred.")]
pub struct Args {
    #[command(flatten)]
    test: crate::test::Args,
    /// Predicted label maps of the synthesized images (same stems), for mIoU and accuracy.
    #[arg(long)]
    pred: Option<PathBuf>,
    /// FID features (2048: the standard FID).
    #[arg(long, default_value_t = 2048)]
    dims: usize,
    /// The FID Inception weights (see `spade fid --help`).
    #[arg(long)]
    inception: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let dims = Dims::parse(args.dims)?;
    // Found before the long synthesis, so that a missing file fails at once.
    let weights_path = weights::locate(args.inception.as_deref())?;
    let run = synthesize_split(&args.test, true)?;
    let images = run.web.join("images");
    let model = FidInception::new(
        &weights::Weights::read(&weights_path)?,
        dims,
        &candle_core::Device::Cpu,
    )?;
    let stats = |kind: &str| fid::statistics_of(&model, &images.join(kind), 50, |_, _| {});
    let distance = fid::frechet_distance(&stats(SYNTHESIZED)?, &stats(REAL)?)?;
    let segmentation = match &args.pred {
        Some(pred) => {
            Some(compare_folders(&images.join(LABEL_IDS), pred, run.label_nc, 255)?.metrics())
        }
        None => None,
    };
    let percent =
        |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{:.1}", 100.0 * v));
    println!("| model | mIoU | accu | FID |");
    println!("|---|---|---|---|");
    println!(
        "| {} ({}) | {} | {} | {:.1} |",
        args.test.name(),
        run.stems.len(),
        percent(segmentation.as_ref().map(|m| m.mean_iou)),
        percent(segmentation.as_ref().map(|m| m.pixel_accuracy)),
        distance.fid
    );
    let json = serde_json::json!({
        "name": args.test.name(),
        "images": run.stems.len(),
        "fid": distance.fid,
        "fid_dims": dims.size(),
        "miou": segmentation.as_ref().map(|m| m.mean_iou),
        "pixel_accuracy": segmentation.as_ref().map(|m| m.pixel_accuracy),
        "mean_class_accuracy": segmentation.as_ref().map(|m| m.mean_class_accuracy),
    });
    let path = run.web.join("metrics.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
