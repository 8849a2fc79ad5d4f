//! The named tensors of one network and the file they came from. Tensors of an official
//! `.pth` stay in the file until a network asks for one by name and shape: only what the
//! model uses is ever read, each checked against the shape the model expects before a byte
//! of it is allocated, and against NaN and infinity once read.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
enum Entry {
    /// Still in the `.pth` file: element type, shape and a handle that reads its bytes.
    Stored(DType, pytorch_reader::Tensor),
    /// Little-endian bytes of a converted (safetensors) file: element type, shape, where.
    Slice {
        bytes: Bytes,
        dtype: DType,
        dims: Vec<usize>,
        range: Range<usize>,
    },
    /// In memory (tensors made in code).
    Loaded(Tensor),
}

impl Entry {
    fn dims(&self) -> &[usize] {
        match self {
            Entry::Stored(_, tensor) => tensor.shape(),
            Entry::Slice { dims, .. } => dims,
            Entry::Loaded(tensor) => tensor.dims(),
        }
    }
}

/// The bytes of a converted file: mapped from disk (read only as tensors are asked for),
/// or held in memory.
#[derive(Debug, Clone)]
pub(super) enum Bytes {
    Mapped(Arc<memmap2::Mmap>),
    Static(&'static [u8]),
    Owned(Arc<[u8]>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Static(bytes) => bytes,
            Bytes::Owned(bytes) => bytes,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StateDict {
    /// The file, for error messages.
    pub source: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl StateDict {
    /// Tensors already in memory.
    pub fn from_tensors(
        source: impl Into<PathBuf>,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Self {
        Self {
            source: source.into(),
            entries: tensors
                .into_iter()
                .map(|(name, t)| (name, Entry::Loaded(t)))
                .collect(),
        }
    }

    /// Tensors left in their file, read on demand (see [`super::pth::open`]).
    pub(super) fn from_stored(
        source: &Path,
        tensors: impl IntoIterator<Item = (String, DType, pytorch_reader::Tensor)>,
    ) -> Self {
        Self {
            source: source.to_path_buf(),
            entries: tensors
                .into_iter()
                .map(|(name, dtype, t)| (name, Entry::Stored(dtype, t)))
                .collect(),
        }
    }

    /// Tensors of a converted file: `(name, dtype, shape, byte range in bytes)`, already
    /// checked against `bytes` (see [`super::safetensors`]).
    pub(super) fn from_slices(
        source: &Path,
        bytes: &Bytes,
        tensors: impl IntoIterator<Item = (String, DType, Vec<usize>, Range<usize>)>,
    ) -> Self {
        Self {
            source: source.to_path_buf(),
            entries: tensors
                .into_iter()
                .map(|(name, dtype, dims, range)| {
                    let entry = Entry::Slice {
                        bytes: bytes.clone(),
                        dtype,
                        dims,
                        range,
                    };
                    (name, entry)
                })
                .collect(),
        }
    }

    /// A `.pth` or a plain `.safetensors` file (by its extension), each tensor read when
    /// asked for.
    pub fn open(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "safetensors") {
            super::safetensors::open_plain(path)
        } else {
            super::pth::open(path)
        }
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The shape of `name`, without reading it.
    pub fn dims(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(Entry::dims)
    }

    /// Bytes that reading every tensor would allocate.
    pub fn byte_len(&self) -> u64 {
        self.entries
            .values()
            .map(|entry| match entry {
                Entry::Stored(_, t) => t.byte_len() as u64,
                Entry::Slice { range, .. } => range.len() as u64,
                Entry::Loaded(t) => (t.elem_count() * t.dtype().size_in_bytes()) as u64,
            })
            .sum()
    }

    /// Adds or replaces a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.entries.insert(name.into(), Entry::Loaded(tensor));
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.entries.remove(name).is_some()
    }

    /// The tensor `name`, which must have `shape`: read (if still in the file) and checked
    /// for NaN and infinity. Errors name the file and the tensor.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.fetch(name, Some(shape))
            .map_err(|reason| Error::checkpoint(&self.source, reason))
    }

    /// Every tensor, read and checked.
    pub fn read_all(&self) -> Result<HashMap<String, Tensor>> {
        self.entries
            .keys()
            .map(|name| {
                let tensor = self
                    .fetch(name, None)
                    .map_err(|reason| Error::checkpoint(&self.source, reason))?;
                Ok((name.clone(), tensor))
            })
            .collect()
    }

    /// The same tensors, every floating-point one stored as `dtype`.
    pub fn to_storage_dtype(&self, dtype: DType) -> Result<Self> {
        let tensors = self
            .read_all()?
            .into_iter()
            .map(|(name, t)| {
                let t = if t.dtype().is_float() {
                    t.to_dtype(dtype)
                        .map_err(|e| Error::checkpoint(&self.source, format!("`{name}`: {e}")))?
                } else {
                    t
                };
                Ok((name, t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_tensors(&self.source, tensors))
    }

    /// A builder that serves these tensors as `dtype` on `device`, each read when a network
    /// asks for it.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let backend = Lazy {
            dict: self.clone(),
            read: None,
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// Runs `build` (constructing a network) and returns the tensors it read, as stored:
    /// the state dict trimmed to what the network uses.
    pub fn used_by(&self, build: impl FnOnce(VarBuilder<'static>) -> Result<()>) -> Result<Self> {
        let read = Arc::new(Mutex::new(BTreeMap::new()));
        let backend = Lazy {
            dict: self.clone(),
            read: Some(read.clone()),
        };
        build(VarBuilder::from_backend(
            Box::new(backend),
            DType::F32,
            Device::Cpu,
        ))
        .map_err(|e| self.context(e))?;
        let entries = std::mem::take(&mut *read.lock().expect("used-tensor record"));
        Ok(Self {
            source: self.source.clone(),
            entries: entries
                .into_iter()
                .map(|(name, t)| (name, Entry::Loaded(t)))
                .collect(),
        })
    }

    /// Wraps a construction error with the file name.
    pub fn context(&self, error: Error) -> Error {
        match error {
            Error::Candle(e) => Error::checkpoint(&self.source, e),
            other => other,
        }
    }

    /// The tensor as stored, checked against `shape` before it is read.
    fn fetch(&self, name: &str, shape: Option<&[usize]>) -> std::result::Result<Tensor, String> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| format!("no tensor `{name}`"))?;
        if let Some(shape) = shape {
            if entry.dims() != shape {
                return Err(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    entry.dims()
                ));
            }
        }
        let tensor = match entry {
            Entry::Loaded(tensor) => tensor.clone(),
            Entry::Stored(dtype, stored) => {
                let bytes = stored.read().map_err(|e| e.to_string())?;
                Tensor::from_raw_buffer(&bytes, *dtype, stored.shape(), &Device::Cpu)
                    .map_err(|e| format!("tensor `{name}`: {e}"))?
            }
            Entry::Slice {
                bytes,
                dtype,
                dims,
                range,
            } => Tensor::from_raw_buffer(&bytes[range.clone()], *dtype, dims, &Device::Cpu)
                .map_err(|e| format!("tensor `{name}`: {e}"))?,
        };
        check_finite(name, &tensor)?;
        Ok(tensor)
    }
}

/// NaN or infinite weights load without complaint and then give black images.
fn check_finite(name: &str, tensor: &Tensor) -> std::result::Result<(), String> {
    if !tensor.dtype().is_float()
        || all_finite(tensor).map_err(|e| format!("tensor `{name}`: {e}"))?
    {
        Ok(())
    } else {
        Err(format!("tensor `{name}` holds NaN or infinite values"))
    }
}

fn all_finite(tensor: &Tensor) -> candle_core::Result<bool> {
    // Float32 in memory, as every official checkpoint stores it: one pass, no copy.
    {
        let (storage, layout) = tensor.storage_and_layout();
        if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(values[a..b].iter().all(|v| v.is_finite()));
        }
    }
    // x - x is 0 for finite x and NaN otherwise; the sum is finite only if all are.
    let sum = tensor
        .sub(tensor)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(sum.is_finite())
}

/// The candle backend of [`StateDict::var_builder`]; `read` records what was served.
struct Lazy {
    dict: StateDict,
    read: Option<Arc<Mutex<BTreeMap<String, Tensor>>>>,
}

impl Lazy {
    fn serve(
        &self,
        name: &str,
        shape: Option<&[usize]>,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self
            .dict
            .fetch(name, shape)
            .map_err(candle_core::Error::Msg)?;
        if let Some(read) = &self.read {
            read.lock()
                .expect("used-tensor record")
                .insert(name.to_string(), tensor.clone());
        }
        tensor.to_device(device)?.to_dtype(dtype)
    }
}

impl SimpleBackend for Lazy {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.serve(name, Some(shape.dims()), dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.serve(name, None, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.dict.entries.contains_key(name)
    }
}
