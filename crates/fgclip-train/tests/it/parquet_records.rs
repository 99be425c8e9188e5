//! FineHARD records in parquet (`fgclip_train::parquet`): the same records as `tests/data/parquet/records.json`
//! from the three shapes people re-save them in (see `make.py` there), and bad rows reported by file and row.

use std::path::PathBuf;

use fgclip_train::data::{load_records, Policy};
use fgclip_train::TrainError;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/parquet")
}

#[test]
fn parquet_shapes_give_the_json_records() {
    let (want, issues) = load_records(&dir().join("records.json"), Policy::Reject).unwrap();
    assert!(issues.is_empty());
    assert_eq!(want.len(), 3);
    // The negatives keep their file order (not sorted by key): the collator takes them in that order.
    assert_eq!(want[0].bbox_info[0].short_expr_negs.get_index(0).unwrap().0, "n3");
    for f in ["struct_snappy.parquet", "map_zstd.parquet", "string_gzip.parquet"] {
        let (got, issues) = load_records(&dir().join(f), Policy::Reject).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(issues.is_empty(), "{f}: {issues:?}");
        assert_eq!(got.len(), want.len(), "{f}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // `is_cn`'s value is never read, only its presence.
            assert_eq!(g.is_cn.is_some(), w.is_cn.is_some(), "{f} row {}", i + 1);
            let (mut g, mut w) = (g.clone(), w.clone());
            (g.is_cn, w.is_cn) = (None, None);
            assert_eq!(g, w, "{f} row {}", i + 1);
        }
    }
}

#[test]
fn a_folder_lists_parquet_files_after_json() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir().join("records.json"), tmp.path().join("b.json")).unwrap();
    std::fs::copy(dir().join("map_zstd.parquet"), tmp.path().join("a.parquet")).unwrap();
    let files = fgclip_train::data::record_files(tmp.path()).unwrap();
    let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["b.json", "a.parquet"]);
    assert_eq!(load_records(tmp.path(), Policy::Reject).unwrap().0.len(), 6);
}

#[test]
fn bad_rows_are_reported_by_file_and_row() {
    let bad = dir().join("bad.parquet");
    let (kept, issues) = load_records(&bad, Policy::Skip).unwrap();
    let at: Vec<(usize, &str)> = issues.iter().map(|i| (i.line, i.message.as_str())).collect();
    assert!(issues.iter().all(|i| i.file == bad));
    assert_eq!(at.len(), 3, "{at:?}");
    assert!(at[0].0 == 2 && at[0].1.contains("missing field `caption`"), "{at:?}");
    assert!(at[1].0 == 3 && at[1].1.contains("bbox_info[0]") && at[1].1.contains("box dropped"), "{at:?}");
    assert!(at[2].0 == 4 && at[2].1.contains("flag_short_neg"), "{at:?}");
    // Row 1 and row 3 (its only box dropped) remain; the record with the bad flag is dropped whole.
    assert_eq!(kept.len(), 2);

    match load_records(&bad, Policy::Reject) {
        Err(TrainError::Data { file, line, msg }) => {
            assert_eq!((file.as_path(), line), (bad.as_path(), 2));
            assert!(msg.contains("caption"), "{msg}");
        }
        other => panic!("expected a data error at row 2, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_parquet_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("broken.parquet");
    std::fs::write(&p, b"not parquet at all").unwrap();
    let err = load_records(&p, Policy::Skip).unwrap_err().to_string();
    assert!(err.contains("broken.parquet") && err.contains("parquet"), "{err}");
}
