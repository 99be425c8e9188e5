//! `fgclip heatmap`: where in an image a text query matches, as a colour overlay PNG.
//!
//! As the official FG-CLIP 2 README's dense demo: L2-normalise the dense per-patch features
//! (`dense_features`) and the query's text features (FG-CLIP 2: box walk by default; FG-CLIP: short walk), take
//! their cosine per grid cell, then (for display) min-max scale the grid, upsample it bilinearly to the image
//! size, colour it with viridis and alpha-blend it over the image, with a colour bar giving the cosine range.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use fgclip::TextWalk;

use crate::common::{self, ModelArgs};
use crate::draw;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image file.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// The text to locate, e.g. "a white cat".
    #[arg(long, short = 'q')]
    pub query: String,
    /// Output image (PNG), the size of the input image.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// FG-CLIP 2: fixed patch budget (more patches, finer map); default is the official dynamic bucket.
    #[arg(long)]
    pub max_patches: Option<usize>,
    /// Opacity of the heatmap over the image, 0 (image only) to 1 (heatmap only).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Text walk for the query: box or short (default: box for FG-CLIP 2, as the official dense demo; short for
    /// FG-CLIP, which has no box head).
    #[arg(long)]
    pub walk: Option<String>,
    /// Print JSON (grid shape, cosine statistics, peak cell) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if !(0.0..=1.0).contains(&a.alpha) {
        bail!("--alpha must be between 0 and 1 (got {})", a.alpha);
    }
    if a.query.trim().is_empty() {
        bail!("--query is empty: give the text to locate");
    }
    let walk_arg: Option<TextWalk> = match a.walk.as_deref() {
        None => None,
        Some("box") => Some(TextWalk::Box),
        Some("short") => Some(TextWalk::Short),
        Some(w) => bail!("unknown --walk {w:?} (expected box or short)"),
    };
    draw::check_output_path(&a.out, "--out")?;
    common::check_image_files(std::slice::from_ref(&a.image))?;
    let img = fgclip::Model::load_images(std::slice::from_ref(&a.image))?.remove(0);

    let model = a.model.load()?;
    let family = model.family();
    let budget = common::patch_budget(a.max_patches, &model)?;
    let walk = walk_arg.unwrap_or(model.region_walk());
    let walk_name = if walk == TextWalk::Box { "box" } else { "short" };
    if model.region_walk() != TextWalk::Box && walk == TextWalk::Box {
        eprintln!("warning: {} has no box text head; --walk box uses the short walk", family.name());
    }

    let map = fgclip::tasks::heatmap(&model, &img, &a.query, walk, budget).context("computing the heatmap")?;
    let (rows, cols, cos) = (map.rows, map.cols, &map.cosines);
    let (lo, hi, mean) = map.stats();
    let (pr, pc) = map.peak();
    let peak = pr * cols + pc;
    let (w, h) = (img.width, img.height);
    let peak_xy = ((pc as f64 + 0.5) * w as f64 / cols as f64, (pr as f64 + 0.5) * h as f64 / rows as f64);

    // Min-max scale for display; a flat map (no contrast at all) is shown mid-scale rather than dividing by 0.
    let range = hi - lo;
    let scaled: Vec<f32> =
        if range > 1e-12 { cos.iter().map(|v| (v - lo) / range).collect() } else { vec![0.5; cos.len()] };
    let up = draw::upsample_bilinear(&scaled, rows, cols, h, w);
    let mut heat = image::RgbImage::new(w as u32, h as u32);
    for (p, v) in heat.pixels_mut().zip(&up) {
        p.0 = draw::viridis(*v);
    }
    let mut canvas = draw::to_rgb_image(&img);
    draw::alpha_blend(&mut canvas, &heat, a.alpha);
    let (_, scale) = draw::auto_sizes(w as u32, h as u32);
    draw::draw_colorbar(&mut canvas, lo, hi, scale);
    draw::save(&canvas, &a.out)?;

    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": a.model.model, "family": family.name(), "image": a.image.display().to_string(),
                "height": h, "width": w, "query": a.query, "walk": walk_name,
                "grid": [rows, cols], "min": lo, "max": hi, "mean": mean,
                "peak": { "row": pr, "col": pc, "cosine": cos[peak], "x": peak_xy.0, "y": peak_xy.1 },
                "alpha": a.alpha, "out": a.out.display().to_string(),
            })
        );
        return Ok(());
    }
    println!("{} · {} ({w}x{h}) · query {:?} · text walk {walk_name}", family.name(), a.image.display(), a.query);
    println!("grid {rows}x{cols} · cosine min {lo:.4} · max {hi:.4} · mean {mean:.4}");
    println!("peak at row {pr}, col {pc} (around pixel {:.0},{:.0}), cosine {:.4}", peak_xy.0, peak_xy.1, cos[peak]);
    println!("wrote {} (colour bar: viridis, {lo:.3} → {hi:.3})", a.out.display());
    Ok(())
}
