//! `fgclip eval-search`: how well an index finds objects by their descriptions (region hit@1/5/10 against the
//! global-only and random-candidate baselines, image recall@1/5 of captions), on records in the FineHARD layout
//! with boxes, e.g. `fgclip synth`'s held-out `test.json`. The measure is `fgclip_search::quality`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fgclip_search::quality::{self, Truth};
use fgclip_train::data::{load_records, Policy};

use crate::cmd_index::db_path;
use crate::common::RunArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Records with boxes and expressions (FineHARD layout), e.g. DIR/test.json from `fgclip synth`.
    #[arg(long)]
    pub data: PathBuf,
    /// Folder the records' f_path is relative to.
    #[arg(long)]
    pub images: PathBuf,
    /// An index holding those images (`fgclip index`).
    #[arg(long, env = "FGCLIP_DB")]
    pub db: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Seed of the random-candidate baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let db = db_path(a.db.clone())?;
    let store = fgclip_search::store::open(&db, false)?;
    let info = store.info()?.with_context(|| format!("{db}: the index is empty"))?;
    let model = a.run.load(&info.model.source)?;
    let (records, issues) = load_records(&a.data, Policy::Reject).with_context(|| format!("{}", a.data.display()))?;
    anyhow::ensure!(issues.is_empty(), "{}: {} bad records", a.data.display(), issues.len());
    let truths = records
        .iter()
        .map(|r| {
            let boxes: Vec<(&[f32], &str)> = r.bbox_info.iter().map(|b| (&b.bbox[..], b.short_expr.as_str())).collect();
            Truth::from_normalized(a.images.join(&r.f_path), r.caption.clone(), &boxes)
        })
        .collect::<fgclip_search::Result<Vec<_>>>()?;
    let rep = quality::evaluate(&model, store.as_ref(), &info, &truths, a.seed)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(());
    }
    let pct = |x: f64| format!("{:5.1}%", 100.0 * x);
    println!(
        "{} object queries over {} images ({:.1} candidates, {:.1} KiB per image)",
        rep.queries,
        rep.images,
        rep.regions_per_image,
        rep.bytes_per_image / 1024.0
    );
    println!("{:<28} {:>7} {:>7} {:>7}", "", "@1", "@5", "@10");
    for (name, v) in [
        ("region search", rep.region_hit),
        ("global only (whole image)", rep.global_only_hit),
        ("random box, right image", rep.random_box_hit),
        ("random candidate, right img", rep.random_candidate_hit),
    ] {
        println!("{:<28} {:>7} {:>7} {:>7}", name, pct(v[0]), pct(v[1]), pct(v[2]));
    }
    println!("image recall of captions: @1 {}  @5 {}", pct(rep.image_recall[0]), pct(rep.image_recall[1]));
    println!(
        "candidates: {} cover the object (the ceiling); the best-scoring one in the right image hits {}",
        pct(rep.candidate_recall),
        pct(rep.in_image_hit1)
    );
    Ok(())
}
