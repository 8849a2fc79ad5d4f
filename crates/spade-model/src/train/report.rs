//! What a user watches during training: a progress bar with the latest losses and the ETA
//! (plain log lines when stderr is not a terminal), `loss_log.jsonl`, sample grids
//! (label colours | synthesized | real) and `web/index.html` with the grids and loss plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::checkpoint::{bytes, write_atomically};
use crate::io::palette::voc_colour;
use crate::io::preprocess::{to_rgb8, IdMap};
use crate::io::resample::Raster;

/// Grids show at most this many samples of a batch.
const GRID_ROWS: usize = 4;

/// One line of `loss_log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LossRecord {
    pub epoch: usize,
    /// Samples seen in this epoch.
    pub epoch_iter: usize,
    /// Samples seen since the start of training.
    pub total_steps: usize,
    /// Seconds per sample over the last print interval.
    pub seconds_per_sample: f64,
    pub lr: f64,
    pub losses: BTreeMap<String, f32>,
}

pub struct Reporter {
    /// Off on every data-parallel rank but the first: they train, rank 0 reports.
    enabled: bool,
    web: PathBuf,
    log_path: PathBuf,
    history: Vec<LossRecord>,
    grids: Vec<String>,
    progress: ProgressBar,
}

impl Reporter {
    /// Continues an existing log up to `total_steps` (records of iterations after the
    /// checkpoint being resumed are dropped: they will be run again).
    pub fn new(
        enabled: bool,
        experiment: &Path,
        total_iterations: u64,
        done: u64,
        total_steps: usize,
    ) -> Result<Self> {
        if !enabled {
            return Ok(Self {
                enabled,
                web: PathBuf::new(),
                log_path: PathBuf::new(),
                history: Vec::new(),
                grids: Vec::new(),
                progress: ProgressBar::hidden(),
            });
        }
        let web = experiment.join("web");
        let images = web.join("images");
        std::fs::create_dir_all(&images).map_err(|e| Error::io(&images, e))?;
        let log_path = experiment.join("loss_log.jsonl");
        let history: Vec<LossRecord> = match std::fs::read_to_string(&log_path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| serde_json::from_str::<LossRecord>(l).ok())
                .filter(|r| r.total_steps <= total_steps)
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut grids: Vec<String> = std::fs::read_dir(&images)
            .map_err(|e| Error::io(&images, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".png"))
            .collect();
        grids.sort();
        let progress = ProgressBar::new(total_iterations);
        progress.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} it ({per_sec}, ETA {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        progress.set_position(done);
        let reporter = Self {
            enabled,
            web,
            log_path,
            history,
            grids,
            progress,
        };
        reporter.rewrite_log()?;
        Ok(reporter)
    }

    fn rewrite_log(&self) -> Result<()> {
        let mut text = String::new();
        for record in &self.history {
            text.push_str(&serde_json::to_string(record).expect("record serialises"));
            text.push('\n');
        }
        write_atomically(&self.log_path, bytes(text.as_bytes()))
    }

    /// One iteration done.
    pub fn tick(&self) {
        self.progress.inc(1);
    }

    /// A line for the user: above the bar on a terminal, on stderr otherwise.
    pub fn say(&self, line: &str) {
        if !self.enabled {
            return;
        }
        if self.progress.is_hidden() {
            eprintln!("{line}");
        } else {
            self.progress.println(line);
        }
    }

    /// Appends to `loss_log.jsonl`, shows the losses, and refreshes the plots.
    pub fn log(&mut self, record: LossRecord) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut line = serde_json::to_string(&record).expect("record serialises");
        line.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| Error::io(&self.log_path, e))?;
        let losses: Vec<String> = record
            .losses
            .iter()
            .map(|(k, v)| format!("{k}: {v:.3}"))
            .collect();
        let summary = losses.join(" ");
        self.progress.set_message(summary.clone());
        self.say(&format!(
            "(epoch: {}, iters: {}, time: {:.3}) {summary}",
            record.epoch, record.epoch_iter, record.seconds_per_sample
        ));
        self.history.push(record);
        self.write_page()
    }

    /// Saves a grid of `label colours | synthesized | real` rows and refreshes the page.
    pub fn display(
        &mut self,
        epoch: usize,
        total_steps: usize,
        labels: &[IdMap],
        fake: &Tensor,
        real: &Tensor,
    ) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let fakes = to_rgb8(fake)?;
        let reals = to_rgb8(real)?;
        let rows: Vec<[Raster<u8>; 3]> = labels
            .iter()
            .zip(fakes)
            .zip(reals)
            .take(GRID_ROWS)
            .map(|((label, fake), real)| [colourize(label), fake, real])
            .collect();
        let grid = tile(&rows);
        let name = format!("epoch{epoch:03}_iter{total_steps:08}.png");
        let path = self.web.join("images").join(&name);
        write_atomically(&path, |tmp| {
            image::RgbImage::from_raw(grid.width as u32, grid.height as u32, grid.data.clone())
                .expect("grid size")
                .save_with_format(tmp, image::ImageFormat::Png)
                .map_err(|e| Error::checkpoint(tmp, e.to_string()))
        })?;
        self.grids.retain(|g| g != &name);
        self.grids.push(name);
        self.write_page()
    }

    pub fn finish(&self) {
        self.progress.finish();
    }

    fn write_page(&self) -> Result<()> {
        let mut html = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>SPADE training</title>\
             <style>body{font-family:sans-serif;margin:2em}svg{background:#fafafa;margin:4px}\
             img{max-width:100%;image-rendering:pixelated}</style></head><body>\
             <h1>SPADE training</h1><h2>Losses</h2>",
        );
        let names: Vec<&String> = self
            .history
            .last()
            .map(|r| r.losses.keys().collect())
            .unwrap_or_default();
        for name in names {
            let points: Vec<(f64, f64)> = self
                .history
                .iter()
                .filter_map(|r| {
                    r.losses
                        .get(name)
                        .map(|v| (r.total_steps as f64, f64::from(*v)))
                })
                .collect();
            html.push_str(&plot(name, &points));
        }
        html.push_str("<h2>Samples (label | synthesized | real), newest first</h2>");
        for grid in self.grids.iter().rev() {
            let _ = write!(
                html,
                "<h3>{}</h3><img src=\"images/{grid}\" alt=\"{grid}\">",
                grid.trim_end_matches(".png")
            );
        }
        html.push_str("</body></html>\n");
        let path = self.web.join("index.html");
        write_atomically(&path, bytes(html.as_bytes()))
    }
}

/// An inline SVG line plot of one loss over training steps.
fn plot(name: &str, points: &[(f64, f64)]) -> String {
    const W: f64 = 480.0;
    const H: f64 = 140.0;
    const PAD: f64 = 24.0;
    let (x0, x1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let sx = |x: f64| PAD + (x - x0) / (x1 - x0).max(1e-12) * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD - (y - y0) / (y1 - y0).max(1e-12) * (H - 2.0 * PAD);
    let line: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    format!(
        "<svg width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{name}\">\
         <text x=\"{PAD}\" y=\"14\" font-size=\"12\">{name}: {:.4} .. {:.4}</text>\
         <polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        y0,
        y1,
        line.join(" ")
    )
}

/// Label ids in the reference's display colours.
fn colourize(label: &IdMap) -> Raster<u8> {
    let data = label
        .data
        .iter()
        .flat_map(|&id| voc_colour(usize::from(id)))
        .collect();
    Raster::new(label.width, label.height, 3, data)
}

/// Rows of equally sized tiles into one image.
fn tile(rows: &[[Raster<u8>; 3]]) -> Raster<u8> {
    let (w, h) = (rows[0][0].width, rows[0][0].height);
    let width = 3 * w;
    let mut data = vec![0u8; width * h * rows.len() * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, tile) in row.iter().enumerate() {
            for y in 0..h.min(tile.height) {
                let src = &tile.data[y * tile.width * 3..(y * tile.width + w.min(tile.width)) * 3];
                let dst = ((r * h + y) * width + c * w) * 3;
                data[dst..dst + src.len()].copy_from_slice(src);
            }
        }
    }
    Raster::new(width, h * rows.len(), 3, data)
}
