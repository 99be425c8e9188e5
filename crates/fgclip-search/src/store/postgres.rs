//! The scale-out store: PostgreSQL with pgvector. Vectors are `halfvec` (the same f16 bytes as the embedded
//! store) with HNSW indexes for inner product; below `EXACT_BELOW` rows a search is an exact scan, so small
//! collections rank exactly as the embedded store does. One transaction per [`Store::apply`], as there; many
//! indexers (`--shard i/N`) can fill one database at once. Table creation is serialised by an advisory lock.
//! Connections are plain TCP (no TLS): reach a remote server through a private network or an SSH tunnel.

use std::sync::Mutex;

use half::f16;
use pgvector::{HalfVector, Vector};
use postgres::{Client, NoTls};

use super::{
    best_per_image, bytes_path, hash_from, path_bytes, Change, FileRow, HitRow, IndexInfo, Kind, Stats, Store,
    VectorId, Vectors, SCHEMA_VERSION,
};
use crate::scan::FoundFile;
use crate::{Error, Result};

/// The HNSW search beam for a top-k (pgvector's default is 40): measured at 1M × 512 in SEARCH.md.
const EF_SEARCH: i64 = 400;

/// Below this many vectors a search scans them all (exact); above, it walks the HNSW index.
pub const EXACT_BELOW: i64 = 20_000;
/// Advisory lock key serialising schema changes between concurrent indexers ("fgclip" in ASCII).
const SCHEMA_LOCK: i64 = 0x6667_636c_6970;

pub struct PgStore {
    client: Mutex<Client>,
    url: String,
    exact_below: i64,
}

fn pg_err(db: &str, e: postgres::Error) -> Error {
    let msg = match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => {
            let mut m = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                m.push_str(&format!(": {s}"));
                src = s.source();
            }
            if e.is_closed() || m.contains("connection") {
                m.push_str(" (is the server running and reachable?)");
            }
            m
        }
    };
    Error::Store { db: db.to_string(), msg }
}

/// `postgres://user@host:port/db` without the password, for messages.
fn redact(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(s) => s.clone(),
                    #[cfg(unix)]
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default();
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("postgres://{}@{host}:{port}/{}", c.get_user().unwrap_or(""), c.get_dbname().unwrap_or(""))
        }
        Err(_) => "postgres://…".into(),
    }
}

fn halfvec(bytes: &[u8]) -> HalfVector {
    HalfVector::from(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>())
}

fn halfvec_bytes(v: &HalfVector) -> Vec<u8> {
    v.as_slice().iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl PgStore {
    /// Connects to `url`; `write` creates the metadata table. The schema version is checked either way.
    pub fn connect(url: &str, write: bool) -> Result<Self> {
        let db = redact(url);
        let mut client = Client::connect(url, NoTls).map_err(|e| pg_err(&db, e))?;
        if write {
            client
                .batch_execute("CREATE TABLE IF NOT EXISTS fgclip_meta (key text PRIMARY KEY, value text NOT NULL)")
                .map_err(|e| pg_err(&db, e))?;
        }
        let version: Option<String> = client
            .query_opt("SELECT value FROM fgclip_meta WHERE key = 'schema_version'", &[])
            .map(|r| r.map(|r| r.get(0)))
            .or_else(|e| match e.as_db_error().map(|d| d.code().clone()) {
                Some(postgres::error::SqlState::UNDEFINED_TABLE) => Ok(None),
                _ => Err(pg_err(&db, e)),
            })?;
        match version {
            Some(v) => {
                let v: u32 =
                    v.parse().map_err(|_| Error::Store { db: db.clone(), msg: format!("bad schema_version {v:?}") })?;
                if v > SCHEMA_VERSION {
                    return Err(Error::Mismatch {
                        db,
                        msg: format!(
                            "made by a newer fgclip (index schema {v}; this build reads up to {SCHEMA_VERSION}); upgrade fgclip"
                        ),
                    });
                }
            }
            None if !write => {
                return Err(Error::Store {
                    db,
                    msg: "no fgclip index in this database (run fgclip index first)".into(),
                })
            }
            None => {}
        }
        Ok(Self { client: Mutex::new(client), url: db, exact_below: EXACT_BELOW })
    }

    /// Searches scan every vector below `n` rows and walk the HNSW index from there (default [`EXACT_BELOW`]).
    pub fn set_exact_below(&mut self, n: i64) {
        self.exact_below = n;
    }

    fn client(&self) -> std::sync::MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: postgres::Error) -> Error {
        pg_err(&self.url, e)
    }

    /// Whether `kind` holds fewer than `exact_below` vectors. The count stops at the threshold, so a search of a
    /// large table does not pay for a full `COUNT(*)` before walking its index.
    fn is_small(&self, kind: Kind) -> Result<bool> {
        let table = match kind {
            Kind::Image => "fgclip_images",
            Kind::Region => "fgclip_regions",
        };
        let sql = format!("SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT $1) t");
        let n: i64 = self.client().query_one(&sql, &[&self.exact_below]).map(|r| r.get(0)).map_err(|e| self.err(e))?;
        Ok(n < self.exact_below)
    }
}

fn insert_image(
    tx: &mut postgres::Transaction,
    file: &FoundFile,
    hash: &[u8; 32],
    v: &Vectors,
) -> std::result::Result<(), postgres::Error> {
    let row = tx.query_one(
        "INSERT INTO fgclip_images (path, size, mtime_ns, hash, width, height, embedding) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[
            &path_bytes(&file.path),
            &(file.size as i64),
            &file.mtime_ns,
            &&hash[..],
            &(v.width as i32),
            &(v.height as i32),
            &halfvec(&v.image),
        ],
    )?;
    let id: i64 = row.get(0);
    let st =
        tx.prepare("INSERT INTO fgclip_regions (image_id, x1, y1, x2, y2, embedding) VALUES ($1, $2, $3, $4, $5, $6)")?;
    for (b, e) in &v.regions {
        tx.execute(&st, &[&id, &b[0], &b[1], &b[2], &b[3], &halfvec(e)])?;
    }
    Ok(())
}

impl Store for PgStore {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn info(&self) -> Result<Option<IndexInfo>> {
        let row = self
            .client()
            .query_opt("SELECT value FROM fgclip_meta WHERE key = 'info'", &[])
            .map_err(|e| self.err(e))?;
        match row {
            None => Ok(None),
            Some(r) => serde_json::from_str(r.get::<_, &str>(0))
                .map(Some)
                .map_err(|e| Error::Store { db: self.url.clone(), msg: format!("unreadable index info: {e}") }),
        }
    }

    fn set_info(&mut self, info: &IndexInfo, clear: bool) -> Result<()> {
        let json = serde_json::to_string(info).expect("IndexInfo serialises");
        let d = info.embed_dim;
        let url = self.url.clone();
        let mut client = self.client();
        let mut tx = client.transaction().map_err(|e| pg_err(&url, e))?;
        let run = |tx: &mut postgres::Transaction| -> std::result::Result<(), postgres::Error> {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector")?;
            if clear {
                tx.batch_execute("DROP TABLE IF EXISTS fgclip_regions, fgclip_images")?;
            }
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS fgclip_images (
                    id bigserial PRIMARY KEY,
                    path bytea NOT NULL UNIQUE,
                    size bigint NOT NULL,
                    mtime_ns bigint NOT NULL,
                    hash bytea NOT NULL,
                    width integer NOT NULL,
                    height integer NOT NULL,
                    embedding halfvec({d}) NOT NULL);
                 CREATE INDEX IF NOT EXISTS fgclip_images_hash ON fgclip_images (hash);
                 CREATE INDEX IF NOT EXISTS fgclip_images_hnsw ON fgclip_images USING hnsw (embedding halfvec_ip_ops);
                 CREATE TABLE IF NOT EXISTS fgclip_regions (
                    id bigserial PRIMARY KEY,
                    image_id bigint NOT NULL REFERENCES fgclip_images (id) ON DELETE CASCADE,
                    x1 real NOT NULL, y1 real NOT NULL, x2 real NOT NULL, y2 real NOT NULL,
                    embedding halfvec({d}) NOT NULL);
                 CREATE INDEX IF NOT EXISTS fgclip_regions_image ON fgclip_regions (image_id);
                 CREATE INDEX IF NOT EXISTS fgclip_regions_hnsw ON fgclip_regions USING hnsw (embedding halfvec_ip_ops);"
            ))?;
            tx.execute(
                "INSERT INTO fgclip_meta (key, value) VALUES ('schema_version', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&SCHEMA_VERSION.to_string()],
            )?;
            tx.execute(
                "INSERT INTO fgclip_meta (key, value) VALUES ('info', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&json],
            )?;
            Ok(())
        };
        run(&mut tx).map_err(|e| pg_err(&url, e))?;
        tx.commit().map_err(|e| pg_err(&url, e))
    }

    fn files(&self) -> Result<Vec<FileRow>> {
        let rows = self
            .client()
            .query("SELECT id, path, size, mtime_ns, hash FROM fgclip_images", &[])
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| FileRow {
                id: r.get(0),
                path: bytes_path(r.get(1)),
                size: r.get::<_, i64>(2) as u64,
                mtime_ns: r.get(3),
                hash: hash_from(r.get(4)),
            })
            .collect())
    }

    fn apply(&mut self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let url = self.url.clone();
        let mut client = self.client();
        let mut tx = client.transaction().map_err(|e| pg_err(&url, e))?;
        for c in changes {
            let r: std::result::Result<(), postgres::Error> = (|| {
                match c {
                    Change::Add { file, hash, vectors } => insert_image(&mut tx, file, hash, vectors)?,
                    Change::Replace { id, file, hash, vectors } => {
                        tx.execute("DELETE FROM fgclip_images WHERE id = $1", &[id])?;
                        insert_image(&mut tx, file, hash, vectors)?;
                    }
                    Change::Move { id, file } | Change::Touch { id, file } => {
                        tx.execute(
                            "UPDATE fgclip_images SET path = $2, size = $3, mtime_ns = $4 WHERE id = $1",
                            &[id, &path_bytes(&file.path), &(file.size as i64), &file.mtime_ns],
                        )?;
                    }
                    Change::Copy { file, hash } => {
                        let row = tx.query_one(
                            "INSERT INTO fgclip_images (path, size, mtime_ns, hash, width, height, embedding) \
                             SELECT $1, $2, $3, hash, width, height, embedding FROM fgclip_images WHERE hash = $4 \
                             ORDER BY id LIMIT 1 RETURNING id",
                            &[&path_bytes(&file.path), &(file.size as i64), &file.mtime_ns, &&hash[..]],
                        )?;
                        let id: i64 = row.get(0);
                        tx.execute(
                            "INSERT INTO fgclip_regions (image_id, x1, y1, x2, y2, embedding) \
                             SELECT $1, x1, y1, x2, y2, embedding FROM fgclip_regions WHERE image_id = \
                             (SELECT id FROM fgclip_images WHERE hash = $2 AND id <> $1 ORDER BY id LIMIT 1) ORDER BY id",
                            &[&id, &&hash[..]],
                        )?;
                    }
                    Change::Remove { id } => {
                        tx.execute("DELETE FROM fgclip_images WHERE id = $1", &[id])?;
                    }
                }
                Ok(())
            })();
            if let Err(e) = r {
                let Error::Store { msg, .. } = pg_err(&url, e) else { unreachable!("pg_err makes Store errors") };
                return Err(Error::Store { db: url.clone(), msg: format!("{}: {msg}", super::change_path(c)) });
            }
        }
        tx.commit().map_err(|e| pg_err(&url, e))
    }

    fn stats(&self) -> Result<Stats> {
        let r = self
            .client()
            .query_one(
                "SELECT (SELECT COUNT(*) FROM fgclip_images), (SELECT COUNT(*) FROM fgclip_regions), \
                 (SELECT COALESCE(SUM(vector_dims(embedding)), 0) FROM fgclip_images)::bigint, \
                 (SELECT COALESCE(SUM(vector_dims(embedding)), 0) FROM fgclip_regions)::bigint",
                &[],
            )
            .map_err(|e| self.err(e))?;
        Ok(Stats {
            images: r.get::<_, i64>(0) as u64,
            regions: r.get::<_, i64>(1) as u64,
            vector_bytes: 2 * (r.get::<_, i64>(2) + r.get::<_, i64>(3)) as u64,
        })
    }

    fn for_each_vector(&self, kind: Kind, f: &mut dyn FnMut(VectorId, &[u8])) -> Result<()> {
        let sql = match kind {
            Kind::Image => "SELECT id, id, embedding FROM fgclip_images",
            Kind::Region => "SELECT id, image_id, embedding FROM fgclip_regions",
        };
        let mut client = self.client();
        let mut rows = client.query_raw(sql, std::iter::empty::<i64>()).map_err(|e| pg_err(&self.url, e))?;
        use postgres::fallible_iterator::FallibleIterator;
        while let Some(r) = rows.next().map_err(|e| pg_err(&self.url, e))? {
            let v: HalfVector = r.get(2);
            f(VectorId { id: r.get(0), image_id: r.get(1) }, &halfvec_bytes(&v));
        }
        Ok(())
    }

    fn nearest(&self, kind: Kind, q: &[f32], k: usize, per_image: usize) -> Result<Option<Vec<(f32, VectorId)>>> {
        let table = match kind {
            Kind::Image => "fgclip_images",
            Kind::Region => "fgclip_regions",
        };
        let image_id = match kind {
            Kind::Image => "id",
            Kind::Region => "image_id",
        };
        let limit = k as i64;
        let per = per_image.max(1) as i64;
        let exact = self.is_small(kind)?;
        let url = self.url.clone();
        let mut client = self.client();
        let mut tx = client.transaction().map_err(|e| pg_err(&url, e))?;
        let rows = if exact {
            // The column as f32 `vector` and the query in f32: the same dot products as the embedded store.
            let qv = Vector::from(q.to_vec());
            let sql = if kind == Kind::Region {
                format!(
                    "SELECT id, img, score FROM (SELECT id, {image_id} AS img, -((embedding::vector) <#> $1) AS score, \
                     row_number() OVER (PARTITION BY {image_id} ORDER BY (embedding::vector) <#> $1, id) AS rn FROM {table}) t \
                     WHERE rn <= $2::bigint ORDER BY score DESC, id LIMIT $3::bigint"
                )
            } else {
                format!(
                    "SELECT id, {image_id}, -((embedding::vector) <#> $1) AS score FROM {table} \
                     ORDER BY (embedding::vector) <#> $1, id LIMIT $3::bigint + 0 * $2::bigint"
                )
            };
            let rows = tx.query(&sql, &[&qv, &per, &limit]).map_err(|e| pg_err(&url, e))?;
            tx.commit().map_err(|e| pg_err(&url, e))?;
            rows
        } else {
            // The index walk in f16. Regions are grouped per image afterwards, so fetch more (growing) until
            // `k` images are covered or the table is exhausted.
            let qv = HalfVector::from(q.iter().map(|x| f16::from_f32(*x)).collect::<Vec<_>>());
            let sql = format!(
                "SELECT id, {image_id}, -(embedding <#> $1)::real AS score FROM {table} ORDER BY embedding <#> $1 LIMIT $2::bigint"
            );
            let mut fetch = if kind == Kind::Region { limit * per * 8 } else { limit };
            loop {
                tx.batch_execute(&format!(
                    "SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = relaxed_order;",
                    // At 1M × 512 (SEARCH.md) recall@10 was 0.77 at ef_search 64, 0.90 at 160, 0.93 at 400.
                    fetch.clamp(EF_SEARCH, 1000)
                ))
                .map_err(|e| pg_err(&url, e))?;
                let rows = tx.query(&sql, &[&qv, &fetch]).map_err(|e| pg_err(&url, e))?;
                let images: std::collections::HashSet<i64> = rows.iter().map(|r| r.get::<_, i64>(1)).collect();
                if kind == Kind::Image || images.len() >= k || (rows.len() as i64) < fetch {
                    tx.commit().map_err(|e| pg_err(&url, e))?;
                    break rows;
                }
                fetch *= 4;
            }
        };
        let candidates = rows
            .iter()
            .map(|r| {
                let score = r.try_get::<_, f64>(2).map(|s| s as f32).unwrap_or_else(|_| r.get::<_, f32>(2));
                (score, VectorId { id: r.get(0), image_id: r.get(1) })
            })
            .collect();
        let out = best_per_image(candidates, kind, k, per_image);
        Ok(Some(out))
    }

    fn hits(&self, kind: Kind, ids: &[i64]) -> Result<Vec<HitRow>> {
        let sql = match kind {
            Kind::Image => {
                "SELECT id, id, path, width, height, NULL::real, NULL::real, NULL::real, NULL::real FROM fgclip_images WHERE id = $1"
            }
            Kind::Region => {
                "SELECT r.id, i.id, i.path, i.width, i.height, r.x1, r.y1, r.x2, r.y2 FROM fgclip_regions r \
                 JOIN fgclip_images i ON i.id = r.image_id WHERE r.id = $1"
            }
        };
        let mut client = self.client();
        let st = client.prepare(sql).map_err(|e| pg_err(&self.url, e))?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(r) = client.query_opt(&st, &[id]).map_err(|e| pg_err(&self.url, e))? {
                let x1: Option<f32> = r.get(5);
                out.push(HitRow {
                    id: r.get(0),
                    image_id: r.get(1),
                    path: bytes_path(r.get(2)),
                    width: r.get::<_, i32>(3) as u32,
                    height: r.get::<_, i32>(4) as u32,
                    bbox: x1.map(|x1| [x1, r.get(6), r.get(7), r.get(8)]),
                });
            }
        }
        Ok(out)
    }
}
