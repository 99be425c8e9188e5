//! `fgclip synth` then `fgclip eval-fgovd` end to end with the built binary on the tiny random fixture models.
//! The models are random, so this pins the contract (files, counts, JSON fields, errors), not the accuracy.

use crate::common;
use common::*;
use std::path::PathBuf;

/// A fresh folder under cargo's per-target temp dir.
fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli_synth_eval_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn lines_of(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().filter(|l| !l.trim().is_empty()).map(String::from).collect()
}

#[test]
fn synth_then_eval_fgovd_on_both_families() {
    let out = scratch("both");
    let o =
        fgclip(&["synth", "--out", &s(&out), "--train", "3", "--test", "3", "--size", "64", "--seed", "4", "--json"]);
    let j = ok_json(&o);
    assert_eq!((j["train_images"].as_u64(), j["test_images"].as_u64()), (Some(3), Some(3)));
    let fgovd = out.join("test_fgovd.jsonl");
    let n_lines = lines_of(&fgovd).len();
    assert_eq!(j["test_boxes"].as_u64(), Some(n_lines as u64));
    assert!((6..=12).contains(&n_lines), "3 images of 2-4 objects, got {n_lines} lines");
    for f in ["train.json", "test.json", "synth.json", "images/train_000002.png", "images/test_000002.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(png_size(&out.join("images/test_000000.png")), (64, 64));
    let train: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap();
    assert_eq!(train.as_array().unwrap().len(), 3);

    // A second run into the same folder needs --overwrite, and then gives the same files (same seed).
    let before = std::fs::read(out.join("train.json")).unwrap();
    let o = fgclip(&["synth", "--out", &s(&out), "--train", "3", "--test", "3", "--size", "64", "--seed", "4"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    let o = fgclip(&[
        "synth",
        "--out",
        &s(&out),
        "--train",
        "3",
        "--test",
        "3",
        "--size",
        "64",
        "--seed",
        "4",
        "--overwrite",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(out.join("train.json")).unwrap() == before, "same seed, different train.json");

    let Some(f) = fixtures() else { return };
    for (which, family, walk) in [("fgclip_v1", "FG-CLIP", "short"), ("fgclip2", "FG-CLIP 2", "box")] {
        let model = s(&f.join(which).join("model"));
        let outcomes = out.join(format!("{which}_outcomes.jsonl"));
        let o = fgclip(&[
            "eval-fgovd",
            "-m",
            &model,
            "--data",
            &s(&fgovd),
            "--images",
            &s(&out.join("images")),
            "--batch-size",
            "2",
            "--outcomes",
            &s(&outcomes),
            "--json",
        ]);
        let r = ok_json(&o);
        assert_eq!(r["family"], family);
        assert_eq!(r["walk"], walk);
        let (correct, total) = (r["correct"].as_u64().unwrap(), r["total"].as_u64().unwrap());
        assert_eq!(total, n_lines as u64);
        assert!(correct <= total);
        assert!((r["accuracy"].as_f64().unwrap() - correct as f64 / total as f64).abs() < 1e-12);
        assert_eq!(r["by_type"]["synthetic_attributes"]["total"].as_u64(), Some(total));
        assert_eq!(r["skipped"].as_array().map(|a| a.len()), Some(0));
        // One outcome per line with 11 scores, naming its line; the verdicts add up to `correct`.
        let outs = lines_of(&outcomes);
        assert_eq!(outs.len(), n_lines);
        let mut n_ok = 0;
        for (i, l) in outs.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["scores"].as_array().unwrap().len(), 11);
            assert_eq!(v["location"], format!("{}:{}", fgovd.display(), i + 1));
            n_ok += v["correct"].as_bool().unwrap() as u64;
        }
        assert_eq!(n_ok, correct);
    }
    // Human output: a table with the test type and the total.
    let o = fgclip(&[
        "eval-fgovd",
        "-m",
        &s(&f.join("fgclip2/model")),
        "--data",
        &s(&fgovd),
        "--images",
        &s(&out.join("images")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("synthetic_attributes") && text.contains("all"), "{text}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn eval_fgovd_names_a_bad_line_or_skips_it() {
    let Some(f) = fixtures() else { return };
    let out = scratch("bad");
    let o = fgclip(&["synth", "--out", &s(&out), "--train", "0", "--test", "2", "--size", "64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut lines = lines_of(&out.join("test_fgovd.jsonl"));
    let mut v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    v["img_path"] = serde_json::json!("gone.png");
    lines[1] = v.to_string();
    let bad = out.join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let model = s(&f.join("fgclip_v1/model"));
    let args = ["eval-fgovd", "-m", &model, "--data", &s(&bad), "--images", &s(&out.join("images")), "--json"];
    let o = fgclip(&args);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&format!("{}:2", bad.display())) && e.contains("gone.png"), "{e}");
    let mut skip = args.to_vec();
    skip.push("--skip-bad");
    let r = ok_json(&fgclip(&skip));
    assert_eq!(r["total"].as_u64(), Some(lines.len() as u64 - 1));
    assert_eq!(r["skipped"][0]["location"], format!("{}:2", bad.display()));
    // A malformed line fails before the model loads, naming the line and field.
    std::fs::write(&bad, format!("{}\n{{\"img_path\": \"x.png\"}}\n", lines[0])).unwrap();
    let o = fgclip(&args);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&format!("{}:2", bad.display())) && e.contains("bbox"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}
