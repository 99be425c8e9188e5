//! The PostgreSQL + pgvector store against the embedded one: the same collection gives the same hits (exact
//! search, and the HNSW path on a small set), incremental runs behave the same, shards fill one database
//! idempotently, and a server connection that dies mid-run is a clear error that loses nothing.

use std::path::PathBuf;

use fgclip_search::store::postgres::PgStore;
use fgclip_search::store::Kind;
use fgclip_search::{IndexOptions, Kinds, NoProgress, Query, SearchOptions, SqliteStore, Store, Summary};

use crate::common::{self, photo_folder};

/// A fresh database on the test server, dropped at the end.
pub struct TempDb {
    admin: String,
    name: String,
    pub url: String,
}

impl TempDb {
    pub fn new(tag: &str) -> Option<Self> {
        let admin = fgclip_testkit::pg_url()?;
        let name = format!("fgclip_t_{tag}_{}", std::process::id());
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("connecting to FGCLIP_PG_URL");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let base = admin.rsplit_once('/').map(|x| x.0).unwrap_or(&admin);
        Some(Self { url: format!("{base}/{name}"), admin, name })
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

fn run(m: &(String, fgclip::Model), store: &mut dyn Store, roots: &[PathBuf], opts: &IndexOptions) -> Summary {
    fgclip_search::index(&m.1, &m.0, store, roots, opts, &NoProgress).unwrap_or_else(|e| panic!("{e}"))
}

fn counts(s: &Summary) -> [u64; 7] {
    [s.added, s.updated, s.moved, s.removed, s.unchanged, s.failed, s.images]
}

#[test]
fn postgres_and_sqlite_give_the_same_hits_and_the_same_incremental_runs() {
    let Some(m) = common::model("fgclip2") else { return };
    let Some(pg) = TempDb::new("same") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let files = photo_folder(&dir, 10);
    let mut lite = SqliteStore::open_for_write(&tmp.path().join("i.db")).unwrap();
    let mut post = PgStore::connect(&pg.url, true).unwrap();
    let roots = vec![dir.clone()];
    let opts = IndexOptions { batch: 4, ..Default::default() };

    let step = |lite: &mut SqliteStore, post: &mut PgStore| {
        let (a, b) = (run(&m, lite, &roots, &opts), run(&m, post, &roots, &opts));
        assert_eq!(counts(&a), counts(&b), "sqlite {a:?}\npostgres {b:?}");
        assert_eq!(lite.stats().unwrap(), post.stats().unwrap());
    };
    step(&mut lite, &mut post);
    std::fs::rename(&files[0], dir.join("moved.png")).unwrap();
    std::fs::copy(&files[1], dir.join("copy.png")).unwrap();
    std::fs::remove_file(&files[2]).unwrap();
    common::write_png(&files[3], 70, 50, 77);
    common::set_mtime(&files[3], 3_000_000);
    step(&mut lite, &mut post);

    let info = lite.info().unwrap().unwrap();
    assert_eq!(Some(&info), post.info().unwrap().as_ref());
    for exact_below in [fgclip_search::store::postgres::EXACT_BELOW, 0] {
        post.set_exact_below(exact_below);
        for (q, kinds, per_image) in [
            ("a green rectangle", Kinds::Images, 1),
            ("a green rectangle", Kinds::Regions, 1),
            ("蓝色的方块", Kinds::Both, 2),
        ] {
            let opts = SearchOptions { top: 6, kinds, per_image };
            let q = Query::Text(q.into());
            let a = fgclip_search::search(&m.1, &lite, &info, &q, &opts).unwrap();
            let b = fgclip_search::search(&m.1, &post, &info, &q, &opts).unwrap();
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert_eq!((&x.path, x.kind, x.bbox), (&y.path, y.kind, y.bbox), "exact_below {exact_below}: {q:?}");
                // HNSW compares in f16 (the query too): scores agree to f16 rounding.
                let tol = if exact_below == 0 { 2e-3 } else { 1e-5 };
                assert!((x.score - y.score).abs() < tol, "{} vs {}", x.score, y.score);
            }
        }
    }
    for kind in [Kind::Image, Kind::Region] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        lite.for_each_vector(kind, &mut |_, v| a.push(v.to_vec())).unwrap();
        post.for_each_vector(kind, &mut |_, v| b.push(v.to_vec())).unwrap();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{kind:?}: the stores hold different vectors");
    }
}

#[test]
fn shards_fill_one_database_idempotently() {
    let Some(m) = common::model("fgclip2") else { return };
    let Some(pg) = TempDb::new("shards") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    photo_folder(&dir, 12);
    let roots = vec![dir.clone()];
    // The first machine creates the index; then two shards run at once.
    PgStore::connect(&pg.url, true).unwrap();
    let summaries: Vec<Summary> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u32)
            .map(|i| {
                let (m, url, roots) = (&m, pg.url.clone(), &roots);
                s.spawn(move || {
                    let mut st = PgStore::connect(&url, true).unwrap();
                    let opts = IndexOptions { shard: Some((i, 2)), batch: 3, ..Default::default() };
                    run(m, &mut st, roots, &opts)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let added: u64 = summaries.iter().map(|s| s.added).sum();
    assert_eq!(added, 12, "{summaries:?}");
    assert!(summaries.iter().all(|s| s.added > 0), "both shards did work: {summaries:?}");
    let mut st = PgStore::connect(&pg.url, true).unwrap();
    let again = run(&m, &mut st, &roots, &IndexOptions { shard: Some((1, 2)), ..Default::default() });
    assert_eq!((again.added, again.removed, again.images), (0, 0, 12), "{again:?}");
    let whole = run(&m, &mut st, &roots, &IndexOptions::default());
    assert_eq!((whole.added, whole.unchanged, whole.images), (0, 12, 12), "{whole:?}");
}

#[test]
fn a_server_connection_lost_mid_run_is_a_clear_error_and_loses_nothing() {
    let Some(m) = common::model("fgclip2") else { return };
    let Some(pg) = TempDb::new("gone") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    photo_folder(&dir, 16);
    let roots = vec![dir.clone()];
    let mut st = PgStore::connect(&pg.url, true).unwrap();
    // Index a first part, then cut every connection of the database the moment the next run starts writing.
    let first = run(&m, &mut st, std::slice::from_ref(&dir.join("img_000.png")), &IndexOptions::default());
    assert_eq!(first.added, 1);
    let admin = fgclip_testkit::pg_url().unwrap();
    let killer = std::thread::spawn({
        let name = pg.url.rsplit('/').next().unwrap().to_string();
        move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_secs(30) {
                let n: i64 = c
                    .query_one(
                        &format!("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{name}' AND state = 'idle in transaction'"),
                        &[],
                    )
                    .unwrap()
                    .get(0);
                if n > 0 {
                    c.execute(
                        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
                        &[],
                    )
                    .unwrap();
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            false
        }
    });
    let err = fgclip_search::index(
        &m.1,
        &m.0,
        &mut st,
        &roots,
        &IndexOptions { batch: 2, ..Default::default() },
        &NoProgress,
    );
    let terminated = killer.join().unwrap();
    if terminated {
        let err = err.expect_err("the run must fail when its connection is cut");
        let msg = err.to_string();
        assert!(msg.contains(&pg.url), "the error names the server: {msg}");
    }
    // A new connection finishes the job: every image once, with its regions.
    let mut st = PgStore::connect(&pg.url, true).unwrap();
    let done = run(&m, &mut st, &roots, &IndexOptions::default());
    assert_eq!((done.images, done.failed), (16, 0), "{done:?}");
    let regions_per_image = {
        let mut per = std::collections::HashMap::new();
        st.for_each_vector(Kind::Region, &mut |id, _| *per.entry(id.image_id).or_insert(0) += 1).unwrap();
        per
    };
    assert_eq!(regions_per_image.len(), 16, "an image without regions: a half-written image");
    assert!(terminated, "the connection was never caught mid-transaction");
}
