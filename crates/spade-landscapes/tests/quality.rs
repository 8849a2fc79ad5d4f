//! The bundled model, scored as the paper scores its models: a segmenter run on what it
//! synthesizes for held-out label maps must find nearly what it finds in the real
//! (procedural) photos of those maps, far more than in a random-weight model's output;
//! and different style seeds must give visibly different images of one map.

use candle_core::Device;
use spade_landscapes::quality::{
    fit_segmenter, held_out, random_weights, score, style_difference, synthesize,
};
use spade_landscapes::{bundled, NUM_CLASSES};
use spade_model::SpadeModel;

/// Held-out maps scored; enough that every class is in them.
const MAPS: usize = 16;
/// Photos the segmenter is fitted on.
const SEGMENTER_PHOTOS: usize = 48;

#[test]
fn bundled_model_scores_near_the_ceiling_and_far_above_the_floor() {
    let device = Device::Cpu;
    let checkpoint = bundled::checkpoint().unwrap();
    let model = SpadeModel::from_checkpoint(&checkpoint, &device, candle_core::DType::F32).unwrap();
    let size = model.config.crop_size;
    let segmenter = fit_segmenter(SEGMENTER_PHOTOS, size).unwrap();
    let pairs = held_out(MAPS, size);
    let photos: Vec<Vec<u8>> = pairs.iter().map(|p| p.image.clone()).collect();
    let ceiling = score(&segmenter, &pairs, &photos).unwrap();
    let ours = score(&segmenter, &pairs, &synthesize(&model, &pairs, 0).unwrap()).unwrap();
    let floor_model = random_weights(&checkpoint, 0, &device).unwrap();
    let floor = score(
        &segmenter,
        &pairs,
        &synthesize(&floor_model, &pairs, 0).unwrap(),
    )
    .unwrap();
    println!("ceiling: {ceiling}\nours:    {ours}\nfloor:   {floor}");
    assert!(
        ours.pixel_accuracy >= 0.85 * ceiling.pixel_accuracy,
        "ours {ours} vs ceiling {ceiling}"
    );
    assert!(
        ours.mean_iou >= 0.7 * ceiling.mean_iou,
        "ours {ours} vs ceiling {ceiling}"
    );
    assert!(
        floor.pixel_accuracy < 0.5 * ceiling.pixel_accuracy,
        "floor {floor} vs ceiling {ceiling}"
    );
    assert!(
        floor.mean_iou < 0.5 * ceiling.mean_iou,
        "floor {floor} vs ceiling {ceiling}"
    );
}

#[test]
fn style_seeds_give_visibly_different_images_of_one_map() {
    let checkpoint = bundled::checkpoint().unwrap();
    assert!(checkpoint.config.use_vae && checkpoint.encoder.is_some());
    let model =
        SpadeModel::from_checkpoint(&checkpoint, &Device::Cpu, candle_core::DType::F32).unwrap();
    let pairs = held_out(4, model.config.crop_size);
    let mean_abs = style_difference(
        &synthesize(&model, &pairs, 10).unwrap(),
        &synthesize(&model, &pairs, 11).unwrap(),
    );
    println!("mean absolute difference between two styles: {mean_abs:.1} levels");
    assert!(
        mean_abs > 8.0,
        "two style seeds differ by only {mean_abs:.1} levels on average"
    );
}

#[test]
fn bundled_model_carries_the_landscape_classes() {
    let checkpoint = bundled::checkpoint().unwrap();
    assert_eq!(checkpoint.config.label_nc, NUM_CLASSES);
    assert!(checkpoint.config.no_instance);
    let classes = checkpoint
        .classes
        .expect("a class list in the bundled model");
    let names: Vec<&str> = classes.0.iter().map(|c| c.name.as_str()).collect();
    let expected: Vec<&str> = spade_landscapes::CLASSES.iter().map(|c| c.name).collect();
    assert_eq!(names, expected);
    // Stored in half precision: the file stays small.
    let size = std::fs::metadata(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/model/landscapes.safetensors"
    ))
    .unwrap()
    .len();
    assert!(size <= 25 << 20, "bundled model is {size} bytes");
}
