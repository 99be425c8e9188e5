//! What people do with the features, as library calls that the CLI, the evaluator and the search/service
//! layers share: zero-shot label embeddings with prompt templates, text batching, box labelling and heatmaps.

use candle_core::{DType, Tensor};
use fgclip_image::{PatchBudget, RgbImage};

use crate::{Error, Model, PreparedImages, Result, TextWalk};

/// Texts per forward pass when encoding many texts.
pub const TEXT_BATCH: usize = 256;

/// Fills a prompt template: every `{}` becomes the label. A template without `{}` is an error (it would give
/// every label the same text).
pub fn apply_template(template: &str, label: &str) -> Result<String> {
    if !template.contains("{}") {
        return Err(Error::input(format!("template {template:?} must contain {{}} where the label goes")));
    }
    Ok(template.replace("{}", label))
}

/// Text embeddings `[M, D]` (unnormalised) of any number of texts, [`TEXT_BATCH`] per forward pass (rows do not
/// interact, so the result equals one big pass).
pub fn encode_texts_batched(model: &Model, texts: &[&str], walk: TextWalk) -> Result<Tensor> {
    if texts.is_empty() {
        return Err(Error::input("no texts given"));
    }
    let parts = texts.chunks(TEXT_BATCH).map(|c| model.encode_texts(c, walk)).collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// L2-normalised embeddings `[M, D]` of `labels`, one per label. With several templates, as the official
/// zero-shot and box evaluations do: embed every template, normalise each, average, renormalise.
pub fn encode_labels(model: &Model, labels: &[String], templates: &[String], walk: TextWalk) -> Result<Tensor> {
    if labels.is_empty() {
        return Err(Error::input("the label list is empty"));
    }
    if templates.is_empty() {
        return Err(Error::input("no prompt template given"));
    }
    let mut texts = Vec::with_capacity(labels.len() * templates.len());
    for l in labels {
        for t in templates {
            texts.push(apply_template(t, l)?);
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = crate::nn::l2_normalize(&encode_texts_batched(model, &refs, walk)?.to_dtype(DType::F32)?)?;
    if templates.len() == 1 {
        return Ok(all);
    }
    let d = all.dim(1)?;
    let mean = all.reshape((labels.len(), templates.len(), d))?.mean(1)?;
    Ok(crate::nn::l2_normalize(&mean)?)
}

/// Parses a boxes file: a JSON array with one entry per image, each a list of `[x1, y1, x2, y2]` boxes in
/// original-image pixels. `images`, when given, is the number of entries required. Every coordinate must be a
/// finite f32 (a value like `1e39` overflows to infinity and is refused here, not downstream).
pub fn parse_boxes_json(text: &str, images: Option<usize>) -> Result<Vec<Vec<[f32; 4]>>> {
    let b: Vec<Vec<Vec<f64>>> = serde_json::from_str(text).map_err(|e| {
        Error::input(format!("expected a JSON array (one entry per image) of lists of [x1,y1,x2,y2]: {e}"))
    })?;
    if let Some(n) = images {
        if b.len() != n {
            return Err(Error::input(format!("has {} entries but {n} images were given", b.len())));
        }
    }
    b.iter()
        .enumerate()
        .map(|(i, img)| {
            img.iter()
                .enumerate()
                .map(|(k, bx)| {
                    let v: Vec<f32> = bx.iter().map(|&x| x as f32).collect();
                    match v.as_slice() {
                        [a, b, c, d] if v.iter().all(|x| x.is_finite()) => Ok([*a, *b, *c, *d]),
                        _ => Err(Error::input(format!("image {i}, box {k}: expected 4 finite numbers [x1,y1,x2,y2]"))),
                    }
                })
                .collect()
        })
        .collect()
}

/// `softmax(100·cos)` over labels, as the official region evaluations score boxes (it ranks as the cosine does).
pub fn softmax_100(cos: &[f32]) -> Vec<f32> {
    let z: Vec<f64> = cos.iter().map(|c| 100.0 * *c as f64).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

/// The outcome for one box of [`label_boxes`].
#[derive(Clone, Debug, PartialEq)]
pub struct BoxLabel {
    pub bx: [f32; 4],
    /// `softmax(100·cos)` over the labels and the cosines; `None` when the box gets no label.
    pub scores: Option<(Vec<f32>, Vec<f32>)>,
    /// Why there is no label.
    pub note: Option<String>,
}

impl BoxLabel {
    /// (best, runner-up) label indices.
    pub fn top2(&self) -> Option<(usize, Option<usize>)> {
        let (s, _) = self.scores.as_ref()?;
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
        Some((*idx.first()?, idx.get(1).copied()))
    }
}

/// Open-vocabulary labelling of boxes `[x1, y1, x2, y2]` (original pixels) in one image: one vision pass, RoIAlign
/// of the dense map, cosine against `label_embeds` (`[L, D]`, L2-normalised, e.g. from [`encode_labels`] with the
/// model's [`Model::region_walk`]). Degenerate boxes and boxes wholly outside the image get a note instead of
/// scores; a box absurdly far outside is an error naming it.
pub fn label_boxes(
    model: &Model,
    image: &RgbImage,
    boxes: &[[f32; 4]],
    label_embeds: &Tensor,
    budget: PatchBudget,
) -> Result<Vec<BoxLabel>> {
    let prepared = model.prepare_images(std::slice::from_ref(image), budget)?;
    label_prepared_boxes(model, &prepared, boxes, label_embeds)
}

/// [`label_boxes`] on an image already prepared (one image), for callers that needed its grid first.
pub fn label_prepared_boxes(
    model: &Model,
    prepared: &PreparedImages,
    boxes: &[[f32; 4]],
    label_embeds: &Tensor,
) -> Result<Vec<BoxLabel>> {
    if prepared.len() != 1 {
        return Err(Error::input(format!("box labelling takes one image, got {}", prepared.len())));
    }
    let (size, grid) = (prepared.sizes[0], prepared.grids[0]);
    let mut degenerate: Vec<Option<&'static str>> = Vec::with_capacity(boxes.len());
    for (k, b) in boxes.iter().enumerate() {
        crate::model::pixel_box_to_grid(b, size, grid)
            .map_err(|e| Error::input(format!("box #{} {b:?}: {e}", k + 1)))?;
        degenerate.push(if b[2] <= b[0] {
            Some("degenerate box (x2 <= x1)")
        } else if b[3] <= b[1] {
            Some("degenerate box (y2 <= y1)")
        } else {
            None
        });
    }
    let valid: Vec<[f32; 4]> = boxes.iter().zip(&degenerate).filter(|(_, d)| d.is_none()).map(|(b, _)| *b).collect();
    let (feats, text): (Vec<Vec<f32>>, Vec<Vec<f32>>) = if valid.is_empty() {
        (vec![], vec![])
    } else {
        let dense = model.dense_features(prepared)?;
        let regions = model.regions_from_dense(&dense, &prepared.sizes, &[valid])?;
        (regions[0].to_dtype(DType::F32)?.to_vec2()?, label_embeds.to_dtype(DType::F32)?.to_vec2()?)
    };
    let mut feats = feats.into_iter();
    let mut out = Vec::with_capacity(boxes.len());
    for (b, why) in boxes.iter().zip(degenerate) {
        if let Some(why) = why {
            out.push(BoxLabel { bx: *b, scores: None, note: Some(why.into()) });
            continue;
        }
        let f = feats.next().ok_or_else(|| Error::input("internal error: fewer region features than boxes"))?;
        let norm = f.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            // Every RoIAlign sample fell outside the feature map: there is nothing to compare.
            let note = "the box lies outside the image (zero region feature)";
            out.push(BoxLabel { bx: *b, scores: None, note: Some(note.into()) });
            continue;
        }
        let cos: Vec<f32> = text
            .iter()
            .map(|t| (t.iter().zip(&f).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>() / norm) as f32)
            .collect();
        out.push(BoxLabel { bx: *b, scores: Some((softmax_100(&cos), cos)), note: None });
    }
    Ok(out)
}

/// Per-cell cosine between an image's dense map and a text query.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    pub rows: usize,
    pub cols: usize,
    /// Row-major cosines, `rows·cols`.
    pub cosines: Vec<f32>,
}

impl Heatmap {
    /// (min, max, mean) of the cosines.
    pub fn stats(&self) -> (f32, f32, f32) {
        let (lo, hi) = self.cosines.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
        let mean = (self.cosines.iter().map(|v| *v as f64).sum::<f64>() / self.cosines.len().max(1) as f64) as f32;
        (lo, hi, mean)
    }

    /// The first cell holding the maximum (row-major): (row, col).
    pub fn peak(&self) -> (usize, usize) {
        let c = &self.cosines;
        let i = c.iter().enumerate().fold(0, |best, (i, v)| if *v > c[best] { i } else { best });
        (i / self.cols.max(1), i % self.cols.max(1))
    }
}

/// Where in `image` the `query` matches: the cosine of each dense cell with the query's text embedding, as the
/// official FG-CLIP 2 dense demo computes it (both sides L2-normalised).
pub fn heatmap(model: &Model, image: &RgbImage, query: &str, walk: TextWalk, budget: PatchBudget) -> Result<Heatmap> {
    if query.trim().is_empty() {
        return Err(Error::input("the query is empty"));
    }
    let prepared = model.prepare_images(std::slice::from_ref(image), budget)?;
    let dense = model.dense_features(&prepared)?;
    let d = &dense[0];
    let patches = crate::nn::l2_normalize(&d.features.to_dtype(DType::F32)?)?;
    let text = crate::nn::l2_normalize(&model.encode_texts(&[query], walk)?.to_dtype(DType::F32)?)?;
    let cosines: Vec<f32> = patches.matmul(&text.t()?)?.flatten_all()?.to_vec1()?;
    if cosines.len() != d.rows * d.cols || cosines.is_empty() || cosines.iter().any(|v| !v.is_finite()) {
        return Err(Error::input(format!("internal error: bad dense map for a {}x{} grid", d.rows, d.cols)));
    }
    Ok(Heatmap { rows: d.rows, cols: d.cols, cosines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_finite_and_sums_to_one() {
        let p = softmax_100(&[1.0, -1.0, 0.3]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p.iter().all(|v| v.is_finite()));
        assert_eq!(softmax_100(&[0.2]), vec![1.0]);
    }

    /// A coordinate beyond f32's range used to pass the f64 check and become infinity.
    #[test]
    fn boxes_json_rejects_f32_overflow_and_names_the_box() {
        assert_eq!(
            parse_boxes_json("[[[1, 2, 3, 4]], []]", Some(2)).unwrap(),
            vec![vec![[1.0, 2.0, 3.0, 4.0]], vec![]]
        );
        let e = parse_boxes_json("[[[0, 0, 1e39, 4]]]", None).unwrap_err().to_string();
        assert!(e.contains("image 0, box 0") && e.contains("finite"), "{e}");
        assert!(parse_boxes_json("[[[1, 2, 3]]]", None).unwrap_err().to_string().contains("image 0, box 0"));
        assert!(parse_boxes_json("[[[1,2,3,4]]]", Some(2)).unwrap_err().to_string().contains("1 entries but 2 images"));
        assert!(parse_boxes_json("{", None).unwrap_err().to_string().contains("JSON array"));
    }

    #[test]
    fn templates_need_a_slot() {
        assert_eq!(apply_template("a photo of {}.", "cat").unwrap(), "a photo of cat.");
        assert!(apply_template("a photo", "cat").unwrap_err().to_string().contains("must contain {}"));
    }

    #[test]
    fn heatmap_stats_and_peak() {
        let h = Heatmap { rows: 2, cols: 3, cosines: vec![0.1, 0.5, 0.2, 0.5, -0.3, 0.0] };
        let (lo, hi, mean) = h.stats();
        assert_eq!((lo, hi), (-0.3, 0.5));
        assert!((mean - 1.0 / 6.0).abs() < 1e-6);
        assert_eq!(h.peak(), (0, 1), "first maximum, row-major");
    }
}
