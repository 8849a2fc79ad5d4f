//! `spade test`: the official `test.py`. Synthesizes the validation split of a dataset with a
//! trained checkpoint and writes the official results folder: colour-coded input labels,
//! synthesized images and real photos, and an `index.html` that lists them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::DType;
use spade_model::io::config::parse_option_lines;
use spade_model::io::palette::voc_colour;
use spade_model::io::preprocess::{to_rgb8, IdMap};
use spade_model::train::dataset::{DataSource, Dataset, Phase};
use spade_model::{Checkpoint, SpadeModel};

#[derive(clap::Args)]
#[command(rename_all = "verbatim")]
#[command(after_help = "\
The architecture and the dataset options come from <checkpoints_dir>/<name>/opt.txt, as the \
official --load_from_opt_file; the dataset flags given here override it. Writes \
<results_dir>/<name>/test_<which_epoch>/images/{input_label,synthesized_image,real_image}/\
<stem>.png and index.html. Models with a style encoder take the style of each real photo, \
as the official inference does.")]
pub struct Args {
    /// Experiment name: the checkpoint is <checkpoints_dir>/<name>.
    #[arg(long, default_value = "label2coco")]
    name: String,
    #[arg(long, default_value = "./checkpoints")]
    checkpoints_dir: PathBuf,
    /// Which saved networks: `latest` or an epoch number ({which_epoch}_net_G.pth).
    #[arg(long, default_value = "latest")]
    which_epoch: String,
    /// Dataset root (coco, ade20k, cityscapes); default: the one in opt.txt.
    #[arg(long)]
    dataroot: Option<PathBuf>,
    /// coco, ade20k, cityscapes or custom; default: the one in opt.txt.
    #[arg(long)]
    dataset_mode: Option<String>,
    /// custom: folder of label maps.
    #[arg(long)]
    label_dir: Option<PathBuf>,
    /// custom: folder of photos.
    #[arg(long)]
    image_dir: Option<PathBuf>,
    /// custom: folder of instance maps.
    #[arg(long)]
    instance_dir: Option<PathBuf>,
    #[arg(long, default_value = "./results/")]
    results_dir: PathBuf,
    /// At most this many images.
    #[arg(long, default_value_t = usize::MAX, hide_default_value = true)]
    how_many: usize,
    #[arg(long = "batchSize", default_value_t = 1)]
    batch_size: usize,
    /// -1 for the CPU, N for GPU N.
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    gpu_ids: String,
}

impl Args {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The dataset options of the run: flags first, then the experiment's `opt.txt`.
fn data_source(args: &Args, opt: &HashMap<String, String>, config_mode: &str) -> DataSource {
    let from_opt = |key: &str| {
        opt.get(key)
            .filter(|v| !v.is_empty() && v.as_str() != "None")
            .map(PathBuf::from)
    };
    DataSource {
        dataroot: args
            .dataroot
            .clone()
            .or_else(|| from_opt("dataroot"))
            .unwrap_or_else(|| PathBuf::from("./datasets/cityscapes/")),
        dataset_mode: args
            .dataset_mode
            .clone()
            .unwrap_or_else(|| config_mode.to_string()),
        label_dir: args.label_dir.clone().or_else(|| from_opt("label_dir")),
        image_dir: args.image_dir.clone().or_else(|| from_opt("image_dir")),
        instance_dir: args
            .instance_dir
            .clone()
            .or_else(|| from_opt("instance_dir")),
        phase: Phase::Val,
        flip: false,
        max_dataset_size: usize::MAX,
    }
}

/// The official `tensor2label`: each id in the colour of the reference's colour map for
/// `label_nc + 2` classes; ids beyond it stay black.
fn colour_label(label: &IdMap, classes: usize) -> image::RgbImage {
    let mut out = image::RgbImage::new(label.width as u32, label.height as u32);
    for (pixel, &id) in out.pixels_mut().zip(&label.data) {
        if usize::from(id) < classes {
            *pixel = image::Rgb(voc_colour(usize::from(id)));
        }
    }
    out
}

fn save(image: &image::RgbImage, path: &Path) -> Result<()> {
    image
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// 8-bit ids; the dontcare id (`label_nc`) goes back to 255, the id the metrics ignore.
fn save_ids(ids: &IdMap, label_nc: usize, path: &Path) -> Result<()> {
    let grey = ids
        .data
        .iter()
        .map(|&id| {
            u8::try_from(id)
                .ok()
                .filter(|&v| usize::from(v) < label_nc)
                .unwrap_or(255)
        })
        .collect();
    image::GrayImage::from_raw(ids.width as u32, ids.height as u32, grey)
        .expect("raster size matches")
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn rgb_image(raster: spade_model::io::resample::Raster<u8>) -> image::RgbImage {
    image::RgbImage::from_raw(raster.width as u32, raster.height as u32, raster.data)
        .expect("raster size matches")
}

pub fn run(args: Args) -> Result<()> {
    let run = synthesize_split(&args, false)?;
    println!("wrote {} images to {}", run.stems.len(), run.web.display());
    Ok(())
}

/// What a test run wrote.
pub struct TestRun {
    /// `<results_dir>/<name>/test_<which_epoch>`.
    pub web: PathBuf,
    pub stems: Vec<String>,
    pub label_nc: usize,
}

/// The image folders of a test run.
pub const SYNTHESIZED: &str = "synthesized_image";
pub const REAL: &str = "real_image";
/// The input label ids (255 where unlabelled), written for `spade evaluate`.
pub const LABEL_IDS: &str = "label_ids";

/// Synthesizes the validation split into the results folder; with `label_ids`, also writes
/// each input label map as 8-bit ids (the ground truth of the segmentation scores).
pub fn synthesize_split(args: &Args, label_ids: bool) -> Result<TestRun> {
    if args.batch_size == 0 {
        bail!("--batchSize must be at least 1");
    }
    let experiment = args.checkpoints_dir.join(&args.name);
    let opt_path = experiment.join("opt.txt");
    let opt_text = std::fs::read_to_string(&opt_path)
        .with_context(|| format!("cannot read {} (is --name right?)", opt_path.display()))?;
    let opt = parse_option_lines(&opt_text).with_context(|| opt_path.display().to_string())?;
    let device = spade_model::model::gpu_device(&args.gpu_ids)?;
    let checkpoint = Checkpoint::open_epoch(&experiment, &args.which_epoch)?;
    let model = SpadeModel::from_checkpoint(&checkpoint, &device, DType::F32)?;
    let source = data_source(args, &opt, &model.config.dataset_mode);
    let dataset = Dataset::open(&source, &model.config)?;
    let count = dataset.len().min(args.how_many);

    let web = args
        .results_dir
        .join(&args.name)
        .join(format!("test_{}", args.which_epoch));
    let kinds = ["input_label", SYNTHESIZED, REAL];
    let label_nc = model.config.label_nc;
    if label_ids && label_nc > 255 {
        bail!("label_nc {label_nc}: the segmentation scores take 8-bit ids (at most 255 classes)");
    }
    for kind in kinds.iter().chain(label_ids.then_some(&LABEL_IDS)) {
        let dir = web.join("images").join(kind);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let classes = label_nc + 2;
    let bar = crate::image_progress(count, "test");
    let mut stems = Vec::with_capacity(count);
    let indices: Vec<usize> = (0..count).collect();
    for chunk in indices.chunks(args.batch_size) {
        let with_seeds: Vec<(usize, u64)> = chunk.iter().map(|&i| (i, 0)).collect();
        let loaded = dataset.load(&with_seeds, &device)?;
        let z = match &model.encoder {
            Some(_) => Some(model.style_from_image(&loaded.batch.image, chunk[0] as u64)?),
            None => None,
        };
        let mut fakes =
            to_rgb8(&model.synthesize(&loaded.batch.semantics, z.as_ref())?)?.into_iter();
        let mut reals = to_rgb8(&loaded.batch.image)?.into_iter();
        for (k, &i) in chunk.iter().enumerate() {
            let sample = &dataset.samples()[i];
            let stem = sample
                .label
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let file = format!("{stem}.png");
            let dir = web.join("images");
            save(
                &colour_label(&loaded.labels[k], classes),
                &dir.join(kinds[0]).join(&file),
            )?;
            save(
                &rgb_image(fakes.next().expect("one image per sample")),
                &dir.join(kinds[1]).join(&file),
            )?;
            save(
                &rgb_image(reals.next().expect("one image per sample")),
                &dir.join(kinds[2]).join(&file),
            )?;
            if label_ids {
                save_ids(
                    &loaded.labels[k],
                    label_nc,
                    &dir.join(LABEL_IDS).join(&file),
                )?;
            }
            stems.push(stem);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    write_index(&web, args, &stems, &kinds)?;
    Ok(TestRun {
        web,
        stems,
        label_nc,
    })
}

/// `index.html`, as the official `html.HTML` page: one row per image with its three files.
fn write_index(web: &Path, args: &Args, stems: &[String], kinds: &[&str]) -> Result<()> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let title = format!(
        "Experiment = {}, Phase = test, Epoch = {}",
        escape(&args.name),
        escape(&args.which_epoch)
    );
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body>\n<h1>{title}</h1>\n"
    );
    for stem in stems {
        let stem = escape(stem);
        writeln!(
            html,
            "<h3>{stem}</h3>\n<table border=\"1\" style=\"table-layout: fixed;\"><tr>"
        )?;
        for kind in kinds {
            let src = format!("images/{kind}/{stem}.png");
            writeln!(
                html,
                "<td halign=\"center\" style=\"word-wrap: break-word;\" valign=\"top\">\
                 <a href=\"{src}\"><img style=\"width:256px\" src=\"{src}\"></a><br>\
                 <p>{kind}</p></td>"
            )?;
        }
        html.push_str("</tr></table>\n");
    }
    html.push_str("</body>\n</html>\n");
    let path = web.join("index.html");
    std::fs::write(&path, html).with_context(|| format!("cannot write {}", path.display()))
}
