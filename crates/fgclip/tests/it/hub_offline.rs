//! `hub::resolve("owner/name[@rev]")` with `HF_HUB_OFFLINE=1`: only the local HF cache is used
//! (`$HF_HOME/hub/models--owner--name/{refs,snapshots}`), and what is not cached is listed in the error.
//!
//! Environment variables are process-global: this binary holds its own, and every test takes `ENV_LOCK`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fgclip::hub;

static ENV_LOCK: Mutex<()> = Mutex::new(());

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A fake `HF_HOME` with one cached snapshot of `org/name` at `COMMIT` holding `files`, `refs/main` → COMMIT.
fn fake_home(files: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--org--name");
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    // Like huggingface_hub: content in blobs/, snapshot entries are symlinks to them.
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    for f in files {
        let blob = repo.join("blobs").join(format!("blob-{}", f.replace('/', "_")));
        std::fs::write(&blob, format!("{{\"file\": \"{f}\"}}")).unwrap();
        let link = snap.join(f);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, &link).unwrap();
    }
    (home, snap)
}

fn with_env<T>(home: &Path, f: impl FnOnce() -> T) -> T {
    let _g = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    std::env::set_var("HF_HOME", home);
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::remove_var("HF_HUB_CACHE");
    // Must never be contacted while offline.
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    f()
}

#[test]
fn cached_snapshot_resolves() {
    let (home, snap) = fake_home(&[
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ]);
    let files = with_env(home.path(), || hub::resolve("org/name")).unwrap();
    assert_eq!(files.root, snap);
    assert_eq!(files.config, snap.join("config.json"));
    assert_eq!(files.weights, vec![snap.join("model.safetensors")]);
    assert_eq!(files.tokenizer_json, Some(snap.join("tokenizer.json")));
    assert_eq!(files.tokenizer_config, Some(snap.join("tokenizer_config.json")));
    assert_eq!(files.preprocessor_config, Some(snap.join("preprocessor_config.json")));
    assert_eq!(files.vocab_json, None);
    assert_eq!(files.merges_txt, None);
    assert_eq!(files.special_tokens_map, None);
    // The paths are readable (symlinks into blobs/).
    assert!(std::fs::read_to_string(&files.config).unwrap().contains("config.json"));
}

#[test]
fn revisions_by_ref_and_by_commit() {
    let (home, snap) = fake_home(&["config.json", "model.safetensors"]);
    // A commit hash has no refs/ entry: the snapshot folder itself is looked up.
    let files = with_env(home.path(), || hub::resolve(&format!("org/name@{COMMIT}"))).unwrap();
    assert_eq!(files.root, snap);
    // A branch name goes through refs/<branch>.
    let refs = home.path().join("hub/models--org--name/refs");
    std::fs::write(refs.join("dev"), format!("{COMMIT}\n")).unwrap();
    let files = with_env(home.path(), || hub::resolve("org/name@dev")).unwrap();
    assert_eq!(files.root, snap);
    // An unknown revision.
    let msg = with_env(home.path(), || hub::resolve("org/name@nope")).unwrap_err().to_string();
    assert!(msg.contains("HF_HUB_OFFLINE") && msg.contains("nope"), "{msg}");
}

#[test]
fn sharded_snapshot_and_missing_files_listed() {
    let (home, snap) = fake_home(&["config.json", "model-00001-of-00002.safetensors"]);
    let index = serde_json::json!({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}});
    std::fs::write(snap.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let err = with_env(home.path(), || hub::resolve("org/name")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, fgclip::Error::Hub { .. }), "{msg}");
    assert!(msg.contains("org/name") && msg.contains("model-00002-of-00002.safetensors"), "{msg}");
    assert!(!msg.contains("model-00001"), "{msg}");

    std::fs::write(snap.join("model-00002-of-00002.safetensors"), b"x").unwrap();
    let files = with_env(home.path(), || hub::resolve("org/name")).unwrap();
    assert_eq!(
        files.weights,
        vec![snap.join("model-00001-of-00002.safetensors"), snap.join("model-00002-of-00002.safetensors")]
    );

    // Neither config nor weights: both listed.
    let (home, _) = fake_home(&["tokenizer.json"]);
    let msg = with_env(home.path(), || hub::resolve("org/name")).unwrap_err().to_string();
    assert!(msg.contains("config.json") && msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn repo_not_in_cache() {
    let (home, _) = fake_home(&["config.json", "model.safetensors"]);
    let err = with_env(home.path(), || hub::resolve("qihoo360/fg-clip2-base")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, fgclip::Error::Hub { .. }), "{msg}");
    assert!(msg.contains("qihoo360/fg-clip2-base") && msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains(&home.path().display().to_string()), "{msg}");
}

#[test]
fn hf_hub_cache_overrides_hf_home() {
    let (home, snap) = fake_home(&["config.json", "model.safetensors"]);
    let elsewhere = tempfile::tempdir().unwrap();
    let files = with_env(elsewhere.path(), || {
        std::env::set_var("HF_HUB_CACHE", home.path().join("hub"));
        let r = hub::resolve("org/name");
        std::env::remove_var("HF_HUB_CACHE");
        r
    })
    .unwrap();
    assert_eq!(files.root, snap);
}
