//! The ANN benchmark behind SEARCH.md: N synthetic unit vectors (clustered, like embeddings of a photo
//! collection) stored as f16 in the embedded store, its usearch graph built and memory-mapped, and optionally the
//! same vectors in PostgreSQL with a pgvector HNSW index. Reports build time, peak memory, recall@10 against an
//! exact scan, search latency percentiles and open-to-first-result, as JSON lines on stdout.
//!
//!   cargo run --release -p fgclip-search --example ann_bench -- [N] [DIMS] [QUERIES] [DIR] [postgres://… N_PG]

use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;

use fgclip_search::identity::ModelIdentity;
use fgclip_search::rng::Rng;
use fgclip_search::scan::FoundFile;
use fgclip_search::store::{Change, IndexInfo, Kind, Store, Vectors, SCHEMA_VERSION};
use fgclip_search::vectors::{dot_f16, normalized, to_f16_bytes, TopK};
use fgclip_search::{RegionConfig, SqliteStore};

/// Vectors around `clusters` random centres (noise of the same size as the centre), normalised.
fn synthetic(n: usize, d: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    // Seeded as in the first runs, so a store they left behind still holds these vectors.
    let mut r = Rng(seed | 1);
    let centres: Vec<Vec<f32>> =
        (0..clusters).map(|_| normalized(&(0..d).map(|_| r.gauss()).collect::<Vec<_>>())).collect();
    (0..n)
        .map(|_| {
            let c = &centres[(r.next_u64() % clusters as u64) as usize];
            let noise = normalized(&(0..d).map(|_| r.gauss()).collect::<Vec<_>>());
            normalized(&c.iter().zip(&noise).map(|(a, b)| a + 0.8 * b).collect::<Vec<_>>())
        })
        .collect()
}

/// Drops a file's clean pages from the page cache.
fn evict(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(path) {
        // SAFETY: a valid descriptor; the call only advises the kernel.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// The fraction of a file's pages in the page cache (mincore over a read-only mapping); -1 when unknown.
fn resident_fraction(path: &std::path::Path) -> f64 {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(path) else { return -1.0 };
    let len = f.metadata().map_or(0, |m| m.len() as usize);
    if len == 0 {
        return -1.0;
    }
    let page = 4096usize;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of an open file, unmapped before returning; mincore writes `pages` bytes.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0);
        if p == libc::MAP_FAILED {
            return -1.0;
        }
        let ok = libc::mincore(p, len, vec.as_mut_ptr()) == 0;
        libc::munmap(p, len);
        if !ok {
            return -1.0;
        }
    }
    vec.iter().filter(|b| **b & 1 == 1).count() as f64 / pages as f64
}

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The CPU model and the SIMD flags that matter here, recorded with every result.
fn cpu() -> serde_json::Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_once(':')).map(|x| x.1.trim().to_string())
    };
    let flags: Vec<String> = field("flags")
        .unwrap_or_default()
        .split_whitespace()
        .filter(|f| f.starts_with("avx") || ["fma", "f16c", "asimd", "fphp", "sve"].contains(f))
        .map(String::from)
        .collect();
    serde_json::json!({ "model": field("model name"), "isa_flags": flags, "fgclip_isa": fgclip::Isa::detect().name() })
}

fn pct(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

fn info(d: usize) -> IndexInfo {
    IndexInfo {
        schema_version: SCHEMA_VERSION,
        model: ModelIdentity { source: "synthetic".into(), fingerprint: "0".repeat(64), files: vec![] },
        family: "synthetic".into(),
        embed_dim: d,
        image_walk: "short".into(),
        region_walk: "short".into(),
        precision: "f32".into(),
        regions: RegionConfig::default(),
        encoding: "f16".into(),
        exif_orientation: true,
        reduced_decode: true,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let d: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(512);
    let nq: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let dir = PathBuf::from(args.get(3).cloned().unwrap_or_else(|| "target/ann-bench".into()));
    let pg = args.get(4).cloned();
    let n_pg: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(n);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(format!("ann-{n}x{d}.db"));

    let t = Instant::now();
    // Queries come from the same distribution (the same clusters, fresh noise): the `nq` vectors generated
    // after the collection's `n`, never stored.
    let mut vecs = synthetic(n + nq, d, 2000, 1);
    let queries = vecs.split_off(n);
    let bytes: Vec<Vec<u8>> = vecs.iter().map(|v| to_f16_bytes(v)).collect();
    eprintln!("generated {n} vectors in {:.1} s", t.elapsed().as_secs_f64());

    // The store (skipped when it already holds the vectors).
    let mut st = SqliteStore::open_for_write(&db).unwrap();
    let fresh = st.stats().map(|s| s.images as usize != n).unwrap_or(true);
    let t = Instant::now();
    if fresh {
        st.set_info(&info(d), true).unwrap();
        for (c, chunk) in bytes.chunks(20_000).enumerate() {
            let changes: Vec<Change> = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| Change::Add {
                    file: FoundFile {
                        path: PathBuf::from(format!("/synthetic/{:08}.jpg", c * 20_000 + i)),
                        size: 1,
                        mtime_ns: 1,
                    },
                    hash: *blake3::hash(&((c * 20_000 + i) as u64).to_le_bytes()).as_bytes(),
                    vectors: Vectors { width: 1, height: 1, image: b.clone(), regions: vec![] },
                })
                .collect();
            st.apply(&changes).unwrap();
        }
    }
    let insert_s = t.elapsed().as_secs_f64();
    let rss0 = peak_rss_mib();
    let t = Instant::now();
    st.set_ann_min(0);
    st.after_index().unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let rss_build = peak_rss_mib();
    drop(st);
    let graph_mib =
        std::fs::metadata(fgclip_search::ann::paths(&db, Kind::Image).0).map_or(0.0, |m| m.len() as f64 / 1048576.0);

    // Exact answers (from the same f16 vectors).
    let t = Instant::now();
    let exact: Vec<Vec<usize>> = queries
        .par_iter()
        .map(|q| {
            let mut top = TopK::new(10);
            for (i, b) in bytes.iter().enumerate() {
                top.push(dot_f16(q, b).unwrap(), i);
            }
            top.into_sorted().into_iter().map(|x| x.1).collect()
        })
        .collect();
    let exact_ms = t.elapsed().as_secs_f64() * 1e3 / nq as f64;

    // Open-to-first-result with a cold page cache: the store's and the graph's pages are dropped first
    // (posix_fadvise DONTNEED works without root on files nobody maps), and the resident fraction is recorded to
    // show it; then once more warm.
    let (graph, keys, _) = fgclip_search::ann::paths(&db, Kind::Image);
    let files_to_evict = [db.clone(), graph.clone(), keys];
    for f in &files_to_evict {
        evict(f);
    }
    let resident_before_cold_open = (resident_fraction(&graph), resident_fraction(&db));
    let t = Instant::now();
    let reader = SqliteStore::open_for_read(&db).unwrap();
    let cold = reader.nearest(Kind::Image, &queries[0], 10, 1).unwrap().expect("the graph is used");
    let open_to_first_cold_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(cold.len(), 10);
    drop(reader);
    let t = Instant::now();
    let reader = SqliteStore::open_for_read(&db).unwrap();
    let first = reader.nearest(Kind::Image, &queries[0], 10, 1).unwrap().expect("the graph is used");
    let open_to_first_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(first.len(), 10);
    let files = reader.files().unwrap();
    let index_of: std::collections::HashMap<i64, usize> =
        files.iter().map(|f| (f.id, f.path.file_stem().unwrap().to_string_lossy().parse::<usize>().unwrap())).collect();
    let mut lat = Vec::new();
    let mut found = 0usize;
    for (q, truth) in queries.iter().zip(&exact) {
        let t = Instant::now();
        let got = reader.nearest(Kind::Image, q, 10, 1).unwrap().unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        found += got.iter().filter(|(_, id)| truth.contains(&index_of[&id.id])).count();
    }
    let recall = found as f64 / (10 * nq) as f64;
    println!(
        "{}",
        serde_json::json!({
            "impl": "fgclip-rs (SQLite + usearch HNSW, f16, mmap)", "n": n, "dims": d, "queries": nq,
            "insert_s": insert_s, "build_s": build_s, "graph_mib": graph_mib,
            "peak_rss_mib_before_build": rss0, "peak_rss_mib_after_build": rss_build,
            "recall_at_10": recall, "p50_ms": pct(&mut lat, 0.5), "p99_ms": pct(&mut lat, 0.99),
            "open_to_first_result_ms": open_to_first_ms, "exact_scan_ms_per_query_in_memory": exact_ms,
            "open_to_first_result_cold_ms": open_to_first_cold_ms,
            "resident_before_cold_open": {"graph": resident_before_cold_open.0, "store": resident_before_cold_open.1},
            "threads": rayon::current_num_threads(), "cpu": cpu(),
        })
    );

    if let Some(url) = pg {
        pg_bench(&url, &bytes[..n_pg.min(n)], &queries, d);
    }
}

fn pg_bench(url: &str, bytes: &[Vec<u8>], queries: &[Vec<f32>], d: usize) {
    use pgvector::HalfVector;
    use postgres::types::Type;
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let n = bytes.len();
    // A table left by an earlier run with the same rows and its index is reused (the build is reported once).
    let existing: Option<i64> = c
        .query_opt("SELECT count(*) FROM ann_bench WHERE to_regclass('ann_bench_embedding_idx') IS NOT NULL", &[])
        .ok()
        .flatten()
        .map(|r| r.get(0));
    let (mut insert_s, mut build_s) = (None, None);
    if existing != Some(n as i64) {
        c.batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS vector; DROP TABLE IF EXISTS ann_bench; \
             CREATE TABLE ann_bench (id bigint PRIMARY KEY, embedding halfvec({d}) NOT NULL)"
        ))
        .unwrap();
        let half = |b: &[u8]| {
            HalfVector::from(b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>())
        };
        let t = Instant::now();
        {
            let ty = c.prepare("SELECT embedding FROM ann_bench LIMIT 0").unwrap().columns()[0].type_().clone();
            let sink = c.copy_in("COPY ann_bench (id, embedding) FROM STDIN BINARY").unwrap();
            let mut w = postgres::binary_copy::BinaryCopyInWriter::new(sink, &[Type::INT8, ty]);
            for (i, b) in bytes.iter().enumerate() {
                w.write(&[&(i as i64), &half(b)]).unwrap();
            }
            w.finish().unwrap();
        }
        insert_s = Some(t.elapsed().as_secs_f64());
        let t = Instant::now();
        c.batch_execute(
            "SET maintenance_work_mem = '4GB'; SET max_parallel_maintenance_workers = 1; \
             CREATE INDEX ann_bench_embedding_idx ON ann_bench USING hnsw (embedding halfvec_ip_ops)",
        )
        .unwrap();
        build_s = Some(t.elapsed().as_secs_f64());
    }
    let size_mib: i64 =
        c.query_one("SELECT pg_relation_size('ann_bench_embedding_idx') / 1048576", &[]).unwrap().get(0);
    let truths: Vec<Vec<i64>> = queries
        .par_iter()
        .map(|q| {
            let mut top = TopK::new(10);
            for (i, b) in bytes.iter().enumerate() {
                top.push(dot_f16(q, b).unwrap(), i as i64);
            }
            top.into_sorted().into_iter().map(|x| x.1).collect()
        })
        .collect();
    // 64: a common setting; 160: the embedded graph's beam; 400: what the Postgres store uses for a top-10.
    for ef in [64, 160, 400] {
        c.batch_execute(&format!("SET hnsw.ef_search = {ef}")).unwrap();
        let mut lat = Vec::new();
        let mut found = 0usize;
        for (q, truth) in queries.iter().zip(&truths) {
            let qv = HalfVector::from(q.iter().map(|x| half::f16::from_f32(*x)).collect::<Vec<_>>());
            let t = Instant::now();
            let rows = c.query("SELECT id FROM ann_bench ORDER BY embedding <#> $1 LIMIT 10", &[&qv]).unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            found += rows.iter().filter(|r| truth.contains(&r.get::<_, i64>(0))).count();
        }
        println!(
            "{}",
            serde_json::json!({
                "impl": format!("pgvector 0.8 HNSW (halfvec, inner product, m=16, ef_construction=64, ef_search={ef})"),
                "n": n, "dims": d, "queries": queries.len(), "insert_s": insert_s, "build_s": build_s,
                "index_mib": size_mib, "recall_at_10": found as f64 / (10 * queries.len()) as f64,
                "p50_ms": pct(&mut lat, 0.5), "p99_ms": pct(&mut lat, 0.99), "cpu": cpu(),
            })
        );
        (insert_s, build_s) = (None, None);
    }
}
