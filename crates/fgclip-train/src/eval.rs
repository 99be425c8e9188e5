//! FG-OVD-style fine-grained evaluation (docs/data.md#fg-ovd-evaluation): for every line (one box, one positive, n ≤ 10
//! negatives) the box's region feature is compared with the candidates' text features, and the line is
//! correct iff the positive scores the maximum. Mirrors the official `fgclip/eval/fgovd_eval.py` (FG-CLIP,
//! branch v1.0) and its FG-CLIP 2 counterpart:
//!
//! * candidates = `pos_expression + neg_expression`, FG-CLIP 2 lower-cases them (CLIP's tokenizer does so
//!   for FG-CLIP anyway); FG-CLIP encodes them in the short walk (77 tokens), FG-CLIP 2 in the box walk
//!   (64 tokens, `boxtext_head`);
//! * box `[x, y, w, h]` px → `[x, y, x+w, y+h]` in the ORIGINAL image's pixels ([`Model::region_features`]
//!   maps them onto the feature grid with the decoded image's own size, as the script's `img.size`);
//! * FG-CLIP squashes the image to its square input, FG-CLIP 2 uses the default NaFlex processor with the
//!   dynamic patch budget;
//! * ranking by cosine (the scripts' `softmax(100·cos)` preserves it); ties count as correct ("max value
//!   equals the value at index 0").
//!
//! Unlike the script, lines are grouped by image so each image goes through the vision tower once, and
//! images are batched. Lines whose image is missing or whose box is unusable are an error naming
//! `file:line`, or are skipped and listed, per [`OnBadLine`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use fgclip::{Model, PatchBudget};
use serde::{Deserialize, Serialize};

use crate::data::FgovdLine;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{location}: invalid FG-OVD line: {msg}")]
    Parse { location: String, msg: String },
    #[error("{location}: {msg}")]
    BadLine { location: String, msg: String },
    #[error("{0}")]
    Input(String),
    #[error("{context}: {source}")]
    Model { context: String, source: fgclip::Error },
}

impl EvalError {
    fn model(context: impl Into<String>) -> impl FnOnce(fgclip::Error) -> EvalError {
        let context = context.into();
        move |source| EvalError::Model { context, source }
    }
}

fn candle(context: &str) -> impl FnOnce(candle_core::Error) -> EvalError + '_ {
    move |e| EvalError::Model { context: context.to_string(), source: fgclip::Error::Candle(e) }
}

/// Where each line came from, for messages: `file:N`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineSource {
    /// File name as shown in messages.
    pub file: String,
    /// 1-based line number in `file` of each line (index = position in the lines slice). Empty: `i + 1`.
    pub numbers: Vec<usize>,
}

impl LineSource {
    /// `file:N` of line `i`.
    pub fn locate(&self, i: usize) -> String {
        let n = self.numbers.get(i).copied().unwrap_or(i + 1);
        let file = if self.file.is_empty() { "<lines>" } else { &self.file };
        format!("{file}:{n}")
    }
}

/// A parsed FG-OVD jsonl file.
#[derive(Debug, Clone)]
pub struct FgovdFile {
    pub path: PathBuf,
    pub lines: Vec<FgovdLine>,
    pub source: LineSource,
}

/// Reads an FG-OVD jsonl file (one JSON object per line; blank lines are allowed and skipped). A line
/// that does not parse is an error naming `file:line` and the field.
pub fn read_fgovd(path: &Path) -> Result<FgovdFile, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read { path: path.into(), source })?;
    let file = path.display().to_string();
    let mut lines = vec![];
    let mut numbers = vec![];
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line: FgovdLine = serde_json::from_str(l)
            .map_err(|e| EvalError::Parse { location: format!("{file}:{}", i + 1), msg: e.to_string() })?;
        lines.push(line);
        numbers.push(i + 1);
    }
    if lines.is_empty() {
        return Err(EvalError::Input(format!("{file}: no FG-OVD lines in the file")));
    }
    Ok(FgovdFile { path: path.into(), lines, source: LineSource { file, numbers } })
}

/// What to do with a line whose image is missing or unreadable or whose box or texts are unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadLine {
    /// Stop with an error naming the line.
    #[default]
    Error,
    /// Leave it out of the counts and list it in [`FgovdReport::skipped`].
    Skip,
}

#[derive(Debug, Clone)]
pub struct FgovdOptions {
    /// Folder that `img_path` is relative to.
    pub image_root: PathBuf,
    /// Images per vision-tower call.
    pub batch: usize,
    pub on_bad_line: OnBadLine,
    /// Names lines in messages.
    pub source: LineSource,
}

/// Accuracy over a group of lines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
}

impl Score {
    fn add(&mut self, ok: bool) {
        self.total += 1;
        self.correct += ok as usize;
        self.accuracy = self.correct as f64 / self.total as f64;
    }
}

/// One scored line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineOutcome {
    /// Index into the lines given.
    pub index: usize,
    pub correct: bool,
    /// Cosine of the region with each candidate: positive(s) first, then the negatives in file order.
    pub scores: Vec<f32>,
}

/// A line left out (with [`OnBadLine::Skip`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedLine {
    pub index: usize,
    /// `file:N`.
    pub location: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FgovdReport {
    /// correct / total over the scored lines (0 when none were scored).
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
    /// Per `test_type` (lines without one are under "(none)").
    pub by_type: BTreeMap<String, Score>,
    pub skipped: Vec<SkippedLine>,
    /// Every scored line in input order.
    pub outcomes: Vec<LineOutcome>,
}

/// Scores `lines` with errors for bad lines, images in batches of `batch`. `progress` gets the number of
/// lines just finished.
pub fn fgovd(
    model: &Model,
    lines: &[FgovdLine],
    image_root: &Path,
    batch: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<FgovdReport, EvalError> {
    let opts = FgovdOptions {
        image_root: image_root.to_path_buf(),
        batch,
        on_bad_line: OnBadLine::Error,
        source: LineSource::default(),
    };
    fgovd_with(model, lines, &opts, progress)
}

/// The candidates of a line as the family's eval script encodes them (`lowercase`: the family's
/// `Towers::text_rules().lowercase`, FG-CLIP 2's scripts lower-case).
pub fn candidates(lowercase: bool, line: &FgovdLine) -> Vec<String> {
    line.pos_expression
        .iter()
        .chain(&line.neg_expression)
        .map(|s| if lowercase { s.to_lowercase() } else { s.clone() })
        .collect()
}

/// Problems of a line that need no image.
fn check_line(line: &FgovdLine) -> Option<String> {
    if line.pos_expression.is_empty() {
        return Some("`pos_expression` is empty (needs the positive expression)".into());
    }
    if line.img_path.trim().is_empty() {
        return Some("`img_path` is empty".into());
    }
    let [_, _, w, h] = line.bbox;
    if line.bbox.iter().any(|v| !v.is_finite()) {
        return Some(format!("`bbox` {:?} has a non-finite value", line.bbox));
    }
    if w <= 0.0 || h <= 0.0 {
        return Some(format!("`bbox` {:?} ([x, y, w, h]) has no area", line.bbox));
    }
    None
}

/// Problems of a box against the decoded image size: a box that misses the image would give a zero region
/// feature and a meaningless tie. Boxes partly outside are kept (RoIAlign treats outside samples as 0).
fn check_box(b: [f32; 4], w: usize, h: usize) -> Option<String> {
    let [x, y, bw, bh] = b;
    if x >= w as f32 || y >= h as f32 || x + bw <= 0.0 || y + bh <= 0.0 {
        return Some(format!("`bbox` {b:?} ([x, y, w, h]) lies outside the {w}x{h} image"));
    }
    None
}

/// Scores `lines` (docs/data.md#fg-ovd-evaluation); see the module doc.
pub fn fgovd_with(
    model: &Model,
    lines: &[FgovdLine],
    opts: &FgovdOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<FgovdReport, EvalError> {
    if opts.batch == 0 {
        return Err(EvalError::Input("batch must be at least 1".into()));
    }
    // Region captions use the family's region walk (FG-CLIP short, FG-CLIP 2 box) and text rules.
    let walk = model.region_walk();
    let lowercase = model.towers().text_rules().lowercase;
    let mut skipped: Vec<SkippedLine> = vec![];
    // A bad line: an error, or recorded and left out.
    let bad = |i: usize, reason: String, skipped: &mut Vec<SkippedLine>| -> Result<(), EvalError> {
        let location = opts.source.locate(i);
        match opts.on_bad_line {
            OnBadLine::Error => Err(EvalError::BadLine { location, msg: reason }),
            OnBadLine::Skip => {
                tracing::warn!("skipping {location}: {reason}");
                skipped.push(SkippedLine { index: i, location, reason });
                Ok(())
            }
        }
    };

    // Group the usable lines by image, images in order of first appearance.
    let mut order: Vec<&str> = vec![];
    let mut by_image: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(reason) = check_line(l) {
            bad(i, reason, &mut skipped)?;
            continue;
        }
        by_image
            .entry(l.img_path.as_str())
            .or_insert_with(|| {
                order.push(l.img_path.as_str());
                vec![]
            })
            .push(i);
    }

    let mut scored: Vec<LineOutcome> = vec![];
    for chunk in order.chunks(opts.batch) {
        // Decode the chunk's images in parallel; failures become bad lines.
        let decoded: Vec<Result<fgclip::fgclip_image::RgbImage, String>> = {
            use rayon::prelude::*;
            chunk
                .par_iter()
                .map(|p| {
                    let path = opts.image_root.join(p);
                    fgclip::fgclip_image::load_rgb(&path).map_err(|e| e.to_string())
                })
                .collect()
        };
        let mut images = vec![];
        let mut image_lines: Vec<Vec<usize>> = vec![];
        for (p, img) in chunk.iter().zip(decoded) {
            let idx = &by_image[p];
            let img = match img {
                Ok(img) => img,
                Err(e) => {
                    for &i in idx {
                        bad(i, format!("image {}: {e}", opts.image_root.join(p).display()), &mut skipped)?;
                    }
                    progress(idx.len() as u64);
                    continue;
                }
            };
            let mut keep = vec![];
            for &i in idx {
                match check_box(lines[i].bbox, img.width, img.height) {
                    Some(reason) => bad(i, reason, &mut skipped)?,
                    None => keep.push(i),
                }
            }
            if keep.len() != idx.len() {
                progress((idx.len() - keep.len()) as u64);
            }
            if !keep.is_empty() {
                images.push(img);
                image_lines.push(keep);
            }
        }
        if images.is_empty() {
            continue;
        }

        // Region features of every box of the chunk: one tower pass per image.
        let boxes: Vec<Vec<[f32; 4]>> = image_lines
            .iter()
            .map(|idx| {
                idx.iter()
                    .map(|&i| {
                        let [x, y, w, h] = lines[i].bbox;
                        [x, y, x + w, y + h]
                    })
                    .collect()
            })
            .collect();
        let first = opts.source.locate(image_lines[0][0]);
        let prepared = model
            .prepare_images(&images, PatchBudget::Dynamic)
            .map_err(EvalError::model(format!("preparing the images of the batch starting at {first}")))?;
        let regions = model
            .region_features(&prepared, &boxes)
            .map_err(EvalError::model(format!("region features of the batch starting at {first}")))?;

        // Texts: each distinct candidate of the chunk once, in chunks the text tower takes comfortably.
        let mut text_row: HashMap<String, usize> = HashMap::new();
        let mut texts: Vec<String> = vec![];
        let cands: Vec<Vec<Vec<String>>> =
            image_lines.iter().map(|idx| idx.iter().map(|&i| candidates(lowercase, &lines[i])).collect()).collect();
        for c in cands.iter().flatten().flatten() {
            if !text_row.contains_key(c) {
                text_row.insert(c.clone(), texts.len());
                texts.push(c.clone());
            }
        }
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let text_emb = fgclip::tasks::encode_texts_batched(model, &refs, walk)
            .map_err(EvalError::model(format!("encoding the candidates of the batch starting at {first}")))?;
        let ctx = "scoring";
        let text_emb = text_emb.to_dtype(DType::F32).map_err(candle(ctx))?;
        let text_emb = fgclip::nn::l2_normalize(&text_emb).map_err(candle(ctx))?;

        for ((idx, reg), cand) in image_lines.iter().zip(&regions).zip(&cands) {
            let reg = reg.to_dtype(DType::F32).and_then(|r| fgclip::nn::l2_normalize(&r)).map_err(candle(ctx))?;
            for (k, (&i, c)) in idx.iter().zip(cand).enumerate() {
                let rows: Vec<u32> = c.iter().map(|s| text_row[s] as u32).collect();
                let n = rows.len();
                let rows = Tensor::from_vec(rows, n, text_emb.device()).map_err(candle(ctx))?;
                let scores: Vec<f32> = reg
                    .narrow(0, k, 1)
                    .and_then(|r| r.matmul(&text_emb.index_select(&rows, 0)?.t()?))
                    .and_then(|s| s.flatten_all()?.to_vec1())
                    .map_err(candle(ctx))?;
                if scores.iter().any(|s| !s.is_finite()) {
                    bad(i, format!("non-finite similarity scores {scores:?}"), &mut skipped)?;
                    continue;
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                scored.push(LineOutcome { index: i, correct: scores[0] == max, scores });
            }
            progress(idx.len() as u64);
        }
    }

    scored.sort_by_key(|o| o.index);
    skipped.sort_by_key(|s| s.index);
    let mut all = Score::default();
    let mut by_type: BTreeMap<String, Score> = BTreeMap::new();
    for o in &scored {
        all.add(o.correct);
        let t = lines[o.index].test_type.clone().unwrap_or_else(|| "(none)".into());
        by_type.entry(t).or_default().add(o.correct);
    }
    Ok(FgovdReport {
        accuracy: all.accuracy,
        correct: all.correct,
        total: all.total,
        by_type,
        skipped,
        outcomes: scored,
    })
}
