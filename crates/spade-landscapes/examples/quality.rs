//! Prints the quality figures of a landscape checkpoint (default: the bundled model):
//! `cargo run --release -p spade-landscapes --example quality -- [CHECKPOINT] [MAPS]`.
fn main() -> anyhow::Result<()> {
    use spade_landscapes::quality::*;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = candle_core::Device::Cpu;
    let checkpoint = match args.first() {
        Some(path) => spade_model::Checkpoint::open(std::path::Path::new(path))?,
        None => spade_landscapes::bundled::checkpoint()?,
    };
    let maps: usize = args.get(1).map_or(Ok(16), |a| a.parse())?;
    let model =
        spade_model::SpadeModel::from_checkpoint(&checkpoint, &device, candle_core::DType::F32)?;
    let size = model.config.crop_size;
    let segmenter = fit_segmenter(48, size)?;
    let pairs = held_out(maps, size);
    let photos: Vec<Vec<u8>> = pairs.iter().map(|p| p.image.clone()).collect();
    println!("ceiling: {}", score(&segmenter, &pairs, &photos)?);
    println!(
        "ours:    {}",
        score(&segmenter, &pairs, &synthesize(&model, &pairs, 0)?)?
    );
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
