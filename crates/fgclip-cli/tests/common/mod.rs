//! Shared helpers of the CLI tests: locating the fixtures and running the built binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

/// The shared fixtures folder (`FGCLIP_FIXTURES` overrides); `None` (and a SKIP line) when absent.
pub fn fixtures() -> Option<PathBuf> {
    let p = std::env::var_os("FGCLIP_FIXTURES")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures")));
    if p.join("fgclip2/model/config.json").is_file() && p.join("images/cat_dfclor.jpg").is_file() {
        Some(p)
    } else {
        eprintln!("SKIP: fixtures not found at {} (set FGCLIP_FIXTURES)", p.display());
        None
    }
}

/// Runs the `fgclip` binary (never from an inherited `FGCLIP_MODEL`).
pub fn fgclip(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fgclip"))
        .args(args)
        .env_remove("FGCLIP_MODEL")
        .output()
        .expect("running the fgclip binary")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and parses stdout as JSON.
pub fn ok_json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "exit {:?}\nstderr: {}", o.status, stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

pub fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

pub fn png_size(p: &std::path::Path) -> (u32, u32) {
    image::image_dimensions(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
