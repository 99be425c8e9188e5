//! Search: exact search ranks as a brute-force scan does, an image finds itself, region hits carry boxes in
//! the picture, and `per_image` limits region hits per photo.

use fgclip::TextWalk;
use fgclip_search::store::Kind;
use fgclip_search::{IndexOptions, Kinds, Query, SearchOptions, SqliteStore, Store};

use crate::common::{self, dump, index, photo_folder};

/// A fixture model, its temp folder (kept alive), the index and the indexed files.
type Setup = ((String, fgclip::Model), tempfile::TempDir, std::path::PathBuf, Vec<std::path::PathBuf>);

fn setup(family: &str) -> Option<Setup> {
    let m = common::model(family)?;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let files = photo_folder(&dir, 8);
    let db = tmp.path().join("i.db");
    index(&m, &db, std::slice::from_ref(&dir), &IndexOptions::default());
    Some((m, tmp, db, files))
}

#[test]
fn an_image_query_finds_itself_first() {
    let Some((m, _tmp, db, files)) = setup("fgclip2") else { return };
    let store = SqliteStore::open_for_read(&db).unwrap();
    let info = store.info().unwrap().unwrap();
    for f in [&files[2], &files[6]] {
        let opts = SearchOptions { top: 3, kinds: Kinds::Images, per_image: 1 };
        let hits = fgclip_search::search(&m.1, &store, &info, &Query::Image(f.clone()), &opts).unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].file, f.canonicalize().unwrap());
        assert!((hits[0].score - 1.0).abs() < 3e-3, "{}", hits[0].score);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn text_search_ranks_exactly_as_a_brute_force_scan() {
    for family in ["fgclip2", "fgclip_v1"] {
        let Some((m, _tmp, db, _)) = setup(family) else { return };
        let store = SqliteStore::open_for_read(&db).unwrap();
        let info = store.info().unwrap().unwrap();
        let query = "a small red square";
        for (kind, kinds, walk) in
            [(Kind::Image, Kinds::Images, TextWalk::Short), (Kind::Region, Kinds::Regions, m.1.region_walk())]
        {
            let q = m.1.encode_texts(&[query], walk).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let q = fgclip_search::vectors::normalized(&q);
            // Brute force: best vector per image (per_image = 1), sorted.
            let mut best: std::collections::BTreeMap<std::path::PathBuf, f32> = Default::default();
            for (p, v) in dump(&db, kind) {
                let s = fgclip_search::vectors::dot_f16(&q, &v).unwrap();
                let e = best.entry(p).or_insert(f32::NEG_INFINITY);
                *e = e.max(s);
            }
            let mut want: Vec<(std::path::PathBuf, f32)> = best.into_iter().collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1));
            let opts = SearchOptions { top: 5, kinds, per_image: 1 };
            let hits = fgclip_search::search(&m.1, &store, &info, &Query::Text(query.into()), &opts).unwrap();
            assert_eq!(hits.len(), 5, "{family} {kind:?}");
            for (h, (p, s)) in hits.iter().zip(&want) {
                assert_eq!(&h.file, p, "{family} {kind:?} rank {}", h.rank);
                assert!((h.score - s).abs() < 1e-5, "{family} {kind:?}: {} vs {s}", h.score);
                assert_eq!(h.kind, kind);
            }
        }
    }
}

#[test]
fn region_hits_carry_boxes_inside_the_picture_and_respect_per_image() {
    let Some((m, _tmp, db, _)) = setup("fgclip2") else { return };
    let store = SqliteStore::open_for_read(&db).unwrap();
    let info = store.info().unwrap().unwrap();
    let q = Query::Text("一只红色的杯子".into());
    let hits =
        fgclip_search::search(&m.1, &store, &info, &q, &SearchOptions { top: 8, kinds: Kinds::Regions, per_image: 1 })
            .unwrap();
    assert_eq!(hits.len(), 8);
    let mut seen = std::collections::HashSet::new();
    for h in &hits {
        let b = h.bbox.expect("region hits have a box");
        assert!(b[0] >= -1e-3 && b[1] >= -1e-3 && b[2] <= h.width as f32 + 1e-3 && b[3] <= h.height as f32 + 1e-3);
        assert!(b[2] > b[0] && b[3] > b[1], "{b:?}");
        assert!(seen.insert(h.file.clone()), "two hits in {} with per_image 1", h.path);
    }
    let three =
        fgclip_search::search(&m.1, &store, &info, &q, &SearchOptions { top: 9, kinds: Kinds::Regions, per_image: 3 })
            .unwrap();
    let mut counts = std::collections::HashMap::new();
    for h in &three {
        *counts.entry(h.file.clone()).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&c| c <= 3) && counts.values().any(|&c| c > 1), "{counts:?}");

    let both =
        fgclip_search::search(&m.1, &store, &info, &q, &SearchOptions { top: 10, ..Default::default() }).unwrap();
    assert!(both.iter().any(|h| h.kind == Kind::Image && h.bbox.is_none()));
    assert!(both.iter().any(|h| h.kind == Kind::Region && h.bbox.is_some()));
    let json = serde_json::to_value(&both).unwrap();
    let first = json.as_array().unwrap()[0].as_object().unwrap();
    for key in ["rank", "path", "score", "kind", "box"] {
        assert!(first.contains_key(key), "{key} missing from {first:?}");
    }
}

/// Camera-sized JPEGs are decoded at a reduced size by default: the stored size and every box still refer to
/// the original (upright) picture, the vectors stay close to a full decode's, and an index keeps its decoding
/// setting (asking for full decodes on a reduced index needs --reindex).
#[test]
fn large_jpegs_decode_reduced_with_sizes_and_boxes_in_the_original_picture() {
    for family in ["fgclip_v1", "fgclip2"] {
        let Some(m) = common::model(family) else { return };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("photos");
        std::fs::create_dir_all(&dir).unwrap();
        // Stored 1000 × 760 with EXIF orientation 6 (a quarter turn): upright it is 760 wide, 1000 high.
        std::fs::write(dir.join("turned.jpg"), common::jpeg_bytes(&common::picture(1000, 760, 7), Some(6))).unwrap();
        std::fs::write(dir.join("plain.jpg"), common::jpeg_bytes(&common::picture(900, 600, 8), None)).unwrap();
        let (reduced_db, full_db) = (tmp.path().join("reduced.db"), tmp.path().join("full.db"));
        // FG-CLIP 2 at 128 patches (a 208 × 160 input here), so both photos are large enough to reduce.
        let opts = IndexOptions { budget: fgclip::PatchBudget::Fixed(128), ..Default::default() };
        index(&m, &reduced_db, std::slice::from_ref(&dir), &opts);
        index(&m, &full_db, std::slice::from_ref(&dir), &IndexOptions { full_decode: true, ..opts.clone() });
        let (reduced, full) =
            (SqliteStore::open_for_read(&reduced_db).unwrap(), SqliteStore::open_for_read(&full_db).unwrap());
        assert!(reduced.info().unwrap().unwrap().reduced_decode && !full.info().unwrap().unwrap().reduced_decode);
        for st in [&reduced, &full] {
            let files = st.files().unwrap();
            for f in &files {
                let want = if f.path.ends_with("turned.jpg") { (760, 1000) } else { (900, 600) };
                let img = st.hits(Kind::Image, &[f.id]).unwrap().pop().unwrap();
                assert_eq!((img.width, img.height), want, "{family} {}", f.path.display());
            }
            let mut n = 0;
            st.for_each_vector(Kind::Region, &mut |id, _| {
                let h = st.hits(Kind::Region, &[id.id]).unwrap().pop().unwrap();
                let b = h.bbox.unwrap();
                assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= h.width as f32 + 0.01 && b[3] <= h.height as f32 + 0.01);
                assert!(
                    b[2] - b[0] > 0.05 * h.width as f32,
                    "{family}: box {b:?} too small for {}x{}",
                    h.width,
                    h.height
                );
                n += 1;
            })
            .unwrap();
            assert!(n > 0);
        }
        // The whole-image vectors of a reduced and a full decode agree closely, but not exactly (the reduced
        // path did run).
        let (va, vb) = (dump(&reduced_db, Kind::Image), dump(&full_db, Kind::Image));
        assert!(va.iter().zip(&vb).all(|(a, b)| a.1 != b.1), "{family}: a photo was not decoded reduced");
        for ((pa, a), (pb, b)) in va.iter().zip(&vb) {
            assert_eq!(pa.file_name(), pb.file_name());
            let (a, b) = (fgclip_search::vectors::from_f16_bytes(a), fgclip_search::vectors::from_f16_bytes(b));
            let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(cos > 0.99, "{family} {}: cosine {cos} between reduced and full decodes", pa.display());
        }
        drop((reduced, full));
        let e = common::try_index(&m, &reduced_db, &[dir], &IndexOptions { full_decode: true, ..opts })
            .unwrap_err()
            .to_string();
        assert!(e.contains("--reindex") && e.contains("reduced"), "{e}");
    }
}
