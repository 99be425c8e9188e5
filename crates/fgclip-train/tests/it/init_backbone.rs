//! Stage-2 initialisation from public backbones (`fgclip_train::init`, mirroring the official
//! `resize_postion_embeding` / `copy_weight` / `copy_dense_feature_head` and the trainers' stage-2 scales).
//!
//! The backbones are synthetic: the fixture FG-CLIP / FG-CLIP 2 models with their FG-CLIP-only tensors removed
//! and a CLIP / SigLIP 2 `config.json`. Every other tensor (the whole short path) is shared with the fixture
//! model, so the converted model's short-walk text and image features must equal the fixture model's.

use crate::common;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use fgclip::config::Family;
use fgclip::{LoadOptions, Model, PatchBudget, TextWalk};
use fgclip_train::init::{
    backbone_family, convert_backbone, fgclip2_from_siglip2, fgclip_from_clip, stretch_position_table,
    trainable_from_backbone, TEXT_POSITION, TEXT_POSITION_ORI, TEXT_POSITION_RES,
};
use serde_json::Value;

const V1_ONLY: [&str; 5] = [
    TEXT_POSITION_ORI,
    TEXT_POSITION_RES,
    "text_filip_projection.weight",
    "logit_scale_finegraind",
    "logit_scale_hardneg",
];

fn is_v2_only(k: &str) -> bool {
    k == TEXT_POSITION_ORI
        || k == TEXT_POSITION_RES
        || k.starts_with("longtext_head.")
        || k.starts_with("boxtext_head.")
        || k.starts_with("dense_feature_head.")
        || k.starts_with("logit_scale_finegraind")
        || k.starts_with("logit_scale_hardneg")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn copy_side_files(from: &Path, to: &Path) {
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "preprocessor_config.json"] {
        if from.join(f).is_file() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
}

/// A CLIP backbone folder: the fixture FG-CLIP model minus its FG-CLIP tensors, `architectures: CLIPModel`.
/// Returns its tensors.
fn fake_clip(fixture_model: &Path, dir: &Path) -> HashMap<String, Tensor> {
    let mut ts = common::load_tensors(&fixture_model.join("model.safetensors"));
    for k in V1_ONLY {
        assert!(ts.remove(k).is_some(), "fixture lacks {k}");
    }
    // Older CLIP checkpoints store this buffer; the conversion must drop it.
    ts.insert(
        "text_model.embeddings.position_ids".into(),
        Tensor::arange(0i64, 77, &Device::Cpu).unwrap().unsqueeze(0).unwrap(),
    );
    candle_core::safetensors::save(&ts, dir.join("model.safetensors")).unwrap();
    ts.remove("text_model.embeddings.position_ids");
    let mut cfg = read_json(&fixture_model.join("config.json"));
    cfg["architectures"] = serde_json::json!(["CLIPModel"]);
    cfg["text_config"]["eos_token_id"] = serde_json::json!(2); // as openai/clip-vit-base-patch16 ships it
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    copy_side_files(fixture_model, dir);
    ts
}

/// A SigLIP 2 backbone folder, written as two shards + index: the fixture FG-CLIP 2 model minus its FG-CLIP 2
/// tensors, with a `siglip2` config. Returns its tensors.
fn fake_siglip2(fixture_model: &Path, dir: &Path) -> HashMap<String, Tensor> {
    let mut ts = common::load_tensors(&fixture_model.join("model.safetensors"));
    ts.retain(|k, _| !is_v2_only(k));
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (k, t) in &ts {
        let (shard, name) = if k.starts_with("text_model") {
            (&mut a, "model-00001-of-00002.safetensors")
        } else {
            (&mut b, "model-00002-of-00002.safetensors")
        };
        shard.insert(k.clone(), t.clone());
        map.insert(k.clone(), Value::String(name.into()));
    }
    candle_core::safetensors::save(&a, dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, dir.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let mut cfg = read_json(&fixture_model.join("config.json"));
    cfg["architectures"] = serde_json::json!(["Siglip2Model"]);
    cfg["model_type"] = serde_json::json!("siglip2");
    let text = cfg["text_config"].as_object_mut().unwrap();
    text.remove("keep_len");
    text.remove("longtext_len");
    text.insert("model_type".into(), serde_json::json!("siglip2_text_model"));
    cfg["vision_config"]["model_type"] = serde_json::json!("siglip2_vision_model");
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    copy_side_files(fixture_model, dir);
    ts
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

/// Checks a stretched table against the source table:
/// * rows 0..20 bit-equal the source rows;
/// * every row within 1e-6 of the formula in f64, written independently here as interpolation at fractional
///   source positions: new row r ≥ 20 sits at source position s = 20 + (r − 20)/4; rows with s ≤ L − 1
///   interpolate P linearly, the last four extrapolate the last segment. The tolerance covers the official f32
///   evaluation (≤ 4 roundings of values |x| < 4, each ≤ 2.4e-7);
/// * bit-equal to the official expressions evaluated with candle ops in f32 (`(3·a)/4 + b/4`, …), the
///   torch op order.
fn check_stretch(src: &Tensor, got: &Tensor) {
    let p = rows(src);
    let g = rows(got);
    let l = p.len();
    assert_eq!(g.len(), 4 * l - 60, "stretched rows");
    for i in 0..20 {
        assert_eq!(g[i], p[i], "row {i} is copied");
    }
    let mut worst = 0f64;
    for (r, row) in g.iter().enumerate().skip(20) {
        let s = 20.0 + (r as f64 - 20.0) / 4.0;
        let lo = (s.floor() as usize).min(l - 2);
        let t = s - lo as f64; // in [0, 1) inside, up to 1.75 in the extrapolated tail (lo = L − 2)
        for (j, &v) in row.iter().enumerate() {
            let want = if r >= 4 * l - 64 {
                // extrapolation: P[L−1] + k·(P[L−1] − P[L−2])/4
                let k = (r - (4 * l - 64)) as f64;
                p[l - 1][j] as f64 + k * (p[l - 1][j] as f64 - p[l - 2][j] as f64) / 4.0
            } else {
                (1.0 - t) * p[lo][j] as f64 + t * p[lo + 1][j] as f64
            };
            worst = worst.max((v as f64 - want).abs());
        }
    }
    eprintln!("stretch {l} -> {}: max |f32 - f64 formula| = {worst:.3e} (tol 1e-6)", g.len());
    assert!(worst <= 1e-6, "stretched rows differ from the formula by {worst}");

    // The official op order with candle tensor ops (an independent route to the same f32 roundings).
    let src = src.to_dtype(DType::F32).unwrap();
    let row = |i: usize| src.get(i).unwrap();
    let q = |t: Tensor| (t / 4.0).unwrap();
    for i in 0..(l - 21) {
        let (a, b) = (row(i + 20), row(i + 21));
        let want = [
            a.clone(),
            (q((&a * 3.0).unwrap()) + q((&b * 1.0).unwrap())).unwrap(),
            (q((&a * 2.0).unwrap()) + q((&b * 2.0).unwrap())).unwrap(),
            (q((&a * 1.0).unwrap()) + q((&b * 3.0).unwrap())).unwrap(),
        ];
        for (k, w) in want.iter().enumerate() {
            assert_eq!(g[4 * i + 20 + k], w.to_vec1::<f32>().unwrap(), "row {} (f32 official order)", 4 * i + 20 + k);
        }
    }
    let d = (row(l - 1) - row(l - 2)).unwrap();
    for k in 0..4 {
        let w = (row(l - 1) + q((&d * k as f64).unwrap())).unwrap();
        assert_eq!(g[4 * l - 64 + k], w.to_vec1::<f32>().unwrap(), "extrapolated row {}", 4 * l - 64 + k);
    }
}

fn assert_bit_equal(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    let d = common::max_abs_diff(a, b);
    assert!(d == 0.0, "{what}: differs by {d}");
}

fn scalar(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

const SHORT: [&str; 2] = ["a photo of a cat", "a red cup on a table"];
const LONG: [&str; 1] =
    ["a long caption about a tabby cat lying on a wooden floor next to a red cup and a blue bowl, \
                          with sunlight coming from a window on the left side of the room"];

fn load(dir: &Path) -> Model {
    Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

fn images(fx: &Path, m: &Model) -> fgclip::PreparedImages {
    let imgs = Model::load_images(&[fx.join("images/cat_dfclor.jpg"), fx.join("images/df_cups.png")]).unwrap();
    m.prepare_images(&imgs, PatchBudget::Dynamic).unwrap()
}

fn finite(what: &str, t: &Tensor) {
    let v = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(!v.is_empty() && v.iter().all(|x| x.is_finite()), "{what}: non-finite values");
}

#[test]
fn clip_backbone_to_fgclip() {
    let Some(fx) = common::fixtures_dir() else { return };
    let fixture_model = fx.join("fgclip_v1/model");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("clip"), tmp.path().join("fgclip"));
    std::fs::create_dir_all(&src).unwrap();
    let source = fake_clip(&fixture_model, &src);

    assert_eq!(convert_backbone(&src, &dst).unwrap(), Family::FgClip);
    let out = common::load_tensors(&dst.join("model.safetensors"));

    // Nothing of the backbone changes; exactly the FG-CLIP tensors are added; the stored buffer is dropped.
    for (k, t) in &source {
        assert_bit_equal(k, &out[k], t);
    }
    let mut added: Vec<&str> = out.keys().filter(|k| !source.contains_key(*k)).map(String::as_str).collect();
    added.sort();
    let mut want = V1_ONLY.to_vec();
    want.sort();
    assert_eq!(added, want);

    let p = &source[TEXT_POSITION];
    assert_eq!(out[TEXT_POSITION_ORI].dims(), &[248, 64]);
    check_stretch(p, &out[TEXT_POSITION_ORI]);
    assert_bit_equal("res == ori", &out[TEXT_POSITION_RES], &out[TEXT_POSITION_ORI]);
    assert_bit_equal("text_filip_projection", &out["text_filip_projection.weight"], &source["text_projection.weight"]);
    for k in ["logit_scale_finegraind", "logit_scale_hardneg"] {
        assert_eq!(out[k].dims(), &[] as &[usize], "{k} is 0-d");
        assert_eq!(scalar(&out[k]), scalar(&source["logit_scale"]), "{k} = logit_scale");
    }
    assert_eq!(scalar(&out["logit_scale"]), 3.1);

    let cfg = read_json(&dst.join("config.json"));
    assert_eq!(cfg["architectures"], serde_json::json!(["FGCLIPModel"]));
    assert_eq!(cfg["model_type"], "clip");
    assert_eq!(cfg["text_config"]["eos_token_id"], 49407);
    for f in ["tokenizer.json", "vocab.json", "merges.txt", "preprocessor_config.json"] {
        assert!(dst.join(f).is_file(), "{f} copied");
    }

    // Loads and encodes on both walks; the short path and the vision tower equal the fixture model's.
    // Same weights, same code path → bit-identical (tolerance 0).
    let conv = load(&dst);
    let reference = load(&fixture_model);
    let im = images(&fx, &conv);
    let ie = conv.encode_images(&im).unwrap();
    assert_eq!(ie.dims(), &[2, 48]);
    finite("image features", &ie);
    assert_bit_equal("image features vs fixture", &ie, &reference.encode_images(&images(&fx, &reference)).unwrap());
    let short = conv.encode_texts(&SHORT, TextWalk::Short).unwrap();
    assert_bit_equal(
        "short text features vs fixture",
        &short,
        &reference.encode_texts(&SHORT, TextWalk::Short).unwrap(),
    );
    let long = conv.encode_texts(&LONG, TextWalk::Long).unwrap();
    assert_eq!(long.dims(), &[1, 48]);
    finite("long text features", &long);

    // The trainable model starts from the same values.
    let tr = trainable_from_backbone(&src, &tmp.path().join("fgclip_tr"), &Device::Cpu).unwrap();
    assert_eq!(scalar(tr.var("logit_scale_hardneg").unwrap().as_tensor()), 3.1);
    assert_bit_equal("trainable ori", tr.var(TEXT_POSITION_ORI).unwrap().as_tensor(), &out[TEXT_POSITION_ORI]);
}

#[test]
fn siglip2_backbone_to_fgclip2() {
    let Some(fx) = common::fixtures_dir() else { return };
    let fixture_model = fx.join("fgclip2/model");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("siglip2"), tmp.path().join("fgclip2"));
    std::fs::create_dir_all(&src).unwrap();
    let source = fake_siglip2(&fixture_model, &src);

    assert_eq!(convert_backbone(&src, &dst).unwrap(), Family::FgClip2);
    let out = common::load_tensors(&dst.join("model.safetensors"));
    for (k, t) in &source {
        assert_bit_equal(k, &out[k], t);
    }
    for k in out.keys() {
        assert!(source.contains_key(k) || is_v2_only(k), "unexpected tensor {k}");
    }

    assert_eq!(out[TEXT_POSITION_ORI].dims(), &[196, 64]);
    check_stretch(&source[TEXT_POSITION], &out[TEXT_POSITION_ORI]);
    assert_bit_equal("res == ori", &out[TEXT_POSITION_RES], &out[TEXT_POSITION_ORI]);
    for head in ["longtext_head", "boxtext_head"] {
        for p in ["weight", "bias"] {
            assert_bit_equal(head, &out[&format!("{head}.{p}")], &source[&format!("text_model.head.{p}")]);
        }
    }
    let vhead: Vec<&String> = source.keys().filter(|k| k.starts_with("vision_model.head.")).collect();
    assert!(vhead.len() >= 10, "MAP head tensors: {vhead:?}");
    let dense = out.keys().filter(|k| k.starts_with("dense_feature_head.")).count();
    assert_eq!(dense, vhead.len(), "dense_feature_head is the full head");
    for k in vhead {
        let d = k.replace("vision_model.head.", "dense_feature_head.");
        assert_bit_equal(&d, &out[&d], &source[k]);
    }
    for k in ["logit_scale_finegraind", "logit_scale_hardneg"] {
        assert_eq!(out[k].dims(), &[] as &[usize], "{k} is 0-d");
        assert_eq!(scalar(&out[k]), 4.6052f32);
    }
    assert_eq!(scalar(&out["logit_scale"]), 2.7);
    assert_eq!(scalar(&out["logit_bias"]), -4.3);

    let cfg = read_json(&dst.join("config.json"));
    assert_eq!(cfg["model_type"], "fgclip2");
    assert_eq!(cfg["text_config"]["longtext_len"], 196);
    assert_eq!(cfg["text_config"]["keep_len"], 20);

    let conv = load(&dst);
    let reference = load(&fixture_model);
    let im = images(&fx, &conv);
    let ie = conv.encode_images(&im).unwrap();
    finite("image features", &ie);
    // Vision tower and MAP head untouched → bit-identical to the fixture model (tolerance 0).
    assert_bit_equal("image features vs fixture", &ie, &reference.encode_images(&images(&fx, &reference)).unwrap());
    for dm in conv.dense_features(&im).unwrap() {
        finite("dense features", &dm.features);
    }
    let short = conv.encode_texts(&SHORT, TextWalk::Short).unwrap();
    assert_bit_equal(
        "short text features vs fixture",
        &short,
        &reference.encode_texts(&SHORT, TextWalk::Short).unwrap(),
    );
    // boxtext_head is a copy of text_model.head and box texts use the short table, so box = short. The head
    // runs in a different place (after vs inside the text model), so allow f32 round-off: 1e-6.
    let boxed = conv.encode_texts(&SHORT, TextWalk::Box).unwrap();
    common::assert_close("box == short after init", &boxed, &short, 1e-6);
    let long = conv.encode_texts(&LONG, TextWalk::Long).unwrap();
    assert_eq!(long.dims(), &[1, 64]);
    finite("long text features", &long);
}

#[test]
fn stretch_edges_and_errors() {
    // 21 rows: no interpolated block, 24 rows = 20 kept + 4 extrapolated from the last step.
    let p = Tensor::arange(0f32, 21.0 * 3.0, &Device::Cpu).unwrap().reshape((21, 3)).unwrap();
    let s = stretch_position_table(&p).unwrap();
    assert_eq!(s.dims(), &[24, 3]);
    check_stretch(&p, &s);
    // bf16 input is upcast first (what from_pretrained holds), the copied rows stay exact. Scale 0.3 as the
    // fixture tables, so values stay within the range the 1e-6 tolerance of check_stretch is reasoned for.
    let pb = Tensor::randn(0f32, 0.3, (64, 8), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
    let sb = stretch_position_table(&pb).unwrap();
    assert_eq!(sb.dtype(), DType::F32);
    check_stretch(&pb, &sb);

    let e = stretch_position_table(&Tensor::zeros((20, 4), DType::F32, &Device::Cpu).unwrap()).unwrap_err();
    assert!(e.to_string().contains("20 rows"), "{e}");
    let e = stretch_position_table(&Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap()).unwrap_err();
    assert!(e.to_string().contains("2-D"), "{e}");

    // Missing tensors are named.
    let mut ts = HashMap::new();
    ts.insert(TEXT_POSITION.to_string(), p.clone());
    let e = fgclip_from_clip(ts.clone(), true).unwrap_err();
    assert!(e.to_string().contains("text_projection.weight"), "{e}");
    ts.insert("logit_scale".into(), Tensor::new(1f32, &Device::Cpu).unwrap());
    ts.insert("logit_bias".into(), Tensor::new(1f32, &Device::Cpu).unwrap());
    ts.insert("text_model.head.weight".into(), Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap());
    ts.insert("text_model.head.bias".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap());
    let e = fgclip2_from_siglip2(ts.clone(), Some(4.6052)).unwrap_err();
    assert!(e.to_string().contains("projection_size"), "{e}");
    ts.insert("text_model.head.weight".into(), Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap());
    ts.insert("text_model.head.bias".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
    let e = fgclip2_from_siglip2(ts, None).unwrap_err();
    assert!(e.to_string().contains("vision_model.head"), "{e}");

    // Family detection refuses already-initialised checkpoints and other models, naming the file.
    let path = Path::new("x/config.json");
    let fam = |v: Value| backbone_family(&v, path);
    assert_eq!(fam(serde_json::json!({"model_type": "clip", "architectures": ["CLIPModel"]})).unwrap(), Family::FgClip);
    assert_eq!(fam(serde_json::json!({"model_type": "siglip2"})).unwrap(), Family::FgClip2);
    for bad in [
        serde_json::json!({"model_type": "clip", "architectures": ["FGCLIPModel"]}),
        serde_json::json!({"model_type": "fgclip2"}),
        serde_json::json!({"model_type": "siglip"}),
        serde_json::json!({"model_type": "bert"}),
    ] {
        let e = fam(bad.clone()).unwrap_err().to_string();
        assert!(e.starts_with("x/config.json"), "{bad}: {e}");
    }
    if let Some(fx) = common::fixtures_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let e = convert_backbone(&fx.join("fgclip_v1/model"), tmp.path()).unwrap_err().to_string();
        assert!(e.contains("already an FG-CLIP checkpoint"), "{e}");
    }
}

/// `model.backbone` in a training config: converted once into `<output.dir>/backbone-init/` and trained from;
/// a second start reuses the conversion instead of redoing it.
#[test]
fn training_starts_from_a_backbone() {
    let Some(fx) = common::fixtures_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("clip");
    std::fs::create_dir_all(&src).unwrap();
    let source = fake_clip(&fx.join("fgclip_v1/model"), &src);
    let data = tmp.path().join("data");
    let synth = fgclip_train::synth::SynthConfig { train: 8, test: 0, size: 64, ..Default::default() };
    fgclip_train::synth::generate(&synth, &data, &|_| {}).unwrap();
    let out = tmp.path().join("run");
    let q = |p: &Path| format!("\"{}\"", p.display());
    let sets = [
        format!("model.backbone={}", q(&src)),
        format!("data.train=[{}]", q(&data.join("train.json"))),
        format!("data.image_root={}", q(&data.join("images"))),
        "train.batch_size=4".into(),
        "train.epochs=1".into(),
        "train.lr=1e-4".into(),
        format!("output.dir={}", q(&out)),
    ];
    let cfg = fgclip_train::config::TrainConfig::load(None, &sets).unwrap();
    let summary = fgclip_train::run::run(&cfg, false).unwrap();
    assert_eq!(summary.steps, 2);

    let init = out.join(fgclip_train::run::BACKBONE_INIT_DIR);
    let converted = common::load_tensors(&init.join("model.safetensors"));
    assert_bit_equal(
        "text_filip_projection",
        &converted["text_filip_projection.weight"],
        &source["text_projection.weight"],
    );
    // Training moved the weights away from the conversion.
    let trained = common::load_tensors(&summary.final_dir.join("model.safetensors"));
    let moved = (trained["text_filip_projection.weight"].clone() - &converted["text_filip_projection.weight"])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 0.0, "the long-text projection did not train");

    // A second start (here: a finished run, so it only resumes) reuses the converted folder.
    let stamp = std::fs::metadata(init.join("model.safetensors")).unwrap().modified().unwrap();
    fgclip_train::run::run(&cfg, false).unwrap();
    assert_eq!(
        std::fs::metadata(init.join("model.safetensors")).unwrap().modified().unwrap(),
        stamp,
        "converted again"
    );

    // Exclusive with `init` and `config`.
    let both = [sets.to_vec(), vec![format!("model.init={}", q(&src))]].concat();
    let err = fgclip_train::config::TrainConfig::load(None, &both).unwrap_err().to_string();
    assert!(err.contains("exclusive"), "{err}");
}
