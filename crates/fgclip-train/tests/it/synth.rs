//! `synth::generate` (determinism, negatives, boxes against the drawn pixels, FineHARD/FG-OVD layout) and
//! `eval::fgovd` on the tiny fixture models (counts, scores recomputed one line at a time, bad lines named).

use crate::common;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use fgclip::config::Family;
use fgclip::{LoadOptions, Model, PatchBudget};
use fgclip_train::data::{self, FgovdLine, Policy, Record};
use fgclip_train::eval::{self, FgovdOptions, LineSource, OnBadLine};
use fgclip_train::synth::{self, Attributes, SynthConfig, SynthSummary, NEGATIVES_PER_BOX, TEST_TYPE};

fn cfg(train: usize, test: usize, size: u32, seed: u64) -> SynthConfig {
    SynthConfig { train, test, size, seed, ..Default::default() }
}

fn gen(c: &SynthConfig) -> (tempfile::TempDir, SynthSummary) {
    let dir = tempfile::tempdir().unwrap();
    let count = std::sync::atomic::AtomicU64::new(0);
    let s = synth::generate(c, dir.path(), &|n| {
        count.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    // The progress callback sees every image exactly once.
    assert_eq!(count.into_inner(), (c.train + c.test) as u64);
    (dir, s)
}

fn read_records(p: &Path) -> Vec<Record> {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn png_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir.join("images")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
    let c = cfg(12, 4, 96, 7);
    let (a, sa) = gen(&c);
    let (b, sb) = gen(&c);
    assert_eq!(sa, sb);
    for f in ["train.json", "test.json", "test_fgovd.jsonl", "synth.json"] {
        assert!(read_bytes(&a.path().join(f)) == read_bytes(&b.path().join(f)), "{f} differs between two runs");
    }
    let names = png_names(a.path());
    assert_eq!(names.len(), 16);
    assert_eq!(names, png_names(b.path()));
    for n in &names {
        let p = format!("images/{n}");
        assert!(read_bytes(&a.path().join(&p)) == read_bytes(&b.path().join(&p)), "{p} differs between two runs");
    }
    // A different seed changes the data (not just the file names).
    let (d, _) = gen(&cfg(12, 4, 96, 8));
    assert_ne!(read_bytes(&a.path().join("train.json")), read_bytes(&d.path().join("train.json")));
    assert_ne!(
        read_bytes(&a.path().join("images/train_000000.png")),
        read_bytes(&d.path().join("images/train_000000.png"))
    );
}

#[test]
fn layout_counts_and_records_pass_the_finehard_reader() {
    let c = cfg(30, 10, 128, 1);
    let (dir, s) = gen(&c);
    let out = dir.path();
    let train = read_records(&out.join("train.json"));
    let test = read_records(&out.join("test.json"));
    assert_eq!((train.len(), test.len()), (30, 10));
    assert_eq!(s.train_boxes, train.iter().map(|r| r.bbox_info.len()).sum::<usize>());
    // The loader of data.rs (the training path) accepts every record and box without an issue.
    for f in ["train.json", "test.json"] {
        let (recs, issues) = data::load_records(&out.join(f), Policy::Reject).unwrap();
        assert!(issues.is_empty(), "{f}: {issues:?}");
        assert_eq!(recs.len(), if f == "train.json" { 30 } else { 10 });
    }
    // Splits share no image; every f_path exists as a PNG of the configured size.
    let tr: HashSet<&str> = train.iter().map(|r| r.f_path.as_str()).collect();
    let te: HashSet<&str> = test.iter().map(|r| r.f_path.as_str()).collect();
    assert!(tr.is_disjoint(&te));
    assert_eq!(tr.len() + te.len(), 40);
    for r in train.iter().chain(&test) {
        assert_eq!(image::image_dimensions(out.join("images").join(&r.f_path)).unwrap(), (128, 128));
        assert!((2..=4).contains(&r.bbox_info.len()), "{}: {} objects", r.f_path, r.bbox_info.len());
        assert!(r.is_cn.is_none());
        // Captions mention every object; the long one with all four attributes.
        for b in &r.bbox_info {
            assert!(
                r.caption.contains(&b.short_expr),
                "{}: caption {:?} lacks {:?}",
                r.f_path,
                r.caption,
                b.short_expr
            );
            assert!(
                b.long_expr.starts_with(&format!("a {}", b.short_expr))
                    || b.long_expr.starts_with(&format!("an {}", b.short_expr))
            );
            let a = Attributes::parse(&b.short_expr).unwrap();
            let name = format!("{} {}", synth::COLOURS[a.colour].0, synth::SHAPES[a.shape]);
            assert!(
                r.short_caption.contains(&name),
                "{}: short caption {:?} lacks {name:?}",
                r.f_path,
                r.short_caption
            );
        }
    }
    // The FG-OVD file: one line per held-out box, pointing at the held-out images.
    let file = eval::read_fgovd(&out.join("test_fgovd.jsonl")).unwrap();
    assert_eq!(file.lines.len(), s.test_boxes);
    assert_eq!(file.lines.len(), test.iter().map(|r| r.bbox_info.len()).sum::<usize>());
    let mut k = 0;
    for r in &test {
        for b in &r.bbox_info {
            let l = &file.lines[k];
            k += 1;
            assert_eq!(l.img_path, r.f_path);
            assert_eq!(l.pos_expression, vec![b.short_expr.clone()]);
            assert_eq!(l.neg_expression, b.short_expr_negs.values().map(String::from).collect::<Vec<_>>());
            assert_eq!((l.width, l.height), (Some(128), Some(128)));
            assert_eq!(l.test_type.as_deref(), Some(TEST_TYPE));
            // [x, y, w, h] px is the normalised xyxy box scaled by 128 (exact: both are whole pixels).
            let n = &b.bbox;
            assert_eq!(l.bbox, [n[0] * 128.0, n[1] * 128.0, (n[2] - n[0]) * 128.0, (n[3] - n[1]) * 128.0]);
        }
    }
    let summary: SynthSummary =
        serde_json::from_str(&std::fs::read_to_string(out.join("synth.json")).unwrap()).unwrap();
    assert_eq!(summary.train_images, 30);
    assert_eq!(summary.test_boxes, file.lines.len());
}

#[test]
fn every_negative_swaps_exactly_one_attribute_and_describes_no_object() {
    let (dir, _) = gen(&cfg(150, 0, 64, 3));
    let recs = read_records(&dir.path().join("train.json"));
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for r in &recs {
        let objs: Vec<Attributes> = r
            .bbox_info
            .iter()
            .map(|b| Attributes::parse(&b.short_expr).unwrap_or_else(|| panic!("unparsable {:?}", b.short_expr)))
            .collect();
        let distinct: HashSet<_> = objs.iter().collect();
        assert_eq!(distinct.len(), objs.len(), "{}: two objects share a description", r.f_path);
        for (b, pos) in r.bbox_info.iter().zip(&objs) {
            assert_eq!(b.flag_short_neg, 1);
            let keys: Vec<&str> = b.short_expr_negs.keys().map(String::as_str).collect();
            let want: Vec<String> = (0..NEGATIVES_PER_BOX).map(|i| format!("neg_{i}")).collect();
            assert_eq!(keys, want.iter().map(|s| s.as_str()).collect::<Vec<_>>());
            let negs: Vec<&str> = b.short_expr_negs.values().map(String::as_str).collect();
            assert_eq!(
                negs.iter().collect::<HashSet<_>>().len(),
                NEGATIVES_PER_BOX,
                "{}: repeated negatives",
                r.f_path
            );
            for n in negs {
                let a = Attributes::parse(n).unwrap_or_else(|| panic!("unparsable negative {n:?}"));
                let d = a.differences(pos);
                assert_eq!(d.len(), 1, "{}: {n:?} vs {:?} differ in {d:?}", r.f_path, b.short_expr);
                *kinds.entry(d[0].name()).or_default() += 1;
                assert!(!objs.contains(&a), "{}: negative {n:?} describes an object of the image", r.f_path);
            }
        }
    }
    // All four kinds of swap occur (the vocabulary allows 1 size, 7 colour, 2 texture and 5 shape swaps).
    assert_eq!(kinds.len(), 4, "{kinds:?}");
}

/// Per-channel median of the image's outermost pixel ring: objects never touch it (they keep a margin).
fn background(img: &image::RgbImage) -> [i32; 3] {
    let (w, h) = img.dimensions();
    let mut ch: [Vec<i32>; 3] = [vec![], vec![], vec![]];
    for x in 0..w {
        for y in [0, h - 1] {
            for (c, v) in ch.iter_mut().enumerate() {
                v.push(img.get_pixel(x, y)[c] as i32);
            }
        }
    }
    ch.map(|mut v| {
        v.sort();
        v[v.len() / 2]
    })
}

#[test]
fn boxes_are_inside_the_image_and_tight_around_the_drawn_pixels() {
    // Background: grey ± tint ± noise of at most 10 per channel; every fill and mark colour is ≥ 30 away
    // from it in some channel. A pixel counts as object when some channel is more than 20 from the
    // background estimate (noise 10 + median error of a few levels stays below; objects stay above).
    const T: i32 = 20;
    for size in [64u32, 128] {
        let (dir, _) = gen(&cfg(40, 0, size, 11));
        let recs = read_records(&dir.path().join("train.json"));
        for r in &recs {
            let img = image::open(dir.path().join("images").join(&r.f_path)).unwrap().to_rgb8();
            let bg = background(&img);
            let is_obj = |x: i64, y: i64| -> bool {
                if x < 0 || y < 0 || x >= size as i64 || y >= size as i64 {
                    return false;
                }
                let p = img.get_pixel(x as u32, y as u32);
                (0..3).any(|c| (p[c] as i32 - bg[c]).abs() > T)
            };
            for b in &r.bbox_info {
                let n = &b.bbox;
                assert!(
                    n.iter().all(|v| (0.0..=1.0).contains(v)) && n[0] < n[2] && n[1] < n[3],
                    "{}: bbox {n:?}",
                    r.f_path
                );
                let px: Vec<i64> = n.iter().map(|v| (v * size as f32).round() as i64).collect();
                let (x1, y1, x2, y2) = (px[0], px[1], px[2], px[3]);
                // Not too large: each edge row/column of the box holds a drawn pixel.
                assert!((x1..x2).any(|x| is_obj(x, y1)), "{}: top edge of {n:?} is empty", r.f_path);
                assert!((x1..x2).any(|x| is_obj(x, y2 - 1)), "{}: bottom edge of {n:?} is empty", r.f_path);
                assert!((y1..y2).any(|y| is_obj(x1, y)), "{}: left edge of {n:?} is empty", r.f_path);
                assert!((y1..y2).any(|y| is_obj(x2 - 1, y)), "{}: right edge of {n:?} is empty", r.f_path);
                // Not too small: the one-pixel ring around the box is background (objects keep a gap).
                for x in x1 - 1..=x2 {
                    assert!(!is_obj(x, y1 - 1) && !is_obj(x, y2), "{}: object pixel just outside {n:?}", r.f_path);
                }
                for y in y1 - 1..=y2 {
                    assert!(!is_obj(x1 - 1, y) && !is_obj(x2, y), "{}: object pixel just outside {n:?}", r.f_path);
                }
            }
            // Boxes of one image do not overlap.
            for (i, a) in r.bbox_info.iter().enumerate() {
                for b in &r.bbox_info[i + 1..] {
                    let (a, b) = (&a.bbox, &b.bbox);
                    let overlap = a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
                    assert!(!overlap, "{}: boxes {a:?} and {b:?} overlap", r.f_path);
                }
            }
        }
    }
}

#[test]
fn bad_configs_and_non_empty_folders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (c, what) in [
        (cfg(0, 0, 128, 0), "nothing to generate"),
        (cfg(1, 0, 16, 0), "size 16"),
        (SynthConfig { max_objects: 5, ..cfg(1, 0, 128, 0) }, "objects per image"),
        (SynthConfig { min_objects: 3, max_objects: 2, ..cfg(1, 0, 128, 0) }, "objects per image"),
    ] {
        let e = synth::generate(&c, dir.path(), &|_| {}).unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    }
    std::fs::write(dir.path().join("keep.txt"), "x").unwrap();
    let e = synth::generate(&cfg(1, 0, 64, 0), dir.path(), &|_| {}).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    // With overwrite it writes, and leaves the unrelated file alone.
    synth::generate(&SynthConfig { overwrite: true, ..cfg(1, 1, 64, 0) }, dir.path(), &|_| {}).unwrap();
    assert!(dir.path().join("keep.txt").is_file());
    assert_eq!(png_names(dir.path()), vec!["test_000000.png", "train_000000.png"]);
}

// ------------------------------------------------------------------------------------------------ eval

fn model(fixtures: &Path, which: &str) -> Model {
    let dir = fixtures.join(which).join("model");
    Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Cosines of one line computed alone: one image, one box, the candidates encoded on their own.
fn scores_alone(m: &Model, root: &Path, l: &FgovdLine) -> Vec<f32> {
    let img = Model::load_images(&[root.join(&l.img_path)]).unwrap();
    let prepared = m.prepare_images(&img, PatchBudget::Dynamic).unwrap();
    let [x, y, w, h] = l.bbox;
    let reg = m.region_features(&prepared, &[vec![[x, y, x + w, y + h]]]).unwrap().remove(0);
    let mut cands: Vec<String> = l.pos_expression.iter().chain(&l.neg_expression).cloned().collect();
    if m.family() == Family::FgClip2 {
        cands = cands.iter().map(|s| s.to_lowercase()).collect();
    }
    let refs: Vec<&str> = cands.iter().map(|s| s.as_str()).collect();
    let walk = if m.family() == Family::FgClip2 { fgclip::TextWalk::Box } else { fgclip::TextWalk::Short };
    let t = common::l2n(&m.encode_texts(&refs, walk).unwrap());
    let r = common::l2n(&reg);
    r.matmul(&t.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn fgovd_counts_and_scores_match_a_line_by_line_recomputation() {
    let Some(fx) = common::fixtures_dir() else { return };
    let (dir, s) = gen(&cfg(0, 5, 96, 21));
    let root = dir.path().join("images");
    let file = eval::read_fgovd(&dir.path().join("test_fgovd.jsonl")).unwrap();
    assert_eq!(file.lines.len(), s.test_boxes);
    for which in ["fgclip_v1", "fgclip2"] {
        let m = model(&fx, which);
        // batch 2 over 5 images: a partial last batch, and images padded together (FG-CLIP 2).
        let progress = std::sync::atomic::AtomicU64::new(0);
        let rep = eval::fgovd(&m, &file.lines, &root, 2, &|n| {
            progress.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(progress.into_inner(), file.lines.len() as u64);
        assert_eq!(rep.total, file.lines.len());
        assert!(rep.skipped.is_empty());
        assert_eq!(rep.outcomes.len(), rep.total);
        assert_eq!(rep.correct, rep.outcomes.iter().filter(|o| o.correct).count());
        assert_eq!(rep.accuracy, rep.correct as f64 / rep.total as f64);
        let t = &rep.by_type[TEST_TYPE];
        assert_eq!((t.correct, t.total), (rep.correct, rep.total));
        // Independent recomputation of every line. Tolerance 1e-4 on cosines: batching changes only the
        // summation order of f32 matmuls (the FG-CLIP 2 padding is masked), ~1e-6 in practice.
        let mut correct = 0;
        for (i, (l, o)) in file.lines.iter().zip(&rep.outcomes).enumerate() {
            assert_eq!(o.index, i);
            let want = scores_alone(&m, &root, l);
            assert_eq!(o.scores.len(), 1 + NEGATIVES_PER_BOX);
            let d = want.iter().zip(&o.scores).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d <= 1e-4, "{which} line {i}: cosines differ by {d}");
            let best_neg = want[1..].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if (want[0] - best_neg).abs() > 1e-4 {
                assert_eq!(o.correct, want[0] > best_neg, "{which} line {i}");
            }
            correct += (want[0] >= best_neg) as usize;
        }
        eprintln!("{which}: accuracy {:.3} ({}/{}), recomputed {correct}", rep.accuracy, rep.correct, rep.total);
        assert_eq!(correct, rep.correct, "{which}: recomputed correct count");
    }
}

/// Writes `lines` as jsonl with a blank line after the first, so file line numbers ≠ indices.
fn write_jsonl(path: &Path, lines: &[FgovdLine]) {
    let mut s = String::new();
    for (i, l) in lines.iter().enumerate() {
        s.push_str(&serde_json::to_string(l).unwrap());
        s.push('\n');
        if i == 0 {
            s.push('\n');
        }
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn bad_lines_are_named_by_file_and_line_or_skipped() {
    let Some(fx) = common::fixtures_dir() else { return };
    let (dir, _) = gen(&cfg(0, 3, 64, 5));
    let root = dir.path().join("images");
    let mut lines = eval::read_fgovd(&dir.path().join("test_fgovd.jsonl")).unwrap().lines;
    assert!(lines.len() >= 6);
    lines[2].img_path = "missing_image.png".into(); // file line 4 (a blank line follows the first)
    lines[4].bbox = [500.0, 500.0, 10.0, 10.0]; // file line 6: outside the 64x64 image
    let path: PathBuf = dir.path().join("bad.jsonl");
    let m = model(&fx, "fgclip_v1");
    // Error mode, the missing image alone.
    let mut only_missing = lines.clone();
    only_missing[4].bbox = eval::read_fgovd(&dir.path().join("test_fgovd.jsonl")).unwrap().lines[4].bbox;
    write_jsonl(&path, &only_missing);
    let file = eval::read_fgovd(&path).unwrap();
    let mut opts =
        FgovdOptions { image_root: root.clone(), batch: 2, on_bad_line: OnBadLine::Error, source: file.source.clone() };
    let e = eval::fgovd_with(&m, &file.lines, &opts, &|_| {}).unwrap_err().to_string();
    assert!(e.contains(&format!("{}:4", path.display())) && e.contains("missing_image.png"), "{e}");
    // Skip mode with both problems.
    write_jsonl(&path, &lines);
    let file = eval::read_fgovd(&path).unwrap();
    opts.source = file.source.clone();

    opts.on_bad_line = OnBadLine::Skip;
    let rep = eval::fgovd_with(&m, &file.lines, &opts, &|_| {}).unwrap();
    assert_eq!(rep.total, lines.len() - 2);
    let locs: Vec<&str> = rep.skipped.iter().map(|s| s.location.as_str()).collect();
    assert_eq!(locs, vec![format!("{}:4", path.display()), format!("{}:6", path.display())]);
    assert!(rep.skipped[1].reason.contains("outside"), "{:?}", rep.skipped[1]);
    assert!(rep.outcomes.iter().all(|o| o.index != 2 && o.index != 4));

    // Without a source the message still names the line (1-based index).
    let e = eval::fgovd(&m, &only_missing, &root, 2, &|_| {}).unwrap_err().to_string();
    assert!(e.contains(":3") && e.contains("missing_image.png"), "{e}");
    // A degenerate box is caught before any image is read.
    let mut l2 = lines.clone();
    l2[0].bbox[2] = 0.0;
    let e = eval::fgovd_with(
        &m,
        &l2,
        &FgovdOptions { source: LineSource { file: "x.jsonl".into(), numbers: vec![] }, ..opts.clone() },
        &|_| {},
    );
    assert!(e.is_ok(), "skip mode keeps going");
    opts.on_bad_line = OnBadLine::Error;
    opts.source = LineSource { file: "x.jsonl".into(), numbers: vec![] };
    let e = eval::fgovd_with(&m, &l2, &opts, &|_| {}).unwrap_err().to_string();
    assert!(e.contains("x.jsonl:1") && e.contains("no area"), "{e}");
}

#[test]
fn unparsable_fgovd_lines_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.jsonl");
    let good = r#"{"img_path":"a.png","bbox":[1,2,3,4],"pos_expression":["x"],"neg_expression":["y"]}"#;
    std::fs::write(
        &p,
        format!("{good}\n{{\"img_path\":\"a.png\",\"pos_expression\":[\"x\"],\"neg_expression\":[]}}\n"),
    )
    .unwrap();
    let e = eval::read_fgovd(&p).unwrap_err().to_string();
    assert!(e.contains(&format!("{}:2", p.display())) && e.contains("bbox"), "{e}");
    std::fs::write(&p, "\n\n").unwrap();
    assert!(eval::read_fgovd(&p).unwrap_err().to_string().contains("no FG-OVD lines"));
    // Extra fields of the real benchmark are kept.
    std::fs::write(&p, format!("{}\n", good.replace("}", r#","category_id":7,"test_type":"1_attributes"}"#))).unwrap();
    let f = eval::read_fgovd(&p).unwrap();
    assert_eq!(f.lines[0].extra["category_id"], serde_json::json!(7));
    assert_eq!(f.source.locate(0), format!("{}:1", p.display()));
}
