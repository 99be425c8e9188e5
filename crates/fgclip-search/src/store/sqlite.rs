//! The embedded store: one SQLite file in WAL mode (readers never wait for the indexer, and a killed writer
//! leaves the last committed transaction intact), `synchronous=NORMAL` (durable against a killed process; a
//! power cut may lose the last transactions but never corrupts the file). A lock file beside it keeps a second
//! indexer out while searches go on.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{
    best_per_image, bytes_path, change_path, hash_from, path_bytes, Change, FileRow, HitRow, IndexInfo, Kind, Stats,
    Store, VectorId, Vectors, SCHEMA_VERSION,
};
use crate::ann::{self, Ann};
use crate::scan::FoundFile;
use crate::{Error, Result};

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Held while writing: the OS releases it when the process dies, however it dies.
    _lock: Option<File>,
    /// The ANN graphs (images, regions) when they match the store (readers only).
    ann: [Option<Ann>; 2],
    /// Vectors from which a kind gets an ANN graph (writers).
    ann_min: u64,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Image => 0,
        Kind::Region => 1,
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash BLOB NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_hash ON images(hash);
CREATE TABLE IF NOT EXISTS regions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS regions_image ON regions(image_id);
";

impl SqliteStore {
    /// Opens (creating if needed) an index for writing, holding its lock file.
    pub fn open_for_write(path: &Path) -> Result<Self> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(Error::Store {
                db: path.display().to_string(),
                msg: format!("the folder {} does not exist (create it first)", dir.display()),
            });
        }
        let lock_path = lock_path(path);
        let lock =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| {
                Error::Store {
                    db: path.display().to_string(),
                    msg: format!("cannot create the lock file {} ({e}); is the folder writable?", lock_path.display()),
                }
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Busy { db: path.display().to_string(), lock: lock_path.display().to_string() })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Store { db: path.display().to_string(), msg: format!("cannot lock: {e}") })
            }
        }
        let conn = Connection::open(path).map_err(|e| store_err(path, e))?;
        let mut s =
            Self { conn, path: path.to_path_buf(), _lock: Some(lock), ann: [None, None], ann_min: ann::ANN_MIN };
        s.setup(true)?;
        Ok(s)
    }

    /// Opens an existing index for searching (works while an indexer writes to it).
    pub fn open_for_read(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Store {
                db: path.display().to_string(),
                msg: "no index here (run `fgclip index DIR --db PATH` first)".into(),
            });
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .or_else(|_| Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY))
                .map_err(|e| store_err(path, e))?;
        let mut s = Self { conn, path: path.to_path_buf(), _lock: None, ann: [None, None], ann_min: ann::ANN_MIN };
        s.setup(false)?;
        let generation = s.generation()?;
        s.ann = [Ann::open(path, Kind::Image, generation), Ann::open(path, Kind::Region, generation)];
        Ok(s)
    }

    fn setup(&mut self, write: bool) -> Result<()> {
        let p = self.path.clone();
        let e = |e: rusqlite::Error| store_err(&p, e);
        self.conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(e)?;
        // A file that is not SQLite fails here with a clear message instead of later.
        let found: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .optional()
            .or_else(|err| match &err {
                rusqlite::Error::SqliteFailure(_, Some(m)) if m.contains("no such table") => Ok(None),
                _ => Err(err),
            })
            .map_err(e)?;
        if let Some(v) = found {
            let v: u32 = v
                .parse()
                .map_err(|_| Error::Store { db: p.display().to_string(), msg: format!("bad schema_version {v:?}") })?;
            if v > SCHEMA_VERSION {
                return Err(Error::Mismatch {
                    db: p.display().to_string(),
                    msg: format!(
                        "made by a newer fgclip (index schema {v}; this build reads up to {SCHEMA_VERSION}); upgrade fgclip"
                    ),
                });
            }
        } else if !write {
            return Err(Error::Store {
                db: p.display().to_string(),
                msg: "not an fgclip index (no schema version)".into(),
            });
        }
        if write {
            self.conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
            self.conn.execute_batch(SCHEMA).map_err(e)?;
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL").map_err(e)?;
        self.conn.pragma_update(None, "foreign_keys", "ON").map_err(e)?;
        Ok(())
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        store_err(&self.path, e)
    }

    /// Counts committed changes: every [`Store::apply`] and every reset moves it on, so an ANN graph stamped
    /// with an older generation is known to be stale.
    pub fn generation(&self) -> Result<i64> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Builds or updates the ANN graph of each kind holding at least `min` vectors (see [`crate::ann`]).
    pub fn sync_ann(&self, min: u64) -> Result<()> {
        let info = self.info()?.ok_or_else(|| Error::Store { db: self.describe(), msg: "empty index".into() })?;
        let stats = self.stats()?;
        let generation = self.generation()?;
        for (kind, n) in [(Kind::Image, stats.images), (Kind::Region, stats.regions)] {
            let has_graph = ann::paths(&self.path, kind).0.is_file();
            if n >= min || has_graph {
                let (added, removed) = ann::sync(self, &self.path, kind, info.embed_dim, generation)?;
                tracing::info!("{}: ANN graph of {}s: {added} added, {removed} removed", self.describe(), kind.name());
            }
        }
        Ok(())
    }

    /// Vectors from which an indexing run builds a kind's ANN graph (default [`ann::ANN_MIN`]).
    pub fn set_ann_min(&mut self, n: u64) {
        self.ann_min = n;
    }

    /// Whether searches of `kind` go through an ANN graph.
    pub fn uses_ann(&self, kind: Kind) -> bool {
        self.ann[slot(kind)].is_some()
    }
}

const BUMP_GENERATION: &str = "INSERT INTO meta (key, value) VALUES ('generation', '1') \
     ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)";

pub fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn store_err(path: &Path, e: rusqlite::Error) -> Error {
    let mut msg = e.to_string();
    if msg.contains("unable to open") || msg.contains("readonly") {
        msg.push_str(" (is the file or its folder read-only or missing?)");
    }
    if msg.contains("file is not a database") {
        msg = "not an fgclip index (not an SQLite file)".into();
    }
    Error::Store { db: path.display().to_string(), msg }
}

fn insert_vectors(tx: &rusqlite::Transaction, image_id: i64, v: &Vectors) -> rusqlite::Result<()> {
    let mut st =
        tx.prepare_cached("INSERT INTO regions (image_id, x1, y1, x2, y2, embedding) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for (b, e) in &v.regions {
        st.execute(params![image_id, b[0], b[1], b[2], b[3], e])?;
    }
    Ok(())
}

fn upsert_image(tx: &rusqlite::Transaction, file: &FoundFile, hash: &[u8; 32], v: &Vectors) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO images (path, size, mtime_ns, hash, width, height, embedding) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![path_bytes(&file.path), file.size as i64, file.mtime_ns, &hash[..], v.width, v.height, v.image],
    )?;
    let id = tx.last_insert_rowid();
    insert_vectors(tx, id, v)?;
    Ok(id)
}

impl Store for SqliteStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn info(&self) -> Result<Option<IndexInfo>> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'info'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        match v {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| Error::Store { db: self.describe(), msg: format!("unreadable index info: {e}") }),
        }
    }

    fn set_info(&mut self, info: &IndexInfo, clear: bool) -> Result<()> {
        let json = serde_json::to_string(info).expect("IndexInfo serialises");
        let p = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| store_err(&p, e))?;
        let run = || -> rusqlite::Result<()> {
            if clear {
                tx.execute("DELETE FROM regions", [])?;
                tx.execute("DELETE FROM images", [])?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![SCHEMA_VERSION.to_string()],
            )?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('info', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![json],
            )?;
            tx.execute(BUMP_GENERATION, [])?;
            Ok(())
        };
        run().map_err(|e| store_err(&p, e))?;
        tx.commit().map_err(|e| store_err(&p, e))
    }

    fn files(&self) -> Result<Vec<FileRow>> {
        let mut st = self.conn.prepare("SELECT id, path, size, mtime_ns, hash FROM images").map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(FileRow {
                    id: r.get(0)?,
                    path: bytes_path(r.get(1)?),
                    size: r.get::<_, i64>(2)? as u64,
                    mtime_ns: r.get(3)?,
                    hash: hash_from(&r.get::<_, Vec<u8>>(4)?),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    fn apply(&mut self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let p = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| store_err(&p, e))?;
        for c in changes {
            let r: rusqlite::Result<()> = (|| {
                match c {
                    Change::Add { file, hash, vectors } => {
                        upsert_image(&tx, file, hash, vectors)?;
                    }
                    Change::Replace { id, file, hash, vectors } => {
                        tx.execute("DELETE FROM images WHERE id = ?1", params![id])?;
                        upsert_image(&tx, file, hash, vectors)?;
                    }
                    Change::Move { id, file } | Change::Touch { id, file } => {
                        tx.execute(
                            "UPDATE images SET path = ?2, size = ?3, mtime_ns = ?4 WHERE id = ?1",
                            params![id, path_bytes(&file.path), file.size as i64, file.mtime_ns],
                        )?;
                    }
                    Change::Copy { file, hash } => {
                        let src: Option<(i64, u32, u32, Vec<u8>)> = tx
                            .query_row(
                                "SELECT id, width, height, embedding FROM images WHERE hash = ?1 LIMIT 1",
                                params![&hash[..]],
                                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                            )
                            .optional()?;
                        let Some((src, width, height, image)) = src else {
                            return Err(rusqlite::Error::QueryReturnedNoRows);
                        };
                        let regions = {
                            let mut st = tx.prepare_cached(
                                "SELECT x1, y1, x2, y2, embedding FROM regions WHERE image_id = ?1 ORDER BY id",
                            )?;
                            let rows = st.query_map(params![src], |r| {
                                Ok(([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?], r.get(4)?))
                            })?;
                            rows.collect::<rusqlite::Result<Vec<_>>>()?
                        };
                        upsert_image(&tx, file, hash, &Vectors { width, height, image, regions })?;
                    }
                    Change::Remove { id } => {
                        tx.execute("DELETE FROM images WHERE id = ?1", params![id])?;
                    }
                }
                Ok(())
            })();
            r.map_err(|e| Error::Store { db: p.display().to_string(), msg: format!("{}: {e}", change_path(c)) })?;
        }
        tx.execute(BUMP_GENERATION, []).map_err(|e| store_err(&p, e))?;
        tx.commit().map_err(|e| store_err(&p, e))
    }

    fn stats(&self) -> Result<Stats> {
        let q = |sql: &str| -> Result<u64> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.unwrap_or(0) as u64)
                .map_err(|e| self.err(e))
        };
        Ok(Stats {
            images: q("SELECT COUNT(*) FROM images")?,
            regions: q("SELECT COUNT(*) FROM regions")?,
            vector_bytes: q("SELECT SUM(LENGTH(embedding)) FROM images")?
                + q("SELECT SUM(LENGTH(embedding)) FROM regions")?,
        })
    }

    fn for_each_vector(&self, kind: Kind, f: &mut dyn FnMut(VectorId, &[u8])) -> Result<()> {
        let sql = match kind {
            Kind::Image => "SELECT id, id, embedding FROM images",
            Kind::Region => "SELECT id, image_id, embedding FROM regions",
        };
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id = VectorId { id: r.get(0).map_err(|e| self.err(e))?, image_id: r.get(1).map_err(|e| self.err(e))? };
            let v = r.get_ref(2).map_err(|e| self.err(e))?.as_blob().map_err(|e| self.err(e.into()))?;
            f(id, v);
        }
        Ok(())
    }

    fn after_index(&self) -> Result<()> {
        self.sync_ann(self.ann_min)
    }

    fn nearest(&self, kind: Kind, q: &[f32], k: usize, per_image: usize) -> Result<Option<Vec<(f32, VectorId)>>> {
        let Some(ann) = &self.ann[slot(kind)] else { return Ok(None) };
        // Regions are grouped per image afterwards: fetch more, growing, until k images are covered.
        let mut fetch = if kind == Kind::Region { k * per_image.max(1) * 8 } else { k };
        loop {
            let found = ann.search(q, fetch, fetch.max(ann::EXPANSION_SEARCH))?;
            let ids: Vec<i64> = found.iter().map(|(_, key)| *key as i64).collect();
            let image_of: std::collections::HashMap<i64, i64> =
                self.hits(kind, &ids)?.iter().map(|r| (r.id, r.image_id)).collect();
            // Keys the store no longer has (deleted after this reader opened the graph) are skipped.
            let candidates = found
                .iter()
                .filter_map(|(score, key)| {
                    let id = *key as i64;
                    image_of.get(&id).map(|&image_id| (*score, VectorId { id, image_id }))
                })
                .collect();
            let out = best_per_image(candidates, kind, k, per_image);
            if out.len() >= k || found.len() < fetch || fetch >= ann.len() {
                return Ok(Some(out));
            }
            fetch *= 4;
        }
    }

    fn hits(&self, kind: Kind, ids: &[i64]) -> Result<Vec<HitRow>> {
        let sql = match kind {
            Kind::Image => "SELECT id, id, path, width, height, NULL, NULL, NULL, NULL FROM images WHERE id = ?1",
            Kind::Region => {
                "SELECT r.id, i.id, i.path, i.width, i.height, r.x1, r.y1, r.x2, r.y2 FROM regions r \
                 JOIN images i ON i.id = r.image_id WHERE r.id = ?1"
            }
        };
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row = st
                .query_row(params![id], |r| {
                    let x1: Option<f32> = r.get(5)?;
                    let bbox = match x1 {
                        Some(x1) => Some([x1, r.get(6)?, r.get(7)?, r.get(8)?]),
                        None => None,
                    };
                    Ok(HitRow {
                        id: r.get(0)?,
                        image_id: r.get(1)?,
                        path: bytes_path(r.get(2)?),
                        width: r.get(3)?,
                        height: r.get(4)?,
                        bbox,
                    })
                })
                .optional()
                .map_err(|e| self.err(e))?;
            out.extend(row);
        }
        Ok(out)
    }
}
