//! Pairs in the official folder layouts (`coco`, `ade20k`, `cityscapes`, `custom`), paired
//! by file name and decoded as the official `Pix2pixDataset` does: the training split
//! augmented (random crop and flip), the validation split (what `test.py` reads) as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::io::config::Config;
use crate::io::preprocess::{
    decode_id_png, decode_photo, Augmentation, DecodeLimits, IdMap, Preprocessor,
};
use crate::train::step::Batch;

/// Extensions the official `make_dataset` accepts as images.
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "ppm", "bmp", "tif", "tiff", "webp"];

/// Which split of the folders: the official `phase` (`test.py` reads the `val` files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Train,
    Val,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Train => "train",
            Phase::Val => "val",
        }
    }
}

/// Where a dataset is and which part of it to read (the official data options).
#[derive(Debug, Clone)]
pub struct DataSource {
    pub dataroot: PathBuf,
    pub dataset_mode: String,
    pub label_dir: Option<PathBuf>,
    pub image_dir: Option<PathBuf>,
    pub instance_dir: Option<PathBuf>,
    pub phase: Phase,
    /// Mirror half of the training samples (not `--no_flip`); never at validation.
    pub flip: bool,
    pub max_dataset_size: usize,
}

/// One pair (plus its instance map).
#[derive(Debug, Clone)]
pub struct Sample {
    pub label: PathBuf,
    pub image: PathBuf,
    pub instance: Option<PathBuf>,
}

/// A batch with the label maps it was made from (for the sample grids).
pub struct LoadedBatch {
    pub batch: Batch,
    pub labels: Vec<IdMap>,
}

pub struct Dataset {
    samples: Vec<Sample>,
    preprocessor: Preprocessor,
    /// Random crops and flips (training); the validation split is read as it is.
    augment: bool,
    flip: bool,
    limits: DecodeLimits,
}

/// Where the files of each kind are and which belong together.
struct Layout {
    labels: Vec<PathBuf>,
    images: Vec<PathBuf>,
    instances: Option<Vec<PathBuf>>,
    /// The part of a file name that pairs files of the same sample.
    key: fn(&Path) -> String,
}

fn stem_key(path: &Path) -> String {
    path.file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Cityscapes pairs `aachen_000000_000019_leftImg8bit` with `aachen_000000_000019_gtFine_labelIds`.
fn cityscapes_key(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.split('_').take(3).collect::<Vec<_>>().join("_")
}

impl Dataset {
    pub fn open(source: &DataSource, config: &Config) -> Result<Self> {
        let layout = layout(source, config)?;
        let mut images = keyed(&layout.images, layout.key, "photo")?;
        let mut instances = match &layout.instances {
            Some(paths) => Some(keyed(paths, layout.key, "instance map")?),
            None => None,
        };
        if layout.labels.is_empty() {
            return Err(Error::input(
                "dataset",
                format!(
                    "no {} label maps found for dataset_mode `{}` (see the folder layout in the \
                     README)",
                    source.phase.name(),
                    source.dataset_mode
                ),
            ));
        }
        let mut samples = Vec::with_capacity(layout.labels.len());
        for label in &layout.labels {
            let key = (layout.key)(label);
            let image = images.remove(&key).ok_or_else(|| {
                Error::input(
                    "dataset",
                    format!(
                        "label map {} has no photo with the same name",
                        label.display()
                    ),
                )
            })?;
            let instance = match &mut instances {
                Some(map) => Some(map.remove(&key).ok_or_else(|| {
                    Error::input(
                        "dataset",
                        format!(
                            "label map {} has no instance map with the same name (use \
                             --no_instance for a model without instance maps)",
                            label.display()
                        ),
                    )
                })?),
                None => None,
            };
            samples.push(Sample {
                label: label.clone(),
                image,
                instance,
            });
        }
        if let Some(orphan) = images.values().next() {
            return Err(Error::input(
                "dataset",
                format!(
                    "photo {} has no label map with the same name",
                    orphan.display()
                ),
            ));
        }
        samples.truncate(source.max_dataset_size);
        let augment = source.phase == Phase::Train;
        Ok(Self {
            samples,
            preprocessor: Preprocessor::new(config),
            augment,
            flip: augment && source.flip,
            limits: DecodeLimits::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Loads the samples `indices`, each augmented from its own seed.
    pub fn load(&self, indices: &[(usize, u64)], device: &Device) -> Result<LoadedBatch> {
        let mut semantics = Vec::with_capacity(indices.len());
        let mut photos = Vec::with_capacity(indices.len());
        let mut labels = Vec::with_capacity(indices.len());
        for &(index, seed) in indices {
            let (sem, photo, label) = self.load_one(&self.samples[index], seed, device)?;
            semantics.push(sem);
            photos.push(photo);
            labels.push(label);
        }
        Ok(LoadedBatch {
            batch: Batch {
                semantics: Tensor::cat(&semantics, 0)?,
                image: Tensor::cat(&photos, 0)?,
            },
            labels,
        })
    }

    fn load_one(
        &self,
        sample: &Sample,
        seed: u64,
        device: &Device,
    ) -> Result<(Tensor, Tensor, IdMap)> {
        let read = |path: &Path| std::fs::read(path).map_err(|e| Error::io(path, e));
        let name = |path: &Path| path.display().to_string();
        let raw_label = decode_id_png(&read(&sample.label)?, &name(&sample.label), &self.limits)?;
        let raw_photo = decode_photo(&read(&sample.image)?, &name(&sample.image), &self.limits)?;
        if (raw_label.width, raw_label.height) != (raw_photo.width, raw_photo.height) {
            return Err(Error::input(
                name(&sample.image),
                format!(
                    "is {}x{} but its label map {} is {}x{}",
                    raw_photo.width,
                    raw_photo.height,
                    sample.label.display(),
                    raw_label.width,
                    raw_label.height
                ),
            ));
        }
        let augmentation = if self.augment {
            self.augmentation(raw_label.width, raw_label.height, seed)
        } else {
            Augmentation::default()
        };
        let pre = self.preprocessor.with_augmentation(augmentation);
        let label = pre.label(&raw_label);
        let instance = match &sample.instance {
            Some(path) => {
                Some(pre.instance(&decode_id_png(&read(path)?, &name(path), &self.limits)?))
            }
            None => None,
        };
        let semantics = pre
            .semantics(
                std::slice::from_ref(&label),
                instance.as_ref().map(std::slice::from_ref),
                device,
            )
            .map_err(|e| Error::input(name(&sample.label), e.to_string()))?;
        let photo = pre.photo(&raw_photo, device)?;
        Ok((semantics, photo, label))
    }

    /// The official `get_params`: a crop position anywhere the resized image allows, and a
    /// coin flip for mirroring (unless `no_flip`).
    fn augmentation(&self, width: usize, height: usize, seed: u64) -> Augmentation {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (room_x, room_y) = self.preprocessor.crop_room(width, height);
        Augmentation {
            crop_x: rng.random_range(0..=room_x),
            crop_y: rng.random_range(0..=room_y),
            flip: self.flip && rng.random_bool(0.5),
        }
    }
}

fn layout(source: &DataSource, config: &Config) -> Result<Layout> {
    let root = &source.dataroot;
    let with_instances = !config.no_instance;
    let phase = source.phase.name();
    Ok(match source.dataset_mode.as_str() {
        "coco" => Layout {
            labels: list_images(&root.join(format!("{phase}_label")), "label maps")?,
            images: list_images(&root.join(format!("{phase}_img")), "photos")?,
            instances: with_instances
                .then(|| list_images(&root.join(format!("{phase}_inst")), "instance maps"))
                .transpose()?,
            key: stem_key,
        },
        "ade20k" => {
            let all = list_images(root, "ADE20K files")?;
            let marker = format!("_{phase}_");
            let train: Vec<_> = all
                .into_iter()
                .filter(|p| p.to_string_lossy().contains(&marker))
                .collect();
            let ext =
                |p: &PathBuf, e: &str| p.extension().is_some_and(|x| x.eq_ignore_ascii_case(e));
            Layout {
                labels: train.iter().filter(|p| ext(p, "png")).cloned().collect(),
                images: train.iter().filter(|p| ext(p, "jpg")).cloned().collect(),
                instances: None,
                key: stem_key,
            }
        }
        "cityscapes" => {
            let gt = list_images(&root.join("gtFine").join(phase), "Cityscapes label maps")?;
            let ends = |suffix: &str| -> Vec<PathBuf> {
                gt.iter()
                    .filter(|p| p.to_string_lossy().ends_with(suffix))
                    .cloned()
                    .collect()
            };
            Layout {
                labels: ends("_labelIds.png"),
                images: list_images(&root.join("leftImg8bit").join(phase), "Cityscapes photos")?,
                instances: with_instances.then(|| ends("_instanceIds.png")),
                key: cityscapes_key,
            }
        }
        "custom" => {
            let dir = |value: &Option<PathBuf>, flag: &str| {
                value.clone().ok_or_else(|| {
                    Error::config(
                        flag,
                        "dataset_mode custom needs --label_dir and --image_dir",
                    )
                })
            };
            let instances = match (&source.instance_dir, with_instances) {
                (Some(d), true) => Some(list_images(d, "instance maps")?),
                (None, true) => {
                    return Err(Error::config(
                        "instance_dir",
                        "dataset_mode custom without --instance_dir needs --no_instance",
                    ))
                }
                (_, false) => None,
            };
            Layout {
                labels: list_images(&dir(&source.label_dir, "label_dir")?, "label maps")?,
                images: list_images(&dir(&source.image_dir, "image_dir")?, "photos")?,
                instances,
                key: stem_key,
            }
        }
        other => {
            return Err(Error::config(
                "dataset_mode",
                format!("unknown dataset_mode `{other}`"),
            ))
        }
    })
}

/// Image files under `dir` (recursively), sorted.
fn list_images(dir: &Path, what: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::input(
            "dataset",
            format!("folder of {what} {} does not exist", dir.display()),
        ));
    }
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Files by pairing key; two files with one key are ambiguous.
fn keyed(
    paths: &[PathBuf],
    key: fn(&Path) -> String,
    what: &str,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut map = BTreeMap::new();
    for path in paths {
        if let Some(previous) = map.insert(key(path), path.clone()) {
            return Err(Error::input(
                "dataset",
                format!(
                    "{what}s {} and {} have the same name; pairing would be ambiguous",
                    previous.display(),
                    path.display()
                ),
            ));
        }
    }
    Ok(map)
}
