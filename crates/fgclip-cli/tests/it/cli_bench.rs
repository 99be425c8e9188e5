//! `fgclip bench`: what it rejects, named, before building a model (the timed runs themselves are real-size and
//! belong to `bench/run.sh`, not to CI).

use crate::common;
use common::*;

#[test]
fn bench_lists_the_training_workload() {
    let out = fgclip(&["bench", "--list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().any(|l| l == "train-fgclip-base"), "{list}");
}

#[test]
fn bench_names_bad_arguments() {
    for (args, needle) in [
        (vec!["bench", "--workload", "nope"], "unknown --workload"),
        (vec!["bench", "--workload", "fgclip-base-image", "--batch", "0"], "at least 1"),
        (vec!["bench", "--workload", "train-fgclip-base", "--batch", "1"], "--batch ≥ 2"),
        (vec!["bench", "--workload", "train-fgclip-base", "--batch", "4", "--dtype", "bf16"], "run in f32"),
    ] {
        let out = fgclip(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = stderr(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
