//! Data-parallel training: the transports over which the ranks of a job sum tensors. Each
//! rank runs its own copy of the networks on its slice of the global batch; the only
//! communication is [`AllReduce`](crate::ops::all_reduce::AllReduce) over a [`Collective`].
//!
//! [`InProcess`] connects ranks that are threads of one process (CPU, and the tests that
//! prove `2 ranks x batch 1 == 1 rank x batch 2`); with the `nccl` feature, `Nccl` connects
//! one process per GPU.

use std::sync::{Arc, Barrier, Mutex};

pub use crate::ops::all_reduce::Collective;

/// Ranks that are threads of one process, meeting at a barrier.
#[derive(Debug)]
pub struct InProcess {
    rank: usize,
    world_size: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f64>>>,
}

impl InProcess {
    /// One handle per rank, to be moved into the ranks' threads.
    pub fn group(world_size: usize) -> Vec<Arc<dyn Collective>> {
        let shared = Arc::new(Shared {
            barrier: Barrier::new(world_size),
            slots: Mutex::new(vec![Vec::new(); world_size]),
        });
        (0..world_size)
            .map(|rank| {
                Arc::new(InProcess {
                    rank,
                    world_size,
                    shared: shared.clone(),
                }) as Arc<dyn Collective>
            })
            .collect()
    }
}

impl Collective for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_host(&self, values: &[f64]) -> candle_core::Result<Vec<f64>> {
        self.shared.slots.lock().expect("slots lock")[self.rank] = values.to_vec();
        self.shared.barrier.wait();
        let sum = {
            let slots = self.shared.slots.lock().expect("slots lock");
            if slots.iter().any(|s| s.len() != values.len()) {
                candle_core::bail!("ranks passed all-reduce buffers of different lengths");
            }
            // In rank order on every rank, so that all ranks hold bitwise the same sum.
            let mut sum = vec![0f64; values.len()];
            for slot in slots.iter() {
                for (acc, v) in sum.iter_mut().zip(slot) {
                    *acc += v;
                }
            }
            sum
        };
        // Nobody may overwrite a slot before everyone has read them all.
        self.shared.barrier.wait();
        Ok(sum)
    }
}

#[cfg(feature = "nccl")]
pub use nccl::Nccl;

#[cfg(feature = "nccl")]
mod nccl {
    //! One process per GPU, as torchrun or a Kubernetes indexed Job starts them: rank and
    //! world size from `RANK` / `WORLD_SIZE` (or `JOB_COMPLETION_INDEX`), the NCCL id passed
    //! through a file on a volume all ranks share (`SPADE_NCCL_ID_FILE`), written by rank 0.

    use std::path::Path;
    use std::time::{Duration, Instant};

    use candle_core::backend::BackendStorage;
    use candle_core::{CudaStorage, Layout};
    use cudarc::nccl::safe::{Comm, Id, ReduceOp};

    use super::Collective;
    use crate::error::{Error, Result};

    pub struct Nccl {
        comm: Comm,
        rank: usize,
        world_size: usize,
    }

    // The communicator is only used from the thread that trains; NCCL handles are safe to
    // move between threads.
    unsafe impl Send for Nccl {}
    unsafe impl Sync for Nccl {}

    impl std::fmt::Debug for Nccl {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Nccl(rank {} of {})", self.rank, self.world_size)
        }
    }

    impl Nccl {
        /// Joins the group on `device` (a CUDA device), waiting up to 10 minutes for rank 0's id.
        pub fn join(
            device: &candle_core::Device,
            rank: usize,
            world_size: usize,
            id_file: &Path,
        ) -> Result<Self> {
            let candle_core::Device::Cuda(cuda) = device else {
                return Err(Error::config(
                    "gpu_ids",
                    "NCCL training needs a CUDA device",
                ));
            };
            let fail = |e: String| Error::config("SPADE_NCCL_ID_FILE", e);
            let id = if rank == 0 {
                let id = Id::new().map_err(|e| fail(format!("{e:?}")))?;
                let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
                crate::io::checkpoint::write_atomically(
                    id_file,
                    crate::io::checkpoint::bytes(&bytes),
                )?;
                id
            } else {
                // An id file older than this rank is a previous run's: wait for the new one.
                let joined = std::time::SystemTime::now() - Duration::from_secs(120);
                let fresh = || {
                    std::fs::metadata(id_file)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t >= joined)
                };
                let deadline = Instant::now() + Duration::from_secs(600);
                loop {
                    match std::fs::read(id_file) {
                        Ok(bytes) if bytes.len() == 128 && fresh() => {
                            let mut internal = [0 as std::ffi::c_char; 128];
                            for (dst, src) in internal.iter_mut().zip(bytes) {
                                *dst = src as std::ffi::c_char;
                            }
                            break Id::uninit(internal);
                        }
                        _ if Instant::now() > deadline => {
                            return Err(fail(format!(
                                "no NCCL id from rank 0 in {}",
                                id_file.display()
                            )))
                        }
                        _ => std::thread::sleep(Duration::from_millis(200)),
                    }
                }
            };
            let comm = Comm::from_rank(cuda.cuda_stream(), rank, world_size, id)
                .map_err(|e| fail(format!("{e:?}")))?;
            Ok(Self {
                comm,
                rank,
                world_size,
            })
        }
    }

    impl Collective for Nccl {
        fn rank(&self) -> usize {
            self.rank
        }

        fn world_size(&self) -> usize {
            self.world_size
        }

        fn all_reduce_host(&self, _values: &[f64]) -> candle_core::Result<Vec<f64>> {
            candle_core::bail!("NCCL reduces GPU tensors; move the tensor to the GPU")
        }

        fn all_reduce_cuda(
            &self,
            storage: &CudaStorage,
            layout: &Layout,
        ) -> candle_core::Result<CudaStorage> {
            let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
                candle_core::Error::Msg("all-reduce takes contiguous tensors".into())
            })?;
            let device = storage.device().clone();
            let src = storage.as_cuda_slice::<f32>()?.slice(start..end);
            let mut dst = device.alloc_zeros::<f32>(end - start)?;
            self.comm
                .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                .map_err(|e| candle_core::Error::Msg(format!("NCCL all-reduce: {e:?}")))?;
            Ok(CudaStorage::wrap_cuda_slice(dst, device))
        }
    }
}
