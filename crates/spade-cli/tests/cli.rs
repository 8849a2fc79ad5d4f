//! The `spade` binary end to end, with the flags the acceptance checks use.

#[path = "../../spade-model/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::Tensor;
use common::{fixtures, max_abs_diff as max_abs};

fn spade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spade"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("spade runs")
}

fn ok(args: &[&str]) {
    let out = spade(args);
    assert!(
        out.status.success(),
        "spade {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails with exit code 1 and an `error:` line, not a panic.
fn fails(args: &[&str]) -> String {
    let out = spade(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "spade {args:?}: {stderr}");
    assert!(
        stderr.starts_with("error:") && !stderr.contains("panicked"),
        "{stderr}"
    );
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn synthesize_from_pngs_matches_reference_output() {
    let case = fixtures().join("gen_cityscapes_eval");
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("out.npy");
    let png = tmp.path().join("out.png");
    ok(&[
        "synthesize",
        "--checkpoint",
        s(&case),
        "--label",
        s(&case.join("label_0.png")),
        "--instance",
        s(&case.join("instance_0.png")),
        "--out",
        s(&png),
        "--out-npy",
        s(&npy),
    ]);
    let ours = Tensor::read_npy(&npy).unwrap();
    let expected = Tensor::read_npy(case.join("output.npy")).unwrap();
    assert!(max_abs(&ours, &expected) < 1e-4);
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (128, 64));
}

#[test]
fn vae_model_takes_z_seed_and_style() {
    let case = fixtures().join("vae_eval");
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let label = case.join("label_0.png");
    let instance = case.join("instance_0.png");
    let synthesize = |extra: &[&str]| {
        let mut args = vec!["synthesize", "--checkpoint", s(&case), "--label", s(&label)];
        args.extend(["--instance", s(&instance)]);
        args.extend(extra);
        ok(&args);
    };
    let read = |name: &str| Tensor::read_npy(out(name)).unwrap();

    synthesize(&["--seed", "1", "--out-npy", &out("seed1.npy")]);
    synthesize(&["--seed", "2", "--out-npy", &out("seed2.npy")]);
    synthesize(&["--seed", "1", "--out-npy", &out("again.npy")]);
    assert!(
        max_abs(&read("seed1.npy"), &read("seed2.npy")) > 1e-3,
        "different seeds must give different images"
    );
    assert_eq!(max_abs(&read("seed1.npy"), &read("again.npy")), 0.0);

    let style = fixtures().join("preprocess_coco/raw/val_img/000000000139.jpg");
    synthesize(&["--style", s(&style), "--out", &out("style.png")]);

    let z = Tensor::read_npy(case.join("z.npy")).unwrap();
    z.narrow(0, 0, 1).unwrap().write_npy(out("z.npy")).unwrap();
    synthesize(&["--z", &out("z.npy"), "--out-npy", &out("z_out.npy")]);
    let expected = Tensor::read_npy(case.join("output_z.npy")).unwrap();
    let expected = expected.narrow(0, 0, 1).unwrap();
    assert!(max_abs(&read("z_out.npy"), &expected) < 1e-4);
}

#[test]
fn encode_and_convert_round_trip() {
    let case = fixtures().join("vae_eval");
    let tmp = tempfile::tempdir().unwrap();
    let npz = tmp.path().join("style.npz");
    ok(&[
        "encode",
        "--checkpoint",
        s(&case),
        "--image-npy",
        s(&case.join("image.npy")),
        "--out-npy",
        s(&npz),
    ]);
    let arrays = Tensor::read_npz(&npz).unwrap();
    let mu = &arrays.iter().find(|(n, _)| n == "mu").expect("mu array").1;
    assert!(max_abs(mu, &Tensor::read_npy(case.join("mu.npy")).unwrap()) < 1e-4);
    assert!(arrays.iter().any(|(n, _)| n == "logvar"));

    let converted = tmp.path().join("vae.safetensors");
    ok(&["convert", "--checkpoint", s(&case), "--out", s(&converted)]);
    let npz2 = tmp.path().join("style2.npz");
    ok(&[
        "encode",
        "--checkpoint",
        s(&converted),
        "--image-npy",
        s(&case.join("image.npy")),
        "--out-npy",
        s(&npz2),
    ]);
    let mu2 = Tensor::read_npz_by_name(&npz2, &["mu"]).unwrap().remove(0);
    assert_eq!(max_abs(mu, &mu2), 0.0);
}

#[test]
fn bad_invocations_are_clear_errors() {
    let f = fixtures();
    let coco = f.join("gen_coco_eval");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png");
    let label = coco.join("label_0.png");

    let err = fails(&[
        "synthesize",
        "--checkpoint",
        s(&coco),
        "--label",
        s(&label),
        "--out",
        s(&out),
    ]);
    assert!(err.contains("instance map"), "{err}");
    let jpg = f.join("preprocess_coco/raw/val_img/000000000139.jpg");
    let err = fails(&[
        "synthesize",
        "--checkpoint",
        s(&coco),
        "--label",
        s(&jpg),
        "--instance",
        s(&label),
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("000000000139.jpg") && err.contains("PNG"),
        "{err}"
    );
    let err = fails(&[
        "synthesize",
        "--checkpoint",
        s(&tmp.path().join("none")),
        "--label",
        s(&label),
        "--out",
        s(&out),
    ]);
    assert!(err.contains("no such folder"), "{err}");
    let err = fails(&[
        "encode",
        "--checkpoint",
        s(&coco),
        "--image",
        s(&jpg),
        "--out-npy",
        s(&tmp.path().join("e.npz")),
    ]);
    assert!(err.contains("no style encoder"), "{err}");
    let err = fails(&["bench", "--arch", "facades"]);
    assert!(err.contains("facades"), "{err}");
}

#[test]
fn make_dataset_then_synthesize_with_the_bundled_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok(&[
        "make-dataset",
        "landscapes",
        "--count",
        "2",
        "--size",
        "64",
        "--seed",
        "2",
        "--out",
        s(&data),
    ]);
    let label = data.join("label/000001.png");
    let photo = image::open(data.join("image/000001.png")).unwrap();
    assert_eq!((photo.width(), photo.height()), (64, 64));
    // No --checkpoint: the bundled model, at its own 256 x 256; two seeds, two styles.
    let (a, b) = (tmp.path().join("a.png"), tmp.path().join("b.png"));
    ok(&[
        "synthesize",
        "--label",
        s(&label),
        "--seed",
        "1",
        "--out",
        s(&a),
    ]);
    ok(&[
        "synthesize",
        "--label",
        s(&label),
        "--seed",
        "2",
        "--out",
        s(&b),
    ]);
    let (a, b) = (
        image::open(&a).unwrap().to_rgb8(),
        image::open(&b).unwrap().to_rgb8(),
    );
    assert_eq!(a.dimensions(), (256, 256));
    assert_ne!(a.as_raw(), b.as_raw());
    let err = fails(&[
        "make-dataset",
        "landscapes",
        "--count",
        "0",
        "--out",
        s(&data),
    ]);
    assert!(err.contains("--count 0"), "{err}");
}
