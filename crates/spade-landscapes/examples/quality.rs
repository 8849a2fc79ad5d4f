//! Prints the quality figures of a landscape checkpoint (default: the bundled model):
//! `cargo run --release -p spade-landscapes --example quality -- [CHECKPOINT] [MAPS] [SEED]`.
fn main() -> anyhow::Result<()> {
    use spade_landscapes::quality::*;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = candle_core::Device::Cpu;
    let checkpoint = match args.first() {
        Some(path) => spade_model::Checkpoint::open(std::path::Path::new(path))?,
        None => spade_landscapes::bundled::checkpoint()?,
    };
    let maps: usize = args.get(1).map_or(Ok(16), |a| a.parse())?;
    // Another seed than the test's held-out one: for choosing among checkpoints without
    // tuning on the test maps.
    let seed: u64 = args.get(2).map_or(Ok(HELD_OUT_SEED), |a| a.parse())?;
    let model =
        spade_model::SpadeModel::from_checkpoint(&checkpoint, &device, candle_core::DType::F32)?;
    let size = model.config.crop_size;
    let segmenter = fit_segmenter(48, size)?;
    let pairs: Vec<_> = (0..maps as u64)
        .map(|i| spade_landscapes::generate(seed, i, size))
        .collect();
    let photos: Vec<Vec<u8>> = pairs.iter().map(|p| p.image.clone()).collect();
    let ceiling = score(&segmenter, &pairs, &photos)?;
    let ours = score(&segmenter, &pairs, &synthesize(&model, &pairs, 0)?)?;
    println!("ceiling: {ceiling}");
    println!("ours:    {ours}");
    for (c, (a, b)) in spade_landscapes::CLASSES
        .iter()
        .zip(ceiling.iou.iter().zip(&ours.iou))
    {
        let pct = |v: &Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}", v * 100.0));
        println!(
            "  IoU {:<8} ceiling {:>3}  ours {:>3}",
            c.name,
            pct(a),
            pct(b)
        );
    }
    let floor = random_weights(&checkpoint, 0, &device)?;
    println!(
        "floor:   {}",
        score(&segmenter, &pairs, &synthesize(&floor, &pairs, 0)?)?
    );
    if model.config.use_vae {
        let (a, b) = (
            synthesize(&model, &pairs, 10)?,
            synthesize(&model, &pairs, 11)?,
        );
        println!(
            "styles:  {:.1} levels mean absolute difference between two seeds",
            style_difference(&a, &b)
        );
    }
    Ok(())
}
