//! Writes state dicts as zip-format `.pth` files, the format `torch.save` uses since
//! PyTorch 1.6: `archive/data.pkl` (a protocol-2 pickle of an `OrderedDict` of tensors
//! rebuilt by `torch._utils._rebuild_tensor_v2`), `archive/data/<key>` (raw little-endian
//! storages), `archive/byteorder` and `archive/version`. The pickle names only the globals
//! `torch.load(weights_only=True)` allows, so PyTorch and our reader both load it.

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor};
use zip::write::SimpleFileOptions;

use crate::error::{Error, Result};

/// Top folder of the archive (what current PyTorch writes).
const ARCHIVE: &str = "archive";

/// Writes `entries` (state-dict order) to `path` atomically.
pub fn write(path: &Path, entries: &[(String, Tensor)]) -> Result<()> {
    super::write_atomically(path, |tmp| {
        write_archive(tmp, entries).map_err(|e| Error::checkpoint(tmp, e))
    })
}

/// Writes in place, without a temporary file: for callers that stage files themselves.
pub fn write_archive(path: &Path, entries: &[(String, Tensor)]) -> std::result::Result<(), String> {
    let mut storages = Vec::with_capacity(entries.len());
    let mut pickle = Pickle::default();
    pickle.global("collections", "OrderedDict");
    pickle.empty_tuple_reduce();
    if !entries.is_empty() {
        pickle.mark();
        for (index, (name, tensor)) in entries.iter().enumerate() {
            let (storage, bytes) = storage_of(name, tensor)?;
            pickle.string(name);
            pickle.tensor(storage, &index.to_string(), tensor.dims());
            storages.push(bytes);
        }
        pickle.op(b'u');
    }
    pickle.op(b'.');

    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let stored = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(storages.iter().map(Vec::len).sum::<usize>() > u32::MAX as usize / 2);
    let mut put = |name: String, bytes: &[u8]| -> std::result::Result<(), String> {
        zip.start_file(name, stored).map_err(|e| e.to_string())?;
        zip.write_all(bytes).map_err(|e| e.to_string())
    };
    put(format!("{ARCHIVE}/data.pkl"), &pickle.bytes)?;
    put(format!("{ARCHIVE}/byteorder"), b"little")?;
    for (index, bytes) in storages.iter().enumerate() {
        put(format!("{ARCHIVE}/data/{index}"), bytes)?;
    }
    put(format!("{ARCHIVE}/version"), b"3\n")?;
    zip.finish()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error().into()))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The storage class and little-endian bytes of a tensor.
fn storage_of(name: &str, tensor: &Tensor) -> std::result::Result<(&'static str, Vec<u8>), String> {
    let flat = tensor
        .flatten_all()
        .and_then(|t| t.to_device(&candle_core::Device::Cpu))
        .map_err(|e| format!("tensor `{name}`: {e}"))?;
    let fail = |e: candle_core::Error| format!("tensor `{name}`: {e}");
    match tensor.dtype() {
        DType::F32 => Ok((
            "FloatStorage",
            flat.to_vec1::<f32>()
                .map_err(fail)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        )),
        DType::I64 => Ok((
            "LongStorage",
            flat.to_vec1::<i64>()
                .map_err(fail)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        )),
        other => Err(format!(
            "tensor `{name}` has element type {other:?}; checkpoints hold float32 and int64 only"
        )),
    }
}

/// The few pickle opcodes a state dict needs.
#[derive(Default)]
struct Pickle {
    bytes: Vec<u8>,
}

impl Pickle {
    fn op(&mut self, op: u8) {
        if self.bytes.is_empty() {
            self.bytes.extend_from_slice(&[0x80, 2]); // PROTO 2
        }
        self.bytes.push(op);
    }

    fn mark(&mut self) {
        self.op(b'(');
    }

    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.bytes
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    /// `()` then REDUCE: calls the global just pushed without arguments.
    fn empty_tuple_reduce(&mut self) {
        self.op(b')');
        self.op(b'R');
    }

    fn string(&mut self, s: &str) {
        self.op(b'X');
        self.bytes
            .extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: usize) {
        match i32::try_from(v) {
            Ok(small) => {
                self.op(b'J');
                self.bytes.extend_from_slice(&small.to_le_bytes());
            }
            Err(_) => {
                self.op(0x8a); // LONG1
                self.bytes.push(8);
                self.bytes.extend_from_slice(&(v as i64).to_le_bytes());
            }
        }
    }

    fn int_tuple(&mut self, values: impl IntoIterator<Item = usize>) {
        self.mark();
        for v in values {
            self.int(v);
        }
        self.op(b't');
    }

    /// `_rebuild_tensor_v2(storage, 0, size, contiguous stride, False, OrderedDict())` with
    /// the storage as persistent id `('storage', torch.<class>, key, 'cpu', numel)`.
    fn tensor(&mut self, storage: &str, key: &str, dims: &[usize]) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.mark();
        self.mark();
        self.string("storage");
        self.global("torch", storage);
        self.string(key);
        self.string("cpu");
        self.int(dims.iter().product());
        self.op(b't');
        self.op(b'Q'); // BINPERSID
        self.int(0);
        self.int_tuple(dims.iter().copied());
        let strides = (0..dims.len()).map(|i| dims[i + 1..].iter().product::<usize>());
        self.int_tuple(strides);
        self.op(0x89); // NEWFALSE: requires_grad
        self.global("collections", "OrderedDict");
        self.empty_tuple_reduce();
        self.op(b't');
        self.op(b'R');
    }
}
