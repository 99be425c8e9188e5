//! `config.json` parsing (`ModelConfig::from_json_str`): Ok or Err, never a panic.
#![no_main]

use std::path::Path;

use fgclip::config::ModelConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = ModelConfig::from_json_str(text, Path::new("fuzz/config.json")) {
        let _ = cfg.family();
    }
});
