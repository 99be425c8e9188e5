//! `fgclip boxes`: open-vocabulary labelling of boxes in one image, optionally drawn onto a PNG.
//!
//! Region features come from one vision-tower pass (`dense_features`) followed by RoIAlign on the dense map
//! (`regions_from_dense`), boxes in original-image pixels. Labels are embedded with the box walk on FG-CLIP 2
//! (its `boxtext_head`) and the short walk on FG-CLIP (which has no box head). The score is
//! `softmax(100·cos)` over the labels, as the official region evaluations compute it (docs/models.md); it ranks
//! exactly as the cosine does. The work is `fgclip::tasks::label_boxes`; this file parses, prints and draws.

use std::path::PathBuf;

use anyhow::{Context, Result};
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
    /// A box `x1,y1,x2,y2` in image pixels (repeatable).
    #[arg(long = "box", required = true, value_name = "X1,Y1,X2,Y2", allow_hyphen_values = true)]
    pub boxes: Vec<String>,
    /// Comma-separated labels, e.g. "a red cup,a blue cup".
    #[arg(long)]
    pub labels: Option<String>,
    /// File with one label per line (blank lines and `#` comments skipped); appended after --labels.
    #[arg(long)]
    pub labels_file: Option<PathBuf>,
    /// Prompt template, `{}` = the label (repeatable: embeddings are averaged as the official box evals do).
    #[arg(long = "template", default_value = "{}")]
    pub templates: Vec<String>,
    /// FG-CLIP 2: fixed patch budget; default is the official dynamic bucket.
    #[arg(long)]
    pub max_patches: Option<usize>,
    /// Write the image with the boxes and their labels drawn on it (PNG).
    #[arg(long, value_name = "OUT.png")]
    pub draw: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

use fgclip::tasks::BoxLabel as BoxResult;

pub fn run(a: Args) -> Result<()> {
    let labels = common::read_labels(a.labels.as_deref(), a.labels_file.as_deref())?;
    common::check_templates(&a.templates)?;
    let boxes: Vec<[f32; 4]> = a
        .boxes
        .iter()
        .enumerate()
        .map(|(k, s)| common::parse_box(s).with_context(|| format!("--box #{}", k + 1)))
        .collect::<Result<_>>()?;
    if let Some(out) = &a.draw {
        draw::check_output_path(out, "--draw")?;
    }
    common::check_image_files(std::slice::from_ref(&a.image))?;
    let img = fgclip::Model::load_images(std::slice::from_ref(&a.image))?.remove(0);

    let model = a.model.load()?;
    let family = model.family();
    let budget = common::patch_budget(a.max_patches, &model)?;
    let walk = model.region_walk();
    let prepared = model.prepare_images(std::slice::from_ref(&img), budget)?;
    let (size, grid) = (prepared.sizes[0], prepared.grids[0]);
    // Every box is checked before any tower pass, so the error names the flag as the user wrote it.
    for (k, b) in boxes.iter().enumerate() {
        fgclip::model::pixel_box_to_grid(b, size, grid)
            .map_err(|e| anyhow::anyhow!("--box #{} {}: {e}", k + 1, fmt_box(b)))?;
    }
    let text = common::encode_labels(&model, &labels, &a.templates, walk)?;
    let results =
        fgclip::tasks::label_prepared_boxes(&model, &prepared, &boxes, &text).context("labelling the boxes")?;
    for (k, r) in results.iter().enumerate() {
        if let Some(why) = &r.note {
            eprintln!("warning: --box #{} {}: {why}; it gets no label", k + 1, fmt_box(&r.bx));
        }
    }

    if let Some(out) = &a.draw {
        let (w, h) = (img.width, img.height);
        let mut canvas = draw::to_rgb_image(&img);
        render(&mut canvas, &results, &labels);
        draw::save(&canvas, out)?;
        debug_assert_eq!((canvas.width() as usize, canvas.height() as usize), (w, h));
    }

    if a.json {
        let items: Vec<serde_json::Value> = results
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let mut j = serde_json::json!({
                    "index": k, "box": r.bx, "label": null, "score": null, "cosine": null, "runner_up": null,
                    "scores": null, "cosines": null, "note": r.note,
                });
                if let (Some((best, second)), Some((s, c))) = (r.top2(), &r.scores) {
                    j["label"] = serde_json::json!(labels[best]);
                    j["label_index"] = serde_json::json!(best);
                    j["score"] = serde_json::json!(s[best]);
                    j["cosine"] = serde_json::json!(c[best]);
                    if let Some(n) = second {
                        j["runner_up"] =
                            serde_json::json!({ "label": labels[n], "index": n, "score": s[n], "cosine": c[n] });
                    }
                    j["scores"] = serde_json::json!(s);
                    j["cosines"] = serde_json::json!(c);
                }
                j
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "model": a.model.model, "family": family.name(), "image": a.image.display().to_string(),
                "height": img.height, "width": img.width, "grid": [grid.0, grid.1],
                "walk": match walk { TextWalk::Box => "box", _ => "short" }, "score": "softmax(100*cos)",
                "templates": a.templates, "labels": labels, "boxes": items,
                "draw": a.draw.as_ref().map(|p| p.display().to_string()),
            })
        );
        return Ok(());
    }

    let walk_name = match walk {
        TextWalk::Box => "box",
        _ => "short",
    };
    println!(
        "{} · {} ({}x{}) · {} labels · text walk {walk_name} · score = softmax(100·cos) over the labels",
        family.name(),
        a.image.display(),
        img.width,
        img.height,
        labels.len()
    );
    let bw = results.iter().map(|r| fmt_box(&r.bx).len()).max().unwrap_or(0);
    let lw = labels.iter().take(1000).map(|l| l.chars().count()).max().unwrap_or(0).min(40);
    for (k, r) in results.iter().enumerate() {
        let head = format!("box {:>2}  {:<bw$}", k + 1, fmt_box(&r.bx));
        match (r.top2(), &r.scores) {
            (Some((best, second)), Some((s, _))) => {
                let runner = match second {
                    Some(n) => format!("  (runner-up: {} {:.3})", labels[n], s[n]),
                    None => String::new(),
                };
                println!("{head}  {:<lw$}  {:.3}{runner}", labels[best], s[best]);
            }
            _ => println!("{head}  no label: {}", r.note.as_deref().unwrap_or("")),
        }
    }
    if let Some(out) = &a.draw {
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// `[x1, y1, x2, y2]` without trailing zeros.
fn fmt_box(b: &[f32; 4]) -> String {
    let f = |v: f32| if v.fract() == 0.0 && v.abs() < 1e9 { format!("{}", v as i64) } else { format!("{v:.1}") };
    format!("[{}, {}, {}, {}]", f(b[0]), f(b[1]), f(b[2]), f(b[3]))
}

/// Draws each box outline in its own colour with `#k label score` next to it (above the box when there is room,
/// else just inside its top edge). Degenerate boxes and boxes wholly outside the image are not drawn.
fn render(canvas: &mut image::RgbImage, results: &[BoxResult], labels: &[String]) {
    let (thickness, scale) = draw::auto_sizes(canvas.width(), canvas.height());
    // Outlines first, then all captions, so a later box's outline never covers an earlier caption.
    let (w, h) = (canvas.width() as f32, canvas.height() as f32);
    // Only boxes with some area inside the image are drawn (a box wholly outside has nothing to outline).
    let visible = |b: &[f32; 4]| b[2] > b[0] && b[3] > b[1] && b[2] > 0.0 && b[3] > 0.0 && b[0] < w && b[1] < h;
    for (k, r) in results.iter().enumerate() {
        if visible(&r.bx) {
            draw::draw_rect(canvas, r.bx, draw::palette(k), thickness);
        }
    }
    for (k, r) in results.iter().enumerate() {
        if !visible(&r.bx) {
            continue;
        }
        let text = match (r.top2(), &r.scores) {
            (Some((best, _)), Some((s, _))) => format!("#{} {} {:.2}", k + 1, labels[best], s[best]),
            _ => format!("#{} no label", k + 1),
        };
        let color = draw::palette(k);
        let (_, th) = draw::text_size(&text, scale);
        let label_h = th as i64 + 2 * scale as i64;
        let x = (r.bx[0].floor() as i64).max(0);
        let top = (r.bx[1].floor() as i64).max(0);
        let y = if top >= label_h { top - label_h } else { top };
        draw::draw_label(canvas, x, y, &text, draw::contrast_text(color), color, scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_formatting() {
        assert_eq!(fmt_box(&[1.0, 2.0, 3.5, -4.0]), "[1, 2, 3.5, -4]");
    }
}
