//! Locating a checkpoint's files: a local folder, or a Hugging Face Hub repo (`owner/name[@revision]`).
//!
//! Mirrors what `from_pretrained(model)` does for the official FG-CLIP / FG-CLIP 2 checkpoints
//! (`AutoModelForCausalLM` + `AutoTokenizer` + `AutoImageProcessor` in the official README): `config.json`, the
//! safetensors weights (single file, or `model.safetensors.index.json` + shards), and whichever tokenizer /
//! preprocessor files the repo ships. Downloads go through `hf-hub` (sync `ureq` API) into the standard HF cache, so
//! files already fetched by Python's `huggingface_hub` are reused and vice versa.
//!
//! Environment (same names as `huggingface_hub`): `HF_HOME` (cache root, `$HF_HOME/hub`), `HF_HUB_CACHE` (cache
//! folder itself, wins over `HF_HOME`), `HF_ENDPOINT` (mirror), `HF_TOKEN` (else `$HF_HOME/token`),
//! `HF_HUB_OFFLINE=1` (no network: only the local cache is consulted).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::{Error, Result};

/// `config.json` (model configuration, required).
pub const CONFIG_FILE: &str = "config.json";
/// Single-file safetensors weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Index of sharded safetensors weights (`weight_map`: tensor name → shard file).
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const VOCAB_JSON: &str = "vocab.json";
pub const MERGES_TXT: &str = "merges.txt";
pub const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";
pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";

/// Where a checkpoint's files are on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The folder holding `config.json` (for a Hub model: the cache snapshot folder).
    pub root: PathBuf,
    pub config: PathBuf,
    /// `model.safetensors`, or the shards named by `model.safetensors.index.json` (deduplicated, sorted by name).
    pub weights: Vec<PathBuf>,
    pub tokenizer_json: Option<PathBuf>,
    pub tokenizer_config: Option<PathBuf>,
    pub vocab_json: Option<PathBuf>,
    pub merges_txt: Option<PathBuf>,
    pub preprocessor_config: Option<PathBuf>,
    pub special_tokens_map: Option<PathBuf>,
}

impl ModelFiles {
    /// The tokenizer and processor files present beside the weights (what a saved copy of the model carries).
    pub fn side_files(&self) -> Vec<PathBuf> {
        [
            &self.tokenizer_json,
            &self.tokenizer_config,
            &self.vocab_json,
            &self.merges_txt,
            &self.special_tokens_map,
            &self.preprocessor_config,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// The files of a local checkpoint folder (what `save_pretrained` writes).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::File { path: dir.to_path_buf(), msg: "model folder does not exist".into() });
        }
        let config = dir.join(CONFIG_FILE);
        if !config.is_file() {
            return Err(Error::File {
                path: config,
                msg: format!("missing: model folder {} has no {CONFIG_FILE}", dir.display()),
            });
        }
        let weights = local_weights(dir)?;
        let opt = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        Ok(ModelFiles {
            root: dir.to_path_buf(),
            config,
            weights,
            tokenizer_json: opt(TOKENIZER_JSON),
            tokenizer_config: opt(TOKENIZER_CONFIG),
            vocab_json: opt(VOCAB_JSON),
            merges_txt: opt(MERGES_TXT),
            preprocessor_config: opt(PREPROCESSOR_CONFIG),
            special_tokens_map: opt(SPECIAL_TOKENS_MAP),
        })
    }

    fn with_optional(
        root: PathBuf,
        config: PathBuf,
        weights: Vec<PathBuf>,
        mut opt: impl FnMut(&str) -> Result<Option<PathBuf>>,
    ) -> Result<Self> {
        Ok(ModelFiles {
            root,
            config,
            weights,
            tokenizer_json: opt(TOKENIZER_JSON)?,
            tokenizer_config: opt(TOKENIZER_CONFIG)?,
            vocab_json: opt(VOCAB_JSON)?,
            merges_txt: opt(MERGES_TXT)?,
            preprocessor_config: opt(PREPROCESSOR_CONFIG)?,
            special_tokens_map: opt(SPECIAL_TOKENS_MAP)?,
        })
    }
}

/// What a `model` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// An existing local folder.
    Local(PathBuf),
    /// A Hub model repo, e.g. `qihoo360/fg-clip2-base`, with an optional revision (branch, tag or commit).
    Hub { repo_id: String, revision: Option<String> },
}

impl ModelSource {
    /// An existing folder wins; otherwise `owner/name` or `owner/name@revision` is a Hub repo id.
    pub fn parse(model: &str) -> Result<Self> {
        let path = Path::new(model);
        if path.is_dir() {
            return Ok(ModelSource::Local(path.to_path_buf()));
        }
        if path.is_file() {
            return Err(Error::File {
                path: path.to_path_buf(),
                msg: format!("is a file; pass the model folder that holds {CONFIG_FILE} and the weights"),
            });
        }
        let (id, revision) = match model.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (model, None),
        };
        if is_repo_id(id) && revision.is_none_or(is_revision) {
            return Ok(ModelSource::Hub { repo_id: id.to_string(), revision: revision.map(str::to_string) });
        }
        const EXPECTED: &str = "expected `owner/name` or `owner/name@revision`, e.g. `qihoo360/fg-clip2-base`";
        Err(Error::Hub {
            model: model.to_string(),
            msg: format!("no such local folder, and not a Hugging Face repo id ({EXPECTED})"),
        })
    }
}

/// Find (or download) a checkpoint: `model` is a local folder or a Hub repo id (`owner/name[@revision]`).
pub fn resolve(model: &str) -> Result<ModelFiles> {
    match ModelSource::parse(model)? {
        ModelSource::Local(dir) => ModelFiles::from_dir(dir),
        ModelSource::Hub { repo_id, revision } => {
            let repo = match &revision {
                Some(rev) => Repo::with_revision(repo_id, RepoType::Model, rev.clone()),
                None => Repo::new(repo_id, RepoType::Model),
            };
            if offline() {
                resolve_cached(model, &hub_cache(), &repo)
            } else {
                resolve_online(model, repo)
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------ local folders

fn local_weights(dir: &Path) -> Result<Vec<PathBuf>> {
    // Same preference as transformers: the single file first, then the sharded index.
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if index.is_file() {
        let shards = read_index(&index)?;
        let missing: Vec<&str> = shards.iter().map(String::as_str).filter(|s| !dir.join(s).is_file()).collect();
        if !missing.is_empty() {
            return Err(Error::File {
                path: index,
                msg: format!("shard file(s) missing from model folder {}: {}", dir.display(), missing.join(", ")),
            });
        }
        return Ok(shards.iter().map(|s| dir.join(s)).collect());
    }
    let mut msg = format!(
        "no weights in model folder {}: expected {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} (+ shards)",
        dir.display()
    );
    if dir.join("pytorch_model.bin").is_file() || dir.join("pytorch_model.bin.index.json").is_file() {
        msg.push_str("; found PyTorch pickle weights (pytorch_model.bin), convert them to safetensors first");
    }
    Err(Error::File { path: single, msg })
}

/// Shard file names of a `model.safetensors.index.json`: the values of `weight_map`, deduplicated and sorted
/// (HF names shards `model-00001-of-0000N.safetensors`, so name order is shard order).
pub fn read_index(index: &Path) -> Result<Vec<String>> {
    let err = |msg: String| Error::File { path: index.to_path_buf(), msg };
    let text = std::fs::read_to_string(index).map_err(|e| err(format!("cannot read: {e}")))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| err("no `weight_map` object".into()))?;
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| err(format!("weight_map[{tensor:?}] is not a file name")))?;
        // Shards live next to the index; refuse anything that would escape the model folder.
        let p = Path::new(file);
        if file.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(err(format!("weight_map[{tensor:?}] = {file:?} is not a relative file name")));
        }
        shards.insert(file.to_string());
    }
    if shards.is_empty() {
        return Err(err("`weight_map` is empty".into()));
    }
    Ok(shards.into_iter().collect())
}

// ------------------------------------------------------------------------------------------------ Hub

/// `owner/name`: one slash, HF's allowed characters.
fn is_repo_id(id: &str) -> bool {
    let ok_part = |s: &str| {
        !s.is_empty()
            && s.len() <= 96
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.starts_with(['.', '-'])
            && !s.contains("..")
    };
    match id.split_once('/') {
        Some((owner, name)) => ok_part(owner) && ok_part(name),
        None => false,
    }
}

fn is_revision(rev: &str) -> bool {
    !rev.is_empty() && !rev.contains("..") && !rev.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

/// `HF_HUB_OFFLINE` as `huggingface_hub` reads it (1/ON/YES/TRUE).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| truthy(&v))
}

/// The HF cache: `HF_HUB_CACHE` if set, else `hf_hub::Cache::from_env()` (`$HF_HOME/hub` or
/// `~/.cache/huggingface/hub`).
fn hub_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(p) if !p.is_empty() => Cache::new(PathBuf::from(p)),
        _ => Cache::from_env(),
    }
}

/// Offline: find the snapshot in the cache (`models--owner--name/refs/<rev>` → commit, or `snapshots/<rev>`
/// when the revision is itself a commit) and list what is there; error lists every required file that is not.
fn resolve_cached(model: &str, cache: &Cache, repo: &Repo) -> Result<ModelFiles> {
    let repo_dir = cache.path().join(repo.folder_name());
    let rev = repo.revision();
    let ref_file = repo_dir.join("refs").join(rev);
    let commit = match std::fs::read_to_string(&ref_file) {
        Ok(c) => c.trim().to_string(),
        Err(_) if repo_dir.join("snapshots").join(rev).is_dir() => rev.to_string(),
        Err(_) => {
            return Err(Error::Hub {
                model: model.to_string(),
                msg: format!(
                    "HF_HUB_OFFLINE is set and revision `{rev}` is not in the local cache {} (no {} and no snapshot \
                     {rev}); download it once with network access or pass a local folder",
                    cache.path().display(),
                    ref_file.display()
                ),
            })
        }
    };
    let snap = repo_dir.join("snapshots").join(&commit);
    let mut missing: Vec<String> = Vec::new();
    let config = snap.join(CONFIG_FILE);
    if !config.is_file() {
        missing.push(CONFIG_FILE.into());
    }
    let mut weights = Vec::new();
    if snap.join(WEIGHTS_FILE).is_file() {
        weights.push(snap.join(WEIGHTS_FILE));
    } else if snap.join(WEIGHTS_INDEX_FILE).is_file() {
        for shard in read_index(&snap.join(WEIGHTS_INDEX_FILE))? {
            let p = snap.join(&shard);
            if p.is_file() {
                weights.push(p);
            } else {
                missing.push(shard);
            }
        }
    } else {
        missing.push(format!("{WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} + shards)"));
    }
    if !missing.is_empty() {
        return Err(Error::Hub {
            model: model.to_string(),
            msg: format!(
                "HF_HUB_OFFLINE is set and these files are not cached in {}: {}",
                snap.display(),
                missing.join(", ")
            ),
        });
    }
    ModelFiles::with_optional(snap.clone(), config, weights, |name| Ok(Some(snap.join(name)).filter(|p| p.is_file())))
}

/// Online: cached files are reused, missing ones downloaded. When the Hub cannot be reached at all (no network),
/// fall back to the cached snapshot like `huggingface_hub` does, and fail only if that is incomplete too.
fn resolve_online(model: &str, repo: Repo) -> Result<ModelFiles> {
    let hub_err = |msg: String| Error::Hub { model: model.to_string(), msg };
    let mut builder = ApiBuilder::from_env();
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        builder = builder.with_cache_dir(PathBuf::from(p));
    }
    if let Ok(token) = std::env::var("HF_TOKEN") {
        if !token.trim().is_empty() {
            builder = builder.with_token(Some(token.trim().to_string()));
        }
    }
    // hf-hub draws its own per-file progress bar (indicatif, hidden when stderr is not a terminal).
    let api = builder.with_progress(true).build().map_err(|e| hub_err(format!("cannot set up the Hub client: {e}")))?;
    let fetcher = Fetcher { api_repo: api.repo(repo.clone()), model, unreachable: Cell::new(false) };
    match download_all(&fetcher) {
        Ok(files) => Ok(files),
        Err(err) if fetcher.unreachable.get() => match resolve_cached(model, &hub_cache(), &repo) {
            Ok(files) => {
                tracing::warn!(
                    model,
                    "Hugging Face Hub unreachable ({err}); using the cached snapshot {}",
                    files.root.display()
                );
                Ok(files)
            }
            Err(_) => Err(err),
        },
        Err(err) => Err(err),
    }
}

fn download_all(f: &Fetcher) -> Result<ModelFiles> {
    let hub_err = |msg: String| Error::Hub { model: f.model.to_string(), msg };
    let config = f
        .fetch(CONFIG_FILE)?
        .ok_or_else(|| hub_err(format!("{CONFIG_FILE} not found in the repo (is this a model repo?)")))?;
    let weights = match f.fetch(WEIGHTS_FILE)? {
        Some(p) => vec![p],
        None => {
            let index = f.fetch(WEIGHTS_INDEX_FILE)?.ok_or_else(|| {
                hub_err(format!("the repo has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE} (safetensors weights)"))
            })?;
            let mut shards = Vec::new();
            for shard in read_index(&index)? {
                shards.push(f.fetch(&shard)?.ok_or_else(|| {
                    hub_err(format!("shard {shard} named by {WEIGHTS_INDEX_FILE} is not in the repo"))
                })?);
            }
            shards
        }
    };
    let root = config.parent().map(Path::to_path_buf).unwrap_or_default();
    ModelFiles::with_optional(root, config, weights, |name| f.fetch(name))
}

struct Fetcher<'a> {
    api_repo: ApiRepo,
    model: &'a str,
    /// Set when a request got no answer at all (DNS, connection, TLS).
    unreachable: Cell<bool>,
}

impl Fetcher<'_> {
    /// Cached path or download; `Ok(None)` when the Hub answers 404 (file not in the repo).
    fn fetch(&self, file: &str) -> Result<Option<PathBuf>> {
        let model = self.model;
        tracing::debug!(model, file, "hub: fetching");
        match self.api_repo.get(file) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                let (kind, msg) = describe(e);
                if kind == Failure::Status(404) {
                    tracing::debug!(model, file, "hub: not in the repo");
                    return Ok(None);
                }
                let hint = match kind {
                    Failure::Status(401) | Failure::Status(403) => {
                        " (repo missing, private or gated: check the name, or set HF_TOKEN)"
                    }
                    Failure::Transport => {
                        self.unreachable.set(true);
                        " (no network, and no complete cached copy: set HF_HUB_OFFLINE=1 to use the local cache, \
                         HF_ENDPOINT for a mirror, or pass a local folder)"
                    }
                    _ => "",
                };
                Err(Error::Hub { model: model.to_string(), msg: format!("downloading {file}: {msg}{hint}") })
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The server answered with this HTTP status.
    Status(u16),
    /// No answer (DNS, connection, TLS).
    Transport,
    /// Anything else (I/O in the cache, malformed headers, lock).
    Other,
}

/// Classify a hf-hub error without naming ureq's types (ureq is not a direct dependency).
fn describe(e: ApiError) -> (Failure, String) {
    match e {
        ApiError::RequestError(req) => {
            let msg = req.to_string();
            match (*req).into_response() {
                Some(resp) => (Failure::Status(resp.status()), msg),
                None => (Failure::Transport, msg),
            }
        }
        other => (Failure::Other, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repo_ids() {
        assert_eq!(
            ModelSource::parse("qihoo360/fg-clip2-base").unwrap(),
            ModelSource::Hub { repo_id: "qihoo360/fg-clip2-base".into(), revision: None }
        );
        assert_eq!(
            ModelSource::parse("qihoo360/fg-clip-large@refs/pr/1").unwrap(),
            ModelSource::Hub { repo_id: "qihoo360/fg-clip-large".into(), revision: Some("refs/pr/1".into()) }
        );
        for bad in ["fg-clip-base", "a/b/c", "/no/such/dir", "./x", "../x/y", "a/b@", "a/b@x y", "", "a/.."] {
            assert!(ModelSource::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn offline_flag_values() {
        for v in ["1", "true", "ON", "yes"] {
            assert!(truthy(v));
        }
        for v in ["0", "", "false", "no"] {
            assert!(!truthy(v));
        }
    }
}
