//! Where an index lives. The truth is one transactional store: SQLite by default (one file, no server), or
//! PostgreSQL + pgvector to share one index between machines. Both sit behind [`Store`]; the indexer and the
//! searcher only speak this trait. Every [`Store::apply`] is one transaction: an image, its regions and its
//! file facts appear together or not at all, so killing an indexer never leaves half an image behind.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::identity::ModelIdentity;
use crate::regions::RegionConfig;
use crate::scan::FoundFile;
use crate::Result;

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

/// Opens the store `db` names: `postgres://…` / `postgresql://…` for PostgreSQL, anything else is an SQLite file.
/// `write` takes the writer's lock (SQLite) and creates the tables.
pub fn open(db: &str, write: bool) -> Result<Box<dyn Store>> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Box::new(postgres::PgStore::connect(db, write)?));
        #[cfg(not(feature = "postgres"))]
        return Err(crate::Error::input(format!(
            "{db}: this build has no PostgreSQL support (build fgclip-search with the `postgres` feature)"
        )));
    }
    let path = std::path::Path::new(db);
    Ok(if write {
        Box::new(sqlite::SqliteStore::open_for_write(path)?)
    } else {
        Box::new(sqlite::SqliteStore::open_for_read(path)?)
    })
}

/// The version of the index layout this build writes; it reads this one and refuses newer ones.
pub const SCHEMA_VERSION: u32 = 1;

/// What an index was made with, stored in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexInfo {
    pub schema_version: u32,
    pub model: ModelIdentity,
    /// `fgclip` or `fgclip2`.
    pub family: String,
    pub embed_dim: usize,
    /// The text walk whole-image queries are encoded with.
    pub image_walk: String,
    /// The text walk region queries are encoded with (the family's region walk).
    pub region_walk: String,
    pub precision: String,
    pub regions: RegionConfig,
    /// Vector encoding of every stored embedding.
    pub encoding: String,
    /// EXIF orientation applied before encoding (boxes refer to the upright picture).
    pub exif_orientation: bool,
    /// Large JPEGs decoded at a reduced size (libjpeg's scaled IDCT, at least twice the tower's input on each
    /// side) instead of in full; absent in indexes made before the option existed, which decoded in full.
    #[serde(default)]
    pub reduced_decode: bool,
}

/// One indexed file as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRow {
    pub id: i64,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: [u8; 32],
}

/// The vectors of one image: its global embedding and its region candidates (unit vectors, f16 bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Vectors {
    pub width: u32,
    pub height: u32,
    pub image: Vec<u8>,
    /// `[x1, y1, x2, y2]` in the (upright) image's pixels, and the vector.
    pub regions: Vec<([f32; 4], Vec<u8>)>,
}

/// One change to the index.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A new file.
    Add { file: FoundFile, hash: [u8; 32], vectors: Vectors },
    /// A known path whose content changed.
    Replace { id: i64, file: FoundFile, hash: [u8; 32], vectors: Vectors },
    /// A known content found under a new path (its old path is gone): keeps its vectors.
    Move { id: i64, file: FoundFile },
    /// A known path touched without a content change (new mtime only).
    Touch { id: i64, file: FoundFile },
    /// A new path with the content of an indexed file: the vectors are copied, not computed.
    Copy { file: FoundFile, hash: [u8; 32] },
    /// A file that is gone.
    Remove { id: i64 },
}

/// Whole images or region candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Image,
    Region,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Region => "region",
        }
    }
}

/// A vector's row: its own id (image or region) and its image's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VectorId {
    pub id: i64,
    pub image_id: i64,
}

/// What a search hit refers to.
#[derive(Clone, Debug, PartialEq)]
pub struct HitRow {
    pub id: i64,
    pub image_id: i64,
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub bbox: Option<[f32; 4]>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub images: u64,
    pub regions: u64,
    /// Bytes of stored vectors (image and region embeddings).
    pub vector_bytes: u64,
}

pub trait Store: Send {
    /// For messages: `PATH` or `postgres://host/db`.
    fn describe(&self) -> String;
    /// What the index was made with (`None`: an empty store).
    fn info(&self) -> Result<Option<IndexInfo>>;
    /// Writes `info`; with `clear`, every image and region goes in the same transaction (`--reindex`).
    fn set_info(&mut self, info: &IndexInfo, clear: bool) -> Result<()>;
    /// Every indexed file.
    fn files(&self) -> Result<Vec<FileRow>>;
    /// Applies `changes` in one transaction.
    fn apply(&mut self, changes: &[Change]) -> Result<()>;
    fn stats(&self) -> Result<Stats>;
    /// Calls `f` with every stored vector of `kind` (f16 bytes).
    fn for_each_vector(&self, kind: Kind, f: &mut dyn FnMut(VectorId, &[u8])) -> Result<()>;
    /// The store's own nearest-neighbour search by inner product, where it has one (pgvector): the best `k`
    /// vectors with at most `per_image` per image (regions). `None` means "scan with `for_each_vector`".
    fn nearest(
        &self,
        _kind: Kind,
        _query: &[f32],
        _k: usize,
        _per_image: usize,
    ) -> Result<Option<Vec<(f32, VectorId)>>> {
        Ok(None)
    }
    /// Called at the end of an indexing run: the embedded store brings its ANN graphs up to date.
    fn after_index(&self) -> Result<()> {
        Ok(())
    }
    /// The paths and boxes of hits, in the order of `ids` (ids no longer present are left out).
    fn hits(&self, kind: Kind, ids: &[i64]) -> Result<Vec<HitRow>>;
}

/// The file a change is about, for error messages.
pub(crate) fn change_path(c: &Change) -> String {
    match c {
        Change::Add { file, .. }
        | Change::Replace { file, .. }
        | Change::Move { file, .. }
        | Change::Touch { file, .. }
        | Change::Copy { file, .. } => file.path.display().to_string(),
        Change::Remove { id } => format!("image #{id}"),
    }
}

/// A path as the stores keep it: its raw bytes on Unix, so names that are not UTF-8 survive.
#[cfg(unix)]
pub(crate) fn path_bytes(p: &std::path::Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(unix)]
pub(crate) fn bytes_path(b: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

#[cfg(not(unix))]
pub(crate) fn path_bytes(p: &std::path::Path) -> Vec<u8> {
    p.to_string_lossy().into_owned().into_bytes()
}

#[cfg(not(unix))]
pub(crate) fn bytes_path(b: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&b).into_owned())
}

/// A stored content hash (all zeros when the column does not hold 32 bytes).
pub(crate) fn hash_from(v: &[u8]) -> [u8; 32] {
    let mut h = [0u8; 32];
    if v.len() == 32 {
        h.copy_from_slice(v);
    }
    h
}

/// The best `k` of `candidates` from a store's own nearest-neighbour search: best score first, equal scores
/// (copies of one photo) in id order as the exact scan ranks them, and at most `per_image` regions per image.
pub(crate) fn best_per_image(
    mut candidates: Vec<(f32, VectorId)>,
    kind: Kind,
    k: usize,
    per_image: usize,
) -> Vec<(f32, VectorId)> {
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    let mut per: std::collections::HashMap<i64, usize> = Default::default();
    let mut out = Vec::new();
    for (score, id) in candidates {
        let c = per.entry(id.image_id).or_default();
        if kind == Kind::Region && *c >= per_image.max(1) {
            continue;
        }
        *c += 1;
        out.push((score, id));
        if out.len() >= k {
            break;
        }
    }
    out
}
