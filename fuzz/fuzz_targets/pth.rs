//! PyTorch `.pth` state dicts, legacy and zip: the pickle, the archive, the storages, and
//! the size bounds checked before anything is read.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use spade_model::io::checkpoint::pth;

fuzz_target!(|bytes: &[u8]| {
    // The reader takes a path (it maps zip entries); a file per input, in a private folder.
    let mut file = tempfile::NamedTempFile::new().expect("temporary file");
    file.write_all(bytes).expect("write the input");
    file.flush().expect("flush the input");
    if let Ok(tensors) = pth::read(file.path()) {
        // What was read is bounded by the file: 16x its size plus 1 MiB.
        let total: usize = tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        assert!(total as u64 <= 16 * bytes.len() as u64 + (1 << 20));
    }
});
