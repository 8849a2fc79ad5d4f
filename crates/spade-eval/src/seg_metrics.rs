//! mIoU, pixel accuracy and mean class accuracy of predicted label maps against the ground
//! truth, with the convention of the segmentation benchmarks (mmsegmentation's
//! `eval_metrics`, DeepLab's `mean_iou`): one confusion matrix summed over the whole set,
//! ground-truth pixels of `ignore_index` skipped, a labelled pixel predicted outside the
//! classes counted wrong, classes with no union left out of the mean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use spade_model::io::preprocess::{decode_id_png, DecodeLimits};

/// Counts accumulated over a set of (ground truth, prediction) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    classes: usize,
    ignore_index: u32,
    /// `classes x classes`, rows = ground truth, columns = prediction.
    matrix: Vec<u64>,
    /// Per ground-truth class: labelled pixels predicted outside `0..classes`.
    predicted_void: Vec<u64>,
    ignored: u64,
}

/// The set's metrics; per-class values are `None` where the convention leaves a class out.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub iou: Vec<Option<f64>>,
    pub class_accuracy: Vec<Option<f64>>,
    pub mean_iou: f64,
    pub pixel_accuracy: f64,
    pub mean_class_accuracy: f64,
    pub correct: u64,
    pub labelled: u64,
    pub ignored: u64,
}

impl Confusion {
    pub fn new(classes: usize, ignore_index: u32) -> Self {
        Self {
            classes,
            ignore_index,
            matrix: vec![0; classes * classes],
            predicted_void: vec![0; classes],
            ignored: 0,
        }
    }

    /// Adds one pair of maps of the same size.
    pub fn add(&mut self, truth: &[u16], predicted: &[u16]) -> Result<()> {
        ensure!(
            truth.len() == predicted.len(),
            "ground truth has {} pixels, prediction {}",
            truth.len(),
            predicted.len()
        );
        let n = self.classes;
        let ignore = i64::from(self.ignore_index);
        let check = |id: i64, side: &str| {
            ensure!(
                (0..n as i64).contains(&id) || id == ignore,
                "{side} class {id} is outside 0..{n} and is not the ignore id {ignore}"
            );
            Ok(())
        };
        // Checked first so that a refused pair leaves the counts as they were.
        let pairs = || {
            truth
                .iter()
                .zip(predicted)
                .map(|(&t, &p)| (i64::from(t), i64::from(p)))
        };
        for (t, p) in pairs() {
            check(t, "ground-truth")?;
            check(p, "predicted")?;
        }
        for (t, p) in pairs() {
            if t == ignore {
                self.ignored += 1;
            } else if p == ignore {
                self.predicted_void[t as usize] += 1;
            } else {
                self.matrix[t as usize * n + p as usize] += 1;
            }
        }
        Ok(())
    }

    /// `classes x classes` counts, rows = ground truth, columns = prediction.
    pub fn matrix(&self) -> Vec<Vec<u64>> {
        self.matrix
            .chunks(self.classes)
            .map(<[u64]>::to_vec)
            .collect()
    }

    pub fn metrics(&self) -> Metrics {
        let n = self.classes;
        let row = |c: usize| self.matrix[c * n..(c + 1) * n].iter().sum::<u64>();
        let column = |c: usize| (0..n).map(|r| self.matrix[r * n + c]).sum::<u64>();
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let mut iou = Vec::with_capacity(n);
        let mut class_accuracy = Vec::with_capacity(n);
        let (mut correct, mut labelled) = (0, 0);
        for c in 0..n {
            let tp = self.matrix[c * n + c];
            let area_label = row(c) + self.predicted_void[c];
            let area_pred = column(c);
            iou.push(ratio(tp, area_label + area_pred - tp));
            class_accuracy.push(ratio(tp, area_label));
            correct += tp;
            labelled += area_label;
        }
        let mean = |v: &[Option<f64>]| {
            let present: Vec<f64> = v.iter().flatten().copied().collect();
            present.iter().sum::<f64>() / present.len() as f64
        };
        Metrics {
            mean_iou: mean(&iou),
            mean_class_accuracy: mean(&class_accuracy),
            pixel_accuracy: correct as f64 / labelled as f64,
            iou,
            class_accuracy,
            correct,
            labelled,
            ignored: self.ignored,
        }
    }
}

/// The `.png` label maps of `dir` by stem.
fn maps_by_stem(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut maps = BTreeMap::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        {
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            maps.insert(stem, path);
        }
    }
    ensure!(!maps.is_empty(), "{}: no .png label maps", dir.display());
    Ok(maps)
}

fn read_ids(path: &Path) -> Result<spade_model::io::preprocess::IdMap> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(decode_id_png(
        &bytes,
        &path.display().to_string(),
        &DecodeLimits::default(),
    )?)
}

/// Compares every ground-truth map of `truth_dir` with the prediction of the same stem in
/// `predicted_dir`; a file without its partner is an error.
pub fn compare_folders(
    truth_dir: &Path,
    predicted_dir: &Path,
    classes: usize,
    ignore_index: u32,
) -> Result<Confusion> {
    let truths = maps_by_stem(truth_dir)?;
    let predictions = maps_by_stem(predicted_dir)?;
    if let Some((_, path)) = truths
        .iter()
        .find(|(stem, _)| !predictions.contains_key(*stem))
    {
        bail!(
            "{}: no prediction of the same stem in {}",
            path.display(),
            predicted_dir.display()
        );
    }
    if let Some((_, path)) = predictions
        .iter()
        .find(|(stem, _)| !truths.contains_key(*stem))
    {
        bail!(
            "{}: no ground truth of the same stem in {}",
            path.display(),
            truth_dir.display()
        );
    }
    let mut confusion = Confusion::new(classes, ignore_index);
    for (stem, truth_path) in &truths {
        let pred_path = &predictions[stem];
        let (truth, predicted) = (read_ids(truth_path)?, read_ids(pred_path)?);
        ensure!(
            (truth.width, truth.height) == (predicted.width, predicted.height),
            "{} is {}x{} but its ground truth {} is {}x{}",
            pred_path.display(),
            predicted.width,
            predicted.height,
            truth_path.display(),
            truth.width,
            truth.height
        );
        confusion
            .add(&truth.data, &predicted.data)
            .with_context(|| format!("{} against {}", pred_path.display(), truth_path.display()))?;
    }
    Ok(confusion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_truth_void_predictions_and_absent_classes() {
        let mut m = Confusion::new(3, 255);
        // truth 0 0 1 1 255; predicted 0 1 1 255 2
        m.add(&[0, 0, 1, 1, 255], &[0, 1, 1, 255, 2]).unwrap();
        let r = m.metrics();
        assert_eq!((r.correct, r.labelled, r.ignored), (2, 4, 1));
        // class 0: tp 1, label 2, pred 1 -> 1/2; class 1: tp 1, label 2 (one void), pred 2 -> 1/3;
        // class 2: neither in truth nor predicted at a labelled pixel -> left out.
        assert_eq!(r.iou, [Some(0.5), Some(1.0 / 3.0), None]);
        assert_eq!(r.class_accuracy, [Some(0.5), Some(0.5), None]);
        assert!((r.mean_iou - (0.5 + 1.0 / 3.0) / 2.0).abs() < 1e-15);
        assert!(m.add(&[7], &[0]).is_err());
        assert!(m.add(&[0, 1], &[0]).is_err());
    }
}
