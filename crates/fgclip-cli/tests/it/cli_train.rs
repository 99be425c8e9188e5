//! `fgclip train` end to end with the built binary: synthetic data and a tiny model from scratch (no fixtures or
//! downloads needed), the written model used by `fgclip features`, resume by re-running with more epochs, and a
//! bad setting named in the error.

use crate::common;
use common::*;
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli_train_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn train_from_scratch_then_features_then_resume() {
    let root = scratch("scratch");
    let data = root.join("data");
    let o = fgclip(&["synth", "--out", &s(&data), "--train", "12", "--test", "2", "--size", "64", "--seed", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = root.join("run");
    let q = |p: &std::path::Path| format!("\"{}\"", p.display());
    let sets = |epochs: usize| -> Vec<String> {
        [
            format!("model.config={}", q(&data.join("tiny-model/config.json"))),
            format!("model.tokenizer={}", q(&data.join("tiny-model"))),
            format!("data.train=[{}]", q(&data.join("train.json"))),
            format!("data.image_root={}", q(&data.join("images"))),
            "train.batch_size=4".into(),
            format!("train.epochs={epochs}"),
            "train.lr=1e-3".into(),
            format!("output.dir={}", q(&run)),
            "output.save_every=1".into(),
        ]
        .into_iter()
        .flat_map(|s| ["--set".to_string(), s])
        .collect()
    };
    let train = |epochs: usize| {
        let mut args = vec!["train".to_string(), "--quiet".into(), "--json".into()];
        args.extend(sets(epochs));
        fgclip(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let j = ok_json(&train(1));
    assert_eq!(j["steps"], 3, "{j}");
    assert!(j["resumed_from"].is_null(), "{j}");
    let last = &j["last"];
    assert!(last["loss"].as_f64().is_some_and(f64::is_finite), "{j}");
    for d in ["final", "checkpoint-1", "checkpoint-3"] {
        assert!(run.join(d).join("model.safetensors").is_file(), "{d} missing");
    }
    assert_eq!(std::fs::read_to_string(run.join("log.jsonl")).unwrap().lines().count(), 3);

    // The written model is an ordinary checkpoint for the inference commands.
    let feats = root.join("f.safetensors");
    let o = fgclip(&[
        "features",
        "-m",
        &s(&run.join("final")),
        "--image",
        &s(&data.join("images/test_000000.png")),
        "--text",
        "small red striped circle",
        "--out",
        &s(&feats),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = candle_core::safetensors::load(&feats, &candle_core::Device::Cpu).unwrap();
    assert!(t.values().all(|v| v.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|x| x.is_finite())));
    assert!(t.len() >= 2, "image and text features expected, got {:?}", t.keys().collect::<Vec<_>>());

    // Re-running with more epochs resumes from the last checkpoint and continues the step count.
    let j = ok_json(&train(2));
    assert_eq!(j["steps"], 6, "{j}");
    assert!(j["resumed_from"].as_str().is_some_and(|p| p.ends_with("checkpoint-3")), "{j}");
    assert_eq!(std::fs::read_to_string(run.join("log.jsonl")).unwrap().lines().count(), 6);

    // A bad setting is named.
    let mut args = vec!["train".to_string(), "--quiet".into()];
    args.extend(sets(1));
    args.extend(["--set".into(), "train.preset=\"stage3\"".into()]);
    let o = fgclip(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("train.preset"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&root);
}
