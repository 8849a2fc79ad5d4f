//! `spade seg-metrics`: mIoU, pixel accuracy and mean class accuracy of a segmenter's
//! predicted label maps against the ground truth (the paper's segmentation scores).

use std::path::PathBuf;

use anyhow::{Context, Result};
use spade_eval::seg_metrics::compare_folders;

#[derive(clap::Args)]
#[command(after_help = "\
Label maps are PNGs of class ids (greyscale or palette indices), paired by file stem. One \
confusion matrix is summed over all pairs; ground-truth pixels of the ignore id are skipped, \
a labelled pixel predicted as the ignore id counts as wrong. IoU is null for a class neither \
in the ground truth nor predicted, and mIoU averages the others.")]
pub struct Args {
    /// Folder of ground-truth label maps.
    #[arg(long)]
    gt: PathBuf,
    /// Folder of predicted label maps, one per ground truth, same stems.
    #[arg(long)]
    pred: PathBuf,
    /// Number of classes (ids 0..N-1).
    #[arg(long)]
    num_classes: usize,
    /// The id of unlabelled pixels.
    #[arg(long, default_value_t = 255)]
    ignore: u32,
    /// Also write the metrics as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.2}", 100.0 * v))
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.num_classes > 0, "--num-classes must be at least 1");
    let confusion = compare_folders(&args.gt, &args.pred, args.num_classes, args.ignore)?;
    let m = confusion.metrics();
    println!("{:>6}  {:>7}  {:>9}", "class", "IoU %", "accuracy %");
    for (c, (iou, acc)) in m.iou.iter().zip(&m.class_accuracy).enumerate() {
        println!("{c:>6}  {:>7}  {:>9}", cell(*iou), cell(*acc));
    }
    println!(
        "mIoU {:.2} %  pixel accuracy {:.2} %  mean class accuracy {:.2} %  ({} of {} labelled \
         pixels right, {} ignored)",
        100.0 * m.mean_iou,
        100.0 * m.pixel_accuracy,
        100.0 * m.mean_class_accuracy,
        m.correct,
        m.labelled,
        m.ignored
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "miou": m.mean_iou,
            "pixel_accuracy": m.pixel_accuracy,
            "mean_class_accuracy": m.mean_class_accuracy,
            "iou": m.iou,
            "class_accuracy": m.class_accuracy,
            "confusion_matrix": confusion.matrix(),
            "num_classes": args.num_classes,
            "ignore_index": args.ignore,
            "total_correct": m.correct,
            "total_labelled": m.labelled,
            "ignored_gt_pixels": m.ignored,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
