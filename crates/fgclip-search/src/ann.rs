//! The approximate-nearest-neighbour layer of the embedded store: one HNSW graph per kind (usearch, f16
//! vectors, inner product) in a file beside the SQLite index, rebuilt from the truth and never the truth itself.
//!
//! * Built or brought up to date at the end of `fgclip index` when a kind holds at least `ANN_MIN` vectors
//!   (below that an exact scan is fast enough, and exact). Incremental: vectors the graph lacks are added, keys
//!   the store no longer has (or whose vector changed) are removed, so a few new photos do not rebuild a million.
//! * Written atomically (a temporary file, then a rename) together with a key list and a stamp of the store's
//!   generation: a search uses the graph only when the stamp matches the store, otherwise it scans (correct,
//!   slower) — a killed indexer can leave a stale graph, never a wrong answer.
//! * Opened memory-mapped (`restore_view`), so opening a large index costs no load time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{Kind, Store, VectorId};
use crate::{Error, Result};

/// Vectors below which a kind is searched by an exact scan and gets no graph.
pub const ANN_MIN: u64 = 50_000;
/// The search beam (HNSW `ef`): 64 gave recall@10 0.90 on 1M clustered 512-d vectors, 160 is chosen for ≥ 0.95
/// (SEARCH.md).
pub const EXPANSION_SEARCH: usize = 160;

/// What the graph file was built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub generation: i64,
    pub count: u64,
    pub dims: usize,
}

pub struct Ann {
    index: usearch::Index,
    pub stamp: Stamp,
}

/// `DB.images.usearch` / `DB.regions.usearch` (+ `.keys`, `.stamp.json`).
pub fn paths(db: &Path, kind: Kind) -> (PathBuf, PathBuf, PathBuf) {
    let base = db.as_os_str().to_owned();
    let with = |ext: &str| {
        let mut s = base.clone();
        s.push(format!(".{}s.{ext}", kind.name()));
        PathBuf::from(s)
    };
    (with("usearch"), with("keys"), with("stamp.json"))
}

fn uerr(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Store { db: path.display().to_string(), msg: format!("{what}: {e}") }
}

fn options(dims: usize) -> usearch::IndexOptions {
    usearch::IndexOptions {
        dimensions: dims,
        metric: usearch::MetricKind::IP,
        quantization: usearch::ScalarKind::F16,
        connectivity: 16,
        expansion_add: 128,
        expansion_search: 64,
        multi: false,
    }
}

fn as_i16(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// Brings the graph of `kind` beside `db` up to date with `store` (generation `generation`), building it if
/// needed. Returns how many vectors were added and removed.
pub fn sync(store: &dyn Store, db: &Path, kind: Kind, dims: usize, generation: i64) -> Result<(usize, usize)> {
    let (file, keys_file, stamp_file) = paths(db, kind);
    let index = usearch::Index::new(&options(dims)).map_err(|e| uerr("creating the ANN index", &file, e))?;
    let mut old_keys: Vec<u64> = Vec::new();
    if file.is_file() && keys_file.is_file() {
        if index.load(&file.to_string_lossy()).is_ok() && index.dimensions() == dims {
            let raw = std::fs::read(&keys_file).map_err(Error::io(&keys_file))?;
            old_keys = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        } else {
            index.reset().map_err(|e| uerr("resetting the ANN index", &file, e))?;
        }
    }
    let mut current: Vec<(VectorId, Vec<u8>)> = Vec::new();
    store.for_each_vector(kind, &mut |id, v| current.push((id, v.to_vec())))?;
    let live: HashSet<u64> = current.iter().map(|(id, _)| id.id as u64).collect();
    let mut removed = 0;
    for k in &old_keys {
        if !live.contains(k) && index.contains(*k) {
            index.remove(*k).map_err(|e| uerr("removing from the ANN index", &file, e))?;
            removed += 1;
        }
    }
    // Keys still present but with another vector (SQLite can reuse the highest id after a delete).
    let mut buf = vec![0i16; dims];
    let mut todo: Vec<&(VectorId, Vec<u8>)> = Vec::new();
    for item in &current {
        let key = item.0.id as u64;
        if index.contains(key) {
            let same = index.get(key, usearch::f16::from_mut_i16s(&mut buf)).is_ok() && as_i16(&item.1) == buf;
            if same {
                continue;
            }
            index.remove(key).map_err(|e| uerr("removing from the ANN index", &file, e))?;
            removed += 1;
        }
        todo.push(item);
    }
    let threads = rayon::current_num_threads().max(1);
    index
        .reserve_capacity_and_threads(index.size() + todo.len(), threads)
        .map_err(|e| uerr("reserving the ANN index", &file, e))?;
    {
        use rayon::prelude::*;
        todo.par_iter().try_for_each(|(id, v)| {
            index
                .add(id.id as u64, usearch::f16::from_i16s(&as_i16(v)))
                .map_err(|e| uerr("adding to the ANN index", &file, e))
        })?;
    }
    let tmp = file.with_extension("usearch.tmp");
    index.save(&tmp.to_string_lossy()).map_err(|e| uerr("saving the ANN index", &tmp, e))?;
    let keys: Vec<u8> = current.iter().flat_map(|(id, _)| (id.id as u64).to_le_bytes()).collect();
    // Order matters for readers: the stamp goes last, so a reader that sees a new stamp sees the new graph.
    std::fs::rename(&tmp, &file).map_err(Error::io(&file))?;
    write_atomic(&keys_file, &keys)?;
    let stamp = Stamp { generation, count: current.len() as u64, dims };
    write_atomic(&stamp_file, serde_json::to_string(&stamp).expect("stamp").as_bytes())?;
    Ok((todo.len(), removed))
}

impl Ann {
    /// Opens the graph of `kind` beside `db` memory-mapped, if there is one matching `generation`.
    pub fn open(db: &Path, kind: Kind, generation: i64) -> Option<Self> {
        let (file, _, stamp_file) = paths(db, kind);
        let stamp: Stamp = serde_json::from_slice(&std::fs::read(&stamp_file).ok()?).ok()?;
        if stamp.generation != generation {
            tracing::warn!(
                "{}: the ANN index is older than the store; searching by a full scan (run fgclip index)",
                file.display()
            );
            return None;
        }
        let index = usearch::Index::restore_view(&file.to_string_lossy()).ok()?;
        if index.dimensions() != stamp.dims {
            return None;
        }
        Some(Self { index, stamp })
    }

    /// The `n` best keys by inner product (`expansion`: the search beam, at least `n`).
    pub fn search(&self, q: &[f32], n: usize, expansion: usize) -> Result<Vec<(f32, u64)>> {
        self.index.change_expansion_search(expansion.max(n));
        let m = self.index.search(q, n).map_err(|e| Error::Store { db: "ANN index".into(), msg: e.to_string() })?;
        // Scores are recomputed from the graph's own copy of each vector (the store's f16 bytes, unchanged) with
        // the exact scan's arithmetic, so near-ties rank as in the exact scan; usearch's inner product differs in
        // the last bits. Falls back to usearch's distance (1 − ⟨q, v⟩) if a vector cannot be read.
        let dims = self.index.dimensions();
        let mut buf = vec![0i16; dims];
        Ok(m.keys
            .iter()
            .zip(&m.distances)
            .map(|(k, d)| {
                let exact = self.index.get(*k, usearch::f16::from_mut_i16s(&mut buf)).ok().and_then(|_| {
                    let bytes: Vec<u8> = buf.iter().flat_map(|x| x.to_le_bytes()).collect();
                    crate::vectors::dot_f16(q, &bytes)
                });
                (exact.unwrap_or(1.0 - d), *k)
            })
            .collect())
    }

    pub fn len(&self) -> usize {
        self.index.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
