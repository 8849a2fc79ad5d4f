//! mIoU / accuracy against `fixtures/seg_metrics` (expected values by a numpy reference,
//! cross-checked with mmsegmentation's formula and torchmetrics).

#[path = "../../spade-model/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use serde_json::Value;
use spade_eval::seg_metrics::compare_folders;

fn fixtures() -> PathBuf {
    common::case("seg_metrics")
}

/// The fixture's `gt_k.png` / `pred_k.png` as two folders paired by stem `k`.
fn paired_folders() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for side in ["gt", "pred"] {
        std::fs::create_dir(dir.path().join(side)).unwrap();
        for k in 0..6 {
            std::fs::copy(
                fixtures().join(format!("{side}_{k}.png")),
                dir.path().join(side).join(format!("{k}.png")),
            )
            .unwrap();
        }
    }
    dir
}

fn optional(v: &Value) -> Option<f64> {
    v.as_f64()
}

#[test]
fn set_metrics_match_the_reference() {
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap();
    let dir = paired_folders();
    let classes = expected["num_classes"].as_u64().unwrap() as usize;
    let confusion = compare_folders(
        &dir.path().join("gt"),
        &dir.path().join("pred"),
        classes,
        255,
    )
    .unwrap();
    let want: Vec<Vec<u64>> = serde_json::from_value(expected["confusion_matrix"].clone()).unwrap();
    assert_eq!(confusion.matrix(), want);
    let m = confusion.metrics();
    assert_eq!(m.ignored, expected["ignored_gt_pixels"].as_u64().unwrap());
    assert_eq!(m.correct, expected["total_correct"].as_u64().unwrap());
    assert_eq!(m.labelled, expected["total_labelled"].as_u64().unwrap());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12;
    for (key, ours) in [
        ("miou", m.mean_iou),
        ("pixel_accuracy", m.pixel_accuracy),
        ("mean_class_accuracy", m.mean_class_accuracy),
    ] {
        let want = expected[key].as_f64().unwrap();
        assert!(close(ours, want), "{key}: {ours}, expected {want}");
    }
    for (key, ours) in [("iou", &m.iou), ("class_accuracy", &m.class_accuracy)] {
        let want: Vec<Option<f64>> = expected[key]
            .as_array()
            .unwrap()
            .iter()
            .map(optional)
            .collect();
        assert_eq!(ours.len(), want.len(), "{key}");
        for (c, (a, b)) in ours.iter().zip(&want).enumerate() {
            match (a, b) {
                (Some(a), Some(b)) => assert!(close(*a, *b), "{key}[{c}]: {a}, expected {b}"),
                (None, None) => {}
                _ => panic!("{key}[{c}]: {a:?}, expected {b:?}"),
            }
        }
    }
}

#[test]
fn unpaired_files_mismatched_sizes_and_out_of_range_ids_are_named() {
    let dir = paired_folders();
    let (gt, pred) = (dir.path().join("gt"), dir.path().join("pred"));
    std::fs::remove_file(pred.join("3.png")).unwrap();
    let err = compare_folders(&gt, &pred, 12, 255)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3.png") && err.contains("no prediction"),
        "{err}"
    );

    // A prediction of another pair's size.
    std::fs::copy(fixtures().join("pred_0.png"), pred.join("3.png")).unwrap();
    let err = compare_folders(&gt, &pred, 12, 255)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3.png") && err.contains("ground truth"),
        "{err}"
    );

    // Ids of up to 11 with 8 classes.
    std::fs::copy(fixtures().join("pred_3.png"), pred.join("3.png")).unwrap();
    let err = format!("{:#}", compare_folders(&gt, &pred, 8, 255).unwrap_err());
    assert!(
        err.contains(".png") && err.contains("outside 0..8"),
        "{err}"
    );
}
