//! Shared helpers for integration tests: locating the parity fixtures (`/work/shared/fixtures` layout, see its
//! README). Tests skip (print a message and return) when the fixtures are absent; they never fail for that.

#![allow(dead_code)]

use std::path::PathBuf;

/// The fixtures folder: `$FGCLIP_FIXTURES` if set, else `../shared/fixtures` relative to the workspace root.
/// `None` (with a message on stderr) when it does not exist.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("FGCLIP_FIXTURES") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    };
    if dir.is_dir() {
        Some(dir.canonicalize().unwrap_or(dir))
    } else {
        eprintln!("SKIP: fixtures folder {} not found (set FGCLIP_FIXTURES)", dir.display());
        None
    }
}

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

/// Every tensor of a fixture safetensors file, on the CPU.
pub fn load_tensors(path: &std::path::Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Max |a − b| over all elements (shapes must match).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Asserts `max |got − want| ≤ tol` and no NaN, printing the measured error.
#[track_caller]
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let d = max_abs_diff(got, want);
    eprintln!("{what}: max abs diff {d:.3e} (tol {tol:.0e})");
    assert!(d.is_finite() && d <= tol, "{what}: max abs diff {d} > {tol}");
}

/// L2-normalise rows (last dim), as the official `x / x.norm(dim=-1, keepdim=True)`.
pub fn l2n(x: &Tensor) -> Tensor {
    fgclip::nn::l2_normalize(x).unwrap()
}
