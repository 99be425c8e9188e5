//! The collator against the official dataset + collator output (`batch.*` of v1_forward / v2_forward, built from
//! `train_items.json` and the fixture images; see fixtures/losses/manifest.json `batch_construction`).

use crate::common;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use fgclip::hub::ModelFiles;
use fgclip_train::batch::{Batch, Collator, BOX_SLOTS, HARD_CAPTIONS};
use fgclip_train::data::{load_records, Dataset, ImageRoots, Policy, Record};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

struct Setup {
    records: Vec<Record>,
    data: Dataset,
    expected: std::collections::HashMap<String, Tensor>,
    collator: Collator,
}

fn setup(fx: &Path, family_dir: &str, forward: &str) -> Setup {
    let (records, issues) = load_records(&fx.join("losses/train_items.json"), Policy::Reject).unwrap();
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(records.len(), 3);
    let data = Dataset::from_records(records.clone(), ImageRoots::new(fx.join("images"))).unwrap();
    let expected = common::load_tensors(&fx.join("losses").join(forward));
    let collator = Collator::from_files(&ModelFiles::from_dir(fx.join(family_dir).join("model")).unwrap()).unwrap();
    Setup { records, data, expected, collator }
}

fn ids(t: &Tensor) -> Vec<Vec<i64>> {
    t.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap()
}

fn tok(c: &Collator, text: &str, len: usize) -> Vec<i64> {
    c.tokenizer().encode(&[text], len).unwrap().ids.iter().map(|&x| x as i64).collect()
}

fn lower_if(v2: bool, s: &str) -> String {
    if v2 {
        s.to_lowercase()
    } else {
        s.to_string()
    }
}

fn boxes_of(t: &Tensor) -> Vec<[f32; 4]> {
    t.to_vec2::<f32>().unwrap().into_iter().map(|r| [r[0], r[1], r[2], r[3]]).collect()
}

fn nums(t: &Tensor) -> Vec<usize> {
    t.to_vec1::<i64>().unwrap().into_iter().map(|x| x as usize).collect()
}

/// Everything but the pixels: ids exact, boxes exact (same f32 from the same JSON numbers), box texts one of the
/// two captions of their box (Python's `random.choice` cannot be replayed).
fn check_common(s: &Setup, b: &Batch, v2: bool) {
    let e = &s.expected;
    let short_len = s.collator.config().short_len;
    assert_eq!(ids(b.text_long.as_ref().unwrap()), ids(&e["batch.text_long"]), "text_long");
    assert_eq!(ids(&b.text_short), ids(&e["batch.text_short"]), "text_short");
    assert_eq!(ids(&b.hard_texts), ids(&e["batch.hard_texts"]), "hard_texts");
    assert_eq!(b.hard_texts.dims(), &[6 * HARD_CAPTIONS, short_len]);
    assert_eq!(b.box_infos, boxes_of(&e["batch.box_infos"]), "box_infos");
    assert_eq!(b.hard_infos, boxes_of(&e["batch.hard_infos"]), "hard_infos");
    assert_eq!(b.box_nums, nums(&e["batch.box_nums"]), "box_nums");
    assert_eq!(b.hard_nums, nums(&e["batch.hard_nums"]), "hard_nums");
    assert!(!b.is_cn);

    let ours = ids(&b.box_texts);
    let theirs = ids(&e["batch.box_texts"]);
    assert_eq!(ours.len(), BOX_SLOTS * 3);
    assert_eq!(theirs.len(), BOX_SLOTS * 3);
    for (slot, (o, t)) in ours.iter().zip(&theirs).enumerate() {
        let (i, k) = (slot / BOX_SLOTS, slot % BOX_SLOTS);
        let allowed: Vec<Vec<i64>> = match s.records[i].bbox_info.get(k).filter(|_| k < b.box_nums[i]) {
            Some(bx) => vec![
                tok(&s.collator, &lower_if(v2, &bx.short_expr), short_len),
                tok(&s.collator, &lower_if(v2, &bx.long_expr), short_len),
            ],
            None => vec![tok(&s.collator, "", short_len)],
        };
        assert!(allowed.contains(t), "fixture box_texts row {slot} is not one of its box's captions (test is wrong)");
        assert!(allowed.contains(o), "box_texts row {slot} is not one of its box's captions");
    }
}

/// Over several seeds each valid box must get both of its captions at least once (the choice is really random).
fn check_choice_varies(s: &Setup) {
    let mut seen = std::collections::HashSet::new();
    for seed in 0..16u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (b, _) = s.collator.collate_items(&s.data, &[0, 1, 2], Policy::Reject, &mut rng, &Device::Cpu).unwrap();
        for (slot, row) in ids(&b.box_texts).into_iter().enumerate() {
            seen.insert((slot, row));
        }
    }
    let valid: usize = s.records.iter().map(|r| r.bbox_info.len().min(BOX_SLOTS)).sum();
    let empty = 3 * BOX_SLOTS - valid;
    assert_eq!(seen.len(), 2 * valid + empty, "each valid box slot should have shown both captions over 16 seeds");
}

fn fixtures() -> Option<PathBuf> {
    common::fixture_file("losses/v1_forward.safetensors")?;
    common::fixtures_dir()
}

#[test]
fn fgclip_v1_batch_matches_official_collator() {
    let Some(fx) = fixtures() else { return };
    let s = setup(&fx, "fgclip_v1", "v1_forward.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (b, issues) = s.collator.collate_items(&s.data, &[0, 1, 2], Policy::Reject, &mut rng, &Device::Cpu).unwrap();
    assert!(issues.is_empty());
    assert!(b.pixels.valid.is_none(), "FG-CLIP batch must have fixed-size pixels");
    let img = &b.pixels.pixel_values;
    // 1e-6: same Pillow-exact bicubic bytes and the same f32 normalisation; only an f32 rounding may differ.
    common::assert_close("v1 image", img, &s.expected["batch.image"], 1e-6);
    assert_eq!((b.text_long.as_ref().unwrap().dim(1).unwrap(), b.text_short.dim(1).unwrap()), (248, 77));
    check_common(&s, &b, false);
    check_choice_varies(&s);
}

#[test]
fn fgclip2_batch_matches_official_collator() {
    let Some(fx) = fixtures() else { return };
    let s = setup(&fx, "fgclip2", "v2_forward.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (b, issues) = s.collator.collate_items(&s.data, &[0, 1, 2], Policy::Reject, &mut rng, &Device::Cpu).unwrap();
    assert!(issues.is_empty());
    let (pixel_values, grids) = (&b.pixels.pixel_values, &b.pixels.grids);
    let valid = b.pixels.valid.as_ref().expect("FG-CLIP 2 batch must be NaFlex");
    // 1e-6: Pillow-exact bilinear bytes, same f32 normalisation.
    common::assert_close("v2 pixel_values", pixel_values, &s.expected["batch.pixel_values"], 1e-6);
    let mask = s.expected["batch.pixel_attention_mask"].to_dtype(DType::F32).unwrap();
    assert_eq!(valid.to_vec2::<f32>().unwrap(), mask.to_vec2::<f32>().unwrap(), "pixel_attention_mask");
    let shapes: Vec<(usize, usize)> = s.expected["batch.spatial_shapes"]
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| (r[0] as usize, r[1] as usize))
        .collect();
    assert_eq!(grids, &shapes, "spatial_shapes");
    assert_eq!(pixel_values.dim(1).unwrap(), 1024, "patch budget");
    assert_eq!((b.text_long.as_ref().unwrap().dim(1).unwrap(), b.text_short.dim(1).unwrap()), (196, 64));
    check_common(&s, &b, true);
    check_choice_varies(&s);
}

/// FG-CLIP 2 rules the fixture does not exercise: Chinese samples (no prefix, no boxes, a CN-only batch is
/// `is_cn`), small images squashed to 512² (budget from the squashed size), unreadable images under Skip/Reject.
#[test]
fn fgclip2_cn_small_and_failed_images() {
    let Some(fx) = fixtures() else { return };
    let s = setup(&fx, "fgclip2", "v2_forward.safetensors");
    let dir = tempfile::tempdir().unwrap();
    // A 100×60 image: a side < 128 → squashed to 512×512 → n = 32·32 = 1024 → budget 1024.
    let small = image::RgbImage::from_fn(100, 60, |x, y| image::Rgb([(x * 2) as u8, (y * 4) as u8, 7]));
    small.save(dir.path().join("small.png")).unwrap();
    let cn = Record {
        f_path: "small.png".into(),
        caption: "两只猫 On A Desk".into(),
        short_caption: "Two 猫".into(),
        bbox_info: s.records[0].bbox_info.clone(), // present but never read for CN
        is_cn: Some(serde_json::Value::Bool(true)),
    };
    let roots = ImageRoots { en: dir.path().into(), cn: Some(dir.path().into()), f_path_remove: None };
    let data = Dataset::from_records(vec![cn.clone(), cn.clone()], roots.clone()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (b, _) = s.collator.collate_items(&data, &[0, 1], Policy::Reject, &mut rng, &Device::Cpu).unwrap();
    assert!(b.is_cn);
    assert_eq!(b.box_nums, vec![0, 0]);
    assert_eq!(b.hard_nums, vec![0, 0]);
    assert_eq!(b.hard_texts.dims(), &[0, 64]);
    assert!(b.box_infos.iter().all(|x| *x == [0.0; 4]));
    let c = &s.collator;
    assert_eq!(ids(&b.text_short)[0], tok(c, "two 猫", 64), "CN short caption: lower-cased, no prefix");
    assert_eq!(ids(b.text_long.as_ref().unwrap())[0], tok(c, "两只猫 on a desk", 196));
    let (pixel_values, grids) = (&b.pixels.pixel_values, &b.pixels.grids);
    assert_eq!(pixel_values.dim(1).unwrap(), 1024);
    assert_eq!(grids[0], (32, 32), "512×512 squash at budget 1024");

    // EN hard positive keeps its case, its negatives and the region captions are lower-cased.
    let (b, _) = c.collate_items(&s.data, &[0], Policy::Reject, &mut rng, &Device::Cpu).unwrap();
    let hard = ids(&b.hard_texts);
    let bx = &s.records[0].bbox_info[0];
    assert_eq!(hard[0], tok(c, &bx.short_expr, 64), "hard positive is not lower-cased");
    assert_ne!(hard[0], tok(c, &bx.short_expr.to_lowercase(), 64), "test needs a capitalised positive");
    let negs: Vec<&str> = bx.short_expr_negs.values().map(String::as_str).collect();
    assert_eq!(hard[1], tok(c, &negs[0].to_lowercase(), 64));

    // Missing image: Reject errors naming the file; Skip gives a black 384² image and an issue.
    let mut missing = s.records[1].clone();
    missing.f_path = "nope.jpg".into();
    let data = Dataset::from_records(vec![missing], roots).unwrap();
    let err = c.collate_items(&data, &[0], Policy::Reject, &mut rng, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("nope.jpg") && err.contains("<memory>:1"), "{err}");
    let (b, issues) = c.collate_items(&data, &[0], Policy::Skip, &mut rng, &Device::Cpu).unwrap();
    assert_eq!(issues.len(), 1);
    assert!(issues[0].message.contains("nope.jpg") && issues[0].message.contains("black"), "{}", issues[0]);
    let (pixel_values, grids) = (&b.pixels.pixel_values, &b.pixels.grids);
    let valid = b.pixels.valid.as_ref().expect("NaFlex mask");
    // 384² → n = 576 → budget 576, grid 24×24; black → every real value is (0 − 0.5) / 0.5 = −1.
    assert_eq!((grids[0], pixel_values.dim(1).unwrap()), ((24, 24), 576));
    let real = pixel_values.i((0, ..576)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(real.iter().all(|&v| v == -1.0));
    assert_eq!(valid.sum_all().unwrap().to_scalar::<f32>().unwrap(), 576.0);
}
