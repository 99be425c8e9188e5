//! The papers' training objectives on a batch: the towers' forward as the official `forward`s run it, then the
//! loss functions of `fgclip::loss` (official: v1.0 `FGCLIPModel.forward`, main `FG_CLIP2_Model.forward`;
//! docs/losses.md#fg-clip-objective, docs/losses.md#fg-clip-2-objective).
//!
//! FG-CLIP:   L = L_long + L_short + 0.1·L_region + 0.5·L_hard
//! FG-CLIP 2: L = L_sig(long) + L_sig(short) + 0.2·L_region + 0.1·L_TIC + 0.5·(0.6·L_c + 3·L_pair + 0.4·L_cmr)
//!
//! Departures from the official code, each deliberate:
//! * only valid box slots are encoded (the official code encodes all 4 slots and then selects; the selected
//!   rows are identical because rows do not interact in the text tower);
//! * boxes with no area on the feature grid (whose RoIAlign vector is 0 and would be NaN once normalised,
//!   docs/losses.md#degenerate-boxes) are dropped together with their captions, and counted in the report;
//! * FG-CLIP 2 wraps the fine-grained terms in a bare `try/except` (docs/losses.md#skipped-fine-grained-terms): with fewer than 10 region
//!   captions TIC raises and every remaining fine-grained term of the step is skipped. By default we skip only
//!   TIC; `official_skip` reproduces the all-or-nothing behaviour.

use candle_core::{DType, Tensor};
use fgclip::loss;
use fgclip::nn::roi_align::{box_weights, GridBox};
use fgclip::TextWalk;

use fgclip::config::Family;
use fgclip::Towers;

use crate::batch::{Batch, HARD_CAPTIONS};
use crate::dist::{with_local_slice, Collective};
use crate::error::{Result, TrainError};
use crate::trainable::Trainable;

/// Loss weights (the training TOML's `[train.weights]`); an unset weight takes the paper's value for the
/// model's family (FG-CLIP: long 1, short 1, region 0.1, hard 0.5; FG-CLIP 2: long 1, short 1, region 0.2,
/// TIC 0.1, hard 0.5 with the composite's inner 0.6 / 3 / 0.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossWeights {
    pub long: Option<f64>,
    pub short: Option<f64>,
    pub region: Option<f64>,
    pub tic: Option<f64>,
    pub hard: Option<f64>,
    pub hard_contrastive: Option<f64>,
    pub hard_pair: Option<f64>,
    pub hard_cmr: Option<f64>,
}

impl LossWeights {
    /// FG-CLIP's weights, the paper's where unset.
    pub fn v1(&self) -> loss::V1Weights {
        let d = loss::V1Weights::OFFICIAL;
        loss::V1Weights {
            long: self.long.unwrap_or(d.long),
            short: self.short.unwrap_or(d.short),
            region: self.region.unwrap_or(d.region),
            hard: self.hard.unwrap_or(d.hard),
        }
    }

    /// FG-CLIP 2's weights, the paper's where unset.
    pub fn v2(&self) -> loss::V2Weights {
        let d = loss::V2Weights::OFFICIAL;
        let p = d.hard_parts;
        loss::V2Weights {
            long: self.long.unwrap_or(d.long),
            short: self.short.unwrap_or(d.short),
            region: self.region.unwrap_or(d.region),
            tic: self.tic.unwrap_or(d.tic),
            hard: self.hard.unwrap_or(d.hard),
            hard_parts: loss::HardCompositeWeights {
                contrastive: self.hard_contrastive.unwrap_or(p.contrastive),
                pair: self.hard_pair.unwrap_or(p.pair),
                cmr: self.hard_cmr.unwrap_or(p.cmr),
            },
        }
    }

    /// Every given weight by name, for validation.
    pub fn given(&self) -> Vec<(&'static str, f64)> {
        [
            ("long", self.long),
            ("short", self.short),
            ("region", self.region),
            ("tic", self.tic),
            ("hard", self.hard),
            ("hard_contrastive", self.hard_contrastive),
            ("hard_pair", self.hard_pair),
            ("hard_cmr", self.hard_cmr),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// `w·t`, exactly `t` for the weight 1 (so the paper's defaults leave the graph as the official one).
fn weighted(t: Tensor, w: f64) -> Result<Tensor> {
    Ok(if w == 1.0 { t } else { t.affine(w, 0.0)? })
}

/// Which terms to train with. `global_only()` is stage 1 (and the ablation baseline); `full()` is stage 2.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectiveConfig {
    /// Regional contrastive loss (and, for FG-CLIP 2, TIC unless `tic` is false).
    pub region: bool,
    /// Hard-negative loss (FG-CLIP: pairwise CE; FG-CLIP 2: the composite with the rank threshold).
    pub hard: bool,
    /// FG-CLIP 2's TIC loss (part of the regional block officially).
    pub tic: bool,
    /// Reproduce FG-CLIP 2's `try/except` skip: when TIC cannot be computed, drop every fine-grained term.
    pub official_skip: bool,
    /// Term weights (the papers' by default).
    #[serde(default)]
    pub weights: LossWeights,
}

impl ObjectiveConfig {
    pub fn global_only() -> Self {
        Self { region: false, hard: false, tic: false, official_skip: false, weights: LossWeights::default() }
    }
    pub fn full() -> Self {
        Self { region: true, hard: true, tic: true, official_skip: false, weights: LossWeights::default() }
    }
}

/// The terms of one step, as plain numbers for logs (unweighted, like the official recorders).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossReport {
    pub total: f32,
    pub global_long: Option<f32>,
    pub global_short: f32,
    pub region: Option<f32>,
    pub tic: Option<f32>,
    /// FG-CLIP: the hard CE; FG-CLIP 2: the composite total.
    pub hard: Option<f32>,
    pub hard_contrastive: Option<f32>,
    pub hard_pair: Option<f32>,
    pub hard_cmr: Option<f32>,
    /// FG-CLIP 2: this rank's θ_new before synchronisation (the incoming θ when it had no hard boxes).
    pub threshold_rank: Option<f32>,
    /// FG-CLIP 2: the rank threshold for the next step (after all-reduce and clamp).
    pub threshold_next: Option<f32>,
    pub boxes: usize,
    pub hard_boxes: usize,
    /// Valid boxes dropped because they have no area on the feature grid.
    pub dropped_boxes: usize,
}

/// The loss to back-propagate (see `dist.rs` for why it differs from the reported one when world > 1) and
/// the report.
pub struct StepLoss {
    pub backward: Tensor,
    pub report: LossReport,
}

fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    Ok(fgclip::nn::l2_normalize(x)?)
}

fn scalar(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0])
}

/// FG-CLIP short-walk ids without the padding columns after the last first-eos of the batch. Exact: the text
/// tower is causal and pools at the first eos, so later columns never reach the pooled vector (the official
/// code pads to 77; hard-negative captions are a few words, so this saves most of the text compute).
fn trim_v1_short(ids: &Tensor) -> Result<Tensor> {
    let (_, len) = ids.dims2()?;
    let host: Vec<Vec<u32>> = ids.to_vec2()?;
    let keep = host
        .iter()
        .map(|row| row.iter().position(|&t| t == fgclip::fgclip1::text::EOS_ID).map_or(len, |p| p + 1))
        .max()
        .unwrap_or(len);
    Ok(if keep < len { ids.narrow(1, 0, keep)? } else { ids.clone() })
}

/// Rows `idx` of `t` (u32 ids or features).
fn rows(t: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let ids = Tensor::new(ids.as_slice(), t.device())?;
    Ok(t.index_select(&ids, 0)?)
}

/// The loss of rank `q` (of `b` rows) from gathered image/text features and the scalars (scale, bias).
type GlobalLossFn<'a> = dyn Fn(&Tensor, &Tensor, usize, usize, &[Tensor]) -> Result<Tensor> + 'a;

/// Global loss of this rank with the gradient construction of `dist.rs`. `f` computes the loss of rank `q`
/// from gathered image/text features and the scalars (scale, bias).
fn global_loss(
    image: &Tensor,
    text: &Tensor,
    scalars: &[Tensor],
    coll: &dyn Collective,
    f: &GlobalLossFn,
) -> Result<(Tensor, Tensor)> {
    let (rank, world, b) = (coll.rank(), coll.world(), image.dim(0)?);
    if world == 1 {
        let l = f(image, text, 0, b, scalars)?;
        return Ok((l.clone(), l));
    }
    let img_all = with_local_slice(&coll.all_gather(image)?, image, rank)?;
    let txt_all = with_local_slice(&coll.all_gather(text)?, text, rank)?;
    let own = f(&img_all, &txt_all, rank, b, scalars)?;
    let detached: Vec<Tensor> = scalars.iter().map(|s| s.detach()).collect();
    let mut backward = own.clone();
    for q in (0..world).filter(|&q| q != rank) {
        backward = (backward + f(&img_all, &txt_all, q, b, &detached)?)?;
    }
    Ok((own, backward))
}

/// Region features of the given slots: RoIAlign of each image's dense map at its boxes (normalised xyxy →
/// grid units), dropping boxes with no area. Returns (features `[K, D]` unnormalised, kept slot positions).
fn region_features(
    dense_of: &dyn Fn(usize) -> Result<(Tensor, usize, usize)>,
    infos: &[[f32; 4]],
    slots: &[usize],
) -> Result<(Option<Tensor>, Vec<usize>)> {
    let mut feats = Vec::new();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        let img = slots[i] / crate::batch::BOX_SLOTS;
        let (dense, h, w) = dense_of(img)?;
        let mut boxes: Vec<GridBox> = Vec::new();
        while i < slots.len() && slots[i] / crate::batch::BOX_SLOTS == img {
            let b = infos[slots[i]];
            let g = [b[0] * w as f32, b[1] * h as f32, b[2] * w as f32, b[3] * h as f32];
            if box_weights(h, w, &g).iter().any(|&x| x != 0.0) {
                boxes.push(g);
                kept.push(i);
            }
            i += 1;
        }
        if !boxes.is_empty() {
            feats.push(fgclip::nn::roi_align::roi_align(&dense, h, w, &boxes)?);
        }
    }
    if feats.is_empty() {
        return Ok((None, kept));
    }
    Ok((Some(Tensor::cat(&feats, 0)?), kept))
}

/// One training forward of `model` on `batch` for this rank. `threshold` is FG-CLIP 2's rank threshold θ of
/// this step (logit units; starts at 0); the next one is in the report.
pub fn forward(
    model: &Trainable,
    batch: &Batch,
    cfg: &ObjectiveConfig,
    threshold: f32,
    coll: &dyn Collective,
) -> Result<StepLoss> {
    // Each paper's recipe: FG-CLIP's softmax losses, FG-CLIP 2's sigmoid ones with TIC and the rank threshold.
    let m = model.towers.as_ref();
    match m.family() {
        Family::FgClip => forward_v1(model, m, batch, cfg, coll),
        Family::FgClip2 => forward_v2(model, m, batch, cfg, threshold, coll),
    }
}

/// Each image's dense map, its real cells only: `[rows·cols, D]` with (rows, cols).
fn dense_of<'a>(
    dense: &'a Tensor,
    grids: &'a [(usize, usize)],
) -> impl Fn(usize) -> Result<(Tensor, usize, usize)> + 'a {
    move |i| {
        let (h, w) = grids[i];
        Ok((dense.get(i)?.narrow(0, 0, h * w)?, h, w))
    }
}

fn forward_v1(
    model: &Trainable,
    m: &dyn Towers,
    batch: &Batch,
    cfg: &ObjectiveConfig,
    coll: &dyn Collective,
) -> Result<StepLoss> {
    if batch.pixels.valid.is_some() {
        return Err(TrainError::Objective("FG-CLIP needs fixed-size images, the batch holds NaFlex patches".into()));
    }
    let short_text =
        |ids: &Tensor| -> Result<Tensor> { Ok(m.encode_tokens(&trim_v1_short(ids)?, None, TextWalk::Short)?) };
    let fine = cfg.region || cfg.hard;
    let (image, dense) = if fine {
        let (g, d) = m.encode_images_with_dense(&batch.pixels)?;
        (g, Some(d))
    } else {
        (m.encode_images(&batch.pixels)?, None)
    };
    let image = l2_normalize(&image)?;
    let short = l2_normalize(&short_text(&batch.text_short)?)?;
    let scale = m.score_head().logit_scale.exp()?;
    let clip = |i: &Tensor, t: &Tensor, q: usize, b: usize, s: &[Tensor]| -> Result<Tensor> {
        Ok(loss::clip_infonce(i, t, q, b, &s[0])?)
    };
    let w = cfg.weights.v1();
    let mut report = LossReport::default();
    let (short_own, short_bw) = global_loss(&image, &short, std::slice::from_ref(&scale), coll, &clip)?;
    report.global_short = scalar(&short_own)?;
    let mut total = weighted(short_own, w.short)?;
    let mut backward = weighted(short_bw, w.short)?;
    if let Some(ids) = &batch.text_long {
        let long = l2_normalize(&m.encode_tokens(ids, None, TextWalk::Long)?)?;
        let (own, bw) = global_loss(&image, &long, std::slice::from_ref(&scale), coll, &clip)?;
        report.global_long = Some(scalar(&own)?);
        total = (total + weighted(own, w.long)?)?;
        backward = (backward + weighted(bw, w.long)?)?;
    }

    if let Some(dense) = &dense {
        let dense_of = dense_of(dense, &batch.pixels.grids);
        let mut fine_terms: Option<Tensor> = None;
        let mut add = |t: Tensor| -> Result<()> {
            fine_terms = Some(match fine_terms.take() {
                Some(x) => (x + t)?,
                None => t,
            });
            Ok(())
        };
        if cfg.region {
            let slots = batch.valid_box_slots();
            let (feats, kept) = region_features(&dense_of, &batch.box_infos, &slots)?;
            report.dropped_boxes += slots.len() - kept.len();
            if let Some(feats) = feats {
                let text_rows: Vec<usize> = kept.iter().map(|&k| slots[k]).collect();
                let texts = l2_normalize(&short_text(&rows(&batch.box_texts, &text_rows)?)?)?;
                let regions = l2_normalize(&feats)?;
                let s = model.var("logit_scale_finegraind")?.as_tensor().exp()?;
                let l = loss::pairwise_contrastive(&regions, &texts, &s)?;
                report.region = Some(scalar(&l)?);
                report.boxes = kept.len();
                add((l * w.region)?)?;
            }
        }
        if cfg.hard {
            let slots = batch.valid_hard_slots();
            let (feats, kept) = region_features(&dense_of, &batch.hard_infos, &slots)?;
            report.dropped_boxes += slots.len() - kept.len();
            if let Some(feats) = feats {
                let text_rows: Vec<usize> =
                    kept.iter().flat_map(|&k| k * HARD_CAPTIONS..(k + 1) * HARD_CAPTIONS).collect();
                let texts = l2_normalize(&short_text(&rows(&batch.hard_texts, &text_rows)?)?)?;
                let regions = l2_normalize(&feats)?;
                let s = model.var("logit_scale_hardneg")?.as_tensor().exp()?;
                let l = loss::hard_pair(&regions, &texts, &s)?;
                report.hard = Some(scalar(&l)?);
                report.hard_boxes = kept.len();
                add((l * w.hard)?)?;
            }
        }
        if let Some(t) = fine_terms {
            total = (total + &t)?;
            backward = (backward + t)?;
        }
    }
    report.total = scalar(&total)?;
    Ok(StepLoss { backward, report })
}

fn forward_v2(
    model: &Trainable,
    m: &dyn Towers,
    batch: &Batch,
    cfg: &ObjectiveConfig,
    threshold: f32,
    coll: &dyn Collective,
) -> Result<StepLoss> {
    if batch.pixels.valid.is_none() {
        return Err(TrainError::Objective("FG-CLIP 2 needs NaFlex patches, the batch holds fixed-size images".into()));
    }
    let any_boxes = batch.box_nums.iter().any(|&n| n > 0);
    let any_hard = batch.hard_nums.iter().any(|&n| n > 0);
    let region_on = cfg.region && any_boxes && batch.text_long.is_some();
    let hard_on = cfg.hard && any_hard && batch.text_long.is_some();
    let (image, dense) = if region_on || hard_on {
        let (g, d) = m.encode_images_with_dense(&batch.pixels)?;
        (g, Some(d))
    } else {
        (m.encode_images(&batch.pixels)?, None)
    };
    let image = l2_normalize(&image)?;
    let short = l2_normalize(&m.encode_tokens(&batch.text_short, None, TextWalk::Short)?)?;
    let head = m.score_head();
    let bias = head.logit_bias.ok_or_else(|| TrainError::Objective("the sigmoid loss needs a logit bias".into()))?;
    let scalars = [head.logit_scale.exp()?, bias];
    let sig = |i: &Tensor, t: &Tensor, q: usize, b: usize, s: &[Tensor]| -> Result<Tensor> {
        Ok(loss::siglip(i, t, q, b, &s[0], &s[1])?)
    };
    let w = cfg.weights.v2();
    let mut report = LossReport::default();
    let (short_own, short_bw) = global_loss(&image, &short, &scalars, coll, &sig)?;
    report.global_short = scalar(&short_own)?;
    let (short_own, short_bw) = (weighted(short_own, w.short)?, weighted(short_bw, w.short)?);
    let Some(long_ids) = &batch.text_long else {
        // Official: without long captions the forward returns the short sigmoid loss only.
        report.total = scalar(&short_own)?;
        return Ok(StepLoss { backward: short_bw, report });
    };
    let long = l2_normalize(&m.encode_tokens(long_ids, None, TextWalk::Long)?)?;
    let (long_own, long_bw) = global_loss(&image, &long, &scalars, coll, &sig)?;
    report.global_long = Some(scalar(&long_own)?);
    let mut total = (weighted(long_own, w.long)? + short_own)?;
    let mut backward = (weighted(long_bw, w.long)? + short_bw)?;

    let mut fine_terms: Vec<Tensor> = Vec::new();
    let mut threshold_new = threshold;
    let mut skip_rest = false;
    if let Some(dense) = &dense {
        let dense_of = dense_of(dense, &batch.pixels.grids);
        if region_on {
            let slots = batch.valid_box_slots();
            let (feats, kept) = region_features(&dense_of, &batch.box_infos, &slots)?;
            report.dropped_boxes += slots.len() - kept.len();
            if let Some(feats) = feats {
                let text_rows: Vec<usize> = kept.iter().map(|&k| slots[k]).collect();
                let texts =
                    l2_normalize(&m.encode_tokens(&rows(&batch.box_texts, &text_rows)?, None, TextWalk::Box)?)?;
                let regions = l2_normalize(&feats)?;
                let s = model.var("logit_scale_finegraind")?.as_tensor().exp()?;
                let l = loss::pairwise_contrastive(&regions, &texts, &s)?;
                report.boxes = kept.len();
                let tic = if cfg.tic { loss::tic(&texts)? } else { None };
                match (cfg.tic, tic) {
                    (true, None) if cfg.official_skip => skip_rest = true,
                    (_, tic) => {
                        report.region = Some(scalar(&l)?);
                        fine_terms.push((l * w.region)?);
                        if let Some(t) = tic {
                            report.tic = Some(scalar(&t)?);
                            fine_terms.push((t * w.tic)?);
                        }
                    }
                }
            }
        }
        if hard_on && !skip_rest {
            let slots = batch.valid_hard_slots();
            let (feats, kept) = region_features(&dense_of, &batch.hard_infos, &slots)?;
            report.dropped_boxes += slots.len() - kept.len();
            if let Some(feats) = feats {
                let text_rows: Vec<usize> =
                    kept.iter().flat_map(|&k| k * HARD_CAPTIONS..(k + 1) * HARD_CAPTIONS).collect();
                let texts =
                    l2_normalize(&m.encode_tokens(&rows(&batch.hard_texts, &text_rows)?, None, TextWalk::Box)?)?;
                let regions = l2_normalize(&feats)?;
                let s = model.var("logit_scale_hardneg")?.as_tensor().exp()?;
                let h = loss::hard_composite_weighted(&regions, &texts, &s, threshold, w.hard_parts)?;
                report.hard = Some(scalar(&h.total)?);
                report.hard_contrastive = Some(scalar(&h.contrastive)?);
                report.hard_pair = Some(scalar(&h.pair)?);
                report.hard_cmr = Some(scalar(&h.cmr)?);
                report.hard_boxes = kept.len();
                threshold_new = h.threshold_new;
                fine_terms.push((h.total * w.hard)?);
            }
        }
    }
    for t in fine_terms {
        total = (total + &t)?;
        backward = (backward + t)?;
    }
    // Threshold synchronisation: every rank calls the collective every step (a rank without hard boxes
    // contributes its current θ, as the official code does), so ranks never desynchronise.
    if !skip_rest {
        report.threshold_rank = Some(threshold_new);
        let sum = coll.all_reduce_sum(&[threshold_new])?[0];
        report.threshold_next = Some(loss::next_threshold(sum, coll.world()));
    } else {
        coll.all_reduce_sum(&[threshold])?;
        report.threshold_next = Some(threshold);
    }
    report.total = scalar(&total)?;
    Ok(StepLoss { backward, report })
}
