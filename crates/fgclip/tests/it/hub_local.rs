//! `hub::resolve` on local folders: single-file and sharded safetensors, optional files, and the errors that name
//! the folder and the missing file.

use crate::common;
use std::path::Path;

use fgclip::hub::{self, ModelFiles, ModelSource};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn write_shard(path: &Path, names: &[&str]) {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors: Vec<(String, TensorView)> =
        names.iter().map(|n| (n.to_string(), TensorView::new(Dtype::F32, vec![2, 2], &data).unwrap())).collect();
    safetensors::serialize_to_file(tensors, None, path).unwrap();
}

/// A sharded checkpoint folder: config.json, two shards written in reverse order, an index that names the second
/// shard first and each shard several times.
fn sharded_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("config.json"), r#"{"model_type": "fgclip2"}"#).unwrap();
    write_shard(&d.join("model-00002-of-00002.safetensors"), &["b.weight", "c.weight"]);
    write_shard(&d.join("model-00001-of-00002.safetensors"), &["a.weight", "a.bias"]);
    let index = serde_json::json!({
        "metadata": {"total_size": 64},
        "weight_map": {
            "c.weight": "model-00002-of-00002.safetensors",
            "a.weight": "model-00001-of-00002.safetensors",
            "b.weight": "model-00002-of-00002.safetensors",
            "a.bias": "model-00001-of-00002.safetensors"
        }
    });
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    dir
}

#[test]
fn fixture_folder_resolves_with_all_files() {
    let Some(fx) = common::fixtures_dir() else { return };
    let dir = fx.join("fgclip_v1/model");
    let files = hub::resolve(dir.to_str().unwrap()).unwrap();
    assert_eq!(files.root, dir);
    assert_eq!(files.config, dir.join("config.json"));
    assert_eq!(files.weights, vec![dir.join("model.safetensors")]);
    assert_eq!(files.tokenizer_json, Some(dir.join("tokenizer.json")));
    assert_eq!(files.tokenizer_config, Some(dir.join("tokenizer_config.json")));
    assert_eq!(files.vocab_json, Some(dir.join("vocab.json")));
    assert_eq!(files.merges_txt, Some(dir.join("merges.txt")));
    assert_eq!(files.preprocessor_config, Some(dir.join("preprocessor_config.json")));
    assert_eq!(files.special_tokens_map, None);

    let dir2 = fx.join("fgclip2/model");
    let files2 = hub::resolve(dir2.to_str().unwrap()).unwrap();
    assert_eq!(files2.vocab_json, None);
    assert_eq!(files2.merges_txt, None);
    assert!(files2.tokenizer_json.is_some());
}

#[test]
fn sharded_index_is_deduplicated_and_ordered() {
    let dir = sharded_folder();
    let d = dir.path();
    let files = hub::resolve(d.to_str().unwrap()).unwrap();
    assert_eq!(
        files.weights,
        vec![d.join("model-00001-of-00002.safetensors"), d.join("model-00002-of-00002.safetensors")]
    );
    assert_eq!(files.tokenizer_json, None);
    // The shards are real safetensors files.
    for w in &files.weights {
        let bytes = std::fs::read(w).unwrap();
        assert_eq!(safetensors::SafeTensors::deserialize(&bytes).unwrap().len(), 2);
    }
    // A single-file checkpoint next to an index wins (transformers' preference).
    write_shard(&d.join("model.safetensors"), &["a.weight"]);
    assert_eq!(ModelFiles::from_dir(d).unwrap().weights, vec![d.join("model.safetensors")]);
}

#[test]
fn missing_shard_is_named() {
    let dir = sharded_folder();
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let msg = ModelFiles::from_dir(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("model-00002-of-00002.safetensors"), "{msg}");
    assert!(!msg.contains("model-00001-of-00002.safetensors"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn bad_index_files_are_errors() {
    let dir = sharded_folder();
    let index = dir.path().join("model.safetensors.index.json");
    for (body, needle) in [
        (r#"{"metadata": {}}"#, "weight_map"),
        (r#"{"weight_map": {}}"#, "empty"),
        (r#"{"weight_map": {"a": 3}}"#, "not a file name"),
        (r#"{"weight_map": {"a": "../escape.safetensors"}}"#, "relative"),
        (r#"{"weight_map": {"a": "/abs.safetensors"}}"#, "relative"),
        ("not json", "JSON"),
    ] {
        std::fs::write(&index, body).unwrap();
        let msg = ModelFiles::from_dir(dir.path()).unwrap_err().to_string();
        assert!(msg.contains(needle) && msg.contains("model.safetensors.index.json"), "{body}: {msg}");
    }
}

#[test]
fn missing_config_and_weights_name_folder_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let folder = d.display().to_string();

    let err = hub::resolve(d.to_str().unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, fgclip::Error::File { .. }), "{msg}");
    assert!(msg.contains("config.json") && msg.contains(&folder), "{msg}");

    std::fs::write(d.join("config.json"), "{}").unwrap();
    let msg = hub::resolve(d.to_str().unwrap()).unwrap_err().to_string();
    assert!(msg.contains("model.safetensors") && msg.contains("model.safetensors.index.json"), "{msg}");
    assert!(msg.contains(&folder), "{msg}");

    std::fs::write(d.join("pytorch_model.bin"), b"pickle").unwrap();
    let msg = hub::resolve(d.to_str().unwrap()).unwrap_err().to_string();
    assert!(msg.contains("pytorch_model.bin"), "{msg}");
}

#[test]
fn model_argument_parsing() {
    let dir = sharded_folder();
    let d = dir.path().to_str().unwrap();
    assert_eq!(ModelSource::parse(d).unwrap(), ModelSource::Local(dir.path().to_path_buf()));
    // A file is not a model folder.
    let cfg = dir.path().join("config.json");
    let msg = hub::resolve(cfg.to_str().unwrap()).unwrap_err().to_string();
    assert!(msg.contains("is a file"), "{msg}");
    // A path that does not exist and is not a repo id.
    let missing = dir.path().join("no/such/model");
    let err = hub::resolve(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, fgclip::Error::Hub { .. }), "{err}");
    assert!(err.to_string().contains("no such local folder"), "{err}");
    for id in [
        "qihoo360/fg-clip-base",
        "qihoo360/fg-clip-large",
        "qihoo360/fg-clip2-base",
        "qihoo360/fg-clip2-large",
        "qihoo360/fg-clip2-so400m",
    ] {
        assert_eq!(ModelSource::parse(id).unwrap(), ModelSource::Hub { repo_id: id.into(), revision: None });
    }
    assert_eq!(
        ModelSource::parse("qihoo360/fg-clip2-base@v1.0").unwrap(),
        ModelSource::Hub { repo_id: "qihoo360/fg-clip2-base".into(), revision: Some("v1.0".into()) }
    );
}
