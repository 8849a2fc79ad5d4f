//! NumPy's `.npy` arrays (little-endian float32 / float64, C order) and the `.npz` archives
//! pytorch-fid writes statistics into (`np.savez_compressed`, also read uncompressed). Every
//! size is checked against the bytes that are really there before anything is allocated.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A float array from a `.npy`: its shape and values widened to float64.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// Parses a whole `.npy` held in memory; `what` names it in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<Array> {
    ensure!(
        bytes.starts_with(MAGIC) && bytes.len() >= 10,
        "{what}: not a .npy array"
    );
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "{what}: truncated .npy header");
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        v => bail!("{what}: .npy format version {v} is not known"),
    };
    let header = bytes
        .get(start..start + header_len)
        .with_context(|| format!("{what}: truncated .npy header"))?;
    let header = std::str::from_utf8(header).with_context(|| format!("{what}: .npy header"))?;
    let field = |key: &str| -> Result<&str> {
        let at = header
            .find(&format!("'{key}'"))
            .with_context(|| format!("{what}: .npy header has no `{key}`: {header}"))?;
        let rest = header[at + key.len() + 2..].trim_start();
        Ok(rest.strip_prefix(':').unwrap_or(rest).trim_start())
    };
    let descr = field("descr")?;
    let width = if descr.starts_with("'<f8'") {
        8
    } else if descr.starts_with("'<f4'") {
        4
    } else {
        bail!(
            "{what}: element type {} (expected little-endian float32 or float64)",
            &descr[..descr.find(',').unwrap_or(descr.len())]
        );
    };
    ensure!(
        field("fortran_order")?.starts_with("False"),
        "{what}: Fortran-ordered arrays are not read; save it with C order"
    );
    let shape_text = field("shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .with_context(|| format!("{what}: unreadable shape in {header}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("{what}: unreadable shape `({inner})`"))?;
    let data = &bytes[start + header_len..];
    // Checked before anything is allocated: the values come from the bytes that are there.
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n.checked_mul(width) == Some(data.len()))
        .with_context(|| {
            format!(
                "{what}: shape {shape:?} of {width}-byte floats does not match the {} data bytes",
                data.len()
            )
        })?;
    let values = if width == 8 {
        data.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    } else {
        data.chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
            .collect()
    };
    Ok(Array { shape, values })
}

/// A float32 (`"<f4"`) or float64 (`"<f8"`) array as `.npy` bytes (format 1.0).
fn encode(shape: &[usize], descr: &str, data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // The data starts on a 64-byte boundary, as NumPy writes it.
    while !(MAGIC.len() + 4 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode(shape, "<f4", &data)
}

pub fn encode_f64(shape: &[usize], values: &[f64]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode(shape, "<f8", &data)
}

/// Reads the named arrays of an `.npz`, each at most `max_bytes` uncompressed.
pub fn read_npz(path: &Path, names: &[&str], max_bytes: u64) -> Result<Vec<Array>> {
    let what = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {what}"))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{what}: not an .npz (zip) archive"))?;
    names
        .iter()
        .map(|name| {
            let entry_name = format!("{name}.npy");
            let entry = archive
                .by_name(&entry_name)
                .with_context(|| format!("{what}: no array `{name}`"))?;
            ensure!(
                entry.size() <= max_bytes,
                "{what}: array `{name}` is {} bytes, over the limit of {max_bytes}",
                entry.size()
            );
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry
                .take(max_bytes + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("{what}: cannot read array `{name}`"))?;
            ensure!(
                bytes.len() as u64 <= max_bytes,
                "{what}: array `{name}` is over {max_bytes} bytes"
            );
            parse(&bytes, &format!("{what}: array `{name}`"))
        })
        .collect()
}

/// Writes `.npy` members (name, bytes) into an `.npz`.
pub fn write_npz(path: &Path, members: &[(&str, Vec<u8>)]) -> Result<()> {
    let what = path.display();
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {what}"))?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, bytes) in members {
        zip.start_file(format!("{name}.npy"), options)?;
        zip.write_all(bytes)
            .with_context(|| format!("cannot write {what}"))?;
    }
    zip.finish()
        .with_context(|| format!("cannot write {what}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_round_trip() {
        let values = [1.5, -2.0, 3.25, 0.0, 1e-300, 7.0];
        let parsed = parse(&encode_f64(&[2, 3], &values), "x").unwrap();
        assert_eq!(parsed.shape, [2, 3]);
        assert_eq!(parsed.values, values);
        let parsed = parse(&encode_f32(&[4], &[1.0, 2.0, 3.0, 4.5]), "x").unwrap();
        assert_eq!(
            (parsed.shape, parsed.values),
            (vec![4], vec![1.0, 2.0, 3.0, 4.5])
        );
    }

    #[test]
    fn a_shape_larger_than_the_data_is_refused_before_allocating() {
        let bytes = encode(&[9_999_999_999_999], "<f8", &[0u8; 16]);
        let err = parse(&bytes, "x").unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        let err = parse(b"\x93NUMPY\x01\x00\xff\xff{'descr'", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn other_element_types_are_named() {
        let mut bytes = encode_f32(&[1], &[1.0]);
        let pos = bytes.windows(3).position(|w| w == b"<f4").unwrap();
        bytes[pos + 1] = b'i';
        let err = parse(&bytes, "x").unwrap_err().to_string();
        assert!(err.contains("'<i4'"), "{err}");
    }
}
