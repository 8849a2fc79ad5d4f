//! Official PyTorch `.pth` state dicts, legacy (PyTorch < 1.6) and zip, through the
//! `pytorch-reader` crate, which parses pickles without executing them and checks every
//! declared size against the file.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use pytorch_reader::{PickleValue, PytorchReader};

use crate::error::{Error, Result};

/// Reads a state dict into CPU tensors keyed by the official names (`head_0.conv_0.weight_orig`).
///
/// Besides tensors a state dict holds only plain data (its `_metadata` of module versions);
/// a pickle naming any other Python global is refused, as `torch.load(weights_only=True)` does.
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let fail = |reason: String| Error::checkpoint(path, reason);
    let structure = PytorchReader::read_pickle_data(path, None).map_err(|e| fail(e.to_string()))?;
    check_globals(&structure, "").map_err(fail)?;
    let reader = PytorchReader::new(path).map_err(|e| fail(e.to_string()))?;
    if reader.is_empty() {
        return Err(fail("holds no tensors (is it a state dict?)".to_string()));
    }
    reader
        .into_tensors()
        .into_iter()
        .map(|(name, tensor)| {
            let dtype = candle_dtype(tensor.dtype()).ok_or_else(|| {
                fail(format!(
                    "tensor `{name}` has element type {:?}, which SPADE checkpoints never use",
                    tensor.dtype()
                ))
            })?;
            let bytes = tensor.read().map_err(|e| fail(e.to_string()))?;
            let shape = tensor.shape().to_vec();
            let value = Tensor::from_raw_buffer(&bytes, dtype, &shape, &Device::Cpu)
                .map_err(|e| fail(format!("tensor `{name}`: {e}")))?;
            Ok((name, value))
        })
        .collect()
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
