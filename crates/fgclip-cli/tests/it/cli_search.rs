//! `fgclip index` / `fgclip search` through the binary: the JSON and table outputs, drawing, the stored model,
//! and crash safety: an indexer killed with SIGKILL at random moments, then run again, ends with exactly the
//! index a clean run makes (no image lost, none duplicated, no half-written image) while searches keep working.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fgclip_search::store::Kind;
use fgclip_search::{SqliteStore, Store};

use crate::common::{fgclip, fixtures, ok_json, s, stderr};

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli_search_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` synthetic photos (PNG) in `dir/images`.
fn photos(dir: &Path, n: usize) -> PathBuf {
    let o = fgclip(&["synth", "--out", &s(dir), "--train", &n.to_string(), "--test", "0", "--size", "96", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    dir.join("images")
}

/// (path, f16 vector) of every stored vector of `kind`, sorted.
fn dump(db: &Path, kind: Kind) -> Vec<(PathBuf, Vec<u8>)> {
    let store = SqliteStore::open_for_read(db).unwrap();
    let files = store.files().unwrap();
    let mut out = Vec::new();
    store
        .for_each_vector(kind, &mut |id, v| {
            out.push((files.iter().find(|f| f.id == id.image_id).unwrap().path.clone(), v.to_vec()))
        })
        .unwrap();
    out.sort();
    out
}

#[test]
fn index_then_search_json_table_and_drawing() {
    let Some(fx) = fixtures() else { return };
    let model = fx.join("fgclip2/model");
    let d = tmp("outputs");
    let images = photos(&d.join("synth"), 6);
    let db = d.join("photos.db");

    let o = fgclip(&["index", &s(&images), "--db", &s(&db)]);
    assert!(!o.status.success() && stderr(&o).contains("--model"), "{}", stderr(&o));

    let sum = ok_json(&fgclip(&["index", &s(&images), "--db", &s(&db), "-m", &s(&model), "--json"]));
    for key in ["added", "updated", "moved", "removed", "unchanged", "failed"] {
        assert!(sum.get(key).is_some(), "{key} missing: {sum}");
    }
    assert_eq!(sum["added"], 6);

    // No --model: the index's own.
    let hits = ok_json(&fgclip(&["search", "large red striped circle", "--db", &s(&db), "--json", "--top", "4"]));
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 4);
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h["rank"], i + 1);
        let kind = h["kind"].as_str().unwrap();
        match kind {
            "region" => assert_eq!(h["box"].as_array().unwrap().len(), 4),
            "image" => assert!(h["box"].is_null()),
            k => panic!("kind {k}"),
        }
        assert!(Path::new(h["path"].as_str().unwrap()).is_file());
    }

    let draw = d.join("drawn");
    let o = fgclip(&["search", "红色的圆", "--db", &s(&db), "--kind", "region", "--top", "2", "--draw", &s(&draw)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("rank") && table.contains("region"), "{table}");
    let drawn: Vec<_> = std::fs::read_dir(&draw).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(drawn.len(), 2, "{drawn:?}");
    for p in drawn {
        let (w, h) = image::image_dimensions(&p).unwrap();
        assert_eq!((w, h), (96, 96));
    }

    let o = fgclip(&["search", "   ", "--db", &s(&db)]);
    assert!(!o.status.success() && stderr(&o).contains("empty"), "{}", stderr(&o));
    let o = fgclip(&["search", "cat", "--db", &s(&d.join("none.db"))]);
    assert!(!o.status.success() && stderr(&o).contains("no index here"), "{}", stderr(&o));
    let o = fgclip(&["search", "cat", "--db", &s(&db), "-m", &s(&fx.join("fgclip_v1/model"))]);
    assert!(!o.status.success() && stderr(&o).contains("was given"), "{}", stderr(&o));
}

#[test]
fn killed_indexer_resumes_with_nothing_lost_duplicated_or_half_written() {
    let Some(fx) = fixtures() else { return };
    let model = s(&fx.join("fgclip2/model"));
    let d = tmp("kill");
    let images = photos(&d.join("synth"), 40);

    // The reference: one clean run.
    let clean = d.join("clean.db");
    ok_json(&fgclip(&["index", &s(&images), "--db", &s(&clean), "-m", &model, "--json", "--batch", "3"]));

    let db = d.join("killed.db");
    let bin = env!("CARGO_BIN_EXE_fgclip");
    let count = |db: &Path| SqliteStore::open_for_read(db).ok().and_then(|st| st.stats().ok()).map_or(0, |x| x.images);
    let started = Instant::now();
    let (mut mid_run_kills, mut searches) = (0, 0);
    let mut seed = 0x9E37_79B9u32;
    // Each round: start an indexer, wait until it has committed something new (so it is surely mid-run), wait a
    // pseudo-random few milliseconds more (inside a batch, or between two), then SIGKILL it. Bounded in rounds
    // and in time.
    for _round in 0..12 {
        if started.elapsed() > Duration::from_secs(120) || count(&db) >= 25 {
            break;
        }
        let before = count(&db);
        let mut child = Command::new(bin)
            .args(["index", &s(&images), "--db", &s(&db), "-m", &model, "--batch", "2", "--json"])
            .env_remove("FGCLIP_MODEL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while count(&db) == before && child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A search while the indexer writes.
        if searches < 3 && count(&db) > 0 {
            let o = fgclip(&["search", "blue square", "--db", &s(&db), "--json", "--top", "2"]);
            assert!(o.status.success(), "search during indexing failed: {}", stderr(&o));
            searches += 1;
        }
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        std::thread::sleep(Duration::from_millis((seed % 60) as u64));
        if child.try_wait().unwrap().is_none() {
            mid_run_kills += 1;
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
    }
    eprintln!(
        "{mid_run_kills} kills mid-run, {searches} searches during indexing, {} of 40 images before the last run",
        count(&db)
    );
    assert!(mid_run_kills >= 3, "only {mid_run_kills} kills landed mid-run");
    assert!(searches >= 1, "no search ran while indexing");
    let done = ok_json(&fgclip(&["index", &s(&images), "--db", &s(&db), "-m", &model, "--json", "--batch", "3"]));
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(done["images"], 40, "{done}");

    for kind in [Kind::Image, Kind::Region] {
        let (want, got) = (dump(&clean, kind), dump(&db, kind));
        assert_eq!(want.len(), got.len(), "{kind:?}: vector count after kills");
        for ((pw, vw), (pg, vg)) in want.iter().zip(&got) {
            assert_eq!(pw, pg);
            let (a, b) = (fgclip_search::vectors::from_f16_bytes(vw), fgclip_search::vectors::from_f16_bytes(vg));
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff <= 2e-3, "{kind:?} {}: {diff}", pw.display());
        }
    }
    let stats = SqliteStore::open_for_read(&db).unwrap().stats().unwrap();
    assert_eq!(stats, SqliteStore::open_for_read(&clean).unwrap().stats().unwrap());
    // The lock file is released by the kernel when a holder dies: a new writer gets in.
    drop(SqliteStore::open_for_write(&db).unwrap());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn eval_search_reports_hit_rates_against_the_baselines() {
    let Some(fx) = fixtures() else { return };
    let d = tmp("eval");
    let o = fgclip(&["synth", "--out", &s(&d.join("synth")), "--train", "1", "--test", "6", "--size", "96", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let data = d.join("synth");
    let db = d.join("i.db");
    // Only the held-out images go into the index.
    let heldout = d.join("heldout");
    std::fs::create_dir_all(&heldout).unwrap();
    for e in std::fs::read_dir(data.join("images")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("test_") {
            std::fs::copy(&p, heldout.join(p.file_name().unwrap())).unwrap();
        }
    }
    ok_json(&fgclip(&["index", &s(&heldout), "--db", &s(&db), "-m", &s(&fx.join("fgclip2/model")), "--json"]));
    let rep = ok_json(&fgclip(&[
        "eval-search",
        "--data",
        &s(&data.join("test.json")),
        "--images",
        &s(&data.join("images")),
        "--db",
        &s(&db),
        "--json",
    ]));
    assert!(rep["queries"].as_u64().unwrap() >= 6, "{rep}");
    assert_eq!(rep["images"], 6);
    for key in ["region_hit", "global_only_hit", "random_box_hit", "random_candidate_hit"] {
        let v: Vec<f64> = rep[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(v.len(), 3, "{key}");
        assert!(v.windows(2).all(|w| w[0] <= w[1]) && v.iter().all(|x| (0.0..=1.0).contains(x)), "{key}: {v:?}");
    }
    // The candidates bound what any ranking of them can do.
    let ceiling = rep["candidate_recall"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ceiling), "{rep}");
    for v in [rep["in_image_hit1"].as_f64().unwrap(), rep["region_hit"][2].as_f64().unwrap()] {
        assert!(v <= ceiling + 1e-12, "{v} above the candidates' ceiling {ceiling}: {rep}");
    }
    // A records file naming an image the index does not hold is an error that names it.
    let o = fgclip(&[
        "eval-search",
        "--data",
        &s(&data.join("train.json")),
        "--images",
        &s(&data.join("images")),
        "--db",
        &s(&db),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("not in the index"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn region_config_file_chooses_the_candidates_and_bad_files_are_named() {
    let Some(fx) = fixtures() else { return };
    let model = fx.join("fgclip2/model");
    let d = tmp("region_config");
    let images = photos(&d.join("synth"), 3);
    let db = d.join("r.db");
    // Segments of the dense map only (no windows), at most 5 per image.
    let cfg = d.join("segments.json");
    std::fs::write(&cfg, r#"{"scales": [], "segments": [0.9, 0.7, 0.5]}"#).unwrap();
    let sum = ok_json(&fgclip(&[
        "index",
        &s(&images),
        "--db",
        &s(&db),
        "-m",
        &s(&model),
        "--region-config",
        &s(&cfg),
        "--regions",
        "5",
        "--json",
    ]));
    assert_eq!(sum["added"], 3, "{sum}");
    assert!(sum["regions"].as_u64().unwrap() <= 15, "{sum}");
    let info = SqliteStore::open_for_read(&db).unwrap().info().unwrap().unwrap();
    assert_eq!(
        (info.regions.scales.len(), info.regions.segments.clone(), info.regions.max_per_image),
        (0, vec![0.9, 0.7, 0.5], 5)
    );
    // Every stored box lies inside its image.
    let hits = ok_json(&fgclip(&["search", "a red circle", "--db", &s(&db), "--kind", "region", "--json"]));
    for h in hits.as_array().unwrap() {
        let b: Vec<f64> = h["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 96.0 && b[3] <= 96.0 && b[0] < b[2] && b[1] < b[3], "{h}");
    }
    // Other settings on an existing index need --reindex.
    let o = fgclip(&["index", &s(&images), "--db", &s(&db), "--regions", "8"]);
    assert!(!o.status.success() && stderr(&o).contains("--reindex"), "{}", stderr(&o));
    // Bad files: named, with what is wrong.
    for (text, want) in [
        (r#"{"segmnts": [0.5]}"#, "segmnts"),
        (r#"{"segments": [2.0]}"#, "segment threshold"),
        ("not json", "segments-bad.json"),
    ] {
        let bad = d.join("segments-bad.json");
        std::fs::write(&bad, text).unwrap();
        let o = fgclip(&[
            "index",
            &s(&images),
            "--db",
            &s(&d.join("new.db")),
            "-m",
            &s(&model),
            "--region-config",
            &s(&bad),
        ]);
        assert!(!o.status.success() && stderr(&o).contains(want), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains("segments-bad.json"), "{}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(&d);
}
