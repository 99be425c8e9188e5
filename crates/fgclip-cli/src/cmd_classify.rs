//! `fgclip classify`: zero-shot ranking of labels for each image.
//!
//! Scores are the family's own: logits from `Model::logits` (FG-CLIP `exp(logit_scale)·cos`, FG-CLIP 2
//! `exp(logit_scale)·cos + logit_bias`) and probabilities from `Model::probabilities` (FG-CLIP: softmax over the
//! labels, so they sum to 1; FG-CLIP 2: an independent sigmoid per label, as its sigmoid loss trains it). Labels are
//! embedded with the short text walk (docs/models.md#zero-shot-classification), through one or more prompt templates.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use fgclip::TextWalk;

use crate::common::{self, ModelArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image files to classify.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Comma-separated labels, e.g. "cat,dog,a red car".
    #[arg(long)]
    pub labels: Option<String>,
    /// File with one label per line (blank lines and `#` comments skipped); appended after --labels.
    #[arg(long)]
    pub labels_file: Option<PathBuf>,
    /// Prompt template, `{}` = the label (repeatable: embeddings are averaged as the official evals do).
    /// Use `--template "{}"` to embed the labels verbatim.
    #[arg(long = "template", default_value = "a photo of a {}.")]
    pub templates: Vec<String>,
    /// Show the K best labels per image (0 = all).
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// FG-CLIP 2: fixed patch budget (official zero-shot eval: 1024); default is the dynamic bucket.
    #[arg(long)]
    pub max_patches: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Scores of one image, labels in input order.
struct ImageScores {
    path: PathBuf,
    size_hw: (usize, usize),
    logits: Vec<f32>,
    probs: Vec<f32>,
    cosines: Vec<f32>,
}

pub fn run(a: Args) -> Result<()> {
    // Cheap checks first, so a typo fails before the model loads.
    let labels = common::read_labels(a.labels.as_deref(), a.labels_file.as_deref())?;
    common::check_templates(&a.templates)?;
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    common::check_image_files(&a.images)?;

    let model = a.model.load()?;
    let family = model.family();
    let budget = common::patch_budget(a.max_patches, &model)?;
    let text = common::encode_labels(&model, &labels, &a.templates, TextWalk::Short)?;

    let pb = common::progress(a.images.len() as u64, "images", a.json);
    let mut results: Vec<ImageScores> = vec![];
    for chunk in a.images.chunks(a.batch_size) {
        let imgs = fgclip::Model::load_images(chunk)?;
        let prepared = model.prepare_images(&imgs, budget)?;
        let emb = model.encode_images(&prepared).context("encoding images")?;
        let logits = model.logits(&emb, &text)?;
        let probs = model.probabilities(&logits)?;
        let cos = fgclip::nn::l2_normalize(&emb.to_dtype(DType::F32)?)?.matmul(&text.t()?)?;
        let logits: Vec<Vec<f32>> = logits.to_vec2()?;
        let probs: Vec<Vec<f32>> = probs.to_vec2()?;
        let cos: Vec<Vec<f32>> = cos.to_vec2()?;
        for (i, path) in chunk.iter().enumerate() {
            if probs[i].iter().chain(&logits[i]).any(|v| !v.is_finite()) {
                bail!("internal error: non-finite score for image {}", path.display());
            }
            results.push(ImageScores {
                path: path.clone(),
                size_hw: prepared.sizes[i],
                logits: logits[i].clone(),
                probs: probs[i].clone(),
                cosines: cos[i].clone(),
            });
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();

    let k = if a.top == 0 { labels.len() } else { a.top.min(labels.len()) };
    let head = model.score_head();
    let prob_kind = match head.normalizer {
        fgclip::Normalizer::Softmax => "softmax",
        fgclip::Normalizer::Sigmoid => "sigmoid",
    };
    if a.json {
        let images: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                let top: Vec<serde_json::Value> = ranking(&r.probs, &r.logits)
                    .into_iter()
                    .take(k)
                    .enumerate()
                    .map(|(rank, j)| {
                        serde_json::json!({
                            "rank": rank + 1, "label": labels[j], "index": j,
                            "probability": r.probs[j], "logit": r.logits[j], "cosine": r.cosines[j],
                        })
                    })
                    .collect();
                serde_json::json!({
                    "image": r.path.display().to_string(), "height": r.size_hw.0, "width": r.size_hw.1,
                    "top": top, "probabilities": r.probs, "logits": r.logits, "cosines": r.cosines,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "model": a.model.model, "family": family.name(), "probability": prob_kind, "walk": "short",
                "templates": a.templates, "labels": labels, "results": images,
            })
        );
        return Ok(());
    }

    let how = match head.normalizer {
        fgclip::Normalizer::Softmax => "softmax over the labels (they sum to 1)",
        fgclip::Normalizer::Sigmoid => "an independent sigmoid per label (each in [0,1]; they need not sum to 1)",
    };
    println!("{} · {} labels · probability = {how}", family.name(), labels.len());
    let width = labels.iter().take(1000).map(|l| l.chars().count()).max().unwrap_or(0).clamp(5, 40);
    for r in &results {
        println!("{} ({}x{})", r.path.display(), r.size_hw.1, r.size_hw.0);
        for (rank, j) in ranking(&r.probs, &r.logits).into_iter().take(k).enumerate() {
            println!("  {:>3}. {:<width$}  {:.4}  (logit {:+.3})", rank + 1, labels[j], r.probs[j], r.logits[j]);
        }
    }
    Ok(())
}

/// Label indices, best first (by probability, then logit, then input order: stable for ties).
fn ranking(probs: &[f32], logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]).then(logits[j].total_cmp(&logits[i])));
    idx
}
