//! Shared helpers of the CLI tests: locating the fixtures and running the built binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

/// The shared fixtures folder with the files the CLI tests use, or `None` after a SKIP line (a failure with
/// `FGCLIP_REQUIRE_FIXTURES=1`).
pub fn fixtures() -> Option<PathBuf> {
    fgclip_testkit::fixture_file("fgclip2/model/config.json")?;
    fgclip_testkit::fixture_file("images/cat_dfclor.jpg")?;
    fgclip_testkit::fixtures_dir()
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
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

pub fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

pub fn png_size(p: &std::path::Path) -> (u32, u32) {
    image::image_dimensions(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
