//! `fgclip features`: image / text / region / dense features → one safetensors file of f32 tensors.
//!
//! Names and values follow the official feature functions (unnormalised): `image_embeds` [N,D] =
//! `get_image_features`, `text_embeds` [M,D] = `get_text_features(walk)`, `roi_embeds` [K,D] = region features of
//! the boxes (original-image pixels; images in order, boxes in order), `dense_embeds.{i}` [h,w,D] = dense
//! features of image i.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use fgclip::{PatchBudget, TextWalk};

use crate::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image file (repeatable).
    #[arg(long = "image", short = 'i')]
    pub images: Vec<PathBuf>,
    /// Text (repeatable).
    #[arg(long = "text", short = 't')]
    pub texts: Vec<String>,
    /// File with one text per line (appended after --text).
    #[arg(long)]
    pub texts_file: Option<PathBuf>,
    /// Text walk: short, long or box (FG-CLIP has no box head and uses short).
    #[arg(long, default_value = "short")]
    pub walk: String,
    /// JSON array with one entry per image, each a list of [x1,y1,x2,y2] boxes in original-image pixels.
    #[arg(long)]
    pub boxes: Option<PathBuf>,
    /// Also write dense per-patch features `dense_embeds.{i}` [h,w,D].
    #[arg(long)]
    pub dense: bool,
    /// FG-CLIP 2: fixed patch budget (official `dynamic_max_patches=False, max_num_patches=N`); default is the
    /// official dynamic bucket, chosen per image.
    #[arg(long)]
    pub max_patches: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Output file.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Print a machine-readable summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let walk: TextWalk = a.walk.parse()?;
    let mut texts = a.texts.clone();
    if let Some(f) = &a.texts_file {
        let t = std::fs::read_to_string(f).with_context(|| format!("reading texts file {}", f.display()))?;
        texts.extend(t.lines().filter(|l| !l.trim().is_empty()).map(String::from));
    }
    if a.images.is_empty() && texts.is_empty() {
        bail!("nothing to do: give at least one --image or --text");
    }
    let boxes: Option<Vec<Vec<[f32; 4]>>> = match &a.boxes {
        None => None,
        Some(p) => {
            let s = std::fs::read_to_string(p).with_context(|| format!("reading boxes file {}", p.display()))?;
            let parsed = fgclip::tasks::parse_boxes_json(&s, Some(a.images.len()));
            Some(parsed.map_err(|e| anyhow::anyhow!("boxes file {}: {e}", p.display()))?)
        }
    };
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let budget = match a.max_patches {
        Some(0) => bail!("--max-patches must be at least 1"),
        Some(n) => PatchBudget::Fixed(n),
        None => PatchBudget::Dynamic,
    };

    let model = a.model.load()?;
    let mut out: BTreeMap<String, Tensor> = BTreeMap::new();

    if !a.images.is_empty() {
        let need_dense = a.dense || boxes.is_some();
        let pb = crate::common::progress(a.images.len() as u64, "images", a.json);
        let mut globals = vec![];
        let mut rois = vec![];
        for (chunk_i, chunk) in a.images.chunks(a.batch_size).enumerate() {
            let imgs = fgclip::Model::load_images(chunk)?;
            let prepared = model.prepare_images(&imgs, budget)?;
            let first = chunk_i * a.batch_size;
            if need_dense {
                let (g, dense) = model.encode_images_with_dense(&prepared)?;
                globals.push(g);
                if let Some(b) = &boxes {
                    let r = model.regions_from_dense(&dense, &prepared.sizes, &b[first..first + chunk.len()])?;
                    rois.extend(r);
                }
                if a.dense {
                    for (j, d) in dense.iter().enumerate() {
                        out.insert(format!("dense_embeds.{}", first + j), d.as_grid()?);
                    }
                }
            } else {
                globals.push(model.encode_images(&prepared)?);
            }
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        out.insert("image_embeds".into(), Tensor::cat(&globals, 0)?);
        if boxes.is_some() {
            let d = model.embed_dim();
            let roi = if rois.iter().all(|r| r.dim(0).map(|n| n == 0).unwrap_or(true)) {
                Tensor::zeros((0, d), DType::F32, model.device())?
            } else {
                Tensor::cat(&rois, 0)?
            };
            out.insert("roi_embeds".into(), roi);
        }
    }
    if !texts.is_empty() {
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let mut parts = vec![];
        for chunk in refs.chunks(256) {
            parts.push(model.encode_texts(chunk, walk)?);
        }
        out.insert("text_embeds".into(), Tensor::cat(&parts, 0)?);
    }

    let mut meta = std::collections::HashMap::new();
    meta.insert("model".to_string(), a.model.model.clone());
    meta.insert("family".to_string(), model.family().name().to_string());
    meta.insert("walk".to_string(), a.walk.clone());
    meta.insert("normalized".to_string(), "false".to_string());
    crate::common::write_safetensors(&a.out, &out, meta)?;

    if a.json {
        let shapes: serde_json::Map<String, serde_json::Value> =
            out.iter().map(|(k, v)| (k.clone(), serde_json::json!(v.dims()))).collect();
        println!("{}", serde_json::json!({ "out": a.out, "family": model.family().name(), "tensors": shapes }));
    } else {
        println!("wrote {}", a.out.display());
        for (k, v) in &out {
            println!("  {k:<16} {:?}", v.dims());
        }
    }
    Ok(())
}
