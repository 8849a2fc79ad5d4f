//! Official PyTorch `.pth` state dicts, legacy (PyTorch < 1.6) and zip, through the
//! `pytorch-reader` crate, which parses pickles without executing them, checks every
//! declared size against the file and reads each tensor only when asked.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use pytorch_reader::{PickleValue, PytorchReader};

use super::StateDict;
use crate::error::{Error, Result};

/// How many times its file's size the tensors of a state dict may take once read. A real
/// state dict stores every tensor once (1x); views that share a storage (the fixtures' VGG19
/// keeps its 13 conv weights in one, 5.5x) are legitimate, so there is room above that.
const MAX_AMPLIFICATION: u64 = 16;

/// Slack for tiny files, whose zip directory and pickle outweigh their tensors.
const MATERIALISED_SLACK: u64 = 1 << 20;

/// Opens a state dict keyed by the official names (`head_0.conv_0.weight_orig`), its
/// tensors left in the file until they are asked for (see [`StateDict`]).
///
/// Besides tensors a state dict holds only plain data (its `_metadata` of module versions);
/// a pickle naming any other Python global is refused, as `torch.load(weights_only=True)` does.
///
/// A state dict as `torch.save` writes it stores every tensor's bytes uncompressed, once.
/// Before anything is read, storages compressed inside the zip, element types SPADE never
/// uses, and a tensor larger than the whole file (a view wider than its storage, such as
/// `expand`'s zero strides) are refused.
pub fn open(path: &Path) -> Result<StateDict> {
    let fail = |reason: String| Error::checkpoint(path, reason);
    let structure = PytorchReader::read_pickle_data(path, None).map_err(|e| fail(e.to_string()))?;
    check_globals(&structure, "").map_err(fail)?;
    check_stored(path).map_err(fail)?;
    let reader = PytorchReader::new(path).map_err(|e| fail(e.to_string()))?;
    if reader.is_empty() {
        return Err(fail("holds no tensors (is it a state dict?)".to_string()));
    }
    let file_len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let tensors = reader
        .into_tensors()
        .into_iter()
        .map(|(name, tensor)| {
            let dtype = candle_dtype(tensor.dtype()).ok_or_else(|| {
                fail(format!(
                    "tensor `{name}` has element type {:?}, which SPADE checkpoints never use",
                    tensor.dtype()
                ))
            })?;
            let bytes = tensor.byte_len() as u64;
            if bytes > file_len.saturating_add(MATERIALISED_SLACK) {
                return Err(fail(format!(
                    "tensor `{name}` would take {bytes} bytes once read, more than the whole \
                     file ({file_len} bytes): a view wider than its storage (zero strides) is \
                     refused"
                )));
            }
            Ok((name, dtype, tensor))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StateDict::from_stored(path, tensors))
}

/// Reads every tensor of a state dict (see [`open`]), for files whose every tensor is
/// wanted (training state, reference weights in tests). On top of [`open`]'s checks, the
/// tensors together may take at most [`MAX_AMPLIFICATION`] times the file (one storage
/// viewed over and over is refused).
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let dict = open(path)?;
    let file_len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let total = dict.byte_len();
    let budget = file_len
        .saturating_mul(MAX_AMPLIFICATION)
        .saturating_add(MATERIALISED_SLACK);
    if total > budget {
        return Err(Error::checkpoint(
            path,
            format!(
                "its tensors would take {total} bytes once read, over {MAX_AMPLIFICATION}x the \
                 file's {file_len} bytes: one storage viewed over and over is refused"
            ),
        ));
    }
    dict.read_all()
}

/// Refuses zip entries that are not stored as they are: `torch.save` never compresses, and
/// a deflated entry can inflate to any size. Legacy (non-zip) files have no compression.
fn check_stored(path: &Path) -> std::result::Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let Ok(mut archive) = zip::ZipArchive::new(file) else {
        return Ok(());
    };
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|e| e.to_string())?;
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(format!(
                "zip entry `{}` is compressed ({}), which torch.save never writes; refusing \
                 to inflate it",
                entry
                    .name()
                    .map_or_else(|_| format!("number {i}"), |n| n.into_owned()),
                entry.compression()
            ));
        }
    }
    Ok(())
}

/// Walks the unpickled structure; anything the reader could not interpret other than a
/// tensor is an object built from a global outside the state-dict vocabulary.
fn check_globals(value: &PickleValue, at: &str) -> std::result::Result<(), String> {
    match value {
        PickleValue::Unsupported(kind) if kind == "torch.Tensor" => Ok(()),
        PickleValue::Unsupported(kind) => Err(format!(
            "the pickle names the Python global `{kind}` at `{at}`, which is not part of a \
             state dict; refusing to load it"
        )),
        PickleValue::Dict(items) => items.iter().try_for_each(|(key, v)| {
            let at = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            check_globals(v, &at)
        }),
        PickleValue::List(items) => items.iter().try_for_each(|v| check_globals(v, at)),
        _ => Ok(()),
    }
}

fn candle_dtype(dtype: pytorch_reader::DType) -> Option<DType> {
    use pytorch_reader::DType as P;
    match dtype {
        P::F32 => Some(DType::F32),
        P::F64 => Some(DType::F64),
        P::F16 => Some(DType::F16),
        P::BF16 => Some(DType::BF16),
        P::I64 => Some(DType::I64),
        P::U8 => Some(DType::U8),
        P::U32 => Some(DType::U32),
        _ => None,
    }
}
