//! Access to the reference fixtures (`SPADE_FIXTURES`, default `../shared/fixtures` from
//! the repository root). A missing fixture fails the test: it is never skipped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var("SPADE_FIXTURES").unwrap_or_else(|_| "../shared/fixtures".into());
    let dir = root.join(dir);
    assert!(
        dir.join("README.md").is_file(),
        "fixtures not found at {} (set SPADE_FIXTURES)",
        dir.display()
    );
    dir
}

pub fn case(name: &str) -> PathBuf {
    let dir = fixtures().join(name);
    assert!(dir.is_dir(), "missing fixture case {}", dir.display());
    dir
}

pub fn npy(case_dir: &Path, file: &str) -> Tensor {
    let path = case_dir.join(file);
    Tensor::read_npy(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn read(case_dir: &Path, file: &str) -> Vec<u8> {
    let path = case_dir.join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn case_json(case_dir: &Path) -> Value {
    serde_json::from_slice(&read(case_dir, "case.json")).expect("case.json parses")
}

/// The tolerance for an eval output: max(1e-4, 10 x the recorded f32-vs-f64 floor).
pub fn tolerance(case_dir: &Path, file: &str) -> f64 {
    let floor = case_json(case_dir)["noise_floor"][file]
        .as_f64()
        .unwrap_or_else(|| panic!("no noise floor for {file}"));
    (10.0 * floor).max(1e-4)
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(candle_core::DType::F64).unwrap();
    let b = b.to_dtype(candle_core::DType::F64).unwrap();
    max_abs(&(a - b).unwrap())
}

/// `max |t|`, in float64.
pub fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Asserts `actual` matches the fixture `file` within its tolerance, and prints the error.
pub fn assert_close(case_dir: &Path, file: &str, actual: &Tensor) {
    let expected = npy(case_dir, file);
    let err = max_abs_diff(actual, &expected);
    let tol = tolerance(case_dir, file);
    println!(
        "{} {file}: max abs error {err:.3e} (tolerance {tol:.1e})",
        case_dir.file_name().unwrap().to_string_lossy()
    );
    assert!(err <= tol, "{file}: max abs error {err} > {tol}");
}
