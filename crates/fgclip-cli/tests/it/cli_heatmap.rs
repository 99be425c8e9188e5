//! `fgclip heatmap` end to end: the built binary on the tiny random fixture checkpoints and fixture photos.
//! Pins the grid shape, cosine statistics, the written PNG's size, the walk defaults and the errors.

use crate::common;
use common::*;
use std::path::PathBuf;

fn check_stats(j: &serde_json::Value) -> (u64, u64) {
    let (rows, cols) = (j["grid"][0].as_u64().unwrap(), j["grid"][1].as_u64().unwrap());
    let (lo, hi, mean) = (j["min"].as_f64().unwrap(), j["max"].as_f64().unwrap(), j["mean"].as_f64().unwrap());
    assert!(-1.0001 <= lo && lo <= mean && mean <= hi && hi <= 1.0001, "{j}");
    let p = &j["peak"];
    assert!(p["row"].as_u64().unwrap() < rows && p["col"].as_u64().unwrap() < cols, "{j}");
    assert!((p["cosine"].as_f64().unwrap() - hi).abs() < 1e-6, "{j}");
    (rows, cols)
}

#[test]
fn fgclip2_heatmap_json_and_png() {
    let Some(f) = fixtures() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_heatmap_v2");
    let out = dir.join("sub/heat.png");
    let _ = std::fs::remove_file(&out);
    let model = s(&f.join("fgclip2/model"));
    let cat = s(&f.join("images/cat_dfclor.jpg"));
    let o = fgclip(&["heatmap", "-m", &model, &cat, "--query", "a white cat", "--out", &s(&out), "--json"]);
    let j = ok_json(&o);
    assert_eq!(j["walk"], "box");
    let (rows, cols) = check_stats(&j);
    assert!(rows * cols <= 1024 && rows > 1 && cols > rows, "{j}"); // 640x480 is landscape
    assert_eq!(png_size(&out), (640, 480));

    // A fixed budget bounds the grid; the short walk can be chosen; other aspect ratio keeps its size.
    let out2 = dir.join("heat2.png");
    let cups = s(&f.join("images/df_cups.png"));
    let o = fgclip(&[
        "heatmap",
        "-m",
        &model,
        &cups,
        "-q",
        "a glass",
        "-o",
        &s(&out2),
        "--max-patches",
        "256",
        "--walk",
        "short",
        "--alpha",
        "0.8",
        "--json",
    ]);
    let j = ok_json(&o);
    assert_eq!(j["walk"], "short");
    let (rows, cols) = check_stats(&j);
    assert!(rows * cols <= 256, "{j}");
    assert_eq!(png_size(&out2), (1024, 500));
}

#[test]
fn fgclip_heatmap_human_output() {
    let Some(f) = fixtures() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_heatmap_v1");
    let out = dir.join("heat.png");
    let o = fgclip(&[
        "heatmap",
        "-m",
        &s(&f.join("fgclip_v1/model")),
        &s(&f.join("images/part.jpg")),
        "--query",
        "a cat",
        "--out",
        &s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("grid 7x7") && text.contains("min") && text.contains("max") && text.contains("text walk short"),
        "{text}"
    );
    assert_eq!(png_size(&out), (640, 480));

    let o = fgclip(&[
        "heatmap",
        "-m",
        &s(&f.join("fgclip_v1/model")),
        &s(&f.join("images/part.jpg")),
        "-q",
        "a cat",
        "-o",
        &s(&out),
        "--json",
    ]);
    let j = ok_json(&o);
    assert_eq!(j["grid"], serde_json::json!([7, 7]));
    check_stats(&j);
}

#[test]
fn heatmap_errors_name_the_problem() {
    let Some(f) = fixtures() else { return };
    let model = s(&f.join("fgclip2/model"));
    let cat = s(&f.join("images/cat_dfclor.jpg"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_heatmap_err/heat.png");
    let out = s(&out);

    let o = fgclip(&["heatmap", "-m", &model, &cat, "-q", "cat", "-o", &out, "--alpha", "1.5"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--alpha"), "{}", stderr(&o));

    let o = fgclip(&["heatmap", "-m", &model, &cat, "-q", "cat", "-o", &out, "--walk", "diagonal"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--walk"), "{}", stderr(&o));

    let o = fgclip(&["heatmap", "-m", &model, &cat, "-q", "  ", "-o", &out]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--query"), "{}", stderr(&o));

    let o = fgclip(&["heatmap", "-m", &model, "/nonexistent/cat.jpg", "-q", "cat", "-o", &out]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/cat.jpg"), "{}", stderr(&o));

    let o = fgclip(&["heatmap", "-m", &model, &cat, "-q", "cat", "-o", &out, "--max-patches", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--max-patches"), "{}", stderr(&o));

    let o = fgclip(&["heatmap", "-m", &model, &cat, "-q", "cat", "-o", "heat.notanimage"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--out heat.notanimage"), "{}", stderr(&o));

    let o = fgclip(&["heatmap", "-m", &model, &cat, "-q", "cat", "-o", "/proc/forbidden/heat.png"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/proc/forbidden"), "{}", stderr(&o));
}
