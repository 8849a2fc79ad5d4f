//! The official `opt.txt` (and the JSON config of a converted file): parsing and bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spade_model::Config;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(config) = Config::parse_opt_txt(text) {
        // A config that parses is one the model can be sized from without overflow.
        let (h, w) = config.output_size();
        assert!(h <= 1 << 16 && w <= 1 << 16);
        let _ = config.semantic_nc();
    }
    if let Ok(config) = Config::from_json_str(text) {
        let (h, w) = config.output_size();
        assert!(h <= 1 << 16 && w <= 1 << 16);
    }
});
