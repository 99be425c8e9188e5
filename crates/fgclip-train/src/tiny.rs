//! A tiny FG-CLIP to train from scratch on a closed-vocabulary dataset (the synthetic one), anywhere, without
//! downloading a tokenizer: a word-level `tokenizer.json` over the dataset's words (HF format, loaded by the
//! `tokenizers` crate like any other) and a small CLIP `config.json` in the official layout.
//!
//! The word ids avoid CLIP's special ids: `<|startoftext|>` = 49406 and `<|endoftext|>` = 49407, which
//! `FGCLIPModel` hard-codes for pooling (docs/models.md#fg-clip-text-tower), so the vocabulary is 49408 rows like CLIP's.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;

use crate::data::Record;
use crate::error::Result;

pub const BOS: &str = "<|startoftext|>";
pub const EOS: &str = "<|endoftext|>";
pub const UNK: &str = "<|unk|>";

/// Sizes of the tiny model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TinySpec {
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_width: usize,
    pub vision_layers: usize,
    pub text_width: usize,
    pub text_layers: usize,
    pub heads: usize,
    pub projection_dim: usize,
    /// Short-walk length (the long walk gets 4·short − 60 positions, as FG-CLIP stretches 77 → 248).
    pub short_len: usize,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            image_size: 64,
            patch_size: 8,
            vision_width: 64,
            vision_layers: 3,
            text_width: 64,
            text_layers: 2,
            heads: 4,
            projection_dim: 64,
            short_len: 24,
        }
    }
}

/// Lower-cased words and punctuation marks as the tokenizer's `Whitespace` pre-tokenizer splits them
/// (`\w+|[^\w\s]+`).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_word = None::<bool>;
    for c in text.to_lowercase().chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur_word = None;
            continue;
        }
        let is_word = c.is_alphanumeric() || c == '_';
        if cur_word.is_some_and(|w| w != is_word) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
        cur_word = Some(is_word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Every text a record contributes to training (captions, box captions, negatives, with the short prefix).
fn record_texts(r: &Record) -> Vec<&str> {
    let mut v = vec![r.caption.as_str(), r.short_caption.as_str(), "a photo of"];
    for b in &r.bbox_info {
        v.push(&b.short_expr);
        v.push(&b.long_expr);
        v.extend(b.short_expr_negs.values().map(String::as_str));
    }
    v
}

/// Writes `config.json`, `tokenizer.json` and `tokenizer_config.json` of a tiny FG-CLIP for `records` into `dir`.
pub fn write_model_dir(records: &[Record], extra_texts: &[&str], spec: &TinySpec, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut vocab_words = BTreeSet::new();
    for r in records {
        for t in record_texts(r) {
            vocab_words.extend(words(t));
        }
    }
    for t in extra_texts {
        vocab_words.extend(words(t));
    }
    let mut vocab = serde_json::Map::new();
    for (i, w) in vocab_words.iter().enumerate() {
        vocab.insert(w.clone(), json!(i));
    }
    let unk_id = vocab_words.len();
    vocab.insert(UNK.into(), json!(unk_id));
    vocab.insert(BOS.into(), json!(49406));
    vocab.insert(EOS.into(), json!(49407));
    let added = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let special = |name: &str, id: usize| json!({"id": name, "ids": [id], "tokens": [name]});
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(unk_id, UNK), added(49406, BOS), added(49407, EOS)],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": EOS, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": EOS, "type_id": 0}}],
            "special_tokens": {BOS: special(BOS, 49406), EOS: special(EOS, 49407)}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK}
    });
    let tokenizer_config = json!({
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": UNK,
        "model_max_length": spec.short_len,
        "do_lower_case": true
    });
    let s = spec;
    let config = json!({
        "architectures": ["FGCLIPModel"],
        "model_type": "clip",
        "projection_dim": s.projection_dim,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": s.text_width,
            "intermediate_size": 4 * s.text_width, "num_hidden_layers": s.text_layers,
            "num_attention_heads": s.heads, "max_position_embeddings": s.short_len, "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
            "projection_dim": s.projection_dim
        },
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": s.vision_width, "intermediate_size": 4 * s.vision_width,
            "num_hidden_layers": s.vision_layers, "num_attention_heads": s.heads, "image_size": s.image_size,
            "patch_size": s.patch_size, "num_channels": 3, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
            "projection_dim": s.projection_dim
        }
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("json values serialise");
    std::fs::write(dir.join("tokenizer.json"), pretty(&tokenizer))?;
    std::fs::write(dir.join("tokenizer_config.json"), pretty(&tokenizer_config))?;
    std::fs::write(dir.join("config.json"), pretty(&config))?;
    // The CLIP image processor at the tiny size: squash (bicubic) + CLIP mean/std.
    let preprocessor = json!({
        "image_processor_type": "CLIPImageProcessor",
        "size": {"height": s.image_size, "width": s.image_size},
        "crop_size": {"height": s.image_size, "width": s.image_size},
        "do_resize": true, "do_center_crop": false, "resample": 3,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]
    });
    std::fs::write(dir.join("preprocessor_config.json"), pretty(&preprocessor))?;
    Ok(vocab_words.len())
}

/// The tiny model of a `synth` folder: a word-level tokenizer over both splits' words and a config whose input
/// is half the rendered side (the renderings are anti-aliased by the downscale), written to `<out_dir>/tiny-model/`.
/// Returns that folder.
pub fn write_for_synth(out_dir: &Path, rendered_size: u32) -> Result<std::path::PathBuf> {
    let mut records = Vec::new();
    for split in ["train.json", "test.json"] {
        let (r, _) = crate::data::load_records(&out_dir.join(split), crate::data::Policy::Reject)?;
        records.extend(r);
    }
    let dir = out_dir.join("tiny-model");
    let spec = TinySpec { image_size: (rendered_size as usize / 2).max(16) / 8 * 8, ..Default::default() };
    write_model_dir(&records, &[], &spec, &dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn splits_like_the_whitespace_pre_tokenizer() {
        assert_eq!(
            words("A large Red-striped circle, left."),
            ["a", "large", "red", "-", "striped", "circle", ",", "left", "."]
        );
    }
}
