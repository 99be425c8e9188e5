//! Bad input: broken files are listed with their reason and skipped while the rest is indexed; another model,
//! a newer schema, a missing or unwritable folder, a second writer and an empty query are clear errors; nothing
//! stored is lost.

use fgclip_search::{Error, IndexOptions, Kinds, Query, SearchOptions, SqliteStore, Store};

use crate::common::{self, index, paths, photo_folder, try_index, write_png};

#[test]
fn broken_files_are_listed_with_a_reason_and_the_rest_is_indexed() {
    let Some(m) = common::model("fgclip2") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    photo_folder(&dir, 1);
    std::fs::write(dir.join("empty.jpg"), b"").unwrap();
    std::fs::write(dir.join("noise.png"), b"this is not a picture at all, just words").unwrap();
    let jpg = common::jpeg_bytes(&common::picture(80, 60, 3), None);
    std::fs::write(dir.join("truncated.jpg"), &jpg[..jpg.len() / 2]).unwrap();
    write_png(&dir.join("big.png"), 1200, 1000, 4);
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.png");
        write_png(&dir.join(name), 50, 40, 5);
        std::os::unix::fs::symlink(&dir, dir.join("loop")).unwrap();
    }
    let db = tmp.path().join("i.db");
    let opts = IndexOptions { max_megapixels: 1.0, ..Default::default() };
    let s = index(&m, &db, std::slice::from_ref(&dir), &opts);
    let reason = |needle: &str| {
        s.failures
            .iter()
            .find(|f| f.path.contains(needle))
            .unwrap_or_else(|| panic!("no failure for {needle}: {:?}", s.failures))
            .reason
            .clone()
    };
    assert!(reason("empty.jpg").contains("empty"), "{}", reason("empty.jpg"));
    assert!(reason("noise.png").contains("not a JPEG, PNG"), "{}", reason("noise.png"));
    assert!(reason("truncated.jpg").contains("truncated"), "{}", reason("truncated.jpg"));
    assert!(reason("big.png").contains("above --max-megapixels 1"), "{}", reason("big.png"));
    let expected_added = if cfg!(unix) {
        assert!(reason("loop").contains("loop"), "{}", reason("loop"));
        2
    } else {
        1
    };
    assert_eq!(s.added, expected_added, "{s:?}");
    assert_eq!(s.failed as usize, s.failures.len());
    #[cfg(unix)]
    assert!(paths(&db).iter().any(|p| p.as_os_str().as_encoded_bytes().ends_with(b"caf\xe9-latin1.png")));

    // The next run reports the same problems and keeps what it has.
    let again = index(&m, &db, std::slice::from_ref(&dir), &opts);
    assert_eq!((again.unchanged, again.removed, again.failed), (expected_added, 0, s.failed), "{again:?}");
}

#[test]
fn another_model_is_refused_unless_reindex() {
    let (Some(m2), Some(m1)) = (common::model("fgclip2"), common::model("fgclip_v1")) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    photo_folder(&dir, 3);
    let db = tmp.path().join("i.db");
    index(&m2, &db, std::slice::from_ref(&dir), &IndexOptions::default());
    let err = try_index(&m1, &db, std::slice::from_ref(&dir), &IndexOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("--reindex") && err.to_string().contains(&m2.0), "{err}");
    assert_eq!(paths(&db).len(), 3, "the refused run lost nothing");

    // Searching with the other model is refused too.
    let store = SqliteStore::open_for_read(&db).unwrap();
    let info = store.info().unwrap().unwrap();
    let err = fgclip_search::query::check_model(&m1.1, &m1.0, &store, &info).unwrap_err();
    assert!(err.to_string().contains("was given"), "{err}");
    drop(store);

    let s = index(&m1, &db, std::slice::from_ref(&dir), &IndexOptions { reindex: true, ..Default::default() });
    assert_eq!((s.added, s.encoded), (3, 3), "{s:?}");
    let info = SqliteStore::open_for_read(&db).unwrap().info().unwrap().unwrap();
    assert_eq!(info.family, m1.1.family().name());
}

#[test]
fn newer_schema_missing_folder_second_writer_and_foreign_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no/such/folder/i.db");
    let err = SqliteStore::open_for_write(&missing).err().unwrap().to_string();
    assert!(err.contains("does not exist") && err.contains("folder"), "{err}");
    // A folder nobody may write in, root included (the tests may run as root, for whom permission bits do not
    // apply; /proc refuses new files to everyone): named, with the question to ask, and no file left behind.
    let err = SqliteStore::open_for_write(std::path::Path::new("/proc/fgclip-test.db")).err().unwrap().to_string();
    assert!(err.contains("/proc/fgclip-test.db") && err.contains("writable"), "{err}");

    let db = tmp.path().join("i.db");
    let first = SqliteStore::open_for_write(&db).unwrap();
    let err = SqliteStore::open_for_write(&db).err().unwrap();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    // Searching while it is held works.
    drop(first);

    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '99')", []).unwrap();
    drop(conn);
    for err in [SqliteStore::open_for_write(&db).err().unwrap(), SqliteStore::open_for_read(&db).err().unwrap()] {
        assert!(err.to_string().contains("newer fgclip"), "{err}");
    }

    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "hello, not a database; ".repeat(100)).unwrap();
    let err = SqliteStore::open_for_read(&text).err().unwrap().to_string();
    assert!(err.contains("not an fgclip index"), "{err}");
    let err = SqliteStore::open_for_read(&tmp.path().join("absent.db")).err().unwrap().to_string();
    assert!(err.contains("no index here"), "{err}");
}

#[test]
fn empty_queries_and_zero_top_are_refused() {
    let Some(m) = common::model("fgclip2") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    photo_folder(&dir, 2);
    let db = tmp.path().join("i.db");
    index(&m, &db, std::slice::from_ref(&dir), &IndexOptions::default());
    let store = SqliteStore::open_for_read(&db).unwrap();
    let info = store.info().unwrap().unwrap();
    for q in ["", "   \t\n"] {
        let err =
            fgclip_search::search(&m.1, &store, &info, &Query::Text(q.into()), &SearchOptions::default()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
    let opts = SearchOptions { top: 0, kinds: Kinds::Both, per_image: 1 };
    let err = fgclip_search::search(&m.1, &store, &info, &Query::Text("a cat".into()), &opts).unwrap_err();
    assert!(err.to_string().contains("--top"), "{err}");
    let err = fgclip_search::search(
        &m.1,
        &store,
        &info,
        &Query::Image(tmp.path().join("nope.png")),
        &SearchOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope.png"), "{err}");
}
