//! Data-loader parity on real COCO-Stuff samples (`preprocess_coco`).

mod common;

use candle_core::{DType, Device, Tensor};
use common::{case, max_abs_diff, npy, read};
use spade_model::io::preprocess::{decode_id_png, decode_photo, IdMap, Preprocessor};
use spade_model::Config;

fn id_tensor(map: &IdMap) -> Tensor {
    Tensor::from_vec(
        map.data.iter().map(|&v| i64::from(v)).collect(),
        (1, 1, map.height, map.width),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn coco_loader_matches_reference_on_real_samples() {
    let dir = case("preprocess_coco");
    let config = Config::from_opt_txt(&dir.join("opt.txt")).unwrap();
    assert_eq!(config.semantic_nc(), 184);
    let pre = Preprocessor::new(&config);
    let ids = common::case_json(&dir)["sample_ids"].clone();
    let ids: Vec<String> = serde_json::from_value(ids).unwrap();
    assert_eq!(ids.len(), 3);

    for id in &ids {
        let raw_label = decode_id_png(
            &read(&dir, &format!("raw/val_label/{id}.png")),
            "label",
            &Default::default(),
        );
        let label = pre.label(&raw_label.unwrap());
        let expected = npy(&dir, &format!("{id}_label.npy"));
        assert_eq!(
            max_abs_diff(&id_tensor(&label), &expected),
            0.0,
            "{id} label"
        );

        let raw_inst = decode_id_png(
            &read(&dir, &format!("raw/val_inst/{id}.png")),
            "inst",
            &Default::default(),
        );
        let instance = pre.instance(&raw_inst.unwrap());
        let expected = npy(&dir, &format!("{id}_instance.npy"));
        assert_eq!(
            max_abs_diff(&id_tensor(&instance), &expected),
            0.0,
            "{id} instance"
        );

        let semantics = pre
            .semantics(&[label], Some(&[instance]), &Device::Cpu)
            .unwrap();
        let edge = semantics.narrow(1, 183, 1).unwrap();
        let expected = npy(&dir, &format!("{id}_edge.npy"));
        assert_eq!(max_abs_diff(&edge, &expected), 0.0, "{id} edge");
        let sums = semantics.sum((2, 3)).unwrap();
        let expected = npy(&dir, &format!("{id}_input_semantics_channel_sums.npy"));
        assert_eq!(max_abs_diff(&sums, &expected), 0.0, "{id} channel sums");

        // JPEG decoders may differ by a few 1/255 steps (libjpeg-turbo vs ours); the
        // bicubic resize itself is PIL's, so the error stays at that level.
        let photo = decode_photo(
            &read(&dir, &format!("raw/val_img/{id}.jpg")),
            "photo",
            &Default::default(),
        );
        let image = pre.photo(&photo.unwrap(), &Device::Cpu).unwrap();
        let expected = npy(&dir, &format!("{id}_image.npy"));
        let step = 2.0 / 255.0;
        let max = max_abs_diff(&image, &expected) / step;
        let mean = (image - &expected)
            .unwrap()
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            / step;
        println!("{id} image: max {max:.2} steps, mean {mean:.4} steps of 1/255");
        assert!(max <= 2.01, "{id}: image differs by {max} steps");
        assert!(mean <= 0.05, "{id}: mean image difference {mean} steps");
    }
}

#[test]
fn label_ids_outside_the_model_are_rejected_with_the_id() {
    let config = Config {
        label_nc: 5,
        no_instance: true,
        contain_dontcare_label: false,
        ..Config::default()
    };
    let pre = Preprocessor::new(&config);
    let label = IdMap::new(2, 1, 1, vec![1, 7]);
    let err = pre.semantics(&[label], None, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("label id 7"), "{err}");
}

#[test]
fn non_png_and_colour_labels_are_rejected() {
    let err = decode_id_png(b"GIF89a....", "label", &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a readable PNG"), "{err}");
    let dir = case("preprocess_coco");
    let jpeg_as_png = decode_id_png(
        &read(&dir, "raw/val_img/000000000139.jpg"),
        "label",
        &Default::default(),
    );
    assert!(jpeg_as_png.is_err());
}

#[test]
fn decode_limits_are_checked_from_the_header() {
    use spade_model::io::preprocess::DecodeLimits;
    let dir = case("gen_coco_eval");
    let small = DecodeLimits {
        max_side: 32,
        max_pixels: 1024,
    };
    let err = decode_id_png(&read(&dir, "label_0.png"), "label", &small).unwrap_err();
    assert!(err.to_string().contains("64x64 exceeds"), "{err}");
    let jpg = read(&case("preprocess_coco"), "raw/val_img/000000000139.jpg");
    let err = decode_photo(&jpg, "photo", &small).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
}

/// A PNG of `ids` (one row) at `bits` per pixel, packed as the format stores them.
fn packed_png(ids: &[u8], bits: u8, color: png::ColorType) -> Vec<u8> {
    let mut row = vec![0u8; (ids.len() * bits as usize).div_ceil(8)];
    for (x, &v) in ids.iter().enumerate() {
        let bit = x * bits as usize;
        row[bit / 8] |= v << (8 - bits as usize - bit % 8);
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, ids.len() as u32, 1);
    encoder.set_color(color);
    encoder.set_depth(match bits {
        1 => png::BitDepth::One,
        2 => png::BitDepth::Two,
        _ => png::BitDepth::Four,
    });
    if color == png::ColorType::Indexed {
        encoder.set_palette(vec![0u8; 3 << bits]);
    }
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&row)
        .unwrap();
    out
}

#[test]
fn low_bit_depth_palette_and_grey_pngs_decode_like_pillow() {
    // Pillow writes label maps with at most 16 palette entries as 4-bit palette PNGs.
    let ids = [0u8, 3, 15, 7, 1, 9, 12];
    let map = decode_id_png(
        &packed_png(&ids, 4, png::ColorType::Indexed),
        "label",
        &Default::default(),
    )
    .unwrap();
    assert_eq!(map.data, ids.map(u16::from));
    let two = [0u8, 1, 2, 3, 3];
    let map = decode_id_png(
        &packed_png(&two, 2, png::ColorType::Indexed),
        "label",
        &Default::default(),
    )
    .unwrap();
    assert_eq!(map.data, two.map(u16::from));
    // Greyscale below 8 bits is scaled to 0-255, as Pillow reads it.
    let map = decode_id_png(
        &packed_png(&two, 2, png::ColorType::Grayscale),
        "label",
        &Default::default(),
    )
    .unwrap();
    assert_eq!(map.data, vec![0, 85, 170, 255, 255]);
    let map = decode_id_png(
        &packed_png(&[1, 0, 1], 1, png::ColorType::Grayscale),
        "label",
        &Default::default(),
    )
    .unwrap();
    assert_eq!(map.data, vec![255, 0, 255]);
}
