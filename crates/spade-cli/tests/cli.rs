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

#[test]
fn fid_prints_pytorch_fids_value_and_saves_its_files() {
    let fid = fixtures().join("fid");
    let weights = fid.join("pt_inception-random.pth");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fid.join("expected.json")).unwrap()).unwrap();
    let want = expected["cases"][2]["fid_pytorch_fid"].as_f64().unwrap();
    let out = spade(&[
        "fid",
        s(&fid.join("C")),
        s(&fid.join("D")),
        "--dims",
        "64",
        "--inception",
        s(&weights),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let value: f64 = last.strip_prefix("FID: ").unwrap().parse().unwrap();
    assert!(
        (value - want).abs() <= 2e-6 * want,
        "{last}, pytorch-fid {want}"
    );
    let json: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(json["fid"].as_f64(), Some(value));

    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("c.npz");
    let npy = dir.path().join("c.npy");
    let dims = ["--dims", "64", "--inception", s(&weights)];
    ok(&[
        &["fid", "--save-stats", s(&fid.join("C")), s(&npz)],
        &dims[..],
    ]
    .concat());
    ok(&[
        &["fid", "--activations", s(&fid.join("C")), s(&npy)],
        &dims[..],
    ]
    .concat());
    let act = Tensor::read_npy(&npy).unwrap();
    assert_eq!(act.dims(), [96, 64]);
    let out = spade(&[&["fid", s(&npz), s(&fid.join("D"))], &dims[..]].concat());
    let again = String::from_utf8_lossy(&out.stdout);
    assert_eq!(again.lines().last(), Some(last), "the .npz route");

    let err = fails(&["fid", s(&fid.join("C")), s(&fid.join("D")), "--dims", "100"]);
    assert!(err.contains("--dims 100"), "{err}");
    let err = fails(&[
        "fid",
        s(&fid.join("C")),
        s(&fid.join("D")),
        "--inception",
        "/nonexistent.pth",
    ]);
    assert!(err.contains("/nonexistent.pth"), "{err}");
}

#[test]
fn fid_without_weights_says_where_it_looked() {
    let fid = fixtures().join("fid");
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spade"))
        .args(["fid", s(&fid.join("C")), s(&fid.join("D"))])
        .env_remove("SPADE_FID_WEIGHTS")
        .env("TORCH_HOME", home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("SPADE_FID_WEIGHTS")
            && stderr.contains(&home.path().join("hub/checkpoints").display().to_string()),
        "{stderr}"
    );
    // Found through the environment variable instead.
    let out = Command::new(env!("CARGO_BIN_EXE_spade"))
        .args(["fid", s(&fid.join("C")), s(&fid.join("D")), "--dims", "64"])
        .env("SPADE_FID_WEIGHTS", fid.join("pt_inception-random.pth"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn seg_metrics_prints_a_table_and_writes_json() {
    let fixture = fixtures().join("seg_metrics");
    let dir = tempfile::tempdir().unwrap();
    for side in ["gt", "pred"] {
        std::fs::create_dir(dir.path().join(side)).unwrap();
        for k in 0..6 {
            std::fs::copy(
                fixture.join(format!("{side}_{k}.png")),
                dir.path().join(side).join(format!("{k}.png")),
            )
            .unwrap();
        }
    }
    let json = dir.path().join("m.json");
    let out = spade(&[
        "seg-metrics",
        "--gt",
        s(&dir.path().join("gt")),
        "--pred",
        s(&dir.path().join("pred")),
        "--num-classes",
        "12",
        "--json",
        s(&json),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("mIoU 41.91 %"));
    let ours: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();
    for key in ["miou", "pixel_accuracy", "mean_class_accuracy"] {
        let (a, b) = (ours[key].as_f64().unwrap(), want[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-12, "{key}: {a} vs {b}");
    }
    assert_eq!(ours["confusion_matrix"], want["confusion_matrix"]);
    assert_eq!(ours["iou"].as_array().unwrap()[10], serde_json::Value::Null);
    let err = fails(&[
        "seg-metrics",
        "--gt",
        s(&dir.path().join("gt")),
        "--pred",
        s(&fixture),
        "--num-classes",
        "12",
    ]);
    assert!(err.contains("no prediction"), "{err}");
}

/// `spade test` on a COCO-layout validation split made of the fixture's inputs: the
/// synthesized images are the reference generator's outputs (within 1 level after
/// `tensor2im`), next to the colour-coded labels and the real photos.
/// A COCO-layout validation split made of `gen_coco_eval`'s inputs (`a`, `b`), and its
/// checkpoint as the experiment `cocoeval`: (checkpoints dir, dataroot).
fn coco_val_split(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let case = fixtures().join("gen_coco_eval");
    let experiment = root.join("checkpoints/cocoeval");
    std::fs::create_dir_all(&experiment).unwrap();
    for file in ["opt.txt", "latest_net_G.pth"] {
        std::fs::copy(case.join(file), experiment.join(file)).unwrap();
    }
    let data = root.join("data");
    for dir in ["val_label", "val_inst", "val_img"] {
        std::fs::create_dir_all(data.join(dir)).unwrap();
    }
    for (i, stem) in ["a", "b"].iter().enumerate() {
        let png = format!("{stem}.png");
        std::fs::copy(
            case.join(format!("label_{i}.png")),
            data.join("val_label").join(&png),
        )
        .unwrap();
        std::fs::copy(
            case.join(format!("instance_{i}.png")),
            data.join("val_inst").join(&png),
        )
        .unwrap();
        image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, 90 + i as u8])
        })
        .save(data.join("val_img").join(&png))
        .unwrap();
    }
    (root.join("checkpoints"), data)
}

/// The `spade test` flags for [`coco_val_split`]'s experiment, writing under `results`.
fn split_flags<'a>(checkpoints: &'a Path, data: &'a Path, results: &'a Path) -> [&'a str; 10] {
    [
        "--name",
        "cocoeval",
        "--checkpoints_dir",
        s(checkpoints),
        "--dataroot",
        s(data),
        "--results_dir",
        s(results),
        "--gpu_ids",
        "-1",
    ]
}

#[test]
fn test_writes_the_official_results_folder() {
    let case = fixtures().join("gen_coco_eval");
    let tmp = tempfile::tempdir().unwrap();
    let (checkpoints, data) = coco_val_split(tmp.path());
    let results = tmp.path().join("results");
    let test = [&["test"], &split_flags(&checkpoints, &data, &results)[..]].concat();
    ok(&[&test[..], &["--batchSize", "2"]].concat());
    let web = results.join("cocoeval/test_latest");
    let expected = Tensor::read_npy(case.join("output.npy")).unwrap();
    let expected = spade_model::io::preprocess::to_rgb8(&expected).unwrap();
    for (i, stem) in ["a", "b"].iter().enumerate() {
        let png = format!("{stem}.png");
        let fake = image::open(web.join("images/synthesized_image").join(&png))
            .unwrap()
            .to_rgb8();
        let worst = fake
            .as_raw()
            .iter()
            .zip(&expected[i].data)
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "{stem}: synthesized image differs by {worst} levels"
        );
        let real = image::open(web.join("images/real_image").join(&png))
            .unwrap()
            .to_rgb8();
        let photo = image::open(data.join("val_img").join(&png))
            .unwrap()
            .to_rgb8();
        let worst = real
            .as_raw()
            .iter()
            .zip(photo.as_raw())
            .map(|(&a, &b)| a.abs_diff(b))
            .max()
            .unwrap();
        assert!(worst <= 1, "{stem}: real image differs by {worst} levels");
        let label = image::open(data.join("val_label").join(&png))
            .unwrap()
            .to_luma8();
        let coloured = image::open(web.join("images/input_label").join(&png))
            .unwrap()
            .to_rgb8();
        let id = label.get_pixel(5, 7)[0];
        // 255 (unlabelled) is shown as dontcare, label_nc.
        let shown = if id == 255 { 12 } else { usize::from(id) };
        assert_eq!(
            coloured.get_pixel(5, 7).0,
            spade_model::io::palette::voc_colour(shown)
        );
    }
    let index = std::fs::read_to_string(web.join("index.html")).unwrap();
    assert!(index.contains("images/synthesized_image/b.png"), "{index}");

    std::fs::remove_dir_all(data.join("val_inst")).unwrap();
    let err = fails(&test);
    assert!(err.contains("val_inst"), "{err}");
}

/// `spade evaluate` with perfect predictions (the input labels themselves): 100 % mIoU and
/// accuracy, and the FID of the synthesized against the real images in metrics.json.
#[test]
fn evaluate_prints_a_table_row_and_writes_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (checkpoints, data) = coco_val_split(tmp.path());
    let results = tmp.path().join("results");
    let weights = fixtures().join("fid/pt_inception-random.pth");
    let test = split_flags(&checkpoints, &data, &results);
    // Perfect predictions: the label ids a first run writes.
    ok(&[
        &["evaluate"],
        &test[..],
        &["--dims", "64", "--inception", s(&weights)],
    ]
    .concat());
    let web = results.join("cocoeval/test_latest");
    let pred = tmp.path().join("pred");
    std::fs::create_dir(&pred).unwrap();
    for stem in ["a", "b"] {
        let png = format!("{stem}.png");
        std::fs::copy(web.join("images/label_ids").join(&png), pred.join(&png)).unwrap();
    }
    let out = spade(
        &[
            &["evaluate"],
            &test[..],
            &[
                "--dims",
                "64",
                "--inception",
                s(&weights),
                "--pred",
                s(&pred),
            ],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| cocoeval (2) | 100.0 | 100.0 |"),
        "{stdout}"
    );
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(web.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["miou"].as_f64(), Some(1.0));
    let fid = metrics["fid"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{metrics}");
}
