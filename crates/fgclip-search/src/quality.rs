//! Does region search find things? The measure behind SEARCH.md: on a collection with known objects (boxes
//! with referring expressions, and a caption per image), each object's expression is a query.
//!
//! * **region hit@k**: among the top-k region hits (one per image), one lies in the object's image and overlaps
//!   an object with that expression by IoU ≥ 0.5;
//! * **global-only@k** baseline: image search, the whole picture as the box;
//! * **random-box@k** baseline: the right image given for free, k boxes drawn uniformly at random in it
//!   (corners uniform over the picture);
//! * **random-candidate@k** baseline (a stronger one): the right image given for free, k of its stored
//!   candidates drawn at random, so it measures what the ranking adds over the candidates themselves;
//! * **candidate recall**: some stored candidate of the object's image overlaps it (IoU ≥ 0.5): the ceiling the
//!   candidate design sets for everything above;
//! * **in-image hit@1**: the right image given for free, its candidate that scores best for the query is a hit:
//!   what the region vectors do for localisation alone;
//! * **image recall@k**: each image's caption finds that image among the top-k image hits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use fgclip::Model;
use serde::Serialize;

use crate::query::{embed_query, search, Kinds, Query, SearchOptions};
use crate::regions::iou;
use crate::rng::Rng;
use crate::store::{IndexInfo, Kind, Store};
use crate::vectors::dot_f16;
use crate::{Error, Result};

/// One image of the collection and what is in it.
#[derive(Clone, Debug)]
pub struct Truth {
    pub image: PathBuf,
    pub caption: String,
    /// Boxes in the image's pixels, with their referring expressions.
    pub objects: Vec<([f32; 4], String)>,
}

impl Truth {
    /// From FineHARD-style boxes normalised to [0, 1] (`[x1, y1, x2, y2]`), scaled by the image's size.
    pub fn from_normalized(image: PathBuf, caption: String, boxes: &[(&[f32], &str)]) -> Result<Self> {
        let bytes = std::fs::read(&image).map_err(Error::io(&image))?;
        let h = fgclip::fgclip_image::read_header(&bytes, &image.display().to_string())
            .map_err(|e| Error::input(e.to_string()))?;
        let (w, h) = (h.width as f32, h.height as f32);
        let objects = boxes
            .iter()
            .map(|(b, e)| match b {
                [x1, y1, x2, y2, ..] => Ok(([x1 * w, y1 * h, x2 * w, y2 * h], e.to_string())),
                _ => Err(Error::input(format!("{}: a box needs 4 numbers, got {b:?}", image.display()))),
            })
            .collect::<Result<_>>()?;
        Ok(Self { image, caption, objects })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct QualityReport {
    pub queries: usize,
    pub images: usize,
    /// Hit rates at k = 1, 5, 10.
    pub region_hit: [f64; 3],
    pub global_only_hit: [f64; 3],
    pub random_box_hit: [f64; 3],
    pub random_candidate_hit: [f64; 3],
    pub candidate_recall: f64,
    pub in_image_hit1: f64,
    /// Image recall at k = 1, 5 for whole-image captions.
    pub image_recall: [f64; 2],
    /// Region candidates per image (mean) and stored vector bytes per image.
    pub regions_per_image: f64,
    pub bytes_per_image: f64,
    pub seconds: f64,
}

const KS: [usize; 3] = [1, 5, 10];

/// A box with both corners uniform over a `w × h` picture.
fn random_box(rng: &mut Rng, w: f32, h: f32) -> [f32; 4] {
    let (a, b, c, d) = (rng.unit() * w, rng.unit() * w, rng.unit() * h, rng.unit() * h);
    [a.min(b), c.min(d), a.max(b), c.max(d)]
}

pub fn evaluate(
    model: &Model,
    store: &dyn Store,
    info: &IndexInfo,
    truths: &[Truth],
    seed: u64,
) -> Result<QualityReport> {
    let started = Instant::now();
    let files = store.files()?;
    let id_of: HashMap<PathBuf, i64> = files.iter().map(|f| (f.path.clone(), f.id)).collect();
    // Truth images are found by content, so an index of links or copies of them works too.
    let by_hash: HashMap<[u8; 32], i64> = files.iter().map(|f| (f.hash, f.id)).collect();
    let truths: Vec<(i64, &Truth)> = truths
        .iter()
        .map(|t| {
            let bytes = std::fs::read(&t.image).map_err(Error::io(&t.image))?;
            by_hash
                .get(blake3::hash(&bytes).as_bytes())
                .map(|id| (*id, t))
                .ok_or_else(|| Error::input(format!("{} is not in the index {}", t.image.display(), store.describe())))
        })
        .collect::<Result<_>>()?;
    // The stored candidates of every image (for the random baseline and the in-image ranking), with their boxes.
    let mut region_vecs: HashMap<i64, Vec<(i64, Vec<u8>)>> = HashMap::new();
    store.for_each_vector(Kind::Region, &mut |id, v| {
        region_vecs.entry(id.image_id).or_default().push((id.id, v.to_vec()))
    })?;
    let mut region_boxes: HashMap<i64, [f32; 4]> = HashMap::new();
    for (image_id, _) in &truths {
        let ids: Vec<i64> = region_vecs.get(image_id).map_or(vec![], |c| c.iter().map(|x| x.0).collect());
        for h in store.hits(Kind::Region, &ids)? {
            if let Some(b) = h.bbox {
                region_boxes.insert(h.id, b);
            }
        }
    }
    let mut rng = Rng::new(seed);

    let mut r = QualityReport { images: truths.len(), ..Default::default() };
    let (mut region, mut global, mut random, mut uniform) = ([0usize; 3], [0usize; 3], [0usize; 3], [0usize; 3]);
    let (mut covered, mut in_image) = (0usize, 0usize);
    let top = *KS.last().expect("KS");
    for (image_id, t) in &truths {
        let (w, h) =
            store.hits(Kind::Image, &[*image_id])?.first().map_or((1.0, 1.0), |r| (r.width as f32, r.height as f32));
        for (_, expr) in &t.objects {
            r.queries += 1;
            let good = |img: i64, b: &[f32; 4]| {
                img == *image_id && t.objects.iter().any(|(ob, e)| e == expr && iou(ob, b) >= 0.5)
            };
            let q = Query::Text(expr.clone());
            let regions = search(model, store, info, &q, &SearchOptions { top, kinds: Kinds::Regions, per_image: 1 })?;
            let first = regions
                .iter()
                .position(|h| id_of.get(&h.file).is_some_and(|&img| h.bbox.is_some_and(|b| good(img, &b))));
            let images = search(model, store, info, &q, &SearchOptions { top, kinds: Kinds::Images, per_image: 1 })?;
            let first_global = images.iter().position(|h| {
                let whole = [0.0, 0.0, h.width as f32, h.height as f32];
                id_of.get(&h.file).is_some_and(|&img| good(img, &whole))
            });
            let own = region_vecs.get(image_id).map_or(&[][..], |c| &c[..]);
            covered += own.iter().any(|(id, _)| region_boxes.get(id).is_some_and(|b| good(*image_id, b))) as usize;
            let qv = embed_query(model, info, &q, Kind::Region)?;
            let best = own
                .iter()
                .filter_map(|(id, v)| Some((dot_f16(&qv, v)?, *id)))
                .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
            in_image += best.is_some_and(|(_, id)| region_boxes.get(&id).is_some_and(|b| good(*image_id, b))) as usize;
            let mut cands: Vec<i64> = own.iter().map(|x| x.0).collect();
            // Fisher–Yates on the candidates, then the first k of them.
            for i in (1..cands.len()).rev() {
                cands.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            let boxes = store.hits(Kind::Region, &cands[..cands.len().min(top)])?;
            let first_random = boxes.iter().position(|h| h.bbox.is_some_and(|b| good(*image_id, &b)));
            let first_uniform = (0..top).position(|_| good(*image_id, &random_box(&mut rng, w, h)));
            for (k, &kk) in KS.iter().enumerate() {
                region[k] += first.is_some_and(|p| p < kk) as usize;
                global[k] += first_global.is_some_and(|p| p < kk) as usize;
                random[k] += first_random.is_some_and(|p| p < kk) as usize;
                uniform[k] += first_uniform.is_some_and(|p| p < kk) as usize;
            }
        }
    }
    let mut recall = [0usize; 2];
    for (image_id, t) in &truths {
        let hits = search(
            model,
            store,
            info,
            &Query::Text(t.caption.clone()),
            &SearchOptions { top: 5, kinds: Kinds::Images, per_image: 1 },
        )?;
        let pos = hits.iter().position(|h| id_of.get(&h.file) == Some(image_id));
        recall[0] += pos.is_some_and(|p| p < 1) as usize;
        recall[1] += pos.is_some_and(|p| p < 5) as usize;
    }
    let q = r.queries.max(1) as f64;
    for k in 0..3 {
        r.region_hit[k] = region[k] as f64 / q;
        r.global_only_hit[k] = global[k] as f64 / q;
        r.random_candidate_hit[k] = random[k] as f64 / q;
        r.random_box_hit[k] = uniform[k] as f64 / q;
    }
    r.candidate_recall = covered as f64 / q;
    r.in_image_hit1 = in_image as f64 / q;
    let n = truths.len().max(1) as f64;
    r.image_recall = [recall[0] as f64 / n, recall[1] as f64 / n];
    let stats = store.stats()?;
    r.regions_per_image = stats.regions as f64 / stats.images.max(1) as f64;
    r.bytes_per_image = stats.vector_bytes as f64 / stats.images.max(1) as f64;
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}
