//! The images of a folder as pytorch-fid reads them: `*.EXT` for its nine extensions, lower
//! case only (the glob is case sensitive on Linux), not recursive, dot files included,
//! sorted in plain string order (`a_10.png` before `a_2.png`); each decoded and converted as
//! Pillow's `convert('RGB')` does (grey copied to three channels, alpha dropped).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use spade_model::io::preprocess::{decode_photo, DecodeLimits};

use super::resize::network_input;

/// pytorch-fid's `IMAGE_EXTENSIONS`.
pub const EXTENSIONS: [&str; 9] = [
    "bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp",
];

/// Largest image file read (far above any photo a FID set holds).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// The files pytorch-fid would read from `dir`, in its order.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        let listed = name.to_str().is_some_and(|name| {
            EXTENSIONS.iter().any(|ext| {
                name.strip_suffix(ext)
                    .is_some_and(|stem| stem.ends_with('.'))
            })
        });
        if listed && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    if files.is_empty() {
        bail!(
            "{}: no images (pytorch-fid reads *.{} in lower case)",
            dir.display(),
            EXTENSIONS.join(", *.")
        );
    }
    Ok(files)
}

/// One image file as the network's input (`3 x 299 x 299`, in `[-1, 1]`).
pub fn read_input(path: &Path) -> Result<Vec<f32>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!(
            "{}: {size} bytes, over the limit of {MAX_FILE_BYTES} for one image",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let what = path.display().to_string();
    // JPEGs through libjpeg-turbo, as Pillow decodes them: other decoders round the inverse
    // DCT and chroma upsampling differently, which moves pool3 features by 5e-2.
    let rgb = decode_photo(&bytes, &what, &DecodeLimits::default())?;
    Ok(network_input(&rgb.data, rgb.width, rgb.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_follows_pytorch_fid() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a_2.png",
            "a_10.png",
            "B.png",
            "x.PNG",
            "c.jpeg",
            ".hidden.png",
            "notes.txt",
            "b_3.png",
            "b_3.jpg",
            "png",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("folder.png")).unwrap();
        let names: Vec<String> = list(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                ".hidden.png",
                "B.png",
                "a_10.png",
                "a_2.png",
                "b_3.jpg",
                "b_3.png",
                "c.jpeg"
            ]
        );
    }

    #[test]
    fn an_empty_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = list(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no images"), "{err}");
    }
}
