//! FID as pytorch-fid 0.3.0 computes it: [`images`] lists and decodes a folder,
//! [`resize`] turns each image into the network's 299 x 299 input, [`inception`] is the FID
//! Inception-v3, [`statistics`] holds mean and covariance (and their `.npz` / `.npy` files),
//! [`frechet`] is the distance.

pub mod frechet;
pub mod images;
pub mod inception;
pub mod npy;
pub mod resize;
pub mod statistics;
pub mod weights;

pub use frechet::frechet_distance;
pub use inception::{Dims, FidInception};
pub use statistics::Statistics;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Tensor;
use rayon::prelude::*;

/// The `N x dims` features of `files` (row-major, in file order), `batch_size` images per
/// forward; `progress` hears how many images are done after each batch. Images of different
/// sizes share a batch: each is resized alone before they are stacked, and the network
/// computes every image of a batch independently.
pub fn activations(
    model: &FidInception,
    files: &[PathBuf],
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<f32>> {
    let side = resize::SIDE;
    let mut out = Vec::with_capacity(files.len() * model.dims().size());
    for (i, chunk) in files.chunks(batch_size.max(1)).enumerate() {
        let inputs: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|path| images::read_input(path))
            .collect::<Result<_>>()?;
        let input = Tensor::from_vec(
            inputs.concat(),
            (chunk.len(), 3, side, side),
            model.device(),
        )?;
        let features = model
            .features(&input)
            .with_context(|| format!("FID Inception on {}", chunk[0].display()))?;
        out.extend(features.flatten_all()?.to_vec1::<f32>()?);
        progress(i * batch_size.max(1) + chunk.len());
    }
    Ok(out)
}

/// The statistics of `path`: a folder of images, or an `.npz` of statistics as pytorch-fid
/// saves them. `progress` hears (images done, images in the folder) after each batch.
pub fn statistics_of(
    model: &FidInception,
    path: &Path,
    batch_size: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Statistics> {
    if path.is_file() && path.extension().is_some_and(|e| e == "npz") {
        let stats = Statistics::read_npz(path)?;
        anyhow::ensure!(
            stats.dims() == model.dims().size(),
            "{}: statistics of {} dimensions, but --dims is {}",
            path.display(),
            stats.dims(),
            model.dims().size()
        );
        return Ok(stats);
    }
    anyhow::ensure!(
        path.is_dir(),
        "{}: neither a folder of images nor an .npz of statistics",
        path.display()
    );
    let files = images::list(path)?;
    let features = activations(model, &files, batch_size, |done| {
        progress(done, files.len())
    })?;
    Statistics::from_activations(&features, files.len(), model.dims().size())
}
