//! Token ids against the official HF tokenizers' outputs stored in the fixtures (exact match):
//! FG-CLIP v1 `CLIPTokenizer` (via `tokenizer.json` and via `vocab.json` + `merges.txt`) and the FG-CLIP 2
//! Gemma-style tokenizer (`tokenizer(s.lower(), padding="max_length", truncation=True, max_length=L)`).

use crate::common;
use std::path::Path;

use fgclip::hub::ModelFiles;
use fgclip::tokenize::{Side, TextTokenizer, TokenizerOptions};

/// An int64 tensor of a fixture safetensors file, as (shape, values).
fn read_i64(file: &Path, name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{}: {name}: {e}", file.display()));
    assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
    let vals = t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    (t.shape().to_vec(), vals)
}

fn json(file: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn check(tok: &TextTokenizer, texts: &[String], max_len: usize, expected: &(Vec<usize>, Vec<i64>), what: &str) {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tok.encode(&refs, max_len).unwrap();
    assert_eq!((batch.n, batch.len), (texts.len(), max_len), "{what}: shape");
    assert_eq!(expected.0, vec![texts.len(), max_len], "{what}: fixture shape");
    for (i, text) in texts.iter().enumerate() {
        let want: Vec<u32> = expected.1[i * max_len..(i + 1) * max_len].iter().map(|&v| v as u32).collect();
        assert_eq!(batch.row(i), &want[..], "{what}: row {i} ({text:?})");
        // The mask is 1 exactly on bos..eos. CLIP pads with its eos id, so the real part ends at the first eos;
        // for the Gemma-style fixture it ends at the last non-pad id (pad never occurs inside these texts).
        let real = if tok.pad_id() == 49407 {
            want.iter().position(|&id| id == 49407).unwrap() + 1
        } else {
            want.iter().rposition(|&id| id != tok.pad_id()).map_or(0, |p| p + 1)
        };
        let mask: Vec<u32> = (0..max_len).map(|j| (j < real) as u32).collect();
        assert_eq!(batch.mask_row(i), &mask[..], "{what}: mask row {i}");
    }
}

fn v1_files(fx: &Path) -> ModelFiles {
    ModelFiles::from_dir(fx.join("fgclip_v1/model")).unwrap()
}

fn check_v1(tok: &TextTokenizer, fx: &Path, route: &str) {
    let manifest = json(&fx.join("fgclip_v1/manifest.json"));
    let short = strings(&manifest["captions_short"]);
    let long = strings(&manifest["captions_long"]);
    let inputs = fx.join("fgclip_v1/inputs.safetensors");
    check(tok, &short, 77, &read_i64(&inputs, "input_ids_short"), &format!("{route} short/77"));
    check(tok, &long, 248, &read_i64(&inputs, "input_ids_long"), &format!("{route} long/248"));
    check(tok, &long, 77, &read_i64(&inputs, "input_ids_long_trunc77"), &format!("{route} long/77 (truncated)"));
}

#[test]
fn fgclip_v1_tokenizer_json_matches_hf() {
    let Some(fx) = common::fixtures_dir() else { return };
    let files = v1_files(&fx);
    assert!(files.tokenizer_json.is_some());
    let tok = TextTokenizer::from_files(&files, TokenizerOptions::default()).unwrap();
    assert_eq!(tok.pad_id(), 49407);
    assert_eq!(tok.padding_side(), Side::Right);
    // CLIPTokenizer's model_input_names include attention_mask (the config does not override it).
    assert!(tok.returns_attention_mask());
    check_v1(&tok, &fx, "tokenizer.json");
}

#[test]
fn fgclip_v1_vocab_merges_matches_hf() {
    let Some(fx) = common::fixtures_dir() else { return };
    let mut files = v1_files(&fx);
    files.tokenizer_json = None; // force the CLIPConverter-style build from vocab.json + merges.txt
    assert!(files.vocab_json.is_some() && files.merges_txt.is_some());
    let tok = TextTokenizer::from_files(&files, TokenizerOptions::default()).unwrap();
    assert_eq!(tok.pad_id(), 49407);
    check_v1(&tok, &fx, "vocab+merges");

    // Without tokenizer_config.json the CLIP defaults apply (pad = <|endoftext|>).
    files.tokenizer_config = None;
    let tok = TextTokenizer::from_files(&files, TokenizerOptions::default()).unwrap();
    check_v1(&tok, &fx, "vocab+merges, no tokenizer_config");
}

#[test]
fn fgclip_v1_empty_and_whitespace() {
    let Some(fx) = common::fixtures_dir() else { return };
    let tok = TextTokenizer::from_files(&v1_files(&fx), TokenizerOptions::default()).unwrap();
    let b = tok.encode(&["", "   ", "A  Dog!"], 8).unwrap();
    assert_eq!(b.row(0), &[49406, 49407, 49407, 49407, 49407, 49407, 49407, 49407]);
    assert_eq!(b.mask_row(0), &[1, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(b.row(1), b.row(0));
    // Lower-cased and whitespace-collapsed by the CLIP normaliser itself.
    let c = tok.encode(&["a dog!"], 8).unwrap();
    assert_eq!(b.row(2), c.row(0));
    // Truncation keeps bos ... eos.
    let t = tok.encode(&["one two three four five six"], 4).unwrap();
    assert_eq!(t.row(0)[0], 49406);
    assert_eq!(t.row(0)[3], 49407);
    assert_eq!(t.mask_row(0), &[1, 1, 1, 1]);
    // No texts: an empty batch.
    let e = tok.encode(&[], 77).unwrap();
    assert_eq!((e.n, e.len, e.ids.len()), (0, 77, 0));
}

#[test]
fn fgclip2_strings_match_hf() {
    let Some(fx) = common::fixtures_dir() else { return };
    let files = ModelFiles::from_dir(fx.join("fgclip2/model")).unwrap();
    let tok = TextTokenizer::from_files(&files, TokenizerOptions::fgclip2()).unwrap();
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(tok.padding_side(), Side::Right);
    // tokenizer_config.json lists only input_ids: the official call passes no attention mask.
    assert!(!tok.returns_attention_mask());
    let spec = json(&fx.join("fgclip2/strings.json"));
    let expected = fx.join("fgclip2/expected_strings.safetensors");
    for walk in ["short", "box", "long"] {
        let texts = strings(&spec["strings"][walk]);
        let max_len = spec["max_length"][walk].as_u64().unwrap() as usize;
        check(&tok, &texts, max_len, &read_i64(&expected, &format!("str.{walk}.input_ids")), walk);
    }
}

#[test]
fn fgclip2_lowercase_is_the_callers_job() {
    let Some(fx) = common::fixtures_dir() else { return };
    let files = ModelFiles::from_dir(fx.join("fgclip2/model")).unwrap();
    let raw = TextTokenizer::from_files(&files, TokenizerOptions::default()).unwrap();
    let low = TextTokenizer::from_files(&files, TokenizerOptions::fgclip2()).unwrap();
    let a = raw.encode(&["A Black Cat on a desk"], 64).unwrap();
    let b = low.encode(&["A Black Cat on a desk"], 64).unwrap();
    let c = raw.encode(&["a black cat on a desk"], 64).unwrap();
    assert_ne!(a.ids, b.ids, "the Gemma-style tokenizer is case-sensitive");
    assert_eq!(b.ids, c.ids);
    // Python's str.lower() semantics incl. non-ASCII (final sigma, Cyrillic, fullwidth Latin).
    let d = low.encode(&["ΟΔΟΣ ПРИВЕТ ＡＢＣ"], 64).unwrap();
    let e = raw.encode(&["οδος привет ａｂｃ"], 64).unwrap();
    let e_sigma = raw.encode(&["οδοσ привет ａｂｃ"], 64).unwrap();
    assert_eq!(d.ids, e.ids);
    assert_ne!(e.ids, e_sigma.ids);
}

#[test]
fn fgclip2_empty_string_and_truncation() {
    let Some(fx) = common::fixtures_dir() else { return };
    let files = ModelFiles::from_dir(fx.join("fgclip2/model")).unwrap();
    let tok = TextTokenizer::from_files(&files, TokenizerOptions::fgclip2()).unwrap();
    let b = tok.encode(&[""], 6).unwrap();
    assert_eq!(b.row(0), &[1, 0, 0, 0, 0, 0], "empty text = <eos> then <pad>");
    assert_eq!(b.mask_row(0), &[1, 0, 0, 0, 0, 0]);
    let t = tok.encode(&["a minimalist bedroom corner with a white bed"], 5).unwrap();
    assert_eq!(t.row(0)[4], 1, "eos kept last on truncation");
    assert_eq!(t.mask_row(0), &[1; 5]);
    let full = tok.encode(&["a minimalist bedroom corner with a white bed"], 64).unwrap();
    assert_eq!(&t.row(0)[..4], &full.row(0)[..4]);
    // Left padding on request.
    let opts = TokenizerOptions { lowercase: true, padding_side: Some(Side::Left) };
    let left = TextTokenizer::from_files(&files, opts).unwrap();
    let l = left.encode(&["black cat"], 64).unwrap();
    let r = tok.encode(&["black cat"], 64).unwrap();
    let n = r.mask_row(0).iter().sum::<u32>() as usize;
    assert_eq!(&l.row(0)[64 - n..], &r.row(0)[..n]);
    assert!(l.row(0)[..64 - n].iter().all(|&id| id == 0));
    assert_eq!(l.mask_row(0)[63], 1);
    assert_eq!(l.mask_row(0)[0], 0);
}

#[test]
fn bad_max_len_is_an_input_error() {
    let Some(fx) = common::fixtures_dir() else { return };
    let tok = TextTokenizer::from_files(&v1_files(&fx), TokenizerOptions::default()).unwrap();
    assert!(matches!(tok.encode(&["x"], 0), Err(fgclip::Error::Input(_))));
    // CLIP adds bos + eos: one slot cannot hold them.
    assert!(matches!(tok.encode(&["x"], 1), Err(fgclip::Error::Input(_))));
    let b = tok.encode(&["x"], 2).unwrap();
    assert_eq!(b.row(0), &[49406, 49407]);
}
