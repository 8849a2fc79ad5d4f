//! The `trainer` end to end: it continues an official checkpoint and lands where the
//! reference lands, it learns, a killed run resumes to the same weights, and broken datasets
//! are refused with the file named.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use clap::Parser;
use common::{case, max_abs_diff};
use spade_model::io::checkpoint::pth;
use spade_model::io::preprocess::to_rgb8;
use spade_model::train::options::TrainOptions;
use spade_model::SpadeModel;

fn options(args: &[String]) -> TrainOptions {
    let all = ["trainer", "--gpu_ids", "-1"].map(String::from);
    TrainOptions::try_parse_from(all.iter().chain(args)).expect("valid options")
}

fn trainer_command(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.args(["--gpu_ids", "-1"]).args(args);
    cmd
}

/// The colour each class is painted in the generated dataset.
const CLASS_COLOURS: [[u8; 3]; 4] = [[200, 40, 40], [40, 200, 40], [40, 40, 200], [220, 220, 60]];

/// `count` label maps of `size`x`size` (four classes in random rectangles) and photos that
/// paint each class in its colour: a dataset whose mapping a short run can start to learn.
fn make_dataset(root: &Path, count: usize, size: u32) -> (PathBuf, PathBuf) {
    let (labels, images) = (root.join("labels"), root.join("images"));
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::create_dir_all(&images).unwrap();
    let mut state = 12345u64;
    let mut next = move |n: u32| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % u64::from(n)) as u32
    };
    for i in 0..count {
        let mut label = image::GrayImage::from_pixel(size, size, image::Luma([next(4) as u8]));
        for _ in 0..3 {
            let (x0, y0) = (next(size), next(size));
            let (w, h) = (next(size / 2) + 4, next(size / 2) + 4);
            let class = next(4) as u8;
            for y in y0..(y0 + h).min(size) {
                for x in x0..(x0 + w).min(size) {
                    label.put_pixel(x, y, image::Luma([class]));
                }
            }
        }
        let photo = image::RgbImage::from_fn(size, size, |x, y| {
            image::Rgb(CLASS_COLOURS[label.get_pixel(x, y)[0] as usize])
        });
        label.save(labels.join(format!("{i:03}.png"))).unwrap();
        photo.save(images.join(format!("{i:03}.png"))).unwrap();
    }
    (labels, images)
}

/// Mean |synthesized - real| over the dataset, in [0, 255] units, with the eval-mode model
/// loaded from the checkpoint folder as the server loads it.
fn dataset_l1(folder: &Path, labels: &Path, images: &Path) -> f64 {
    let model = SpadeModel::load(folder, &Device::Cpu).expect("the server loads trainer output");
    let config = model.config.clone();
    let pre = spade_model::io::preprocess::Preprocessor::new(&config);
    let limits = spade_model::io::preprocess::DecodeLimits::default();
    let mut total = 0.0;
    let mut count = 0.0;
    let mut files: Vec<_> = std::fs::read_dir(labels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for label_path in files {
        let raw = spade_model::io::preprocess::decode_id_png(
            &std::fs::read(&label_path).unwrap(),
            "label",
            &limits,
        )
        .unwrap();
        let label = pre.label(&raw);
        let sem = pre.semantics(&[label], None, &Device::Cpu).unwrap();
        let fake = to_rgb8(&model.synthesize(&sem, None).unwrap())
            .unwrap()
            .remove(0);
        let photo = image::open(images.join(label_path.file_name().unwrap()))
            .unwrap()
            .to_rgb8();
        for (a, b) in fake.data.iter().zip(photo.as_raw()) {
            total += (f64::from(*a) - f64::from(*b)).abs();
            count += 1.0;
        }
    }
    total / count
}

fn small_run(labels: &Path, images: &Path, checkpoints: &Path, name: &str) -> Vec<String> {
    [
        "--dataset_mode",
        "custom",
        "--label_dir",
        labels.to_str().unwrap(),
        "--image_dir",
        images.to_str().unwrap(),
        "--no_instance",
        "--label_nc",
        "4",
        "--crop_size",
        "64",
        "--load_size",
        "64",
        "--ngf",
        "4",
        "--ndf",
        "8",
        "--num_D",
        "1",
        "--n_layers_D",
        "3",
        "--batchSize",
        "2",
        "--no_vgg_loss",
        "--name",
        name,
        "--checkpoints_dir",
        checkpoints.to_str().unwrap(),
        "--seed",
        "7",
        "--print_freq",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_ok(mut cmd: Command) {
    let out = cmd.output().expect("trainer runs");
    assert!(
        out.status.success(),
        "trainer failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GAN training at this size is chaotic: after 8 epochs the L1 had fallen by anywhere from
/// 2 % to 34 % depending on the seed (and on float rounding, which any faster kernel changes);
/// after 16 it fell by more than the asserted 20 % on every seed tried.
#[test]
fn a_short_run_lowers_the_l1_to_the_real_images() {
    let tmp = tempfile::tempdir().unwrap();
    let (labels, images) = make_dataset(tmp.path(), 8, 64);
    let ckpt = tmp.path().join("checkpoints");
    let mut args = small_run(&labels, &images, &ckpt, "learn");
    args.extend(["--lr", "0.001", "--niter", "1", "--save_epoch_freq", "1"].map(String::from));
    run_ok(trainer_command(&args));
    let folder = ckpt.join("learn");
    let before = dataset_l1(&folder, &labels, &images);
    let mut more = small_run(&labels, &images, &ckpt, "learn");
    more.extend(
        [
            "--lr",
            "0.001",
            "--niter",
            "16",
            "--save_epoch_freq",
            "1",
            "--continue_train",
        ]
        .map(String::from),
    );
    run_ok(trainer_command(&more));
    let after = dataset_l1(&folder, &labels, &images);
    println!(
        "mean L1 to the real images (0-255): after 1 epoch {before:.2}, after 16 epochs {after:.2}"
    );
    assert!(
        after < 0.8 * before,
        "L1 {before:.2} -> {after:.2}: no clear learning"
    );
    let log = std::fs::read_to_string(folder.join("loss_log.jsonl")).unwrap();
    assert_eq!(
        log.lines().count(),
        32,
        "a record every 4 samples: 2 per epoch of 8 samples"
    );
    assert!(folder.join("web/index.html").is_file() && folder.join("16_net_G.pth").is_file());
    // The written opt.txt reads back as the run's options.
    let written = std::fs::read_to_string(folder.join("opt.txt")).unwrap();
    let reread = TrainOptions::from_opt_txt(&written)
        .unwrap()
        .resolve()
        .unwrap();
    let given = options(&more).resolve().unwrap();
    assert_eq!(reread.model, given.model);
    assert_eq!(reread.discriminator, given.discriminator);
    assert_eq!(
        (reread.lr, reread.ttur, reread.niter),
        (given.lr, given.ttur, given.niter)
    );
}

fn read_state(path: &Path) -> Vec<(String, Tensor)> {
    let mut all: Vec<_> = pth::read(path).unwrap().into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (labels, images) = make_dataset(tmp.path(), 6, 64);
    let ckpt = tmp.path().join("checkpoints");
    let common = |name: &str| {
        let mut args = small_run(&labels, &images, &ckpt, name);
        args.extend(
            [
                "--niter",
                "2",
                "--niter_decay",
                "1",
                "--save_latest_freq",
                "2",
            ]
            .map(String::from),
        );
        args
    };
    run_ok(trainer_command(&common("straight")));

    let mut child = trainer_command(&common("killed"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = ckpt.join("killed/train_state.json");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = std::fs::read_to_string(&state).unwrap_or_default();
        let progressed = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["iterations"].as_u64())
            .is_some_and(|it| it >= 2);
        if progressed || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut resume = common("killed");
    resume.push("--continue_train".into());
    run_ok(trainer_command(&resume));

    for net in ["G", "D"] {
        let file = format!("latest_net_{net}.pth");
        let a = read_state(&ckpt.join("straight").join(&file));
        let b = read_state(&ckpt.join("killed").join(&file));
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert_eq!(
                max_abs_diff(x, y),
                0.0,
                "{file} {name} differs after resuming"
            );
        }
    }
}

/// The official `train_step` iteration run by the trainer itself: the fixture's batch as a
/// COCO-layout folder, its official (legacy-format) checkpoints continued with
/// `--continue_train`, one iteration. The written zip checkpoints must land on the
/// reference's `after_net_*` within Adam's noise bound (2 lr where gradients are at the noise
/// level; see tests/train_step.rs for the tight comparison).
#[test]
fn continue_train_from_official_checkpoints_matches_the_reference_iteration() {
    let fixture = case("train_step");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    for (kind, dir) in [
        ("label", "train_label"),
        ("instance", "train_inst"),
        ("image", "train_img"),
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        for i in 0..2 {
            std::fs::copy(
                fixture.join(format!("{kind}_{i}.png")),
                root.join(dir).join(format!("{i:03}.png")),
            )
            .unwrap();
        }
    }
    let experiment = tmp.path().join("checkpoints/official");
    std::fs::create_dir_all(&experiment).unwrap();
    for net in ["G", "D"] {
        std::fs::copy(
            fixture.join(format!("latest_net_{net}.pth")),
            experiment.join(format!("latest_net_{net}.pth")),
        )
        .unwrap();
    }
    let args: Vec<String> = [
        "--dataset_mode",
        "coco",
        "--dataroot",
        root.to_str().unwrap(),
        "--label_nc",
        "8",
        "--load_size",
        "64",
        "--crop_size",
        "64",
        "--ngf",
        "2",
        "--ndf",
        "8",
        "--batchSize",
        "2",
        "--serial_batches",
        "--no_flip",
        "--niter",
        "1",
        "--name",
        "official",
        "--checkpoints_dir",
        tmp.path().join("checkpoints").to_str().unwrap(),
        "--continue_train",
        "--vgg_weights",
        fixture.join("vgg19.pth").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run_ok(trainer_command(&args));
    for (net, lr) in [("G", 1e-4), ("D", 4e-4)] {
        let ours = read_state(&experiment.join(format!("latest_net_{net}.pth")));
        let reference = pth::read(&fixture.join(format!("after_net_{net}.pth"))).unwrap();
        assert_eq!(ours.len(), reference.len(), "{net}: tensor count");
        for (name, tensor) in ours {
            let want = &reference[&name];
            if tensor.dtype() == DType::I64 {
                assert_eq!(
                    tensor.to_scalar::<i64>().unwrap(),
                    want.to_scalar::<i64>().unwrap(),
                    "{name}"
                );
                continue;
            }
            let err = max_abs_diff(&tensor, want);
            assert!(
                err <= 2.0 * lr + 1e-4,
                "after_net_{net} {name}: error {err:.3e}"
            );
        }
    }
}

#[test]
fn broken_datasets_are_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (labels, images) = make_dataset(tmp.path(), 4, 64);
    let ckpt = tmp.path().join("checkpoints");
    let base = || {
        let mut args = small_run(&labels, &images, &ckpt, "broken");
        args.extend(["--niter", "1"].map(String::from));
        options(&args)
    };
    let fails = |opts: TrainOptions, needle: &str| {
        let err = spade_model::train::run::train(&opts, &Device::Cpu, None, None)
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains(needle),
            "error `{err}` does not mention `{needle}`"
        );
    };

    // Label ids beyond label_nc.
    let mut opts = base();
    opts.label_nc = Some(2);
    fails(opts, "label id");
    // No VGG weights for the perceptual loss.
    let mut opts = base();
    opts.no_vgg_loss = false;
    fails(opts, "vgg_weights");
    // A photo without its label map.
    std::fs::copy(images.join("000.png"), images.join("999.png")).unwrap();
    fails(base(), "999.png");
    std::fs::remove_file(images.join("999.png")).unwrap();
    // A label map without its photo.
    std::fs::rename(images.join("001.png"), tmp.path().join("001.png")).unwrap();
    fails(base(), "001.png");
    std::fs::rename(tmp.path().join("001.png"), images.join("001.png")).unwrap();
    // An unreadable photo.
    std::fs::write(images.join("002.png"), b"not a png").unwrap();
    let mut opts = base();
    opts.serial_batches = true;
    fails(opts, "002.png");
    // A missing folder.
    let mut opts = base();
    opts.image_dir = Some(PathBuf::from("/nonexistent/photos"));
    fails(opts, "/nonexistent/photos");
}

/// The training manifests only pass options the trainer has, and only set environment
/// variables it reads.
#[test]
fn training_manifests_use_real_trainer_options() {
    use clap::CommandFactory;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/training");
    let options: Vec<String> = TrainOptions::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let trainer_source = include_str!("../src/bin/trainer.rs");
    let mut files = vec![];
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    let all: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for flag in text
            .split(|c: char| c.is_whitespace() || c == '"')
            .filter_map(|w| w.strip_prefix("--"))
        {
            assert!(
                options.iter().any(|o| o == flag),
                "{}: `--{flag}` is no trainer option",
                file.display()
            );
        }
        for line in text.lines() {
            if let Some(name) = line.trim().strip_prefix("- name: ") {
                let is_env = name.chars().all(|c| c.is_ascii_uppercase() || c == '_');
                let read = trainer_source.contains(&format!("\"{name}\""))
                    || all.contains(&format!("${{{name}}}"));
                assert!(
                    !is_env || read,
                    "{}: {name} is read by nobody",
                    file.display()
                );
            }
        }
    }
}

/// SIGTERM (a node drain, a rollout) makes the trainer finish its iteration, save `latest`
/// and exit with 143, so the restarted pod loses no work.
#[test]
fn sigterm_saves_latest_before_exiting() {
    let tmp = tempfile::tempdir().unwrap();
    let (labels, images) = make_dataset(tmp.path(), 6, 64);
    let ckpt = tmp.path().join("checkpoints");
    let mut args = small_run(&labels, &images, &ckpt, "drained");
    args.extend(["--niter", "50", "--save_latest_freq", "1000000"].map(String::from));
    let mut child = trainer_command(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = ckpt.join("drained/loss_log.jsonl");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()) {
        assert!(Instant::now() < deadline, "no training progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "exit status {status:?}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ckpt.join("drained/train_state.json")).unwrap(),
    )
    .unwrap();
    assert!(state["iterations"].as_u64().unwrap() >= 2, "{state}");
    assert!(ckpt.join("drained/latest_net_G.pth").is_file());
    assert!(ckpt.join("drained/latest_optim.safetensors").is_file());
}

/// Continuing from checkpoints that do not fit the options fails with the tensor and file named.
#[test]
fn continue_train_refuses_checkpoints_that_do_not_fit() {
    use spade_model::train::step::{Start, Trainer};
    let fixture = case("train_step");
    let opt = std::fs::read_to_string(fixture.join("opt.txt")).unwrap();
    let attempt = |dir: &Path, edit: &dyn Fn(&mut TrainOptions)| {
        let mut options = TrainOptions::from_opt_txt(&opt).unwrap();
        options.no_vgg_loss = true;
        edit(&mut options);
        let start = Start::Checkpoint {
            dir,
            epoch: "latest",
        };
        let config = options.resolve().unwrap();
        match Trainer::new(config, start, None, &Device::Cpu, DType::F32, None) {
            Ok(_) => panic!("loaded checkpoints that do not fit"),
            Err(e) => e.to_string(),
        }
    };
    let wider = attempt(&fixture, &|o| o.ngf = 4);
    assert!(
        wider.contains("latest_net_G.pth") && wider.contains("has shape"),
        "{wider}"
    );
    let vae = attempt(&fixture, &|o| {
        o.use_vae = true;
        o.crop_size = Some(256);
    });
    // With the VAE, `fc` maps z instead of the label map.
    assert!(vae.contains("`fc.bias` has shape"), "{vae}");
    let empty = tempfile::tempdir().unwrap();
    let missing = attempt(empty.path(), &|_| {});
    assert!(
        missing.contains("latest_net_G.pth") && missing.contains("missing"),
        "{missing}"
    );
}

/// `--max_total_steps` ends a run (exit 0, `latest` saved) at the budget, counted across
/// resumes; `--lambda_l1` adds its term to the generator's losses.
#[test]
fn a_step_budget_ends_the_run_and_a_resume_continues_to_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let (labels, images) = make_dataset(tmp.path(), 6, 64);
    let ckpt = tmp.path().join("checkpoints");
    let state = || -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(ckpt.join("budget/train_state.json")).unwrap(),
        )
        .unwrap()
    };
    let mut args = small_run(&labels, &images, &ckpt, "budget");
    args.extend(
        [
            "--niter",
            "50",
            "--lambda_l1",
            "10",
            "--max_total_steps",
            "4",
        ]
        .map(String::from),
    );
    run_ok(trainer_command(&args));
    assert_eq!(
        (
            state()["total_steps"].as_u64(),
            state()["iterations"].as_u64()
        ),
        (Some(4), Some(2))
    );
    let log = std::fs::read_to_string(ckpt.join("budget/loss_log.jsonl")).unwrap();
    assert!(log.lines().last().unwrap().contains("\"L1\""), "{log}");

    let mut args = small_run(&labels, &images, &ckpt, "budget");
    args.extend(
        [
            "--niter",
            "50",
            "--continue_train",
            "--max_total_steps",
            "8",
        ]
        .map(String::from),
    );
    run_ok(trainer_command(&args));
    assert_eq!(state()["total_steps"].as_u64(), Some(8));
}
