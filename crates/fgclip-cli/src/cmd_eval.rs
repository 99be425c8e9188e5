//! `fgclip eval-fgovd`: FG-OVD fine-grained top-1 accuracy (docs/data.md#fg-ovd-evaluation) of a model on an FG-OVD jsonl file,
//! the real benchmark's (`h_attributes_llava.jsonl`, ...) or `fgclip synth`'s `test_fgovd.jsonl`. Mirrors the
//! official `fgovd_eval.py`; the scoring lives in `fgclip_train::eval`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use fgclip_train::eval::{self, FgovdOptions, OnBadLine};

use crate::common::{self, ModelArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// FG-OVD jsonl file (one line per box: img_path, bbox [x,y,w,h] px, pos_expression, neg_expression).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder that the lines' img_path is relative to (the COCO root for the real benchmark; DIR/images for
    /// `fgclip synth --out DIR`).
    #[arg(long)]
    pub images: PathBuf,
    /// Images per vision-tower call.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Skip (and list) lines whose image is missing or whose box is unusable, instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    /// Also write every line's candidate scores and verdict as JSON lines to this file.
    #[arg(long)]
    pub outcomes: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !a.images.is_dir() {
        bail!("--images {}: not a folder", a.images.display());
    }
    // Parse the file before loading the model, so a bad line fails fast.
    let file = eval::read_fgovd(&a.data)?;
    let model = a.model.load()?;
    let opts = FgovdOptions {
        image_root: a.images.clone(),
        batch: a.batch_size,
        on_bad_line: if a.skip_bad { OnBadLine::Skip } else { OnBadLine::Error },
        source: file.source.clone(),
    };
    let pb = common::progress(file.lines.len() as u64, "lines", a.json);
    let report = eval::fgovd_with(&model, &file.lines, &opts, &|n| pb.inc(n))?;
    pb.finish_and_clear();

    if let Some(p) = &a.outcomes {
        let mut s = String::new();
        for o in &report.outcomes {
            let mut v = serde_json::to_value(o)?;
            v["location"] = serde_json::json!(file.source.locate(o.index));
            s.push_str(&serde_json::to_string(&v)?);
            s.push('\n');
        }
        std::fs::write(p, s).with_context(|| format!("writing {}", p.display()))?;
    }
    if a.json {
        let v = serde_json::json!({
            "data": a.data.display().to_string(),
            "model": a.model.model,
            "family": model.family().name(),
            "walk": if model.region_walk() == fgclip::TextWalk::Box { "box" } else { "short" },
            "lines": file.lines.len(),
            "accuracy": report.accuracy,
            "correct": report.correct,
            "total": report.total,
            "by_type": report.by_type,
            "skipped": report.skipped,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: {} lines, model {} ({})",
            a.data.display(),
            file.lines.len(),
            a.model.model,
            model.family().name()
        );
        println!("{:<28} {:>8} {:>8} {:>9}", "test_type", "correct", "total", "accuracy");
        for (t, s) in &report.by_type {
            println!("{:<28} {:>8} {:>8} {:>8.2}%", t, s.correct, s.total, 100.0 * s.accuracy);
        }
        println!("{:<28} {:>8} {:>8} {:>8.2}%", "all", report.correct, report.total, 100.0 * report.accuracy);
        if !report.skipped.is_empty() {
            println!("skipped {} lines:", report.skipped.len());
            for s in report.skipped.iter().take(20) {
                println!("  {}: {}", s.location, s.reason);
            }
            if report.skipped.len() > 20 {
                println!("  ... and {} more", report.skipped.len() - 20);
            }
        }
    }
    Ok(())
}
