//! Text → token ids (+ attention mask) through the HF `tokenizers` crate.
//!
//! Mirrors HF `CLIPTokenizerFast` (FG-CLIP) / `GemmaTokenizerFast` (FG-CLIP 2) as the official FG-CLIP code calls
//! them: `tokenizer(texts, padding="max_length", truncation=True, max_length=L)` with L = 77 / 248 (v1) or
//! 64 / 196 (v2). Tokenisation itself is the checkpoint's own `tokenizer.json` run by the `tokenizers` crate; this
//! module only reproduces what the transformers wrapper decides around it (docs/tokenizer.md):
//!
//! * special tokens: the file's post-processor, except that `add_bos_token` / `add_eos_token` in
//!   `tokenizer_config.json` rebuild it as transformers 4.x does (an absent flag counts as false). transformers
//!   5.23 keeps the file's template instead; when the two disagree we follow the flags (the released checkpoints
//!   were made and evaluated with 4.x) and record a warning ([`TextTokenizer::warnings`], also logged);
//! * truncation to `max_length` keeps the special tokens (eos stays last); padding to exactly `max_length` with the
//!   config's `pad_token`, on `padding_side` (config, else the class default); settings baked into `tokenizer.json`
//!   never decide the length;
//! * FG-CLIP 2 lower-cases in the caller (`str.lower()`), which [`TokenizerOptions::lowercase`] reproduces;
//! * whether HF's call returns an `attention_mask` ([`TextTokenizer::returns_attention_mask`]) — it decides whether
//!   the official FG-CLIP 2 text tower masks padding (docs/tokenizer.md#attention-mask).
//!
//! FG-CLIP v1 checkpoints without `tokenizer.json` are built from `vocab.json` + `merges.txt` exactly like
//! transformers' `CLIPConverter` (slow → fast conversion).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::utils::padding::{pad_encodings, PaddingDirection, PaddingParams, PaddingStrategy};
use tokenizers::utils::truncation::{truncate_encodings, TruncationDirection, TruncationParams, TruncationStrategy};
use tokenizers::{AddedToken, Encoding, PostProcessor, SplitDelimiterBehavior, Tokenizer};

use crate::hub::{ModelFiles, MERGES_TXT, SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG, TOKENIZER_JSON, VOCAB_JSON};
use crate::{Error, Result};

/// The pre-tokenisation regex of HF's `CLIPConverter` (OpenAI CLIP's `SimpleTokenizer` pattern).
const CLIP_SPLIT_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// The slow `CLIPTokenizer` keeps only the first 49152-256-2 merges of `merges.txt`, and the fast conversion
/// takes its merges from there.
const CLIP_MAX_MERGES: usize = 49152 - 256 - 2;

/// Which end padding / truncation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// Caller-side choices that are not stored in the checkpoint.
#[derive(Debug, Clone, Default)]
pub struct TokenizerOptions {
    /// Lower-case every text before tokenising, as the official FG-CLIP 2 code does in the caller (`str.lower()`,
    /// full Unicode lower-casing; Rust's `str::to_lowercase` implements the same mappings incl. final sigma).
    /// FG-CLIP v1 does not need it: its CLIP normaliser lower-cases already.
    pub lowercase: bool,
    /// Force the padding side; `None` = as HF would (`padding_side` in `tokenizer_config.json`, else the
    /// tokenizer class default).
    pub padding_side: Option<Side>,
}

impl TokenizerOptions {
    /// FG-CLIP 2's official usage: lower-case in the caller, everything else from the checkpoint.
    pub fn fgclip2() -> Self {
        TokenizerOptions { lowercase: true, padding_side: None }
    }
}

/// Token ids of a batch, padded to a common length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Row-major `[n, len]`.
    pub ids: Vec<u32>,
    /// Row-major `[n, len]`: 1 on real tokens (incl. bos/eos), 0 on padding.
    pub attention_mask: Vec<u32>,
    pub n: usize,
    pub len: usize,
}

impl TokenBatch {
    /// Ids of row `i`.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[i * self.len..(i + 1) * self.len]
    }

    /// Attention mask of row `i`.
    pub fn mask_row(&self, i: usize) -> &[u32] {
        &self.attention_mask[i * self.len..(i + 1) * self.len]
    }
}

/// A checkpoint's text tokenizer, configured like the HF tokenizer the official code gets from `AutoTokenizer`.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    /// Truncation and padding disabled: [`TextTokenizer::encode`] applies its own per call.
    tokenizer: Tokenizer,
    pad_id: u32,
    pad_token: String,
    padding_side: Side,
    truncation_side: Side,
    lowercase: bool,
    returns_attention_mask: bool,
    tokenizer_class: Option<String>,
    /// What was found odd in the tokenizer files but not fatal (e.g. special-token rules that disagree).
    warnings: Vec<String>,
}

impl TextTokenizer {
    /// Load from a checkpoint's files: `tokenizer.json` when present, else the CLIP BPE pair `vocab.json` +
    /// `merges.txt`; `tokenizer_config.json` / `special_tokens_map.json` for the special tokens and call defaults.
    pub fn from_files(files: &ModelFiles, opts: TokenizerOptions) -> Result<Self> {
        let cfg = TokenizerConfig::load(files)?;
        let class = cfg.str_field("tokenizer_class");
        let mut family = Family::of(class.as_deref());

        let (mut tokenizer, source) = match (&files.tokenizer_json, &files.vocab_json, &files.merges_txt) {
            (Some(tj), _, _) => {
                let t = Tokenizer::from_file(tj).map_err(|e| tok_err(tj, format!("cannot load: {e}")))?;
                (t, tj.clone())
            }
            (None, Some(vocab), Some(merges)) => {
                if !matches!(family, Family::Clip | Family::Unknown) {
                    return Err(Error::Tokenizer(format!(
                        "{}: no {TOKENIZER_JSON}, and building from {VOCAB_JSON} + {MERGES_TXT} is only supported for \
                         CLIPTokenizer (tokenizer_class is {:?})",
                        files.root.display(),
                        class
                    )));
                }
                // vocab.json + merges.txt without a class: it is the CLIP BPE pair, so CLIP's defaults apply.
                family = Family::Clip;
                (build_clip_bpe(vocab, merges, &cfg, family)?, vocab.clone())
            }
            _ => {
                return Err(Error::Tokenizer(format!(
                    "{}: no tokenizer files: expected {TOKENIZER_JSON}, or {VOCAB_JSON} + {MERGES_TXT} (CLIP BPE)",
                    files.root.display()
                )))
            }
        };

        // Settings baked into tokenizer.json: only fallbacks for the pad token and the sides (transformers 5
        // `setdefault`s them); the length always comes from `encode`.
        let baked_pad = tokenizer.get_padding().cloned();
        let baked_trunc = tokenizer.get_truncation().cloned();
        tokenizer.with_truncation(None).map_err(|e| tok_err(&source, format!("cannot disable truncation: {e}")))?;
        tokenizer.with_padding(None);

        // pad token: tokenizer_config.json > special_tokens_map.json > tokenizer.json padding > class default.
        let pad_token = match cfg.special("pad_token")? {
            Special::Set(t) => t,
            Special::Null(file) => {
                return Err(Error::Tokenizer(format!("{}: `pad_token` is null, cannot pad", file.display())))
            }
            Special::Absent => match baked_pad.as_ref().map(|p| p.pad_token.clone()).or(family.default_pad()) {
                Some(t) => t,
                None => {
                    return Err(Error::Tokenizer(format!(
                        "{}: no `pad_token` in {TOKENIZER_CONFIG} / {SPECIAL_TOKENS_MAP}, and tokenizer_class {:?} \
                         has no default",
                        files.root.display(),
                        class
                    )))
                }
            },
        };
        let pad_id = tokenizer.token_to_id(&pad_token).ok_or_else(|| {
            Error::Tokenizer(format!(
                "{}: `pad_token` {pad_token:?} (from {}) is not in the vocabulary of {}",
                files.root.display(),
                cfg.origin("pad_token"),
                source.display()
            ))
        })?;

        // Special tokens: transformers 4.x rebuilds the post-processor as `[bos] $A [eos]` from explicit
        // `add_bos_token` / `add_eos_token` flags (each absent flag false); 5.23 keeps the file's template. We
        // follow 4.x and warn when the two give different ids.
        let add_bos = cfg.bool_field("add_bos_token");
        let add_eos = cfg.bool_field("add_eos_token");
        let mut warnings = Vec::new();
        if add_bos.is_some() || add_eos.is_some() {
            let probe = |t: &Tokenizer| t.encode("a photo", true).map(|e| e.get_ids().to_vec()).unwrap_or_default();
            let file_ids = probe(&tokenizer);
            let mut single: Vec<String> = Vec::new();
            let mut pair: Vec<String> = Vec::new();
            let mut specials: Vec<(String, u32)> = Vec::new();
            // A flag whose token is unset (null, or absent with no class default) is dropped, as HF does.
            let mut special_id = |field: &str| -> Result<Option<String>> {
                let tok = match cfg.special(field)? {
                    Special::Set(t) => t,
                    Special::Null(_) => return Ok(None),
                    Special::Absent => match family.default_special(field) {
                        Some(t) => t,
                        None => return Ok(None),
                    },
                };
                let id = tokenizer.token_to_id(&tok).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "{}: `{field}` {tok:?} (from {}) is not in the vocabulary of {}",
                        files.root.display(),
                        cfg.origin(field),
                        source.display()
                    ))
                })?;
                specials.push((tok.clone(), id));
                Ok(Some(tok))
            };
            let bos = if add_bos == Some(true) { special_id("bos_token")? } else { None };
            let eos = if add_eos == Some(true) { special_id("eos_token")? } else { None };
            for (seq, type_id) in [("$A", 0), ("$B", 1)] {
                let target = if type_id == 0 { &mut single } else { &mut pair };
                if let Some(b) = &bos {
                    target.push(format!("{b}:{type_id}"));
                }
                target.push(format!("{seq}:{type_id}"));
                if let Some(e) = &eos {
                    target.push(format!("{e}:{type_id}"));
                }
            }
            let pair: Vec<String> = single.iter().cloned().chain(pair).collect();
            let template = TemplateProcessing::builder()
                .try_single(single)
                .and_then(|b| b.try_pair(pair))
                .map_err(|e| tok_err(&source, format!("bad special-token template: {e}")))?
                .special_tokens(specials)
                .build()
                .map_err(|e| tok_err(&source, format!("bad special-token template: {e}")))?;
            tokenizer.with_post_processor(Some(template));
            let flag_ids = probe(&tokenizer);
            if file_ids != flag_ids {
                let w = format!(
                    "{}: tokenizer_config.json's add_bos_token={} / add_eos_token={} disagree with the post-processor of \
                     {} (\"a photo\" → {file_ids:?} from the file, {flag_ids:?} from the flags); following the flags as \
                     transformers 4.x does (transformers 5 keeps the file's template)",
                    files.root.display(),
                    add_bos.map_or("absent".into(), |b| b.to_string()),
                    add_eos.map_or("absent".into(), |b| b.to_string()),
                    source.display()
                );
                tracing::warn!("{w}");
                warnings.push(w);
            }
        }

        let side_of = |field: &str, baked: Option<Side>, default: Side| -> Result<Side> {
            match cfg.str_field(field).as_deref() {
                Some("left") => Ok(Side::Left),
                Some("right") => Ok(Side::Right),
                Some(other) => Err(Error::Tokenizer(format!(
                    "{}: `{field}` is {other:?}, expected \"left\" or \"right\"",
                    cfg.origin(field)
                ))),
                None => Ok(baked.unwrap_or(default)),
            }
        };
        let baked_pad_side = baked_pad.as_ref().map(|p| match p.direction {
            PaddingDirection::Left => Side::Left,
            PaddingDirection::Right => Side::Right,
        });
        let baked_trunc_side = baked_trunc.as_ref().map(|t| match t.direction {
            TruncationDirection::Left => Side::Left,
            TruncationDirection::Right => Side::Right,
        });
        let padding_side = match opts.padding_side {
            Some(s) => s,
            None => side_of("padding_side", baked_pad_side, family.default_padding_side())?,
        };
        let truncation_side = side_of("truncation_side", baked_trunc_side, Side::Right)?;

        // `model_input_names` decides whether HF's call returns `attention_mask` (docs/tokenizer.md#attention-mask).
        let returns_attention_mask = match cfg.get("model_input_names") {
            Some(Value::Array(names)) => names.iter().any(|n| n.as_str() == Some("attention_mask")),
            Some(other) => {
                return Err(Error::Tokenizer(format!(
                    "{}: `model_input_names` is not a list: {other}",
                    cfg.origin("model_input_names")
                )))
            }
            None => family.default_returns_attention_mask(),
        };

        Ok(TextTokenizer {
            warnings,
            tokenizer,
            pad_id,
            pad_token,
            padding_side,
            truncation_side,
            lowercase: opts.lowercase,
            returns_attention_mask,
            tokenizer_class: class,
        })
    }

    /// `tokenizer(texts, padding="max_length", truncation=True, max_length=max_len)`: every row is exactly
    /// `max_len` long; over-long texts are cut so the special tokens (eos last) still fit.
    pub fn encode(&self, texts: &[&str], max_len: usize) -> Result<TokenBatch> {
        if max_len == 0 {
            return Err(Error::input("tokenizer max_len must be at least 1"));
        }
        let n_special = self.tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if max_len < n_special {
            return Err(Error::input(format!(
                "tokenizer max_len {max_len} is smaller than the {n_special} special tokens added to every text"
            )));
        }
        let trunc = TruncationParams {
            direction: match self.truncation_side {
                Side::Left => TruncationDirection::Left,
                Side::Right => TruncationDirection::Right,
            },
            // Room for the special tokens, as `TokenizerImpl::post_process` does.
            max_length: max_len - n_special,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        };
        let pad = PaddingParams {
            strategy: PaddingStrategy::Fixed(max_len),
            direction: match self.padding_side {
                Side::Left => PaddingDirection::Left,
                Side::Right => PaddingDirection::Right,
            },
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token: self.pad_token.clone(),
        };

        let rows: Vec<Encoding> = texts.par_iter().map(|t| self.encode_one(t, &trunc)).collect::<Result<_>>()?;
        let mut rows = rows;
        pad_encodings(&mut rows, &pad).map_err(|e| Error::Tokenizer(format!("padding: {e}")))?;

        let mut ids = Vec::with_capacity(texts.len() * max_len);
        let mut attention_mask = Vec::with_capacity(texts.len() * max_len);
        for e in &rows {
            debug_assert_eq!(e.len(), max_len);
            ids.extend_from_slice(e.get_ids());
            attention_mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(TokenBatch { ids, attention_mask, n: texts.len(), len: max_len })
    }

    /// Tokenise one text and add its special tokens, truncating in between (the order of
    /// `TokenizerImpl::post_process`).
    fn encode_one(&self, text: &str, trunc: &TruncationParams) -> Result<Encoding> {
        let lowered;
        let text = if self.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        // Truncation and padding are disabled on `self.tokenizer`, so this is the bare token sequence.
        let enc = self.tokenizer.encode(text, false).map_err(|e| Error::Tokenizer(format!("{text:?}: {e}")))?;
        let (enc, _) =
            truncate_encodings(enc, None, trunc).map_err(|e| Error::Tokenizer(format!("truncation: {e}")))?;
        match self.tokenizer.get_post_processor() {
            Some(p) => p.process(enc, None, true).map_err(|e| Error::Tokenizer(format!("post-processing: {e}"))),
            None => Ok(enc),
        }
    }

    /// What HF's `tokenizer(...)` returns besides `input_ids`: `attention_mask` iff `model_input_names` lists it
    /// (from `tokenizer_config.json`, else the class default: CLIP / Gemma yes, SigLIP no).
    pub fn returns_attention_mask(&self) -> bool {
        self.returns_attention_mask
    }

    /// Non-fatal problems found while loading (each also logged as a warning).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Id used for padding (CLIP `<|endoftext|>` = 49407, Gemma `<pad>` = 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }

    pub fn padding_side(&self) -> Side {
        self.padding_side
    }

    /// Whether [`TextTokenizer::encode`] lower-cases its inputs first.
    pub fn lowercase(&self) -> bool {
        self.lowercase
    }

    /// `tokenizer_class` from `tokenizer_config.json`, if any.
    pub fn tokenizer_class(&self) -> Option<&str> {
        self.tokenizer_class.as_deref()
    }

    /// Vocabulary lookup (incl. added/special tokens).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer (truncation and padding disabled).
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

fn tok_err(path: &Path, msg: String) -> Error {
    Error::Tokenizer(format!("{}: {msg}", path.display()))
}

/// Tokenizer classes whose defaults matter here (transformers class attributes / `__init__` defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Clip,
    Gemma,
    Siglip,
    Unknown,
}

impl Family {
    fn of(class: Option<&str>) -> Self {
        match class.map(|c| c.strip_suffix("Fast").unwrap_or(c)) {
            Some("CLIPTokenizer") => Family::Clip,
            Some("GemmaTokenizer") => Family::Gemma,
            Some("SiglipTokenizer") => Family::Siglip,
            _ => Family::Unknown,
        }
    }

    fn default_special(self, field: &str) -> Option<String> {
        let s = match (self, field) {
            (Family::Clip, "bos_token") => "<|startoftext|>",
            (Family::Clip, "eos_token" | "pad_token" | "unk_token") => "<|endoftext|>",
            (Family::Gemma, "bos_token") => "<bos>",
            (Family::Gemma, "eos_token") => "<eos>",
            (Family::Gemma, "pad_token") => "<pad>",
            (Family::Gemma, "unk_token") => "<unk>",
            (Family::Siglip, "eos_token" | "pad_token") => "</s>",
            (Family::Siglip, "unk_token") => "<unk>",
            _ => return None,
        };
        Some(s.to_string())
    }

    fn default_pad(self) -> Option<String> {
        self.default_special("pad_token")
    }

    /// `padding_side` class attribute: `GemmaTokenizer(Fast)` declares "left"; the base class default is "right".
    fn default_padding_side(self) -> Side {
        match self {
            Family::Gemma => Side::Left,
            _ => Side::Right,
        }
    }

    /// `model_input_names` class attribute: CLIP / Gemma list `attention_mask`, `SiglipTokenizer` does not; the
    /// base class default (`input_ids`, `token_type_ids`, `attention_mask`) does.
    fn default_returns_attention_mask(self) -> bool {
        !matches!(self, Family::Siglip)
    }
}

/// A special-token field as found in the config files.
enum Special {
    Set(String),
    /// Explicit JSON null in this file.
    Null(PathBuf),
    Absent,
}

/// `tokenizer_config.json` with `special_tokens_map.json` as fallback for the special tokens.
struct TokenizerConfig {
    config: Option<(PathBuf, serde_json::Map<String, Value>)>,
    special_map: Option<(PathBuf, serde_json::Map<String, Value>)>,
}

impl TokenizerConfig {
    fn load(files: &ModelFiles) -> Result<Self> {
        let read = |p: &Option<PathBuf>| -> Result<Option<(PathBuf, serde_json::Map<String, Value>)>> {
            let Some(p) = p else { return Ok(None) };
            let text = std::fs::read_to_string(p).map_err(|e| tok_err(p, format!("cannot read: {e}")))?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Ok(Some((p.clone(), m))),
                Ok(_) => Err(tok_err(p, "not a JSON object".into())),
                Err(e) => Err(tok_err(p, format!("invalid JSON: {e}"))),
            }
        };
        Ok(TokenizerConfig { config: read(&files.tokenizer_config)?, special_map: read(&files.special_tokens_map)? })
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.config.as_ref().and_then(|(_, m)| m.get(field))
    }

    fn str_field(&self, field: &str) -> Option<String> {
        self.get(field).and_then(Value::as_str).map(str::to_string)
    }

    fn bool_field(&self, field: &str) -> Option<bool> {
        self.get(field).and_then(Value::as_bool)
    }

    /// Where a field comes from, for error messages.
    fn origin(&self, field: &str) -> String {
        for (p, m) in [&self.config, &self.special_map].into_iter().flatten() {
            if m.contains_key(field) {
                return format!("{} `{field}`", p.display());
            }
        }
        "the tokenizer class default".into()
    }

    /// A special token: a string, or an AddedToken dict `{"content": ...}` (older `save_pretrained` format).
    fn special(&self, field: &str) -> Result<Special> {
        for (p, m) in [&self.config, &self.special_map].into_iter().flatten() {
            match m.get(field) {
                None => continue,
                Some(Value::Null) => return Ok(Special::Null(p.clone())),
                Some(Value::String(s)) => return Ok(Special::Set(s.clone())),
                Some(Value::Object(o)) => match o.get("content").and_then(Value::as_str) {
                    Some(s) => return Ok(Special::Set(s.to_string())),
                    None => return Err(tok_err(p, format!("`{field}` has no string `content`"))),
                },
                Some(other) => return Err(tok_err(p, format!("`{field}` is not a token: {other}"))),
            }
        }
        Ok(Special::Absent)
    }
}

/// The fast CLIP tokenizer that transformers' `CLIPConverter` builds from `vocab.json` + `merges.txt`: NFC +
/// whitespace collapse + lower-case normaliser, CLIP split regex then byte-level pre-tokeniser, BPE with
/// end-of-word suffix `</w>`, `RobertaProcessing` adding `<|startoftext|>` … `<|endoftext|>`.
fn build_clip_bpe(vocab_path: &Path, merges_path: &Path, cfg: &TokenizerConfig, family: Family) -> Result<Tokenizer> {
    let special = |field: &str| -> Result<String> {
        match cfg.special(field)? {
            Special::Set(t) => Ok(t),
            _ => Ok(family.default_special(field).expect("CLIP has defaults for all special tokens")),
        }
    };
    let (bos, eos, unk) = (special("bos_token")?, special("eos_token")?, special("unk_token")?);

    let vocab_text =
        std::fs::read_to_string(vocab_path).map_err(|e| tok_err(vocab_path, format!("cannot read: {e}")))?;
    let vocab: HashMap<String, u32> =
        serde_json::from_str(&vocab_text).map_err(|e| tok_err(vocab_path, format!("invalid vocabulary JSON: {e}")))?;
    let merges_text =
        std::fs::read_to_string(merges_path).map_err(|e| tok_err(merges_path, format!("cannot read: {e}")))?;
    let mut merges = Vec::new();
    for (i, line) in merges_text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        if merges.len() == CLIP_MAX_MERGES {
            break;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => merges.push((a.to_string(), b.to_string())),
            _ => return Err(tok_err(merges_path, format!("line {}: expected two space-separated symbols", i + 1))),
        }
    }
    let id_of = |t: &str| {
        vocab
            .get(t)
            .copied()
            .ok_or_else(|| tok_err(vocab_path, format!("special token {t:?} is not in the vocabulary")))
    };
    let (bos_id, eos_id) = (id_of(&bos)?, id_of(&eos)?);
    id_of(&unk)?;

    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .unk_token(unk)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix("</w>".into())
        .fuse_unk(false)
        .build()
        .map_err(|e| tok_err(merges_path, format!("cannot build BPE: {e}")))?;
    let regex_err = |e| Error::Tokenizer(format!("CLIP tokenizer regex: {e}"));
    let normalizer = NormSeq::new(vec![
        NFC.into(),
        Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").map_err(regex_err)?.into(),
        Lowercase.into(),
    ]);
    let pre_tokenizer = PreSeq::new(vec![
        Split::new(SplitPattern::Regex(CLIP_SPLIT_REGEX.into()), SplitDelimiterBehavior::Removed, true)
            .map_err(regex_err)?
            .into(),
        ByteLevel::new(false, true, true).into(),
    ]);
    let post = RobertaProcessing::new((eos.clone(), eos_id), (bos.clone(), bos_id))
        .trim_offsets(false)
        .add_prefix_space(false);

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(normalizer)).map_err(|e| tok_err(vocab_path, format!("normalizer: {e}")))?;
    tokenizer
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_post_processor(Some(post))
        .with_decoder(Some(ByteLevel::default()));
    tokenizer
        .add_special_tokens([AddedToken::from(bos, true), AddedToken::from(eos, true)])
        .map_err(|e| tok_err(vocab_path, format!("special tokens: {e}")))?;
    Ok(tokenizer)
}
