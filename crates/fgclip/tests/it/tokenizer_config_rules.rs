//! How `tokenizer_config.json` / `special_tokens_map.json` / settings baked into `tokenizer.json` steer the
//! tokenizer (HF transformers semantics), and the errors for missing or inconsistent files.

use crate::common;
use std::path::{Path, PathBuf};

use fgclip::hub::ModelFiles;
use fgclip::tokenize::{Side, TextTokenizer, TokenizerOptions};
use serde_json::{json, Value};

/// A throw-away tokenizer folder: the FG-CLIP 2 fixture's `tokenizer.json` (optionally edited) + the given
/// `tokenizer_config.json` (or none).
struct Scratch {
    _dir: tempfile::TempDir,
    files: ModelFiles,
}

fn scratch(fx: &Path, edit_tokenizer: impl FnOnce(&mut Value), config: Option<Value>) -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let src = fx.join("fgclip2/model/tokenizer.json");
    let mut tj: Value = serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    edit_tokenizer(&mut tj);
    let tj_path = dir.path().join("tokenizer.json");
    std::fs::write(&tj_path, serde_json::to_string(&tj).unwrap()).unwrap();
    let cfg_path = config.map(|c| {
        let p = dir.path().join("tokenizer_config.json");
        std::fs::write(&p, serde_json::to_string_pretty(&c).unwrap()).unwrap();
        p
    });
    let files = files_in(dir.path(), Some(tj_path), cfg_path);
    Scratch { _dir: dir, files }
}

fn files_in(root: &Path, tokenizer_json: Option<PathBuf>, tokenizer_config: Option<PathBuf>) -> ModelFiles {
    ModelFiles {
        root: root.to_path_buf(),
        config: root.join("config.json"),
        weights: vec![],
        tokenizer_json,
        tokenizer_config,
        vocab_json: None,
        merges_txt: None,
        preprocessor_config: None,
        special_tokens_map: None,
    }
}

fn fixture_config(fx: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fx.join("fgclip2/model/tokenizer_config.json")).unwrap()).unwrap()
}

fn fixture_tok(fx: &Path) -> TextTokenizer {
    TextTokenizer::from_files(&ModelFiles::from_dir(fx.join("fgclip2/model")).unwrap(), TokenizerOptions::fgclip2())
        .unwrap()
}

const TEXTS: [&str; 3] = ["a black cat on a desk", "两只红色的杯子", "wooden chair to the left of a glass table"];

#[test]
fn baked_truncation_and_padding_are_overridden() {
    let Some(fx) = common::fixtures_dir() else { return };
    let s = scratch(
        &fx,
        |tj| {
            tj["truncation"] = json!({"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0});
            tj["padding"] = json!({"strategy": {"Fixed": 10}, "direction": "Right", "pad_to_multiple_of": 8,
                                   "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"});
        },
        Some(fixture_config(&fx)),
    );
    let tok = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap();
    for len in [64, 196] {
        assert_eq!(tok.encode(&TEXTS, len).unwrap(), fixture_tok(&fx).encode(&TEXTS, len).unwrap());
    }
}

#[test]
fn pad_token_falls_back_to_baked_padding_then_class_default() {
    let Some(fx) = common::fixtures_dir() else { return };
    let mut cfg = fixture_config(&fx);
    cfg.as_object_mut().unwrap().remove("pad_token");
    // tokenizer.json padding names <unk> (id 3): used when the config has no pad_token.
    let s = scratch(
        &fx,
        |tj| {
            tj["padding"] = json!({"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null,
                                   "pad_id": 3, "pad_type_id": 0, "pad_token": "<unk>"});
        },
        Some(cfg.clone()),
    );
    let tok = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap();
    assert_eq!(tok.pad_id(), 3);
    // Nothing baked: GemmaTokenizerFast's default pad token <pad>.
    let s = scratch(&fx, |_| {}, Some(cfg));
    let tok = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap();
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(tok.pad_token(), "<pad>");
}

#[test]
fn pad_token_as_added_token_dict() {
    let Some(fx) = common::fixtures_dir() else { return };
    let mut cfg = fixture_config(&fx);
    cfg["pad_token"] = json!({"content": "<pad>", "lstrip": false, "normalized": false, "rstrip": false,
                              "single_word": false, "special": true, "__type": "AddedToken"});
    let s = scratch(&fx, |_| {}, Some(cfg));
    let tok = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap();
    assert_eq!(tok.pad_id(), 0);
}

#[test]
fn unknown_pad_token_is_a_named_error() {
    let Some(fx) = common::fixtures_dir() else { return };
    let mut cfg = fixture_config(&fx);
    cfg["pad_token"] = json!("<nope>");
    let s = scratch(&fx, |_| {}, Some(cfg));
    let err = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, fgclip::Error::Tokenizer(_)), "{msg}");
    assert!(msg.contains("pad_token") && msg.contains("<nope>") && msg.contains("tokenizer_config.json"), "{msg}");

    let mut cfg = fixture_config(&fx);
    cfg["pad_token"] = Value::Null;
    let s = scratch(&fx, |_| {}, Some(cfg));
    let msg = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap_err().to_string();
    assert!(msg.contains("pad_token") && msg.contains("null"), "{msg}");

    // An unknown class with no pad_token anywhere: nothing to pad with.
    let s = scratch(&fx, |_| {}, Some(json!({"tokenizer_class": "SomethingElse"})));
    let msg = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap_err().to_string();
    assert!(msg.contains("pad_token"), "{msg}");
}

#[test]
fn missing_tokenizer_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_in(dir.path(), None, None);
    let err = TextTokenizer::from_files(&files, TokenizerOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, fgclip::Error::Tokenizer(_)));
    assert!(msg.contains("tokenizer.json") && msg.contains("vocab.json") && msg.contains("merges.txt"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");

    // A tokenizer.json path that does not exist / is not a tokenizer.
    let bogus = dir.path().join("tokenizer.json");
    let files = files_in(dir.path(), Some(bogus.clone()), None);
    let msg = TextTokenizer::from_files(&files, TokenizerOptions::default()).unwrap_err().to_string();
    assert!(msg.contains(&bogus.display().to_string()), "{msg}");
    std::fs::write(&bogus, "{\"not\": \"a tokenizer\"}").unwrap();
    let msg = TextTokenizer::from_files(&files, TokenizerOptions::default()).unwrap_err().to_string();
    assert!(msg.contains(&bogus.display().to_string()), "{msg}");
}

#[test]
fn add_bos_add_eos_flags_rebuild_the_post_processor() {
    let Some(fx) = common::fixtures_dir() else { return };
    let base = fixture_tok(&fx).encode(&TEXTS, 64).unwrap();
    let content_len = |i: usize| base.mask_row(i).iter().sum::<u32>() as usize - 1; // minus the <eos>

    // The fixture's own flags agree with its tokenizer.json: no warning.
    assert!(fixture_tok(&fx).warnings().is_empty(), "{:?}", fixture_tok(&fx).warnings());

    // add_bos_token: true, add_eos_token: false → [<bos>=2, tokens..., pad...] (transformers 4.x), and a warning
    // that says the file's template (what transformers 5 keeps) disagrees.
    let mut cfg = fixture_config(&fx);
    cfg["add_bos_token"] = json!(true);
    cfg["add_eos_token"] = json!(false);
    let s = scratch(&fx, |_| {}, Some(cfg));
    let tok = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap();
    let w = tok.warnings().join("\n");
    assert!(w.contains("disagree") && w.contains("add_bos_token=true") && w.contains("following the flags"), "{w}");
    let b = tok.encode(&TEXTS, 64).unwrap();
    for i in 0..TEXTS.len() {
        let n = content_len(i);
        assert_eq!(b.row(i)[0], 2);
        assert_eq!(&b.row(i)[1..=n], &base.row(i)[..n]);
        assert_eq!(b.row(i)[n + 1], 0);
    }

    // Neither flag: the file's own post-processor (appends <eos>) is kept.
    let mut cfg = fixture_config(&fx);
    let obj = cfg.as_object_mut().unwrap();
    obj.remove("add_bos_token");
    obj.remove("add_eos_token");
    let s = scratch(&fx, |_| {}, Some(cfg.clone()));
    let b = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap().encode(&TEXTS, 64).unwrap();
    assert_eq!(b, base);

    // Only add_bos_token given: add_eos_token counts as false (transformers 4.x), so no <eos>.
    cfg["add_bos_token"] = json!(true);
    let s = scratch(&fx, |_| {}, Some(cfg));
    let b = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap().encode(&TEXTS, 64).unwrap();
    for i in 0..TEXTS.len() {
        assert!(!b.row(i).contains(&1));
        assert_eq!(b.row(i)[0], 2);
    }
}

#[test]
fn padding_side_and_attention_mask_defaults_follow_the_class() {
    let Some(fx) = common::fixtures_dir() else { return };
    // GemmaTokenizerFast without padding_side: the class attribute says left.
    let mut cfg = fixture_config(&fx);
    cfg.as_object_mut().unwrap().remove("padding_side");
    cfg.as_object_mut().unwrap().remove("model_input_names");
    let s = scratch(&fx, |_| {}, Some(cfg.clone()));
    let tok = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap();
    assert_eq!(tok.padding_side(), Side::Left);
    assert!(tok.returns_attention_mask(), "GemmaTokenizerFast's model_input_names include attention_mask");
    let b = tok.encode(&["black cat"], 8).unwrap();
    assert_eq!(b.mask_row(0)[..3], [0, 0, 0]);
    assert_eq!(b.row(0)[7], 1, "<eos> last with left padding");

    // SiglipTokenizer: model_input_names = [input_ids].
    cfg["tokenizer_class"] = json!("SiglipTokenizer");
    let s = scratch(&fx, |_| {}, Some(cfg.clone()));
    let tok = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap();
    assert!(!tok.returns_attention_mask());
    assert_eq!(tok.padding_side(), Side::Right);

    // Explicit model_input_names wins over the class.
    cfg["model_input_names"] = json!(["input_ids", "attention_mask"]);
    let s = scratch(&fx, |_| {}, Some(cfg.clone()));
    assert!(TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap().returns_attention_mask());

    // A bad padding_side value is named.
    cfg["padding_side"] = json!("middle");
    let s = scratch(&fx, |_| {}, Some(cfg));
    let msg = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap_err().to_string();
    assert!(msg.contains("padding_side") && msg.contains("middle"), "{msg}");

    // No tokenizer_config.json at all: unknown class → right padding, mask returned, pad from...nothing → error
    // unless tokenizer.json bakes a padding token.
    let s = scratch(
        &fx,
        |tj| {
            tj["padding"] = json!({"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": null,
                                   "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"});
        },
        None,
    );
    let tok = TextTokenizer::from_files(&s.files, TokenizerOptions::fgclip2()).unwrap();
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(tok.padding_side(), Side::Left, "baked padding direction is the fallback");
    assert!(tok.returns_attention_mask());
}
