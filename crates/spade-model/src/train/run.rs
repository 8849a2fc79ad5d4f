//! The official `train.py` loop: epochs over the shuffled dataset, a G step every
//! `D_steps_per_G` iterations and a D step every iteration, losses printed and logged every
//! `print_freq` samples, grids every `display_freq`, `latest` checkpoints every
//! `save_latest_freq` and per-epoch ones every `save_epoch_freq`, the learning rate decayed
//! linearly over `niter_decay` epochs.
//!
//! Everything random (initialisation, data order, crops and flips, the VAE noise) is derived
//! from `--seed` and the position in training, and checkpoints carry the optimiser state and
//! the position, so a run resumed with `--continue_train` after being killed computes exactly
//! what an uninterrupted run computes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::checkpoint::{bytes, partial_path, pth_write, write_atomically, write_partial};
use crate::model::standard_normal;
use crate::train::collective::Collective;
use crate::train::dataset::Dataset;
use crate::train::options::{TrainConfig, TrainOptions};
use crate::train::report::{LossRecord, Reporter};
use crate::train::step::{Start, Trainer};

/// Where training stands; written last in every save.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Position {
    /// The epoch in progress (1-based).
    epoch: usize,
    /// Samples of this epoch already trained on.
    epoch_iter: usize,
    /// Samples trained on since the start.
    total_steps: usize,
    /// Iterations (batches) since the start.
    iterations: u64,
}

/// The last save's position; marks a complete save of the files it lists.
const STATE_FILE: &str = "train_state.json";
/// Lists a save in progress; see [`Save`].
const JOURNAL_FILE: &str = "save.journal";

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub iterations: u64,
    pub seconds: f64,
    pub last_losses: BTreeMap<String, f32>,
    /// Stopped early on request (`stop`), after saving `latest`.
    pub interrupted: bool,
}

/// Runs candle's own element-wise ops on the calling thread, unless `CANDLE_NUM_THREADS`
/// says otherwise. Call first thing in a training process, before any tensor op.
///
/// candle parallelises large element-wise ops on a pool of its own whose threads spin while
/// they wait; beside rayon's workers (our kernels) they take cores from the convolutions.
/// Memory-bound ops gain little from more threads: a training iteration ran 7 % faster
/// without that pool (BENCHMARKS.md).
pub fn serial_candle_elementwise() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Keeps the memory a training iteration frees for the next iteration's tensors instead of
/// handing it back to the kernel. Call first thing in a training process, before any
/// allocation of size.
///
/// Every iteration allocates and frees the same few hundred megabytes of activations and
/// gradients. glibc's malloc gives large freed blocks back (it trims the top of each heap
/// and unmaps the blocks it mapped), so the next iteration faults the same pages in again,
/// zeroed by the kernel, and each unmap interrupts the other cores to flush their TLBs: a
/// tenth of the CPU time of an iteration at the bundled model's shape. Kept, the freed
/// blocks are reused as they are: the whole run 4 % faster, its peak 566 -> 620 MiB
/// (BENCHMARKS.md). Returns whether malloc took both settings (only glibc has them; elsewhere
/// nothing changes and it returns `false`); a refusal costs only that speed.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets malloc's tuning parameters; it is safe to call at any
    // time, and both values are in the range glibc accepts (32 MiB is its largest mmap
    // threshold; blocks above it are still mapped and unmapped).
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Runs `work` on one of rayon's worker threads and returns its result. Call it around the
/// training loop of a process that trains alone (the `trainer` binary, `spade bench-train`).
///
/// Our kernels split their work with rayon. Called from a thread outside rayon's pool
/// (`main`), every parallel op hands its job to the pool and sleeps until a worker has done
/// it: two futex wake-ups per op, hundreds of ops per iteration, and a core that idles
/// while the caller sleeps. Called from a worker, an op starts on that worker at once and
/// the other workers steal from it: a training iteration at the bundled model's shape ran
/// 1.18x faster (BENCHMARKS.md).
///
/// Not for ranks that are threads of one process (the data-parallel tests): a worker
/// blocked at their barrier could be holding, below it on its stack, the job of the rank it
/// waits for.
pub fn on_rayon_worker<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    // Outside the pool, `scope` injects its closure into the global pool and blocks the
    // caller once, for the whole run.
    rayon::scope(|_| work())
}

/// Trains as rank `group.rank()` of a data-parallel group (alone without one): each rank
/// takes its slice of every global batch of `batchSize x world size` samples; rank 0 alone
/// writes checkpoints, logs and grids.
///
/// When `stop` turns true (SIGTERM from a node drain, Ctrl-C), a single-process run finishes
/// its iteration, saves `latest` and returns: a restarted job loses no work. Data-parallel
/// ranks cannot stop together on one rank's signal and rely on the periodic saves.
pub fn train(
    options: &TrainOptions,
    device: &Device,
    group: Option<Arc<dyn Collective>>,
    stop: Option<&AtomicBool>,
) -> Result<Summary> {
    let (rank, world) = group
        .as_ref()
        .map_or((0, 1), |g| (g.rank(), g.world_size()));
    let is_main = rank == 0;
    let config = options.resolve()?;
    let experiment = options.experiment_dir();
    std::fs::create_dir_all(&experiment).map_err(|e| Error::io(&experiment, e))?;
    Save::recover(&experiment)?;
    let dataset = Dataset::open(&options.data_source(), &config.model)?;
    let batches = dataset.len() / (options.batch_size * world);
    if batches == 0 {
        return Err(Error::input(
            "dataset",
            format!(
                "{} samples make no complete batch of batchSize {} x {world} ranks",
                dataset.len(),
                options.batch_size
            ),
        ));
    }
    let (mut trainer, mut position) = start(options, &config, &experiment, batches, device, group)?;
    if is_main {
        write_opt_txt(options, &config, &experiment)?;
    }

    let total_epochs = config.niter + config.niter_decay;
    let total_iterations = (total_epochs * batches) as u64;
    let mut reporter = Reporter::new(
        is_main,
        &experiment,
        total_iterations,
        position.iterations,
        position.total_steps,
    )?;
    reporter.say(&format!(
        "training `{}`: {} samples, {batches} iterations per epoch, epochs {}..={total_epochs}",
        options.name,
        dataset.len(),
        position.epoch
    ));
    let started = Instant::now();
    let mut interval = (Instant::now(), 0usize);
    let mut last_losses = BTreeMap::new();
    let mut latest_fake: Option<Tensor> = None;
    let run_iterations_before = position.iterations;
    let bs = options.batch_size;

    while position.epoch <= total_epochs {
        let epoch = position.epoch;
        let order = epoch_order(options, dataset.len(), epoch);
        for i in position.epoch_iter / (bs * world)..batches {
            let first = (i * world + rank) * bs;
            let indices: Vec<(usize, u64)> = order[first..first + bs]
                .iter()
                .map(|&idx| {
                    (
                        idx,
                        derive_seed(options.seed, &[1, epoch as u64, idx as u64]),
                    )
                })
                .collect();
            let loaded = dataset.load(&indices, device)?;
            let batch = &loaded.batch;
            let eps = |pass: u64| -> Result<Option<Tensor>> {
                if !config.model.use_vae {
                    return Ok(None);
                }
                let seed = derive_seed(options.seed, &[2, position.iterations, pass, rank as u64]);
                Ok(Some(standard_normal(seed, bs, config.model.z_dim, device)?))
            };
            let mut losses = BTreeMap::new();
            if i % options.d_steps_per_g == 0 {
                let g = trainer.generator_step(batch, eps(0)?.as_ref())?;
                losses.extend(g.losses.iter().map(|(k, v)| (k.to_string(), *v)));
                latest_fake = Some(g.fake);
            }
            let d = trainer.discriminator_step(batch, eps(1)?.as_ref())?;
            losses.extend(d.losses.iter().map(|(k, v)| (k.to_string(), *v)));
            check_finite(&losses, &position)?;
            last_losses.extend(losses);

            position.epoch_iter += bs * world;
            position.total_steps += bs * world;
            position.iterations += 1;
            interval.1 += bs * world;
            reporter.tick();

            if position.total_steps % options.print_freq < bs * world {
                reporter.log(LossRecord {
                    epoch,
                    epoch_iter: position.epoch_iter,
                    total_steps: position.total_steps,
                    seconds_per_sample: interval.0.elapsed().as_secs_f64() / interval.1 as f64,
                    lr: trainer.optimizer_g.config.lr,
                    losses: last_losses.clone(),
                })?;
                interval = (Instant::now(), 0);
            }
            if position.total_steps % options.display_freq < bs * world {
                if let Some(fake) = &latest_fake {
                    reporter.display(
                        epoch,
                        position.total_steps,
                        &loaded.labels,
                        fake,
                        &batch.image,
                    )?;
                }
            }
            if is_main && position.total_steps % options.save_latest_freq < bs * world {
                reporter.say(&format!(
                    "saving the latest model (epoch {epoch}, total_steps {})",
                    position.total_steps
                ));
                save(&trainer, &experiment, &["latest"], position)?;
            }
            // Every rank counts the same global steps, so all of them stop on the budget together.
            let budget_spent =
                options.max_total_steps > 0 && position.total_steps >= options.max_total_steps;
            let signalled = world == 1 && stop.is_some_and(|s| s.load(Ordering::Relaxed));
            if budget_spent || signalled {
                if is_main {
                    let reason = if budget_spent {
                        "max_total_steps reached"
                    } else {
                        "stopping on request"
                    };
                    reporter.say(&format!(
                        "{reason}: saving the latest model (epoch {epoch}, total_steps {})",
                        position.total_steps
                    ));
                    save(&trainer, &experiment, &["latest"], position)?;
                }
                reporter.finish();
                return Ok(Summary {
                    iterations: position.iterations - run_iterations_before,
                    seconds: started.elapsed().as_secs_f64(),
                    last_losses,
                    interrupted: !budget_spent,
                });
            }
        }
        trainer.update_learning_rate(epoch);
        position.epoch += 1;
        position.epoch_iter = 0;
        if is_main && (epoch % options.save_epoch_freq == 0 || epoch == total_epochs) {
            reporter.say(&format!("saving the model at the end of epoch {epoch}"));
            save(
                &trainer,
                &experiment,
                &["latest", &epoch.to_string()],
                position,
            )?;
        }
    }
    reporter.finish();
    Ok(Summary {
        iterations: position.iterations - run_iterations_before,
        seconds: started.elapsed().as_secs_f64(),
        last_losses,
        interrupted: false,
    })
}

/// A diverged run stops with the iteration named, instead of saving NaN weights.
fn check_finite(losses: &BTreeMap<String, f32>, position: &Position) -> Result<()> {
    match losses.iter().find(|(_, v)| !v.is_finite()) {
        Some((name, value)) => Err(Error::input(
            "training",
            format!(
                "loss {name} became {value} at epoch {}, sample {} (lower --lr, or resume from \
                 the last checkpoint)",
                position.epoch, position.epoch_iter
            ),
        )),
        None => Ok(()),
    }
}

/// This epoch's sample order: shuffled from the seed unless `serial_batches`.
fn epoch_order(options: &TrainOptions, len: usize, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if !options.serial_batches {
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(derive_seed(options.seed, &[0, epoch as u64]));
        order.shuffle(&mut rng);
    }
    order
}

/// A seed for one random draw, mixed from the run's seed and where in training it happens.
fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    let mut state = seed;
    for &part in parts {
        state = splitmix64(state ^ splitmix64(part));
    }
    state
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fresh trainer, or one resumed from the experiment folder.
fn start(
    options: &TrainOptions,
    config: &TrainConfig,
    experiment: &Path,
    batches: usize,
    device: &Device,
    group: Option<Arc<dyn Collective>>,
) -> Result<(Trainer, Position)> {
    let world = group.as_ref().map_or(1, |g| g.world_size());
    let vgg = options.vgg_weights.as_deref();
    if !options.continue_train {
        let trainer = Trainer::new(
            config.clone(),
            Start::Fresh { seed: options.seed },
            vgg,
            device,
            DType::F32,
            group,
        )?;
        let position = Position {
            epoch: 1,
            epoch_iter: 0,
            total_steps: 0,
            iterations: 0,
        };
        return Ok((trainer, position));
    }
    let epoch = options.which_epoch.as_str();
    let mut trainer = Trainer::new(
        config.clone(),
        Start::Checkpoint {
            dir: experiment,
            epoch,
        },
        vgg,
        device,
        DType::F32,
        group,
    )?;
    let state_path = experiment.join(STATE_FILE);
    let position = if epoch == "latest" && state_path.is_file() {
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::checkpoint(&state_path, format!("unreadable training state: {e}"))
        })?
    } else {
        official_position(experiment, batches, options.batch_size * world)?
    };
    let optim = experiment.join(format!("{epoch}_optim.safetensors"));
    if optim.is_file() {
        load_optimizers(&mut trainer, &optim)?;
    }
    // The learning rate the uninterrupted run would have now.
    if position.epoch > 1 {
        trainer.update_learning_rate(position.epoch - 1);
    }
    Ok((trainer, position))
}

/// A position from the official `iter.txt` (`epoch`, `epoch_iter`), or the beginning.
fn official_position(experiment: &Path, batches: usize, batch_size: usize) -> Result<Position> {
    let path = experiment.join("iter.txt");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Position {
            epoch: 1,
            epoch_iter: 0,
            total_steps: 0,
            iterations: 0,
        });
    };
    let values: Vec<usize> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>().map(|v| v as usize))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::checkpoint(&path, format!("expected `epoch, epoch_iter`: {e}")))?;
    let [epoch, epoch_iter] = values[..] else {
        return Err(Error::checkpoint(
            &path,
            "expected two numbers: epoch and epoch_iter",
        ));
    };
    let epoch = epoch.max(1);
    Ok(Position {
        epoch,
        epoch_iter,
        total_steps: (epoch - 1) * batches * batch_size + epoch_iter,
        iterations: ((epoch - 1) * batches + epoch_iter / batch_size) as u64,
    })
}

fn load_optimizers(trainer: &mut Trainer, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::checkpoint(path, format!("not a valid safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let steps = |key: &str| -> Result<u64> {
        meta.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::checkpoint(path, format!("metadata lacks `{key}`")))
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, trainer.device())
        .map_err(|e| Error::checkpoint(path, e.to_string()))?;
    let (d, g): (HashMap<_, _>, HashMap<_, _>) =
        tensors.into_iter().partition(|(k, _)| k.starts_with("D."));
    trainer
        .optimizer_g
        .load_state(steps("steps_G")?, &g)
        .map_err(|e| Error::checkpoint(path, e.to_string()))?;
    trainer
        .optimizer_d
        .load_state(steps("steps_D")?, &d)
        .map_err(|e| Error::checkpoint(path, e.to_string()))
}

/// Saves the networks as `<label>_net_{G,D,E}.pth`, the optimisers as
/// `<label>_optim.safetensors`, and for `latest` the position (`iter.txt`, `train_state.json`).
fn save(trainer: &Trainer, experiment: &Path, labels: &[&str], position: Position) -> Result<()> {
    let mut save = Save::default();
    for label in labels {
        for net in trainer.networks() {
            let entries = net.state_dict();
            save.stage(
                &experiment.join(format!("{label}_net_{}.pth", net.label)),
                |tmp| {
                    pth_write::write_archive(tmp, &entries).map_err(|e| Error::checkpoint(tmp, e))
                },
            )?;
        }
        let (steps_g, mut tensors) = trainer.optimizer_g.state();
        let (steps_d, d_tensors) = trainer.optimizer_d.state();
        tensors.extend(d_tensors);
        let metadata = HashMap::from([
            ("steps_G".to_string(), steps_g.to_string()),
            ("steps_D".to_string(), steps_d.to_string()),
        ]);
        save.stage(
            &experiment.join(format!("{label}_optim.safetensors")),
            |tmp| {
                safetensors::serialize_to_file(tensors.iter(), Some(metadata.clone()), tmp)
                    .map_err(|e| Error::checkpoint(tmp, e.to_string()))
            },
        )?;
    }
    if labels.contains(&"latest") {
        let iter = format!("{}\n{}\n", position.epoch, position.epoch_iter);
        save.stage(&experiment.join("iter.txt"), bytes(iter.as_bytes()))?;
        let state = serde_json::to_string_pretty(&position).expect("position serialises");
        save.stage(&experiment.join(STATE_FILE), bytes(state.as_bytes()))?;
    }
    save.commit(experiment)
}

/// A group of files replaced together. Each is first written completely beside its target
/// (`<name>.partial`, flushed), then a journal listing the targets is written atomically, then
/// the files are renamed into place and the journal removed. A job killed at any point leaves
/// either the old group, or a journal from which [`Save::recover`] finishes the renames, never a
/// mix of old and new networks.
#[derive(Default)]
struct Save {
    targets: Vec<PathBuf>,
}

impl Save {
    fn stage(&mut self, path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        write_partial(path, write)?;
        self.targets.push(path.to_path_buf());
        Ok(())
    }

    fn commit(self, experiment: &Path) -> Result<()> {
        self.write_journal(experiment)?;
        Self::recover(experiment)
    }

    /// The point of no return: from here on the new group replaces the old one.
    fn write_journal(&self, experiment: &Path) -> Result<()> {
        let journal = experiment.join(JOURNAL_FILE);
        let names: Vec<String> = self
            .targets
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        write_atomically(&journal, bytes(names.join("\n").as_bytes()))
    }

    /// Finishes a save that a killed job left journaled.
    fn recover(experiment: &Path) -> Result<()> {
        let journal = experiment.join(JOURNAL_FILE);
        let Ok(text) = std::fs::read_to_string(&journal) else {
            return Ok(());
        };
        for target in text.lines().map(PathBuf::from) {
            let tmp = partial_path(&target);
            if tmp.is_file() {
                std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
            }
        }
        std::fs::remove_file(&journal).map_err(|e| Error::io(&journal, e))
    }
}

/// The official `opt.txt`: every option by its official name, sorted, as resolved.
fn write_opt_txt(options: &TrainOptions, config: &TrainConfig, experiment: &Path) -> Result<()> {
    let m = &config.model;
    let d = &config.discriminator;
    let bool_text = |b: bool| if b { "True" } else { "False" }.to_string();
    let mut lines: BTreeMap<&str, String> = BTreeMap::from([
        ("name", options.name.clone()),
        (
            "checkpoints_dir",
            options.checkpoints_dir.display().to_string(),
        ),
        ("gpu_ids", options.gpu_ids.clone()),
        ("dataset_mode", m.dataset_mode.clone()),
        ("dataroot", options.dataroot.display().to_string()),
        ("batchSize", options.batch_size.to_string()),
        ("preprocess_mode", m.preprocess_mode.to_string()),
        ("load_size", m.load_size.to_string()),
        ("crop_size", m.crop_size.to_string()),
        ("aspect_ratio", m.aspect_ratio.to_string()),
        ("no_flip", bool_text(options.no_flip)),
        ("label_nc", m.label_nc.to_string()),
        (
            "contain_dontcare_label",
            bool_text(m.contain_dontcare_label),
        ),
        ("no_instance", bool_text(m.no_instance)),
        ("serial_batches", bool_text(options.serial_batches)),
        ("norm_G", m.norm_g.to_string()),
        ("norm_D", d.norm_d.to_string()),
        ("norm_E", m.norm_e.to_string()),
        ("num_upsampling_layers", m.num_upsampling_layers.to_string()),
        ("ngf", m.ngf.to_string()),
        ("ndf", d.ndf.to_string()),
        ("num_D", d.num_d.to_string()),
        ("n_layers_D", d.n_layers_d.to_string()),
        ("use_vae", bool_text(m.use_vae)),
        ("z_dim", m.z_dim.to_string()),
        ("netG", "spade".to_string()),
        ("netD", "multiscale".to_string()),
        ("output_nc", "3".to_string()),
        ("init_type", options.init_type.clone()),
        ("init_variance", options.init_variance.to_string()),
        ("niter", config.niter.to_string()),
        ("niter_decay", config.niter_decay.to_string()),
        ("lr", config.lr.to_string()),
        ("beta1", config.beta1.to_string()),
        ("beta2", config.beta2.to_string()),
        ("no_TTUR", bool_text(!config.ttur)),
        ("D_steps_per_G", options.d_steps_per_g.to_string()),
        ("gan_mode", config.gan_mode.to_string()),
        ("lambda_feat", config.lambda_feat.to_string()),
        ("lambda_vgg", config.lambda_vgg.to_string()),
        ("lambda_kld", config.lambda_kld.to_string()),
        ("lambda_l1", config.lambda_l1.to_string()),
        ("no_ganFeat_loss", bool_text(!config.gan_feat_loss)),
        ("no_vgg_loss", bool_text(!config.vgg_loss)),
        ("print_freq", options.print_freq.to_string()),
        ("display_freq", options.display_freq.to_string()),
        ("save_latest_freq", options.save_latest_freq.to_string()),
        ("save_epoch_freq", options.save_epoch_freq.to_string()),
        ("seed", options.seed.to_string()),
        ("isTrain", "True".to_string()),
        ("phase", "train".to_string()),
        ("model", "pix2pix".to_string()),
    ]);
    if let Some(v) = &options.vgg_weights {
        lines.insert("vgg_weights", v.display().to_string());
    }
    let mut text = String::from("----------------- Options ---------------\n");
    for (key, value) in lines {
        text.push_str(&format!("{key:>25}: {value:<30}\n"));
    }
    text.push_str("----------------- End -------------------\n");
    let path = experiment.join("opt.txt");
    write_atomically(&path, bytes(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc takes both settings (a value outside its range would be refused silently in
    /// the trainer, costing the speed it buys).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_memory_settings() {
        assert!(retain_freed_memory());
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    /// A job killed before the journal keeps the old group; one killed after it gets the new
    /// group completed on the next start.
    #[test]
    fn a_save_interrupted_anywhere_leaves_one_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let (g, d) = (
            dir.path().join("latest_net_G.pth"),
            dir.path().join("latest_net_D.pth"),
        );
        std::fs::write(&g, "old G").unwrap();
        std::fs::write(&d, "old D").unwrap();
        let stage_new = || {
            let mut save = Save::default();
            save.stage(&g, bytes(b"new G")).unwrap();
            save.stage(&d, bytes(b"new D")).unwrap();
            save
        };

        stage_new(); // killed before the journal
        Save::recover(dir.path()).unwrap();
        assert_eq!((read(&g), read(&d)), ("old G".into(), "old D".into()));

        stage_new().write_journal(dir.path()).unwrap(); // killed right after it
        assert_eq!(read(&g), "old G");
        Save::recover(dir.path()).unwrap();
        assert_eq!((read(&g), read(&d)), ("new G".into(), "new D".into()));
        assert!(!dir.path().join(JOURNAL_FILE).exists());
    }
}
