//! Checkpoint reading: broken and hostile files give clear errors, never panics.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{case, read};
use spade_model::io::checkpoint::{pth, pth_write, Checkpoint};
use spade_model::SpadeModel;

/// A checkpoint folder in a temp dir with the coco case's opt.txt and the given G file.
fn folder_with(generator: &[u8], opt: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("opt.txt"), opt).unwrap();
    std::fs::write(dir.join("latest_net_G.pth"), generator).unwrap();
    (tmp, dir)
}

fn coco_opt() -> String {
    String::from_utf8(read(&case("gen_coco_eval"), "opt.txt")).unwrap()
}

fn open_error(dir: &Path) -> String {
    let err = Checkpoint::open(dir)
        .and_then(|c| SpadeModel::from_checkpoint(&c, &Device::Cpu, candle_core::DType::F32))
        .expect_err("must fail");
    err.to_string()
}

#[test]
fn truncated_legacy_pth_is_an_error_naming_the_file() {
    let bytes = read(&case("gen_coco_eval"), "latest_net_G.pth");
    for keep in [bytes.len() * 3 / 5, bytes.len() - 1, 100, 0] {
        let (_tmp, dir) = folder_with(&bytes[..keep], &coco_opt());
        let err = open_error(&dir);
        assert!(err.contains("latest_net_G.pth"), "{keep} bytes: {err}");
    }
}

#[test]
fn truncated_zip_pth_is_an_error() {
    let bytes = read(&case("gen_cityscapes_eval"), "zip_net_G.pth");
    let tmp = tempfile::tempdir().unwrap();
    for keep in [bytes.len() / 2, bytes.len() - 30] {
        let path = tmp.path().join(format!("cut{keep}.pth"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = pth::read(&path).expect_err("must fail").to_string();
        assert!(err.contains(&format!("cut{keep}.pth")), "{err}");
    }
}

#[test]
fn corrupt_pickle_is_an_error() {
    let mut bytes = read(&case("gen_coco_eval"), "latest_net_G.pth");
    // Past the magic number and protocol header: garble the state-dict pickle.
    for b in &mut bytes[200..400] {
        *b = 0xff;
    }
    let (_tmp, dir) = folder_with(&bytes, &coco_opt());
    let err = open_error(&dir);
    assert!(err.contains("latest_net_G.pth"), "{err}");
}

#[test]
fn pickle_naming_an_unexpected_global_is_refused() {
    // {'fc.weight': posix.system('ls')} as a protocol-2 pickle.
    let mut pickle = b"\x80\x02}q\x00X\x09\x00\x00\x00fc.weightq\x01".to_vec();
    pickle.extend_from_slice(b"cposix\nsystem\nq\x02X\x02\x00\x00\x00lsq\x03\x85q\x04Rq\x05s.");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("evil.pth");
    std::fs::write(&path, pickle).unwrap();
    let err = pth::read(&path).expect_err("must refuse").to_string();
    assert!(
        err.contains("posix.system") && err.contains("fc.weight"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let mut ckpt = Checkpoint::open(&case("gen_coco_eval")).unwrap();
    assert!(ckpt.generator.remove("up_1.norm_0.mlp_gamma.weight"));
    let err = SpadeModel::from_checkpoint(&ckpt, &Device::Cpu, candle_core::DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("up_1.norm_0.mlp_gamma.weight") && err.contains("latest_net_G.pth"),
        "{err}"
    );
}

#[test]
fn wrong_shape_names_expected_and_actual() {
    let mut ckpt = Checkpoint::open(&case("gen_coco_eval")).unwrap();
    let bad = Tensor::zeros((64, 13, 3, 3), DType::F32, &Device::Cpu).unwrap();
    ckpt.generator.insert("fc.weight", bad);
    let err = SpadeModel::from_checkpoint(&ckpt, &Device::Cpu, candle_core::DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fc.weight")
            && err.contains("[64, 14, 3, 3]")
            && err.contains("[64, 13, 3, 3]"),
        "{err}"
    );
}

#[test]
fn unknown_norm_in_opt_txt_names_file_and_field() {
    let bytes = read(&case("gen_coco_eval"), "latest_net_G.pth");
    let opt = coco_opt().replace("spectralspadesyncbatch3x3", "spectralspadegroup3x3");
    let (_tmp, dir) = folder_with(&bytes, &opt);
    let err = open_error(&dir);
    assert!(
        err.contains("opt.txt") && err.contains("norm_G") && err.contains("group"),
        "{err}"
    );
}

#[test]
fn folder_without_generator_or_options_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(open_error(tmp.path()).contains("missing opt.txt"));
    std::fs::write(tmp.path().join("opt.txt"), coco_opt()).unwrap();
    assert!(open_error(tmp.path()).contains("missing latest_net_G.pth"));
    assert!(open_error(&tmp.path().join("nope")).contains("no such folder or file"));
}

#[test]
fn safetensors_without_config_or_with_garbage_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.safetensors");
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("netG.x", t)]), &plain)
        .unwrap();
    assert!(open_error(&plain).contains("spade_config"));
    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7f{}").unwrap();
    assert!(open_error(&garbage).contains("not a valid safetensors"));
}

#[test]
fn nan_or_infinite_weights_are_refused_with_the_tensor_name() {
    for bad_value in [f32::NAN, f32::INFINITY] {
        let mut ckpt = Checkpoint::open(&case("gen_coco_eval")).unwrap();
        let name = "head_0.conv_0.bias";
        let shape = ckpt.generator.dims(name).unwrap().to_vec();
        let good = ckpt.generator.tensor(name, &shape).unwrap();
        let mut values = good.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        values[3] = bad_value;
        let bad = Tensor::from_vec(values, good.shape(), &Device::Cpu).unwrap();
        ckpt.generator.insert(name, bad);
        let err = SpadeModel::from_checkpoint(&ckpt, &Device::Cpu, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(name) && err.contains("NaN or infinite"),
            "{err}"
        );
    }
}

#[test]
fn class_lists_must_name_every_label_id() {
    let (_tmp, dir) = folder_with(
        &read(&case("gen_coco_eval"), "latest_net_G.pth"),
        &coco_opt(),
    );
    std::fs::write(dir.join("classes.txt"), "0 sky #5fdbff\n1 sea #363ea7\n").unwrap();
    let err = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("classes.txt") && err.contains("names 2 classes"),
        "{err}"
    );
    std::fs::write(dir.join("classes.txt"), "0 sky 5fdbff\n").unwrap();
    let err = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("classes.txt") && err.contains("#rrggbb"),
        "{err}"
    );
    std::fs::write(dir.join("classes.txt"), "0 sky #5fdbff\n".repeat(100_000)).unwrap();
    let err = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(err.contains("larger than"), "{err}");

    // A converted file carries the list in its header and is checked the same way.
    std::fs::remove_file(dir.join("classes.txt")).unwrap();
    let mut ckpt = Checkpoint::open(&dir).unwrap();
    ckpt.classes = Some(spade_model::io::classes::ClassList::parse("0 sky #5fdbff\n").unwrap());
    let file = dir.join("converted.safetensors");
    ckpt.save(&file).unwrap();
    let err = Checkpoint::open(&file).unwrap_err().to_string();
    assert!(
        err.contains("converted.safetensors") && err.contains("names 1 classes"),
        "{err}"
    );
}

/// Copies the zip `src` to `dst`, every entry compressed with `method` and passed through
/// `edit(name, bytes)`.
fn repack(
    src: &Path,
    dst: &Path,
    method: zip::CompressionMethod,
    edit: impl Fn(&str, Vec<u8>) -> Vec<u8>,
) {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().unwrap().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.start_file(name.as_str(), options).unwrap();
        out.write_all(&edit(&name, bytes)).unwrap();
    }
    out.finish().unwrap();
}

#[test]
fn compressed_zip_entries_are_refused_before_inflating() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("stored.pth");
    std::fs::write(&src, read(&case("gen_cityscapes_eval"), "zip_net_G.pth")).unwrap();
    assert!(pth::read(&src).is_ok(), "the stored original loads");
    let dst = tmp.path().join("deflated.pth");
    repack(&src, &dst, zip::CompressionMethod::Deflated, |_, b| b);
    let err = pth::read(&dst).expect_err("must fail").to_string();
    assert!(err.contains("deflated.pth"), "{err}");
    assert!(err.contains("is compressed (Deflate"), "{err}");
    assert!(err.contains("torch.save never writes"), "{err}");
}

#[test]
fn views_wider_than_the_file_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("plain.pth");
    let seven = Tensor::arange(0f32, 7.0, &Device::Cpu).unwrap();
    pth_write::write_archive(&src, &[("w".to_string(), seven)]).unwrap();
    assert_eq!(pth::read(&src).unwrap()["w"].dims(), [7]);
    // In the pickle, after the persistent id: offset 0, size (7,), stride (1,), each int a
    // BININT. Made size (300,000,000,) and stride (0,): `torch.empty(1).expand(...)`, 1.2 GB
    // out of a file of a few hundred bytes.
    let int = |v: i32| [&[b'J'][..], &v.to_le_bytes()].concat();
    let view = |size: i32, stride: i32| {
        [
            &[b'Q'][..],
            &int(0),
            b"(",
            &int(size),
            b"t(",
            &int(stride),
            b"t",
        ]
        .concat()
    };
    let (from, to) = (view(7, 1), view(300_000_000, 0));
    let dst = tmp.path().join("expanded.pth");
    repack(&src, &dst, zip::CompressionMethod::Stored, |name, bytes| {
        if !name.ends_with("data.pkl") {
            return bytes;
        }
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("the view in the pickle");
        [&bytes[..at], &to, &bytes[at + from.len()..]].concat()
    });
    let err = pth::read(&dst).expect_err("must fail").to_string();
    assert!(err.contains("expanded.pth"), "{err}");
    assert!(
        err.contains("tensor `w` would take 1200000000 bytes once read, more than the whole file"),
        "{err}"
    );
}

#[test]
fn one_storage_viewed_over_and_over_is_refused() {
    // 40 views of one 1 MiB storage, each within it: 40 MiB out of a file of about 1 MiB.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("plain.pth");
    let entries: Vec<(String, Tensor)> = (0..40)
        .map(|i| {
            let values = if i == 0 { 1 << 18 } else { 1 };
            (
                format!("w{i}"),
                Tensor::zeros(values, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    pth_write::write_archive(&src, &entries).unwrap();
    assert!(pth::read(&src).is_ok());
    // Every tensor made a view of all of storage 0: `('storage', cls, '<i>', ...)` -> '0'.
    let key = |k: &str| [&[b'X'][..], &(k.len() as u32).to_le_bytes(), k.as_bytes()].concat();
    let int = |v: i32| [&[b'J'][..], &v.to_le_bytes()].concat();
    let dst = tmp.path().join("shared.pth");
    repack(
        &src,
        &dst,
        zip::CompressionMethod::Stored,
        |name, mut bytes| {
            if !name.ends_with("data.pkl") {
                return bytes;
            }
            for i in 1..40 {
                let (from, to) = (key(&i.to_string()), key("0"));
                let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
                bytes = [&bytes[..at], &to, &bytes[at + from.len()..]].concat();
            }
            // The storage's element count ending the persistent id, then offset 0 and the
            // size tuple (1,) of a small view: both made the big storage's.
            let view = |n: i32| {
                let tail = [
                    &key("cpu")[..],
                    &int(n),
                    b"tQ",
                    &int(0),
                    b"(",
                    &int(n),
                    b"t",
                ];
                tail.concat()
            };
            let (from, to) = (view(1), view(1 << 18));
            let mut out = Vec::new();
            let mut rest = bytes.as_slice();
            while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
                out.extend_from_slice(&rest[..at]);
                out.extend_from_slice(&to);
                rest = &rest[at + from.len()..];
            }
            out.extend_from_slice(rest);
            out
        },
    );
    let err = pth::read(&dst).expect_err("must fail").to_string();
    assert!(err.contains("shared.pth"), "{err}");
    assert!(err.contains("over 16x the file's"), "{err}");
}

#[test]
fn only_the_tensors_the_model_uses_are_read_or_converted() {
    // The coco generator plus a tensor the model never asks for, its storage cut short:
    // reading it fails, so a model that loads has not read it.
    let tmp = tempfile::tempdir().unwrap();
    let official = case("gen_coco_eval").join("latest_net_G.pth");
    let mut entries: Vec<(String, Tensor)> = pth::read(&official).unwrap().into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let official_names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
    entries.push((
        "unused.weight".into(),
        Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap(),
    ));
    let src = tmp.path().join("full.pth");
    pth_write::write_archive(&src, &entries).unwrap();
    let cut = format!("data/{}", entries.len() - 1);
    let (_dir_tmp, dir) = folder_with(b"", &coco_opt());
    repack(
        &src,
        &dir.join("latest_net_G.pth"),
        zip::CompressionMethod::Stored,
        |name, bytes| {
            if name.ends_with(&cut) {
                bytes[..8].to_vec()
            } else {
                bytes
            }
        },
    );
    let err = pth::read(&dir.join("latest_net_G.pth"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unused.weight"), "{err}");

    let ckpt = Checkpoint::open(&dir).unwrap();
    let model = SpadeModel::from_checkpoint(&ckpt, &Device::Cpu, DType::F32).unwrap();
    let reference = SpadeModel::load(&case("gen_coco_eval"), &Device::Cpu).unwrap();

    // What `convert` writes: the tensors read, without the unused one nor the batch-norm
    // counters that inference never reads; the file gives the same images.
    let used = SpadeModel::used_tensors(&ckpt).unwrap();
    let used_names: Vec<&str> = used.generator.names().collect();
    let expected: Vec<&str> = official_names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(used_names, expected);
    let file = tmp.path().join("converted.safetensors");
    used.save(&file).unwrap();
    let converted = SpadeModel::load(&file, &Device::Cpu).unwrap();

    let cfg = &reference.config;
    let (h, w) = cfg.output_size();
    let semantics = Tensor::rand(0f32, 1.0, (1, cfg.semantic_nc(), h, w), &Device::Cpu).unwrap();
    let out = |m: &SpadeModel| {
        m.synthesize(&semantics, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let expected_out = out(&reference);
    assert_eq!(out(&model), expected_out);
    assert_eq!(out(&converted), expected_out);
}
