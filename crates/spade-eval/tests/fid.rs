//! FID against `fixtures/fid`: values produced by pytorch-fid 0.3.0 itself with random
//! Inception weights in the real key layout (the fixture README gives the float32 floors the
//! tolerances below sit on).

#[path = "../../spade-model/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde_json::Value;
use spade_eval::fid::{self, images, npy, resize, Dims, FidInception, Statistics};

fn fixtures() -> PathBuf {
    common::case("fid")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn read_npy(name: &str) -> npy::Array {
    let path = fixtures().join(name);
    npy::parse(&std::fs::read(&path).unwrap(), name).unwrap()
}

fn model(dims: Dims) -> FidInception {
    let weights = fid::weights::Weights::read(&fixtures().join("pt_inception-random.pth")).unwrap();
    FidInception::new(&weights, dims, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max)
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn folders_are_listed_in_pytorch_fid_order() {
    let sets = &expected()["sets"];
    for set in ["A", "B", "C", "D"] {
        let listed = names(&images::list(&fixtures().join(set)).unwrap());
        let want: Vec<String> =
            serde_json::from_value(sets[set]["listed_in_order"].clone()).unwrap();
        assert_eq!(listed, want, "set {set}");
    }
}

#[test]
fn one_image_layer_by_layer() {
    let input = images::read_input(&fixtures().join("A/a_0.png")).unwrap();
    let want = read_npy("debug_a_0/input_299.npy");
    assert_eq!(want.shape, [1, 3, resize::SIDE, resize::SIDE]);
    // PyTorch's float32 resize itself, reproduced in its order (README: 1.2e-7).
    let diff = max_abs_diff(&input, &want.values);
    assert!(diff <= 5e-7, "input_299 differs by {diff}");

    let model = model(Dims::D2048);
    let x = Tensor::from_vec(input, (1, 3, resize::SIDE, resize::SIDE), &Device::Cpu).unwrap();
    let blocks = model.blocks(&x).unwrap();
    // Float32 network floors (network only): 4.7e-6, 6.2e-6, 1.5e-4, 2.5e-5.
    for (i, (block, tolerance)) in blocks.iter().zip([5e-5, 5e-5, 1.5e-3, 2.5e-4]).enumerate() {
        let want = read_npy(&format!("debug_a_0/block{i}.npy"));
        assert_eq!(block.dims(), want.shape, "block {i}");
        let ours: Vec<f32> = block.flatten_all().unwrap().to_vec1().unwrap();
        let diff = max_abs_diff(&ours, &want.values);
        assert!(
            diff <= tolerance,
            "block {i} differs by {diff} (tolerance {tolerance})"
        );
    }
}

/// Features of a fixture set, and pytorch-fid's for it.
fn features(model: &FidInception, set: &str) -> (Vec<f32>, usize) {
    let files = images::list(&fixtures().join(set)).unwrap();
    (
        fid::activations(model, &files, 5, |_| {}).unwrap(),
        files.len(),
    )
}

#[test]
fn pool3_features_statistics_and_fid_of_a_against_b() {
    let model = model(Dims::D2048);
    let (a, n) = features(&model, "A");
    let (b, _) = features(&model, "B");
    let files_b = names(&images::list(&fixtures().join("B")).unwrap());
    let want_a = read_npy("act_a.npy");
    let want_b = read_npy("act_b.npy");
    // README: ~2e-4 with the float32 resize.
    let diff_a = max_abs_diff(&a, &want_a.values);
    assert!(diff_a <= 3e-4, "pool3 of A differs by {diff_a}");
    for (i, name) in files_b.iter().enumerate() {
        let row = &b[i * 2048..(i + 1) * 2048];
        let diff = max_abs_diff(row, &want_b.values[i * 2048..(i + 1) * 2048]);
        assert!(diff <= 3e-4, "pool3 of B/{name} differs by {diff}");
    }

    let stats_a = Statistics::from_activations(&a, n, 2048).unwrap();
    let stats_b = Statistics::from_activations(&b, files_b.len(), 2048).unwrap();
    let mu_diff = max_abs_diff(
        &stats_a.mu.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &read_npy("mu_a.npy").values,
    );
    assert!(mu_diff <= 1e-4, "mu of A differs by {mu_diff}");
    let diag: Vec<f32> = (0..2048).map(|i| stats_a.sigma[(i, i)] as f32).collect();
    let diag_diff = max_abs_diff(&diag, &read_npy("sigma_diag_a.npy").values);
    assert!(
        diag_diff <= 1e-4,
        "diagonal of sigma A differs by {diag_diff}"
    );

    let case = &expected()["cases"][0];
    assert_eq!(case["dims"], 2048);
    let want = case["fid_pytorch_fid"].as_f64().unwrap();
    let ours = fid::frechet_distance(&stats_a, &stats_b).unwrap().fid;
    // README: method spread 7e-4 plus float floor 4e-4 at N = 24.
    assert!(
        (ours - want).abs() <= 3e-3,
        "FID {ours}, pytorch-fid {want}"
    );

    // The same from pytorch-fid's own activations: the distance alone.
    let from_theirs = fid::frechet_distance(
        &Statistics::from_activations(&to_f32(&want_a.values), n, 2048).unwrap(),
        &Statistics::from_activations(&to_f32(&want_b.values), files_b.len(), 2048).unwrap(),
    )
    .unwrap()
    .fid;
    assert!(
        (from_theirs - want).abs() <= 1e-3,
        "FID of their activations {from_theirs}, pytorch-fid {want}"
    );
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn dims_64_features_and_fid_through_folders_and_npz() {
    let model = model(Dims::D64);
    let cases = expected()["cases"].clone();
    for (case, (s1, s2), tolerance) in [(1, ("A", "B"), 1e-5), (2, ("C", "D"), 2e-6)] {
        let case = &cases[case];
        assert_eq!(case["dims"], 64);
        let mut stats = Vec::new();
        for set in [s1, s2] {
            let (act, n) = features(&model, set);
            let want = read_npy(&format!("act_{}_64.npy", set.to_lowercase()));
            let diff = max_abs_diff(&act, &want.values);
            assert!(diff <= 1e-5, "dims-64 features of {set} differ by {diff}");
            stats.push(Statistics::from_activations(&act, n, 64).unwrap());
        }
        let want = case["fid_pytorch_fid"].as_f64().unwrap();
        let ours = fid::frechet_distance(&stats[0], &stats[1]).unwrap().fid;
        assert!(
            (ours - want).abs() <= tolerance * want,
            "{s1}/{s2}: FID {ours}, pytorch-fid {want}"
        );

        // `.npz` route: the saved statistics give the same distance as the folders.
        let dir = tempfile::tempdir().unwrap();
        let npz = dir.path().join("s1.npz");
        stats[0].write_npz(&npz).unwrap();
        let loaded = fid::statistics_of(&model, &npz, 4, |_, _| {}).unwrap();
        let again = fid::frechet_distance(&loaded, &stats[1]).unwrap().fid;
        assert_eq!(again, ours);
    }
    let sigma_c = read_npy("sigma_c_64.npy");
    let (c, n) = features(&model, "C");
    let ours = Statistics::from_activations(&c, n, 64).unwrap();
    let diff = sigma_c
        .values
        .iter()
        .enumerate()
        .map(|(k, v)| (ours.sigma[(k / 64, k % 64)] - v).abs())
        .fold(0.0, f64::max);
    assert!(diff <= 1e-6, "sigma of C differs by {diff}");
}

#[test]
fn jpegs_decode_to_pillows_pixels() {
    for (jpeg, pillow) in [
        ("B/b_3.jpg", "jpeg_decoded/B_b_3.jpg.png"),
        ("B/b_17.jpg", "jpeg_decoded/B_b_17.jpg.png"),
    ] {
        let ours = images::read_input(&fixtures().join(jpeg)).unwrap();
        let theirs = images::read_input(&fixtures().join(pillow)).unwrap();
        assert!(ours == theirs, "{jpeg} decodes differently from Pillow");
    }
}

#[test]
fn an_undecodable_image_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(
        &bad,
        [0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F'],
    )
    .unwrap();
    let err = images::read_input(&bad).unwrap_err().to_string();
    assert!(err.contains("broken.jpg") && err.contains("JPEG"), "{err}");
    let text = dir.path().join("notes.png");
    std::fs::write(&text, b"not an image").unwrap();
    let err = format!("{:#}", images::read_input(&text).unwrap_err());
    assert!(err.contains("notes.png"), "{err}");
}
