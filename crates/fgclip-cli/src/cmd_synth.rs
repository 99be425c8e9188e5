//! `fgclip synth`: renders the synthetic fine-grained dataset of `fgclip_train::synth` (FineHARD layout plus
//! an FG-OVD-style held-out file) into a folder, with a progress bar. No official counterpart: it stands in
//! for downloading FineHARD.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fgclip_train::synth::{self, SynthConfig};

use crate::common;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output folder (created; must be empty unless --overwrite).
    #[arg(long)]
    pub out: PathBuf,
    /// Training images.
    #[arg(long, default_value_t = 2000)]
    pub train: usize,
    /// Held-out images (their boxes become test_fgovd.jsonl).
    #[arg(long, default_value_t = 200)]
    pub test: usize,
    /// Side of the square images in pixels.
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    /// Seed: the same seed and options give byte-identical output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fewest objects per image.
    #[arg(long, default_value_t = 2)]
    pub min_objects: usize,
    /// Most objects per image (at most 4, the training batch's box slots).
    #[arg(long, default_value_t = 4)]
    pub max_objects: usize,
    /// Write into a non-empty folder (replaces the images and files of an earlier run there).
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let cfg = SynthConfig {
        train: a.train,
        test: a.test,
        size: a.size,
        seed: a.seed,
        min_objects: a.min_objects,
        max_objects: a.max_objects,
        overwrite: a.overwrite,
    };
    cfg.validate()?;
    let pb = common::progress((a.train + a.test) as u64, "images", a.json);
    let t0 = std::time::Instant::now();
    let summary = synth::generate(&cfg, &a.out, &|n| pb.inc(n))
        .with_context(|| format!("generating into {}", a.out.display()))?;
    pb.finish_and_clear();
    // A tiny FG-CLIP (config + word-level tokenizer over every word of both splits) to train from scratch
    // without downloads: `fgclip train --set model.config=OUT/tiny-model/config.json --set model.tokenizer=OUT/tiny-model`.
    let tiny_dir = fgclip_train::tiny::write_for_synth(&a.out, a.size)?;
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let mut v = serde_json::to_value(&summary)?;
        v["out"] = serde_json::json!(a.out.display().to_string());
        v["seconds"] = serde_json::json!(secs);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "wrote {} training images ({} boxes) and {} held-out images ({} FG-OVD lines) of {}px to {} in {:.1}s",
            summary.train_images,
            summary.train_boxes,
            summary.test_images,
            summary.test_boxes,
            cfg.size,
            a.out.display(),
            secs
        );
        println!("  train: {}", a.out.join("train.json").display());
        println!("  test:  {} and {}", a.out.join("test.json").display(), a.out.join("test_fgovd.jsonl").display());
        println!("  images under {}", a.out.join("images").display());
        println!("  tiny model config + tokenizer (train from scratch): {}", tiny_dir.display());
    }
    Ok(())
}
