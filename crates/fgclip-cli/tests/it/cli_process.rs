//! How the binary behaves as a Unix process, whatever the command.

use crate::common;
use common::*;

/// Regression: `fgclip … | head` used to panic with "failed printing to stdout: Broken pipe".
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let Some(fx) = fixtures() else { return };
    let model = fx.join("fgclip_v1/model");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fgclip"))
        .args(["info", "-m", model.to_str().unwrap(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
