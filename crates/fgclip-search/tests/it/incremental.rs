//! Incremental indexing: unchanged files are skipped, touched files keep their vectors, changed files are
//! re-encoded, moved and copied files reuse vectors, deleted files are swept, and only under the roots given.

use std::path::PathBuf;

use fgclip_search::store::Kind;
use fgclip_search::{IndexOptions, SqliteStore, Store};

use crate::common::{self, dump, index, paths, photo_folder, set_mtime, write_png};

#[test]
fn incremental_runs_add_skip_touch_update_move_copy_and_remove() {
    let Some(m) = common::model("fgclip2") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    let files = photo_folder(&dir, 6);
    let db = tmp.path().join("index.db");
    let opts = IndexOptions { batch: 4, ..Default::default() };
    let roots = vec![dir.clone()];

    let s = index(&m, &db, &roots, &opts);
    assert_eq!((s.added, s.encoded, s.unchanged, s.failed), (6, 6, 0, 0), "{s:?}");
    assert!(s.regions > 0 && s.bytes_per_image > 0.0);

    let s = index(&m, &db, &roots, &opts);
    assert_eq!((s.added, s.encoded, s.unchanged), (0, 0, 6), "{s:?}");

    // Touched (new mtime, same bytes): hashed again, not encoded.
    set_mtime(&files[0], 1_000_000);
    let s = index(&m, &db, &roots, &opts);
    assert_eq!((s.unchanged, s.encoded, s.updated), (6, 0, 0), "{s:?}");

    // New content under a known path: re-encoded.
    let before = dump(&db, Kind::Image);
    write_png(&files[1], 50, 50, 999);
    set_mtime(&files[1], 2_000_000);
    let s = index(&m, &db, &roots, &opts);
    assert_eq!((s.updated, s.encoded, s.unchanged), (1, 1, 5), "{s:?}");
    let after = dump(&db, Kind::Image);
    let vec_of = |d: &[(PathBuf, Vec<u8>)], p: &PathBuf| d.iter().find(|x| &x.0 == p).unwrap().1.clone();
    assert_ne!(vec_of(&before, &files[1]), vec_of(&after, &files[1]));

    // Moved into a subfolder: the same vectors under the new path, nothing encoded.
    let moved = dir.join("sub/renamed.png");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&files[2], &moved).unwrap();
    let regions_before: Vec<Vec<u8>> =
        dump(&db, Kind::Region).into_iter().filter(|x| x.0 == files[2]).map(|x| x.1).collect();
    let s = index(&m, &db, &roots, &opts);
    assert_eq!((s.moved, s.encoded, s.removed, s.added), (1, 0, 0, 0), "{s:?}");
    assert_eq!(vec_of(&after, &files[2]), vec_of(&dump(&db, Kind::Image), &moved));
    let regions_after: Vec<Vec<u8>> =
        dump(&db, Kind::Region).into_iter().filter(|x| x.0 == moved).map(|x| x.1).collect();
    assert_eq!(regions_before, regions_after);

    // A copy: added with copied vectors, nothing encoded.
    let copy = dir.join("copy.png");
    std::fs::copy(&files[3], &copy).unwrap();
    let s = index(&m, &db, &roots, &opts);
    assert_eq!((s.added, s.encoded), (1, 0), "{s:?}");
    let now = dump(&db, Kind::Image);
    assert_eq!(vec_of(&now, &files[3]), vec_of(&now, &copy));

    // Deleted: swept.
    std::fs::remove_file(&files[4]).unwrap();
    let s = index(&m, &db, &roots, &opts);
    assert_eq!((s.removed, s.encoded), (1, 0), "{s:?}");

    let mut on_disk = vec![files[0].clone(), files[1].clone(), files[3].clone(), files[5].clone(), moved, copy];
    on_disk.iter_mut().for_each(|p| *p = p.canonicalize().unwrap());
    on_disk.sort();
    assert_eq!(paths(&db), on_disk);
    let st = SqliteStore::open_for_read(&db).unwrap().stats().unwrap();
    assert_eq!(st.images, 6);
}

#[test]
fn batched_vectors_equal_one_at_a_time_in_both_families() {
    for family in ["fgclip2", "fgclip_v1"] {
        let Some(m) = common::model(family) else { return };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        photo_folder(&dir, 5);
        let (one, five) = (tmp.path().join("one.db"), tmp.path().join("five.db"));
        index(&m, &one, std::slice::from_ref(&dir), &IndexOptions { batch: 1, ..Default::default() });
        index(&m, &five, std::slice::from_ref(&dir), &IndexOptions { batch: 5, ..Default::default() });
        for kind in [Kind::Image, Kind::Region] {
            let (a, b) = (dump(&one, kind), dump(&five, kind));
            assert_eq!(a.len(), b.len(), "{family} {kind:?}: vector counts");
            for ((pa, va), (pb, vb)) in a.iter().zip(&b) {
                assert_eq!(pa, pb);
                let (fa, fb) = (fgclip_search::vectors::from_f16_bytes(va), fgclip_search::vectors::from_f16_bytes(vb));
                let d = fa.iter().zip(&fb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(d <= 2e-3, "{family} {kind:?} {}: batch 5 differs from batch 1 by {d}", pa.display());
            }
        }
    }
}

#[test]
fn sweep_stays_under_the_roots_and_a_missing_root_loses_nothing() {
    let Some(m) = common::model("fgclip2") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    photo_folder(&a, 2);
    let bf = photo_folder(&b, 2);
    let db = tmp.path().join("i.db");
    index(&m, &db, &[a.clone(), b.clone()], &IndexOptions::default());
    std::fs::remove_file(&bf[0]).unwrap();
    // Indexing only `a` must not sweep `b`'s rows.
    let s = index(&m, &db, std::slice::from_ref(&a), &IndexOptions::default());
    assert_eq!((s.removed, s.unchanged), (0, 2), "{s:?}");
    assert_eq!(paths(&db).len(), 4);
    // A root that is not there (an unplugged disk) is an error, not an empty folder.
    let err = common::try_index(&m, &db, &[tmp.path().join("unplugged")], &IndexOptions::default()).unwrap_err();
    assert!(err.to_string().contains("unplugged"), "{err}");
    assert_eq!(paths(&db).len(), 4);
    let s = index(&m, &db, std::slice::from_ref(&b), &IndexOptions::default());
    assert_eq!(s.removed, 1);
}

#[test]
fn exif_orientation_is_applied_before_encoding() {
    let Some(m) = common::model("fgclip2") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    std::fs::create_dir_all(&dir).unwrap();
    let img = common::picture(64, 40, 7);
    std::fs::write(dir.join("rotated.jpg"), common::jpeg_bytes(&img, Some(6))).unwrap();
    let plain = common::jpeg_bytes(&img, None);
    std::fs::write(dir.join("plain.jpg"), &plain).unwrap();
    let db = tmp.path().join("i.db");
    let s = index(&m, &db, std::slice::from_ref(&dir), &IndexOptions::default());
    assert_eq!(s.added, 2, "{s:?}");

    let store = SqliteStore::open_for_read(&db).unwrap();
    let files = store.files().unwrap();
    let id_of = |n: &str| files.iter().find(|f| f.path.ends_with(n)).unwrap().id;
    let rows = store.hits(Kind::Image, &[id_of("rotated.jpg"), id_of("plain.jpg")]).unwrap();
    assert_eq!((rows[0].width, rows[0].height), (40, 64), "orientation 6 turns 64x40 upright to 40x64");
    assert_eq!((rows[1].width, rows[1].height), (64, 40));

    // The stored vector is the one of the decoded picture turned 90° clockwise.
    let decoded = fgclip::fgclip_image::decode_rgb(&plain, "plain").unwrap();
    let upright: fgclip::fgclip_image::RgbImage = image::imageops::rotate90(&decoded.into_image()).into();
    let want = m.1.encode_images(&m.1.prepare_images(&[upright], fgclip::PatchBudget::Dynamic).unwrap()).unwrap();
    let want = fgclip_search::vectors::normalized(&want.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    let got = dump(&db, Kind::Image).into_iter().find(|x| x.0.ends_with("rotated.jpg")).unwrap().1;
    let got = fgclip_search::vectors::from_f16_bytes(&got);
    let d = want.iter().zip(&got).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(d < 2e-3, "rotated vector differs by {d}");
}
