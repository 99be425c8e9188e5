//! `fgclip search QUERY --db PATH`: text (English or Chinese) or image queries over an index made by
//! `fgclip index`, answered with images and boxes; a table, `--json`, or pictures with the boxes drawn (`--draw`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use fgclip_search::query::check_model;
use fgclip_search::{Hit, Kinds, Query, SearchOptions};

use crate::cmd_index::{db_path, IndexArgs};
use crate::draw;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to look for, in English or Chinese (or use --image).
    #[arg(value_name = "QUERY", required_unless_present = "image")]
    pub query: Option<String>,
    /// Search with this photo instead of words.
    #[arg(long, conflicts_with = "query")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub index: IndexArgs,
    /// How many hits.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// image (whole photos), region (a photo and a box) or both.
    #[arg(long, default_value = "both")]
    pub kind: String,
    /// Most region hits per photo.
    #[arg(long, default_value_t = 1)]
    pub per_image: usize,
    /// Print a JSON list of {rank, path, score, kind, box}.
    #[arg(long)]
    pub json: bool,
    /// Write each hit into this folder as a PNG with its box drawn.
    #[arg(long, value_name = "DIR")]
    pub draw: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let db = db_path(a.index.db.clone())?;
    let store = fgclip_search::store::open(&db, false)?;
    let info = store.info()?.with_context(|| format!("{db}: the index is empty (run fgclip index first)"))?;
    let source = a.index.model.clone().unwrap_or_else(|| info.model.source.clone());
    let query = match (&a.query, &a.image) {
        (_, Some(p)) => Query::Image(p.clone()),
        (Some(q), None) => {
            anyhow::ensure!(!q.trim().is_empty(), "the query is empty (give some words, or --image FILE)");
            Query::Text(q.clone())
        }
        (None, None) => anyhow::bail!("give a query, or --image FILE"),
    };
    let opts = SearchOptions { top: a.top, kinds: a.kind.parse::<Kinds>()?, per_image: a.per_image };
    let model = a.index.run.load(&source).with_context(|| {
        if a.index.model.is_none() {
            format!("the index {db} names this model; pass --model if it has moved")
        } else {
            String::new()
        }
    })?;
    check_model(&model, &source, store.as_ref(), &info)?;
    let hits = fgclip_search::search(&model, store.as_ref(), &info, &query, &opts)?;
    if let Some(dir) = &a.draw {
        draw_hits(&hits, dir)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("no hits (the index has no {} yet)", a.kind);
        return Ok(());
    }
    println!("{:>4}  {:>6}  {:<6}  {:<22}  path", "rank", "score", "kind", "box");
    for h in &hits {
        let b =
            h.bbox.map(|b| format!("{:.0},{:.0},{:.0},{:.0}", b[0], b[1], b[2], b[3])).unwrap_or_else(|| "-".into());
        println!("{:>4}  {:>6.3}  {:<6}  {:<22}  {}", h.rank, h.score, h.kind.name(), b, h.path);
    }
    Ok(())
}

/// `DIR/NN-name.png`: the photo (upright) with the hit's box and its rank and score drawn on it.
fn draw_hits(hits: &[Hit], dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating --draw folder {}", dir.display()))?;
    for h in hits {
        let img = fgclip_search::query::load_upright(&h.file)?;
        let mut canvas = draw::to_rgb_image(&img);
        let (thick, scale) = draw::auto_sizes(canvas.width(), canvas.height());
        let color = draw::palette(0);
        let label = format!("#{} {:.3}", h.rank, h.score);
        match h.bbox {
            Some(b) => {
                draw::draw_rect(&mut canvas, b, color, thick);
                draw::draw_label(
                    &mut canvas,
                    b[0] as i64,
                    b[1] as i64 - 12 * scale as i64,
                    &label,
                    draw::contrast_text(color),
                    color,
                    scale,
                );
            }
            None => {
                draw::draw_label(&mut canvas, 0, 0, &label, draw::contrast_text(color), color, scale);
            }
        }
        let stem = h.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "hit".into());
        let stem: String =
            stem.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        draw::save(&canvas, &dir.join(format!("{:02}-{}-{}.png", h.rank, h.kind.name(), stem)))?;
    }
    Ok(())
}
