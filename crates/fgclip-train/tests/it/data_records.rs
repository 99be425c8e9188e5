//! Record loading and validation: every kind of bad record is reported with its file and line; Skip drops the
//! record (or only the bad box) and reports, Reject stops at the first problem; JSON arrays and JSON lines, folders
//! and `.txt` lists, image checks, Chinese records.

use std::path::{Path, PathBuf};

use fgclip_train::data::{
    load_items, load_records, record_files, DataIssue, DataSpec, Dataset, ImageRoots, Lang, Policy, ReadOptions,
};

fn good_box(short: &str) -> String {
    let negs: Vec<String> = (0..10).map(|k| format!("\"n{k}\":\"Neg {k}\"")).collect();
    format!(
        r#"{{"bbox":[0.1,0.2,0.5,0.6,0.9],"short_expr":"{short}","long_expr":"a long {short}","flag_short_neg":1,"short_expr_negs":{{{}}}}}"#,
        negs.join(",")
    )
}

fn rec(f: &str, boxes: &[String]) -> String {
    format!(r#"{{"f_path":"{f}","caption":"a long caption","short_caption":"cat","bbox_info":[{}]}}"#, boxes.join(","))
}

/// (record text, the problem it must raise (substring), whether only a box is dropped). One record per line.
fn cases() -> Vec<(String, Option<&'static str>, bool)> {
    let g = good_box("red cup");
    let box_with = |field: &str, value: &str| {
        g.replacen(&format!("\"{field}\":"), &format!("\"{field}\":{value},\"x_{field}\":"), 1)
    };
    vec![
        (rec("ok1.jpg", &[g.clone(), g.clone()]), None, false),
        (r#"{"f_path":"m.jpg","caption":"c","short_caption": }"#.to_string(), Some("malformed JSON"), false),
        (r#"{"f_path":"m.jpg","caption":"c"}"#.to_string(), Some("missing field `short_caption`"), false),
        (r#"{"f_path":"m.jpg","caption":"  ","short_caption":"s"}"#.to_string(), Some("empty caption"), false),
        (r#"{"f_path":"m.jpg","caption":"c","short_caption":""}"#.to_string(), Some("empty short_caption"), false),
        (r#"[1, 2]"#.to_string(), Some("not a JSON object"), false),
        (rec("b3.jpg", &[g.clone(), box_with("bbox", "[0.1,0.2,0.3]")]), Some("bbox has 3 values"), true),
        // Python's json writes NaN / Infinity and reads 1e999 as inf; serde_json rejects all three.
        (
            rec("bnf.jpg", &[box_with("bbox", "[0.1,0.2,1e999,0.6]"), g.clone()]),
            Some("bbox_info[0]: bbox has a non-finite"),
            true,
        ),
        (
            rec("bnan.jpg", &[g.clone(), box_with("bbox", "[NaN,0.2,0.3,0.6]")]),
            Some("bbox_info[1]: bbox has a non-finite value (NaN"),
            true,
        ),
        // A NaN detector score (5th value, never used) is not a problem.
        (rec("score.jpg", &[box_with("bbox", "[0.1,0.2,0.3,0.6,NaN]")]), None, false),
        (rec("bout.jpg", &[box_with("bbox", "[0.1,0.2,1.2,0.6]")]), Some("outside [0, 1]"), true),
        (rec("bneg.jpg", &[box_with("bbox", "[-0.01,0.2,0.5,0.6]")]), Some("outside [0, 1]"), true),
        (rec("bord.jpg", &[box_with("bbox", "[0.6,0.2,0.5,0.6]")]), Some("x1 > x2 or y1 > y2"), true),
        (rec("bse.jpg", &[box_with("short_expr", "\"\"")]), Some("empty short_expr"), true),
        (rec("ble.jpg", &[box_with("long_expr", "\" \"")]), Some("empty long_expr"), true),
        (rec("bn9.jpg", &[g.replace(r#","n9":"Neg 9""#, "")]), Some("flag_short_neg = 1 with 9 negatives"), true),
        (
            rec("bmiss.jpg", &[g.replace(r#""long_expr":"a long red cup","#, "")]),
            Some("missing field `long_expr`"),
            true,
        ),
        // Tiny excursions beyond [0, 1] are rounding, not errors.
        (rec("eps.jpg", &[box_with("bbox", "[0.0,0.0,1.0004,1.0]")]), None, false),
        (rec("ok2.jpg", &[]), None, false),
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A JSON array with one record per line, starting on line 2.
fn array_text() -> String {
    let lines: Vec<String> = cases().into_iter().map(|c| c.0).collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
}

/// JSON lines with a blank line in front (so record k is on line k + 2).
fn jsonl_text() -> String {
    let lines: Vec<String> = cases().into_iter().map(|c| c.0).collect();
    format!("\n{}\n", lines.join("\n"))
}

fn check_skip(file: &Path, first_line: usize) {
    let (records, issues) = load_records(file, Policy::Skip).unwrap();
    let cases = cases();
    let mut expect_issues = 0;
    let mut expect_records = vec![];
    for (k, (_, problem, box_only)) in cases.iter().enumerate() {
        let line = first_line + k;
        let here: Vec<&DataIssue> = issues.iter().filter(|i| i.line == line).collect();
        match problem {
            None => {
                assert!(here.is_empty(), "line {line}: unexpected {here:?}");
                expect_records.push(k);
            }
            Some(p) => {
                assert_eq!(here.len(), 1, "line {line}: expected one issue about {p:?}, got {here:?}");
                let i = here[0];
                assert_eq!(i.file, file);
                assert!(i.message.contains(p), "line {line}: {:?} does not mention {p:?}", i.message);
                let action = if *box_only { "(box dropped)" } else { "(record dropped)" };
                assert!(i.message.ends_with(action), "line {line}: {:?} should end with {action}", i.message);
                assert!(i.to_string().starts_with(&format!("{}:{line}: ", file.display())), "{i}");
                expect_issues += 1;
                if *box_only {
                    expect_records.push(k);
                }
            }
        }
    }
    assert_eq!(issues.len(), expect_issues, "{issues:#?}");
    assert_eq!(records.len(), expect_records.len());
    // Box-level problems keep the record without the bad box (the good ones stay, in order).
    let b3 = records.iter().find(|r| r.f_path == "b3.jpg").unwrap();
    assert_eq!(b3.bbox_info.len(), 1);
    assert_eq!(b3.bbox_info[0].bbox, vec![0.1, 0.2, 0.5, 0.6, 0.9]);
    assert!(records.iter().find(|r| r.f_path == "bout.jpg").unwrap().bbox_info.is_empty());
    let ok1 = records.iter().find(|r| r.f_path == "ok1.jpg").unwrap();
    assert_eq!(ok1.bbox_info.len(), 2);
    let negs: Vec<&str> = ok1.bbox_info[0].short_expr_negs.values().map(String::as_str).collect();
    assert_eq!(negs[0], "Neg 0");
    assert_eq!(negs[9], "Neg 9", "negatives keep file order");
}

fn check_reject(file: &Path, first_bad_line: usize) {
    let err = load_records(file, Policy::Reject).unwrap_err().to_string();
    let want = format!("{}:{first_bad_line}: malformed JSON", file.display());
    assert!(err.starts_with(&want), "{err:?} should start with {want:?}");
}

#[test]
fn json_array_skip_and_reject() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "train.jsonl", &array_text()); // official files are arrays even when named .jsonl
    check_skip(&f, 2);
    check_reject(&f, 3);
}

#[test]
fn json_lines_skip_and_reject() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "train.jsonl", &jsonl_text());
    check_skip(&f, 2);
    check_reject(&f, 3);
}

/// In a pretty-printed array the issue names the line where the record starts, the JSON error its own position.
#[test]
fn pretty_array_reports_record_start_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"  {
    "f_path": "a.jpg",
    "caption": "c",
    "short_caption": "s"
  }"#;
    let bad = r#"  {
    "f_path": "b.jpg",
    "caption": "c",
    "short_caption": "s",
    "bbox_info": [
      {"bbox": [0.5, 0.1, 0.2, 0.3], "short_expr": "x", "long_expr": "y"}
    ]
  }"#;
    let broken = r#"  {
    "f_path": "c.jpg",
    "caption": "c" "oops"
  }"#;
    let f = write(dir.path(), "t.json", &format!("[\n{good},\n{bad},\n{broken}\n]"));
    let (records, issues) = load_records(&f, Policy::Skip).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert_eq!((issues[0].line, issues[1].line), (7, 15), "{issues:#?}");
    assert!(issues[0].message.contains("bbox_info[0]") && issues[0].message.contains("x1 > x2"));
    assert!(issues[1].message.contains("at line 17"), "{}", issues[1].message);
}

#[test]
fn structural_problems() {
    let dir = tempfile::tempdir().unwrap();
    let one = rec("a.jpg", &[]);
    // Truncated file: the partial record and the missing `]` are both reported; the complete record is kept.
    let f = write(dir.path(), "trunc.json", &format!("[\n{one},\n{{\"f_path\": \"b.jpg\", \"capt"));
    let (records, issues) = load_records(&f, Policy::Skip).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert_eq!(issues[0].line, 3);
    assert!(issues[1].message.contains("missing `]`"));
    // Trailing comma and content after the array.
    let f = write(dir.path(), "comma.json", &format!("[\n{one},\n]"));
    let (records, issues) = load_records(&f, Policy::Skip).unwrap();
    assert_eq!((records.len(), issues.len()), (1, 1));
    assert_eq!(issues[0].line, 3);
    assert!(issues[0].message.contains("stray comma"));
    let f = write(dir.path(), "after.json", &format!("[{one}]\nx"));
    let err = load_records(&f, Policy::Reject).unwrap_err().to_string();
    assert!(err.contains("after.json:2: unexpected content after the array"), "{err}");
    // Neither an array nor JSON lines.
    let f = write(dir.path(), "bad.json", "\n\n  \"hello\"");
    let err = load_records(&f, Policy::Skip).unwrap_err().to_string();
    assert!(err.contains("bad.json:3:") && err.contains("JSON array"), "{err}");
    // Empty file and empty array: no records, no issues.
    for (name, text) in [("e1.json", ""), ("e2.json", " [ ] ")] {
        let (r, i) = load_records(&write(dir.path(), name, text), Policy::Reject).unwrap();
        assert!(r.is_empty() && i.is_empty());
    }
    // A missing file is an error naming it.
    let err = load_records(&dir.path().join("nope.json"), Policy::Skip).unwrap_err().to_string();
    assert!(err.contains("nope.json"), "{err}");
}

#[test]
fn folders_lists_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("en");
    std::fs::create_dir(&d).unwrap();
    write(&d, "b.json", &format!("[{}]", rec("b.jpg", &[])));
    write(&d, "a.json", &format!("[{}]", rec("a.jpg", &[])));
    write(&d, "0.jsonl", &format!("{}\n", rec("z.jpg", &[])));
    write(&d, "notes.txt", "ignored");
    write(&d, ".hidden.json", "garbage");
    // `*.json` (sorted) first, then `*.jsonl`, as the official glob order does per pattern.
    let files: Vec<String> =
        record_files(&d).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(files, ["a.json", "b.json", "0.jsonl"]);
    let (records, _) = load_records(&d, Policy::Reject).unwrap();
    let names: Vec<&str> = records.iter().map(|r| r.f_path.as_str()).collect();
    assert_eq!(names, ["a.jpg", "b.jpg", "z.jpg"]);
    // A .txt list of files, relative to the list.
    let list = write(dir.path(), "list.txt", "en/b.json\n\nen/0.jsonl\n");
    let (records, _) = load_records(&list, Policy::Reject).unwrap();
    assert_eq!(records.iter().map(|r| r.f_path.as_str()).collect::<Vec<_>>(), ["b.jpg", "z.jpg"]);
    let bad_list = write(dir.path(), "bad.txt", "en/b.json\nen/missing.json\n");
    let err = load_records(&bad_list, Policy::Reject).unwrap_err().to_string();
    assert!(err.contains("bad.txt:2:") && err.contains("missing.json"), "{err}");
}

#[test]
fn dataset_languages_and_image_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (en_img, cn_img) = (dir.path().join("img_en"), dir.path().join("img_cn"));
    std::fs::create_dir_all(en_img.join("sub")).unwrap();
    std::fs::create_dir_all(&cn_img).unwrap();
    std::fs::write(en_img.join("sub/a.jpg"), b"x").unwrap();
    std::fs::write(cn_img.join("c.jpg"), b"x").unwrap();
    // FG-CLIP's trainer removes "grit-20m/data-12m/" from f_path.
    let en = write(
        dir.path(),
        "en.json",
        &format!("[\n{},\n{}\n]", rec("grit-20m/data-12m/sub/a.jpg", &[]), rec("sub/missing.jpg", &[])),
    );
    // `is_cn` marks Chinese by presence alone (null included); CN boxes are never read, so never checked.
    let cn = write(
        dir.path(),
        "cn.json",
        r#"[{"f_path":"c.jpg","caption":"两只猫","short_caption":"猫","is_cn":null,"bbox_info":[{"bbox":[9,9,0,0],"short_expr":"","long_expr":""}]}]"#,
    );
    let roots =
        ImageRoots { en: en_img.clone(), cn: Some(cn_img.clone()), f_path_remove: Some("grit-20m/data-12m/".into()) };
    let spec = DataSpec {
        en: vec![en.clone()],
        cn: vec![cn.clone()],
        roots: roots.clone(),
        policy: Policy::Skip,
        check_images: true,
    };
    let ds = Dataset::load(&spec).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.langs(), [Lang::En, Lang::Cn]);
    assert_eq!(ds.image_path(0), en_img.join("sub/a.jpg"));
    assert_eq!(ds.image_path(1), cn_img.join("c.jpg"));
    assert_eq!(ds.issues.len(), 1);
    assert_eq!((ds.issues[0].file.as_path(), ds.issues[0].line), (en.as_path(), 3));
    assert!(ds.issues[0].message.contains("image not found") && ds.issues[0].message.contains("missing.jpg"));
    assert_eq!(ds.items[1].line, 1);

    let err = Dataset::load(&DataSpec { policy: Policy::Reject, ..spec.clone() }).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:3: image not found", en.display())), "{err}");
    // Without image checks the record stays.
    assert_eq!(Dataset::load(&DataSpec { check_images: false, ..spec.clone() }).unwrap().len(), 3);
    // Chinese records need a CN root.
    let no_cn = DataSpec { roots: ImageRoots { cn: None, ..roots }, check_images: false, ..spec };
    let err = Dataset::load(&no_cn).unwrap_err().to_string();
    assert!(err.contains("cn.json:1") && err.contains("CN image root"), "{err}");

    // load_items keeps file and line.
    let (items, _) = load_items(&en, &ReadOptions::default()).unwrap();
    assert_eq!(items.iter().map(|i| i.line).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(&*items[0].file, en.as_path());
    assert_eq!("reject".parse::<Policy>().unwrap(), Policy::Reject);
    assert!("drop".parse::<Policy>().unwrap_err().to_string().contains("skip"));
}

#[test]
fn in_memory_records_are_validated() {
    let (mut records, _) = {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "a.json", &format!("[{},{}]", rec("a.jpg", &[good_box("x")]), rec("b.jpg", &[])));
        load_records(&f, Policy::Reject).unwrap()
    };
    assert!(Dataset::from_records(records.clone(), ImageRoots::new("/img")).is_ok());
    records[0].bbox_info[0].bbox = vec![0.5, 0.5, 0.1, 0.9];
    let err = Dataset::from_records(records, ImageRoots::new("/img")).unwrap_err().to_string();
    assert_eq!(err, "<memory>:1: bbox_info[0]: bbox [0.5, 0.5, 0.1, 0.9] has x1 > x2 or y1 > y2");
}
