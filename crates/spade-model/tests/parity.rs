//! Numerical parity of the generator and encoder with the reference eval fixtures.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, case, npy, read};
use rand::SeedableRng;
use spade_model::io::checkpoint::{pth, Checkpoint};
use spade_model::io::preprocess::{decode_id_png, Preprocessor};
use spade_model::nets::encoder::Encoder;
use spade_model::nets::generator::Generator;
use spade_model::nets::layers::Mode;
use spade_model::ops::gemm_bf16::Bf16Isa;
use spade_model::SpadeModel;

fn cpu() -> Device {
    Device::Cpu
}

/// Semantics built from the case's PNGs through our preprocessing.
fn semantics_from_pngs(dir: &std::path::Path, model: &SpadeModel, n: usize) -> Tensor {
    let pre = Preprocessor::new(&model.config);
    let labels: Vec<_> = (0..n)
        .map(|i| {
            let raw = decode_id_png(
                &read(dir, &format!("label_{i}.png")),
                "label",
                &Default::default(),
            )
            .unwrap();
            pre.label(&raw)
        })
        .collect();
    let instances: Option<Vec<_>> = (!model.config.no_instance).then(|| {
        (0..n)
            .map(|i| {
                let f = format!("instance_{i}.png");
                pre.instance(
                    &decode_id_png(&read(dir, &f), "instance", &Default::default()).unwrap(),
                )
            })
            .collect()
    });
    pre.semantics(&labels, instances.as_deref(), &cpu())
        .unwrap()
}

fn channel_sums(semantics: &Tensor) -> Tensor {
    semantics.sum((2, 3)).unwrap()
}

#[test]
fn coco_generator_matches_reference_stage_by_stage() {
    let dir = case("gen_coco_eval");
    let model = SpadeModel::load(&dir, &cpu()).unwrap();
    let semantics = npy(&dir, "input_semantics.npy");

    let mut stages = Vec::new();
    let out = model
        .generator
        .forward_inspect(&semantics, None, &mut |name, t| {
            stages.push((name.to_string(), t.clone()))
        })
        .unwrap();
    assert_close(&dir, "output.npy", &out);
    assert_eq!(stages.len(), 8);
    for (name, t) in &stages {
        assert_close(&dir, &format!("act_{name}.npy"), t);
    }
}

#[test]
fn coco_semantics_from_pngs_equal_reference() {
    let dir = case("gen_coco_eval");
    let model = SpadeModel::load(&dir, &cpu()).unwrap();
    let ours = semantics_from_pngs(&dir, &model, 2);
    let reference = npy(&dir, "input_semantics.npy");
    assert_eq!(common::max_abs_diff(&ours, &reference), 0.0);
}

#[test]
fn cityscapes_generator_matches_reference_from_both_pth_formats() {
    let dir = case("gen_cityscapes_eval");
    let legacy = SpadeModel::load(&dir, &cpu()).unwrap();
    let semantics = npy(&dir, "input_semantics.npy");
    assert_close(
        &dir,
        "output.npy",
        &legacy.synthesize(&semantics, None).unwrap(),
    );

    // Cityscapes preprocessing: `fixed` mode, 16-bit instance PNG.
    let ours = semantics_from_pngs(&dir, &legacy, 1);
    assert_eq!(common::max_abs_diff(&ours, &semantics), 0.0);

    let zip_path = dir.join("zip_net_G.pth");
    let zip = Checkpoint {
        config: legacy.config.clone(),
        generator: pth::open(&zip_path).unwrap(),
        encoder: None,
        classes: None,
    };
    let zip_model = SpadeModel::from_checkpoint(&zip, &cpu(), DType::F32).unwrap();
    assert_close(
        &dir,
        "output.npy",
        &zip_model.synthesize(&semantics, None).unwrap(),
    );
}

#[test]
fn ade20k_instance_norm_5x5_most_matches_reference() {
    let dir = case("gen_ade_instance5x5_eval");
    let model = SpadeModel::load(&dir, &cpu()).unwrap();
    let semantics = semantics_from_pngs(&dir, &model, 2);
    // ADE20K ids reach the network unshifted: our one-hot agrees with the reference's.
    let sums = channel_sums(&semantics);
    let expected = npy(&dir, "input_semantics_channel_sums.npy");
    assert_eq!(common::max_abs_diff(&sums, &expected), 0.0);
    assert_close(
        &dir,
        "output.npy",
        &model.synthesize(&semantics, None).unwrap(),
    );
}

#[test]
fn vae_encoder_and_generator_match_reference() {
    let dir = case("vae_eval");
    let model = SpadeModel::load(&dir, &cpu()).unwrap();

    let (mu, logvar) = model.encode(&npy(&dir, "image.npy")).unwrap();
    assert_close(&dir, "mu.npy", &mu);
    assert_close(&dir, "logvar.npy", &logvar);
    // 128 x 128 photos go through the encoder's bilinear resize to 256.
    let (mu, logvar) = model.encode(&npy(&dir, "image_small.npy")).unwrap();
    assert_close(&dir, "mu_small.npy", &mu);
    assert_close(&dir, "logvar_small.npy", &logvar);

    let semantics = semantics_from_pngs(&dir, &model, 2);
    let classes = model.config.label_channels();
    let edge = semantics.narrow(1, classes, 1).unwrap();
    assert_eq!(common::max_abs_diff(&edge, &npy(&dir, "edge.npy")), 0.0);
    let sums = channel_sums(&semantics);
    let expected = npy(&dir, "input_semantics_channel_sums.npy");
    assert_eq!(common::max_abs_diff(&sums, &expected), 0.0);

    let z = npy(&dir, "z.npy");
    assert_close(
        &dir,
        "output_z.npy",
        &model.synthesize(&semantics, Some(&z)).unwrap(),
    );
}

#[test]
fn vae_model_without_z_is_a_clear_error() {
    let dir = case("vae_eval");
    let model = SpadeModel::load(&dir, &cpu()).unwrap();
    let semantics = Tensor::zeros(
        (1, model.config.semantic_nc(), 256, 256),
        DType::F32,
        &cpu(),
    )
    .unwrap();
    let err = model.synthesize(&semantics, None).unwrap_err().to_string();
    assert!(err.contains("style vector"), "{err}");
}

#[test]
fn wrong_semantics_channels_are_a_clear_error() {
    let dir = case("gen_coco_eval");
    let model = SpadeModel::load(&dir, &cpu()).unwrap();
    let semantics = Tensor::zeros((1, 5, 64, 64), DType::F32, &cpu()).unwrap();
    let err = model.synthesize(&semantics, None).unwrap_err().to_string();
    assert!(err.contains("expected N x 14 x H x W"), "{err}");
}

#[test]
fn converted_safetensors_gives_identical_output() {
    let dir = case("vae_eval");
    let ckpt = Checkpoint::open(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("vae.safetensors");
    ckpt.save(&file).unwrap();

    let original = SpadeModel::from_checkpoint(&ckpt, &cpu(), DType::F32).unwrap();
    let converted = SpadeModel::load(&file, &cpu()).unwrap();
    assert_eq!(converted.config, original.config);
    let z = npy(&dir, "z.npy");
    let semantics = semantics_from_pngs(&dir, &original, 2);
    let a = original.synthesize(&semantics, Some(&z)).unwrap();
    let b = converted.synthesize(&semantics, Some(&z)).unwrap();
    assert_eq!(common::max_abs_diff(&a, &b), 0.0);
    let image = npy(&dir, "image.npy");
    let (mu_a, _) = original.encode(&image).unwrap();
    let (mu_b, _) = converted.encode(&image).unwrap();
    assert_eq!(common::max_abs_diff(&mu_a, &mu_b), 0.0);
}

#[test]
fn batch_composition_does_not_change_any_image_bitwise() {
    // The server batches unrelated requests together and promises identical bytes.
    for case_name in ["gen_coco_eval", "vae_eval"] {
        let dir = case(case_name);
        let model = SpadeModel::load(&dir, &cpu()).unwrap();
        let semantics = semantics_from_pngs(&dir, &model, 2);
        let z = model.config.use_vae.then(|| npy(&dir, "z.npy"));
        let both = model.synthesize(&semantics, z.as_ref()).unwrap();
        for i in 0..2 {
            let one = semantics.narrow(0, i, 1).unwrap();
            let z_one = z.as_ref().map(|z| z.narrow(0, i, 1).unwrap());
            let alone = model.synthesize(&one, z_one.as_ref()).unwrap();
            let in_batch = both.narrow(0, i, 1).unwrap();
            assert_eq!(
                common::max_abs_diff(&alone, &in_batch),
                0.0,
                "{case_name} image {i}"
            );
        }
    }
    let dir = case("vae_eval");
    let model = SpadeModel::load(&dir, &cpu()).unwrap();
    let images = npy(&dir, "image.npy");
    let (mu_both, logvar_both) = model.encode(&images).unwrap();
    for i in 0..2 {
        let (mu, logvar) = model.encode(&images.narrow(0, i, 1).unwrap()).unwrap();
        assert_eq!(
            common::max_abs_diff(&mu, &mu_both.narrow(0, i, 1).unwrap()),
            0.0
        );
        assert_eq!(
            common::max_abs_diff(&logvar, &logvar_both.narrow(0, i, 1).unwrap()),
            0.0
        );
    }
}

/// Half precision (`--dtype f16`, meant for GPUs; here on the CPU through candle's generic
/// ops): the COCO case within a documented tolerance of the float32 reference. float16 keeps
/// 11 significant bits; through the 7 residual blocks the [-1, 1] outputs move by 2.9e-3
/// (measured); the tolerance, 1e-2, is far below what a wrong layer would do (the output's
/// range is 2).
#[test]
fn half_precision_stays_within_its_tolerance() {
    let dir = case("gen_coco_eval");
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let semantics = npy(&dir, "input_semantics.npy");
    let expected = npy(&dir, "output.npy");
    let model = SpadeModel::from_checkpoint(&checkpoint, &cpu(), DType::F16).unwrap();
    let out = model.synthesize(&semantics, None).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    let err = common::max_abs_diff(&out, &expected);
    println!("gen_coco_eval in f16: max abs error {err:.3e} (tolerance {HALF_TOLERANCE:.0e})");
    assert!(
        err <= HALF_TOLERANCE,
        "f16: max abs error {err} > {HALF_TOLERANCE}"
    );
}

/// `--dtype bf16` on the CPU (convolution products in bfloat16 on AMX or AVX512-BF16,
/// float32 accumulation): every generator case, the VAE case's too, within 4e-2 max abs
/// and 5e-3 mean abs of the reference's float32 images (and the encoder's style vector
/// within 3 % of its size), on every bfloat16
/// instruction set this CPU has. A CPU with neither refuses bf16 with a clear error.
#[test]
fn bf16_on_the_cpu_stays_within_its_tolerance() {
    let isas = Bf16Isa::available();
    if isas.is_empty() {
        let checkpoint = Checkpoint::open(&case("gen_coco_eval")).unwrap();
        let err = SpadeModel::from_checkpoint(&checkpoint, &cpu(), DType::BF16).unwrap_err();
        assert!(err.to_string().contains("AMX or AVX512-BF16"), "{err}");
        return;
    }
    for isa in isas {
        for name in ["gen_coco_eval", "gen_cityscapes_eval"] {
            let dir = case(name);
            let checkpoint = Checkpoint::open(&dir).unwrap();
            let generator = bf16_generator(&checkpoint, isa);
            let out = generator
                .forward(&npy(&dir, "input_semantics.npy"), None)
                .unwrap();
            assert_within_bf16_tolerance(
                &format!("{name} ({isa:?})"),
                &out,
                &npy(&dir, "output.npy"),
            );
        }
        let dir = case("vae_eval");
        let checkpoint = Checkpoint::open(&dir).unwrap();
        let reference = SpadeModel::from_checkpoint(&checkpoint, &cpu(), DType::F32).unwrap();
        let semantics = semantics_from_pngs(&dir, &reference, 2);
        let out = bf16_generator(&checkpoint, isa)
            .forward(&semantics, Some(&npy(&dir, "z.npy")))
            .unwrap();
        assert_within_bf16_tolerance(
            &format!("vae_eval ({isa:?})"),
            &out,
            &npy(&dir, "output_z.npy"),
        );
        let encoder = Encoder::with_mode(
            &checkpoint.config,
            &Mode::EvalBf16(isa),
            checkpoint
                .encoder
                .as_ref()
                .unwrap()
                .var_builder(DType::F32, &cpu()),
        )
        .unwrap();
        let (mu, _) = encoder.forward(&npy(&dir, "image.npy")).unwrap();
        let expected = npy(&dir, "mu.npy");
        // The style vector is not bounded like an image: its error is bounded relative to
        // its own size (about 1.5 % of it measured, through six convolutions and a
        // 8192-input linear layer), 3 % of its largest and of its mean magnitude.
        let (max, mean) = abs_errors(&mu, &expected);
        let scale_max = common::max_abs(&expected);
        let scale_mean = mean_abs(&expected);
        println!("vae_eval mu ({isa:?}) in bf16: max abs error {max:.3e} of {scale_max:.3}, mean {mean:.3e} of {scale_mean:.3}");
        assert!(
            max <= 0.03 * scale_max && mean <= 0.03 * scale_mean,
            "vae_eval mu ({isa:?}): bf16 error max {max:.3e}, mean {mean:.3e}"
        );
    }
    // The model's own choice (the best of this CPU) loads and runs the same way.
    let dir = case("gen_coco_eval");
    let model =
        SpadeModel::from_checkpoint(&Checkpoint::open(&dir).unwrap(), &cpu(), DType::BF16).unwrap();
    let out = model
        .synthesize(&npy(&dir, "input_semantics.npy"), None)
        .unwrap();
    assert_eq!(out.dtype(), DType::F32);
    assert_within_bf16_tolerance("gen_coco_eval (detected)", &out, &npy(&dir, "output.npy"));
}

/// The same bound on the full COCO-Stuff architecture (184 input channels, ngf 64,
/// 256 x 256, 97.5 M parameters, without spectral norm) with weights of unit gain
/// (N(0, 1 / fan_in)), so that activations keep their scale through the 7 blocks and the
/// output spans most of [-1, 1], on a label map of rectangles; bf16 against this model's
/// own float32 output, on every instruction set the CPU has.
#[test]
fn bf16_on_the_full_coco_architecture_stays_within_its_tolerance() {
    let isas = Bf16Isa::available();
    if isas.is_empty() {
        return; // refusal tested in `bf16_on_the_cpu_stays_within_its_tolerance`
    }
    let mut config = spade_model::Config::official("coco").unwrap();
    config.norm_g = "spadesyncbatch3x3".parse().unwrap();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
    Generator::new(&config, vb).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let tensors: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let dims = data[name].dims().to_vec();
                let count: usize = dims.iter().product();
                let value = if name.ends_with("running_var") {
                    vec![1f32; count]
                } else if name.ends_with("running_mean") || name.ends_with("bias") {
                    vec![0f32; count]
                } else {
                    let fan_in: usize = dims[1..].iter().product();
                    let std = (1.0 / fan_in.max(1) as f32).sqrt();
                    (0..count)
                        .map(|_| {
                            std * rand_distr::Distribution::<f32>::sample(
                                &rand_distr::StandardNormal,
                                &mut rng,
                            )
                        })
                        .collect()
                };
                (name.clone(), Tensor::from_vec(value, dims, &cpu()).unwrap())
            })
            .collect()
    };
    let checkpoint = Checkpoint {
        config: config.clone(),
        generator: spade_model::io::checkpoint::StateDict::from_tensors("random", tensors),
        encoder: None,
        classes: None,
    };
    // 184 channels: a one-hot map of 6 rectangles of labels 0..182 (no instance edges).
    let (h, w) = config.output_size();
    let mut labels = vec![0usize; h * w];
    for (i, (x0, y0, x1, y1)) in [
        (0, 0, 256, 90),
        (0, 90, 256, 256),
        (30, 120, 140, 230),
        (150, 40, 250, 200),
        (60, 20, 120, 70),
        (170, 210, 240, 250),
    ]
    .into_iter()
    .enumerate()
    {
        for y in y0..y1 {
            labels[y * w + x0..y * w + x1].fill(i * 30 + 7);
        }
    }
    let mut one_hot = vec![0f32; config.semantic_nc() * h * w];
    for (p, &label) in labels.iter().enumerate() {
        one_hot[label * h * w + p] = 1.0;
    }
    let semantics = Tensor::from_vec(one_hot, (1, config.semantic_nc(), h, w), &cpu()).unwrap();
    let reference = SpadeModel::from_checkpoint(&checkpoint, &cpu(), DType::F32)
        .unwrap()
        .synthesize(&semantics, None)
        .unwrap();
    println!(
        "full COCO architecture: float32 output max |x| {:.3}",
        common::max_abs(&reference)
    );
    for isa in isas {
        let out = bf16_generator(&checkpoint, isa)
            .forward(&semantics, None)
            .unwrap();
        assert_within_bf16_tolerance(
            &format!("full COCO architecture ({isa:?})"),
            &out,
            &reference,
        );
    }
}

fn bf16_generator(checkpoint: &Checkpoint, isa: Bf16Isa) -> Generator {
    let vb = checkpoint.generator.var_builder(DType::F32, &cpu());
    Generator::with_mode(&checkpoint.config, &Mode::EvalBf16(isa), vb).unwrap()
}

/// The bf16 bounds of [`bf16_on_the_cpu_stays_within_its_tolerance`].
const BF16_MAX_ABS: f64 = 4e-2;
const BF16_MEAN_ABS: f64 = 5e-3;

fn mean_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

/// Max and mean absolute difference.
fn abs_errors(actual: &Tensor, expected: &Tensor) -> (f64, f64) {
    let max = common::max_abs_diff(actual, expected);
    (max, mean_abs(&(actual - expected).unwrap()))
}

fn assert_within_bf16_tolerance(what: &str, actual: &Tensor, expected: &Tensor) {
    let (max, mean) = abs_errors(actual, expected);
    println!("{what} in bf16: max abs error {max:.3e}, mean {mean:.3e}");
    assert!(
        max <= BF16_MAX_ABS && mean <= BF16_MEAN_ABS,
        "{what}: bf16 error max {max:.3e} (bound {BF16_MAX_ABS:.0e}), mean {mean:.3e} (bound {BF16_MEAN_ABS:.0e})"
    );
}

/// The f16 tolerance of [`half_precision_stays_within_its_tolerance`].
const HALF_TOLERANCE: f64 = 1e-2;
