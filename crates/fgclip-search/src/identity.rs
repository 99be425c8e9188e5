//! Which model made an index: where it came from (a Hub repo id or an absolute folder) and a fingerprint of what
//! decides its vectors (config, weights, tokenizer and preprocessor files). Searching or adding to an index
//! with another model would compare vectors of different spaces, so it is refused.

use std::path::{Path, PathBuf};

use fgclip::hub::ModelFiles;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// What to pass to `--model` to load it again: a Hub repo id, or the folder as an absolute path.
    pub source: String,
    /// BLAKE3 (hex) over the config, weights, tokenizer and preprocessor files, in a fixed order.
    pub fingerprint: String,
    /// The files hashed, with their size and mtime: when none changed, the fingerprint is reused without
    /// reading gigabytes of weights again.
    pub files: Vec<FileStamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileStamp {
    fn of(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(Error::io(path))?;
        Ok(Self { path: path.to_path_buf(), size: meta.len(), mtime_ns: crate::scan::mtime_ns(&meta) })
    }
}

fn hashed_files(files: &ModelFiles) -> Vec<PathBuf> {
    let mut v = vec![files.config.clone()];
    v.extend(files.weights.iter().cloned());
    v.extend(
        [
            &files.tokenizer_json,
            &files.tokenizer_config,
            &files.vocab_json,
            &files.merges_txt,
            &files.preprocessor_config,
        ]
        .into_iter()
        .flatten()
        .cloned(),
    );
    v
}

/// `source` as given to `--model`: a folder becomes absolute so the index can find it from anywhere.
pub fn canonical_source(source: &str) -> String {
    let p = Path::new(source);
    if p.is_dir() {
        if let Ok(abs) = std::fs::canonicalize(p) {
            return abs.display().to_string();
        }
    }
    source.to_string()
}

/// The identity of the model in `files`; `cached` is reused when every file still has its size and mtime.
pub fn identify(source: &str, files: &ModelFiles, cached: Option<&ModelIdentity>) -> Result<ModelIdentity> {
    let stamps = hashed_files(files).iter().map(|p| FileStamp::of(p)).collect::<Result<Vec<_>>>()?;
    if let Some(c) = cached {
        if c.files == stamps {
            return Ok(ModelIdentity { source: canonical_source(source), ..c.clone() });
        }
    }
    let mut hasher = blake3::Hasher::new();
    for s in &stamps {
        // Names are not hashed (a copied folder is the same model); lengths separate the files.
        hasher.update(&s.size.to_le_bytes());
        let f = std::fs::File::open(&s.path).map_err(Error::io(&s.path))?;
        hasher.update_reader(f).map_err(Error::io(&s.path))?;
    }
    Ok(ModelIdentity {
        source: canonical_source(source),
        fingerprint: hasher.finalize().to_hex().to_string(),
        files: stamps,
    })
}
