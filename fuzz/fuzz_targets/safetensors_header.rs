//! A safetensors file (header + data) opened by `Weights::from_safetensors` (memory-mapped), then every name's
//! shape and a few small tensors loaded: errors, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device};
use fgclip::checkpoint::Weights;
use libfuzzer_sys::fuzz_target;

/// Tensors loaded per input at most, and their size limit (elements).
const MAX_LOADS: usize = 4;
const MAX_ELEMS: usize = 1 << 16;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        dir.join(format!("fgclip-fuzz-st-{}.safetensors", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    std::fs::write(p, data).expect("write the scratch file");
    let Ok(w) = Weights::from_safetensors(&[p.clone()], DType::F32, &Device::Cpu) else { return };
    let _ = w.storage_dtypes();
    let mut loads = 0;
    for name in w.names() {
        let shape = w.shape_of(&name).expect("a listed name has a shape");
        let elems = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if loads < MAX_LOADS && elems.is_some_and(|n| n <= MAX_ELEMS) {
            loads += 1;
            if let Ok(t) = w.get_unchecked(&name) {
                assert_eq!(t.dims(), shape.as_slice(), "loaded shape vs header shape");
                assert_eq!(t.dtype(), DType::F32);
            }
        }
    }
});
