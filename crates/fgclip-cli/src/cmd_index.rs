//! `fgclip index DIR... --db PATH`: index (or bring up to date) folders of photos for `fgclip search`. The work
//! is `fgclip_search::index`; this file parses flags, draws the progress bar and prints the summary.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fgclip_search::scan::ScanOptions;
use fgclip_search::{IndexOptions, RegionConfig};

use crate::common::{self, RunArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folders (or single image files) to index.
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    #[command(flatten)]
    pub index: IndexArgs,
    /// Skip paths matching this gitignore-style glob (repeatable), e.g. '*.png' or 'raw/'.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Also index hidden files and folders.
    #[arg(long)]
    pub hidden: bool,
    /// Skip images above this many megapixels (checked from the header, before decoding).
    #[arg(long, default_value_t = 100.0)]
    pub max_megapixels: f64,
    /// Images per model batch (and per transaction).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Most region candidates stored per image (0: whole images only). Only for a new index or with --reindex.
    #[arg(long)]
    pub regions: Option<usize>,
    /// Region candidate settings as a JSON file: any of scales, aspects, stride, max_per_image, merge_iou,
    /// merge_cos, segments (docs/search.md). Only for a new index or with --reindex.
    #[arg(long, value_name = "FILE")]
    pub region_config: Option<std::path::PathBuf>,
    /// Drop the index's vectors and rebuild it (needed to change the model or the region settings).
    #[arg(long)]
    pub reindex: bool,
    /// Decode every JPEG in full, as `fgclip features` does. By default large JPEGs are decoded at a reduced
    /// size that keeps at least twice the model's input on each side (several times faster for camera photos).
    /// Only for a new index or with --reindex.
    #[arg(long)]
    pub full_decode: bool,
    /// FG-CLIP 2: fixed patch budget; default is the official dynamic bucket.
    #[arg(long)]
    pub max_patches: Option<usize>,
    /// Index only shard I of N (`--shard 0/4`), so N machines can fill one shared index.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Print the summary as JSON: {added, updated, moved, removed, unchanged, failed, failures, ...}.
    #[arg(long)]
    pub json: bool,
}

/// Where the index is and which model reads it (`index`, `search`).
#[derive(clap::Args, Debug, Clone)]
pub struct IndexArgs {
    /// The index: an SQLite file (default $FGCLIP_DB or ~/.local/share/fgclip/index.db) or a PostgreSQL URL
    /// `postgres://user@host:port/db` (pgvector needed).
    #[arg(long, env = "FGCLIP_DB")]
    pub db: Option<String>,
    /// Checkpoint folder or Hub repo id; default: the model the index was made with.
    #[arg(long, short = 'm', env = "FGCLIP_MODEL")]
    pub model: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `--db` or its default (the folder of the default is created).
pub fn db_path(db: Option<String>) -> Result<String> {
    if let Some(p) = db.filter(|d| !d.trim().is_empty()) {
        return Ok(p);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context("no --db given and neither XDG_DATA_HOME nor HOME is set")?;
    let dir = base.join("fgclip");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join("index.db").display().to_string())
}

fn parse_shard(s: &str) -> Result<(u32, u32)> {
    let (i, n) = s.split_once('/').with_context(|| format!("--shard {s:?}: expected I/N, e.g. 0/4"))?;
    let (i, n): (u32, u32) = (i.trim().parse().context("--shard: I")?, n.trim().parse().context("--shard: N")?);
    anyhow::ensure!(n > 0 && i < n, "--shard {s}: expected 0 <= I < N");
    Ok((i, n))
}

struct Bar(indicatif::ProgressBar);

impl fgclip_search::Progress for Bar {
    fn start(&self, files: u64) {
        self.0.set_length(files);
    }
    fn advance(&self, files: u64) {
        self.0.inc(files);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// `--region-config` (missing fields keep their defaults), then `--regions` on top.
fn region_config(a: &Args) -> Result<Option<RegionConfig>> {
    let mut cfg = match &a.region_config {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("--region-config {}", p.display()))?;
            let cfg: RegionConfig =
                serde_json::from_str(&text).with_context(|| format!("--region-config {}", p.display()))?;
            cfg.validate().map_err(|e| anyhow::anyhow!("--region-config {}: {e}", p.display()))?;
            Some(cfg)
        }
    };
    if let Some(n) = a.regions {
        cfg.get_or_insert_with(RegionConfig::default).max_per_image = n;
    }
    Ok(cfg)
}

pub fn run(a: Args) -> Result<()> {
    let db = db_path(a.index.db.clone())?;
    let mut store = fgclip_search::store::open(&db, true)?;
    let existing = store.info()?;
    let source = match (&a.index.model, &existing) {
        (Some(m), _) => m.clone(),
        (None, Some(info)) => info.model.source.clone(),
        (None, None) => anyhow::bail!("{db} is a new index: say which model makes it with --model"),
    };
    let model = a.index.run.load(&source)?;
    let opts = IndexOptions {
        scan: ScanOptions { excludes: a.excludes.clone(), hidden: a.hidden },
        batch: a.batch,
        max_megapixels: a.max_megapixels,
        regions: region_config(&a)?,
        reindex: a.reindex,
        full_decode: a.full_decode,
        budget: common::patch_budget(a.max_patches, &model)?,
        shard: a.shard.as_deref().map(parse_shard).transpose()?,
    };
    let bar = Bar(common::progress(0, "images", a.json));
    let cpu0 = common::process_cpu_seconds();
    let summary = fgclip_search::index(&model, &source, store.as_mut(), &a.dirs, &opts, &bar)?;
    let cpu = common::process_cpu_seconds() - cpu0;
    if a.json {
        let mut v = serde_json::to_value(&summary)?;
        // Whole run (scan, hashing, decoding, model, storage) per encoded image: see bench/index_throughput.sh.
        v["cpu_seconds_per_image"] =
            serde_json::json!(if summary.encoded > 0 { cpu / summary.encoded as f64 } else { 0.0 });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for f in &summary.failures {
        eprintln!("skipped {}: {}", f.path, f.reason);
    }
    println!(
        "{}: {} added, {} updated, {} moved, {} removed, {} unchanged, {} failed",
        store.describe(),
        summary.added,
        summary.updated,
        summary.moved,
        summary.removed,
        summary.unchanged,
        summary.failed
    );
    println!(
        "index: {} images, {} regions, {:.1} KiB of vectors per image; encoded {} images at {:.2} images/s ({:.1} s)",
        summary.images,
        summary.regions,
        summary.bytes_per_image / 1024.0,
        summary.encoded,
        summary.images_per_second,
        summary.seconds
    );
    Ok(())
}
