//! `fgclip train`'s configuration: a TOML file, then `section.key=value` overrides from the command line.
//! Unknown keys are errors (a typo must not silently fall back to a default).
//!
//! ```toml
//! [model]
//! init = "qihoo360/fg-clip2-base"      # an official checkpoint (folder or hub id) ...
//! # config = "tiny/config.json"        # ... or a config.json to train from scratch
//! # tokenizer = "qihoo360/fg-clip2-base" # where the tokenizer comes from when training from scratch
//!
//! [data]
//! train = ["finehard/train.json"]      # files or folders of FineHARD json/jsonl
//! image_root = "finehard/images"
//!
//! [train]
//! preset = "stage2"                    # stage1 = global losses only; stage2 = + regional, hard negatives, TIC
//! batch_size = 32
//! epochs = 1
//! lr = 1e-6
//!
//! [output]
//! dir = "runs/stage2"
//! save_every = 2000
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::objective::ObjectiveConfig;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub train: TrainSection,
    pub output: OutputSection,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Official checkpoint to start from (folder or hub id).
    pub init: Option<String>,
    /// `config.json` of a model to train from scratch (exclusive with `init`).
    pub config: Option<PathBuf>,
    /// Checkpoint folder or hub id whose tokenizer to use when training from scratch.
    pub tokenizer: Option<String>,
    /// A CLIP (`openai/clip-vit-base-patch16`) or SigLIP 2 NaFlex (`google/siglip2-base-patch16-naflex`) model,
    /// folder or hub id, to start from as the official trainers do with `--from_openai` / `--from_siglip2`:
    /// converted once into `<output.dir>/backbone-init/` (long positions stretched, heads copied), then used
    /// as `init`. Exclusive with `init` and `config`.
    #[serde(default)]
    pub backbone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// FineHARD json / jsonl files or folders of them (EN).
    pub train: Vec<PathBuf>,
    pub image_root: PathBuf,
    /// FG-CLIP 2 bilingual training: Chinese pair files and their image root.
    #[serde(default)]
    pub cn_train: Vec<PathBuf>,
    pub cn_image_root: Option<PathBuf>,
    /// What to do with bad records / images: "skip" (report and go on) or "reject" (stop with the error).
    #[serde(default = "d_skip")]
    pub on_bad: String,
    /// Batches prepared ahead by the loader.
    #[serde(default = "d_prefetch")]
    pub prefetch: usize,
    /// FG-CLIP image size (squash); default: the model's.
    pub image_size: Option<usize>,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train: vec![],
            image_root: PathBuf::new(),
            cn_train: vec![],
            cn_image_root: None,
            on_bad: d_skip(),
            prefetch: d_prefetch(),
            image_size: None,
        }
    }
}

fn d_skip() -> String {
    "skip".into()
}
fn d_prefetch() -> usize {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// "stage1" (global short + long losses) or "stage2" (+ regional, hard-negative and, for FG-CLIP 2, TIC).
    pub preset: String,
    /// Per-term switches overriding the preset.
    pub region: Option<bool>,
    pub hard: Option<bool>,
    pub tic: Option<bool>,
    /// Reproduce FG-CLIP 2's skip of every fine-grained term when TIC cannot be computed.
    pub official_skip: bool,
    /// Per-rank batch size.
    pub batch_size: usize,
    pub grad_accum: usize,
    pub epochs: usize,
    /// Stop after this many optimiser updates (overrides epochs when smaller).
    pub max_steps: Option<usize>,
    pub lr: f64,
    pub weight_decay: Option<f64>,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub eps: Option<f64>,
    pub warmup_steps: Option<usize>,
    pub warmup_ratio: Option<f64>,
    /// "none", "vision" or "text": which tower to keep fixed.
    pub freeze: String,
    pub seed: u64,
    /// "cpu", "cuda", "cuda:N".
    pub device: String,
    /// Simulated data-parallel ranks in threads of this process (a CPU proof of the distributed math).
    pub simulate_ranks: usize,
    /// Loss weights (`[train.weights]`: long, short, region, tic, hard, hard_contrastive, hard_pair, hard_cmr);
    /// unset ones take the paper's value for the model's family.
    pub weights: crate::objective::LossWeights,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            preset: "stage2".into(),
            region: None,
            hard: None,
            tic: None,
            official_skip: false,
            batch_size: 32,
            grad_accum: 1,
            epochs: 1,
            max_steps: None,
            lr: 1e-6,
            weight_decay: None,
            beta1: None,
            beta2: None,
            eps: None,
            warmup_steps: None,
            warmup_ratio: None,
            freeze: "none".into(),
            seed: 0,
            device: "cpu".into(),
            simulate_ranks: 1,
            weights: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub dir: PathBuf,
    /// Save a checkpoint every N updates (0: only at the end).
    #[serde(default)]
    pub save_every: usize,
    /// Keep only the newest N checkpoints (0: keep all).
    #[serde(default)]
    pub keep_last: usize,
    /// Log every N updates.
    #[serde(default = "d_one")]
    pub log_every: usize,
}

fn d_one() -> usize {
    1
}

impl TrainConfig {
    /// Reads a TOML file and applies `section.key=value` overrides (values parsed as TOML, bare words as strings).
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let mut doc: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| TrainError::File { path: p.into(), msg: format!("cannot read: {e}") })?;
                text.parse().map_err(|e| TrainError::File { path: p.into(), msg: format!("invalid TOML: {e}") })?
            }
            None => toml::Table::new(),
        };
        for o in overrides {
            apply_override(&mut doc, o)?;
        }
        let cfg: TrainConfig = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config(e.message().to_string() + &span_hint(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved configuration as TOML (written next to the run's outputs).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| TrainError::Config(e.to_string()))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        let m = &self.model;
        let sources = [m.init.is_some(), m.config.is_some(), m.backbone.is_some()].iter().filter(|x| **x).count();
        if sources > 1 {
            return bad("model: `init`, `config` and `backbone` are exclusive (set one)".into());
        }
        match (&self.model.init, &self.model.config) {
            (None, None) if m.backbone.is_some() => {}
            (None, None) => {
                return bad(
                    "model: set `init` (a checkpoint), `backbone` (CLIP / SigLIP 2) or `config` (train from scratch)"
                        .into(),
                )
            }
            (None, Some(_)) if self.model.tokenizer.is_none() => {
                return bad(
                    "model: training from `config` needs `tokenizer` (a checkpoint folder with tokenizer files)".into(),
                )
            }
            _ => {}
        }
        if self.data.train.is_empty() {
            return bad("data.train: no training files".into());
        }
        if !matches!(self.data.on_bad.as_str(), "skip" | "reject") {
            return bad(format!("data.on_bad: {:?} (expected \"skip\" or \"reject\")", self.data.on_bad));
        }
        let t = &self.train;
        if !matches!(t.preset.as_str(), "stage1" | "stage2") {
            return bad(format!("train.preset: {:?} (expected \"stage1\" or \"stage2\")", t.preset));
        }
        if !matches!(t.freeze.as_str(), "none" | "vision" | "text") {
            return bad(format!("train.freeze: {:?} (expected \"none\", \"vision\" or \"text\")", t.freeze));
        }
        if t.batch_size == 0 || t.grad_accum == 0 || t.epochs == 0 || t.simulate_ranks == 0 {
            return bad("train: batch_size, grad_accum, epochs and simulate_ranks must be ≥ 1".into());
        }
        if !(t.lr.is_finite() && t.lr >= 0.0) {
            return bad(format!("train.lr: {} is not a learning rate", t.lr));
        }
        if let Some(r) = t.warmup_ratio {
            if !(0.0..=1.0).contains(&r) {
                return bad(format!("train.warmup_ratio: {r} (expected 0..1)"));
            }
        }
        for (k, w) in t.weights.given() {
            if !(w.is_finite() && w >= 0.0) {
                return bad(format!("train.weights.{k}: {w} (expected a finite number ≥ 0)"));
            }
        }
        if self.output.dir.as_os_str().is_empty() {
            return bad("output.dir: not set".into());
        }
        Ok(())
    }

    /// The loss terms: the preset, then the per-term switches.
    pub fn objective(&self) -> ObjectiveConfig {
        let base = if self.train.preset == "stage1" { ObjectiveConfig::global_only() } else { ObjectiveConfig::full() };
        ObjectiveConfig {
            region: self.train.region.unwrap_or(base.region),
            hard: self.train.hard.unwrap_or(base.hard),
            tic: self.train.tic.unwrap_or(base.tic),
            official_skip: self.train.official_skip,
            weights: self.train.weights,
        }
    }
}

fn span_hint(e: &toml::de::Error) -> String {
    e.span().map(|s| format!(" (at {}..{})", s.start, s.end)).unwrap_or_default()
}

fn apply_override(doc: &mut toml::Table, o: &str) -> Result<()> {
    let (key, value) =
        o.split_once('=').ok_or_else(|| TrainError::Config(format!("override {o:?}: expected section.key=value")))?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.len() != 2 || path.iter().any(|p| p.is_empty()) {
        return Err(TrainError::Config(format!("override {o:?}: the key must be section.key (e.g. train.lr)")));
    }
    let value = value.trim();
    // A TOML value if it parses as one (numbers, booleans, arrays, quoted strings), else a bare string.
    let parsed: toml::Value = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let section = doc
        .entry(path[0].to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| TrainError::Config(format!("override {o:?}: `{}` is not a section", path[0])))?;
    section.insert(path[1].to_string(), parsed);
    Ok(())
}
