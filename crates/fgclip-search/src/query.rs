//! `fgclip search`: a text (English or Chinese) or an image as the query, answered with whole images and/or
//! region candidates (an image and a box), ranked by cosine similarity.
//!
//! Text queries for images use the index's image walk (short captions); for regions the family's region walk
//! (FG-CLIP 2: `box`), as the papers pair box captions with region features. An image query uses its global
//! embedding for both. Region hits keep at most `per_image` boxes per image, so one photo full of candidates
//! does not fill the whole list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fgclip::fgclip_image;
use fgclip::{Model, PatchBudget, TextWalk};
use serde::Serialize;

use crate::identity::identify;
use crate::store::{IndexInfo, Kind, Store, VectorId};
use crate::vectors::{dot_f16, normalized, TopK};
use crate::{Error, Result};

/// What to look for.
#[derive(Clone, Debug)]
pub enum Query {
    Text(String),
    Image(PathBuf),
}

/// Which vectors to search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kinds {
    Images,
    Regions,
    Both,
}

impl std::str::FromStr for Kinds {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "image" | "images" => Ok(Kinds::Images),
            "region" | "regions" => Ok(Kinds::Regions),
            "both" => Ok(Kinds::Both),
            _ => Err(Error::input(format!("--kind {s:?}: expected image, region or both"))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SearchOptions {
    pub top: usize,
    pub kinds: Kinds,
    /// Most region hits per image.
    pub per_image: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self { top: 10, kinds: Kinds::Both, per_image: 1 }
    }
}

/// One answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    pub rank: usize,
    pub path: String,
    /// Cosine similarity between the query and the image or region.
    pub score: f32,
    pub kind: Kind,
    /// `[x1, y1, x2, y2]` in the upright image's pixels for a region hit; null for an image hit.
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    pub width: u32,
    pub height: u32,
    #[serde(skip)]
    pub file: PathBuf,
}

/// Refuses a model other than the one the index was made with.
pub fn check_model(model: &Model, source: &str, store: &dyn Store, info: &IndexInfo) -> Result<()> {
    let id = identify(source, &model.files, Some(&info.model))?;
    if id.fingerprint != info.model.fingerprint || model.embed_dim() != info.embed_dim {
        return Err(Error::Mismatch {
            db: store.describe(),
            msg: format!(
                "it was made with the model {} (fingerprint {}), but {} (fingerprint {}) was given; \
                 search without --model to use the index's own, or reindex",
                info.model.source,
                &info.model.fingerprint[..12],
                id.source,
                &id.fingerprint[..12]
            ),
        });
    }
    Ok(())
}

fn walk(name: &str) -> Result<TextWalk> {
    Ok(name.parse::<TextWalk>()?)
}

/// How a query becomes a vector for one kind.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoding<'a> {
    Text(&'a str, TextWalk),
    /// A photo: its one embedding serves both kinds.
    Photo(&'a Path),
}

/// The encoding of `q` for `kind`: image queries use the index's image walk, region queries its region walk.
fn encoding<'a>(info: &IndexInfo, q: &'a Query, kind: Kind) -> Result<Encoding<'a>> {
    Ok(match (q, kind) {
        (Query::Image(p), _) => Encoding::Photo(p),
        (Query::Text(t), Kind::Image) => Encoding::Text(t, walk(&info.image_walk)?),
        (Query::Text(t), Kind::Region) => Encoding::Text(t, walk(&info.region_walk)?),
    })
}

/// The unit vector `q` is searched with among vectors of `kind`.
pub fn embed_query(model: &Model, info: &IndexInfo, q: &Query, kind: Kind) -> Result<Vec<f32>> {
    query_vector(model, encoding(info, q, kind)?)
}

/// The query's unit vector.
fn query_vector(model: &Model, enc: Encoding) -> Result<Vec<f32>> {
    let v = match enc {
        Encoding::Text(t, w) => {
            let t = t.trim();
            if t.is_empty() {
                return Err(Error::input("the query is empty (give some words, or --image FILE)"));
            }
            model.encode_texts(&[t], w)?
        }
        Encoding::Photo(p) => {
            let img = load_upright(p)?;
            let prepared = model.prepare_images(&[img], PatchBudget::Dynamic)?;
            model.encode_images(&prepared)?
        }
    };
    let v = v.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::input("the model produced non-finite values for the query"));
    }
    Ok(normalized(&v))
}

/// Decodes an image file and turns it upright (EXIF), as the indexer does.
pub fn load_upright(path: &Path) -> Result<fgclip_image::RgbImage> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let header = fgclip_image::read_header(&bytes, &name).map_err(|e| Error::input(e.to_string()))?;
    let img = fgclip_image::decode_rgb(&bytes, &name).map_err(|e| Error::input(e.to_string()))?;
    Ok(fgclip_image::apply_orientation(img, header.orientation))
}

/// The best `k` vectors of `kind` for `q` (unit vector), at most `per_image` per image (regions).
pub fn nearest(store: &dyn Store, kind: Kind, q: &[f32], k: usize, per_image: usize) -> Result<Vec<(f32, VectorId)>> {
    if let Some(hits) = store.nearest(kind, q, k, per_image)? {
        return Ok(hits);
    }
    let mut bad = 0usize;
    if kind == Kind::Image || per_image == 0 {
        let mut top = TopK::new(k);
        store.for_each_vector(kind, &mut |id, v| match dot_f16(q, v) {
            Some(s) => top.push(s, id),
            None => bad += 1,
        })?;
        check_bad(store, bad)?;
        return Ok(top.into_sorted());
    }
    let mut per: HashMap<i64, TopK<VectorId>> = HashMap::new();
    store.for_each_vector(kind, &mut |id, v| match dot_f16(q, v) {
        Some(s) => per.entry(id.image_id).or_insert_with(|| TopK::new(per_image)).push(s, id),
        None => bad += 1,
    })?;
    check_bad(store, bad)?;
    let mut top = TopK::new(k);
    let mut images: Vec<(i64, TopK<VectorId>)> = per.into_iter().collect();
    images.sort_by_key(|(id, _)| *id);
    for (_, t) in images {
        for (s, id) in t.into_sorted() {
            top.push(s, id);
        }
    }
    Ok(top.into_sorted())
}

fn check_bad(store: &dyn Store, bad: usize) -> Result<()> {
    if bad > 0 {
        return Err(Error::Store {
            db: store.describe(),
            msg: format!("{bad} stored vectors have the wrong length (a damaged index: rebuild it with --reindex)"),
        });
    }
    Ok(())
}

/// Runs a search (see the module docs).
pub fn search(model: &Model, store: &dyn Store, info: &IndexInfo, q: &Query, opts: &SearchOptions) -> Result<Vec<Hit>> {
    if opts.top == 0 {
        return Err(Error::input("--top must be at least 1"));
    }
    let kinds: &[Kind] = match opts.kinds {
        Kinds::Images => &[Kind::Image],
        Kinds::Regions => &[Kind::Region],
        Kinds::Both => &[Kind::Image, Kind::Region],
    };
    let mut all: Vec<(f32, Kind, i64)> = Vec::new();
    // One encoding per distinct walk: a photo, or FG-CLIP's text (one walk for both kinds), is encoded once.
    let mut encoded: Vec<(Encoding, Vec<f32>)> = Vec::new();
    for &kind in kinds {
        let enc = encoding(info, q, kind)?;
        if !encoded.iter().any(|(e, _)| *e == enc) {
            encoded.push((enc, query_vector(model, enc)?));
        }
        let qv = &encoded.iter().find(|(e, _)| *e == enc).expect("encoded above").1;
        for (s, id) in nearest(store, kind, qv, opts.top, opts.per_image.max(1))? {
            all.push((s, kind, id.id));
        }
    }
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    all.truncate(opts.top);
    let mut hits = Vec::with_capacity(all.len());
    for (score, kind, id) in all {
        if let Some(row) = store.hits(kind, &[id])?.pop() {
            hits.push(Hit {
                rank: hits.len() + 1,
                path: row.path.display().to_string(),
                score,
                kind,
                bbox: row.bbox,
                width: row.width,
                height: row.height,
                file: row.path,
            });
        }
    }
    Ok(hits)
}
