//! The papers' training objectives on a batch: the towers' forward as the official `forward`s run it, then the
//! loss functions of `fgclip::loss` (official: v1.0 `FGCLIPModel.forward`, main `FG_CLIP2_Model.forward`;
//! spec §5.2, §5.3).
//!
//! FG-CLIP:   L = L_long + L_short + 0.1·L_region + 0.5·L_hard
//! FG-CLIP 2: L = L_sig(long) + L_sig(short) + 0.2·L_region + 0.1·L_TIC + 0.5·(0.6·L_c + 3·L_pair + 0.4·L_cmr)
//!
//! Departures from the official code, each deliberate:
//! * only valid box slots are encoded (the official code encodes all 4 slots and then selects; the selected
//!   rows are identical because rows do not interact in the text tower);
//! * boxes with no area on the feature grid (whose RoIAlign vector is 0 and would be NaN once normalised,
//!   spec §10.7) are dropped together with their captions, and counted in the report;
//! * FG-CLIP 2 wraps the fine-grained terms in a bare `try/except` (spec §10.6): with fewer than 10 region
//!   captions TIC raises and every remaining fine-grained term of the step is skipped. By default we skip only
//!   TIC; `official_skip` reproduces the all-or-nothing behaviour.

use candle_core::{DType, Tensor};
use fgclip::loss;
use fgclip::nn::roi_align::{box_weights, GridBox};
use fgclip::TextWalk;

use crate::batch::{Batch, Pixels, HARD_CAPTIONS};
use crate::dist::{with_local_slice, Collective};
use crate::error::{Result, TrainError};
use crate::trainable::{Towers, Trainable};

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
}

impl ObjectiveConfig {
    pub fn global_only() -> Self {
        Self { region: false, hard: false, tic: false, official_skip: false }
    }
    pub fn full() -> Self {
        Self { region: true, hard: true, tic: true, official_skip: false }
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

/// Global loss of this rank with the gradient construction of `dist.rs`. `f` computes the loss of rank `q`
/// from gathered image/text features and the scalars (scale, bias).
fn global_loss(
    image: &Tensor,
    text: &Tensor,
    scalars: &[Tensor],
    coll: &dyn Collective,
    f: &dyn Fn(&Tensor, &Tensor, usize, usize, &[Tensor]) -> Result<Tensor>,
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
pub fn forward(model: &Trainable, batch: &Batch, cfg: &ObjectiveConfig, threshold: f32, coll: &dyn Collective) -> Result<StepLoss> {
    match &model.towers {
        Towers::V1(m) => forward_v1(model, m, batch, cfg, coll),
        Towers::V2(m) => forward_v2(model, m, batch, cfg, threshold, coll),
    }
}

fn forward_v1(
    model: &Trainable,
    m: &fgclip::fgclip1::FgClip,
    batch: &Batch,
    cfg: &ObjectiveConfig,
    coll: &dyn Collective,
) -> Result<StepLoss> {
    let Pixels::Fixed(pixels) = &batch.pixels else {
        return Err(TrainError::Objective("FG-CLIP needs fixed-size images, the batch holds NaFlex patches".into()));
    };
    let fine = cfg.region || cfg.hard;
    let (image, dense) = if fine {
        let (g, d) = m.image_and_dense_features(pixels)?;
        (g, Some(d))
    } else {
        (m.image_features(pixels)?, None)
    };
    let image = l2_normalize(&image)?;
    let short = l2_normalize(&m.text_features(&trim_v1_short(&batch.text_short)?, false)?)?;
    let scale = m.logit_scale.exp()?;
    let clip = |i: &Tensor, t: &Tensor, q: usize, b: usize, s: &[Tensor]| -> Result<Tensor> {
        Ok(loss::clip_infonce(i, t, q, b, &s[0])?)
    };
    let mut report = LossReport::default();
    let (short_own, short_bw) = global_loss(&image, &short, std::slice::from_ref(&scale), coll, &clip)?;
    report.global_short = scalar(&short_own)?;
    let mut total = short_own;
    let mut backward = short_bw;
    if let Some(ids) = &batch.text_long {
        let long = l2_normalize(&m.text_features(ids, true)?)?;
        let (own, bw) = global_loss(&image, &long, std::slice::from_ref(&scale), coll, &clip)?;
        report.global_long = Some(scalar(&own)?);
        total = (total + own)?;
        backward = (backward + bw)?;
    }

    if let Some(dense) = &dense {
        let g = m.cfg.vision.grid();
        let dense_of = |i: usize| -> Result<(Tensor, usize, usize)> { Ok((dense.get(i)?, g, g)) };
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
                let texts = l2_normalize(&m.text_features(&trim_v1_short(&rows(&batch.box_texts, &text_rows)?)?, false)?)?;
                let regions = l2_normalize(&feats)?;
                let s = model.var("logit_scale_finegraind")?.as_tensor().exp()?;
                let l = loss::pairwise_contrastive(&regions, &texts, &s)?;
                report.region = Some(scalar(&l)?);
                report.boxes = kept.len();
                add((l * loss::V1Weights::OFFICIAL.region)?)?;
            }
        }
        if cfg.hard {
            let slots = batch.valid_hard_slots();
            let (feats, kept) = region_features(&dense_of, &batch.hard_infos, &slots)?;
            report.dropped_boxes += slots.len() - kept.len();
            if let Some(feats) = feats {
                let text_rows: Vec<usize> = kept.iter().flat_map(|&k| k * HARD_CAPTIONS..(k + 1) * HARD_CAPTIONS).collect();
                let texts = l2_normalize(&m.text_features(&trim_v1_short(&rows(&batch.hard_texts, &text_rows)?)?, false)?)?;
                let regions = l2_normalize(&feats)?;
                let s = model.var("logit_scale_hardneg")?.as_tensor().exp()?;
                let l = loss::hard_pair(&regions, &texts, &s)?;
                report.hard = Some(scalar(&l)?);
                report.hard_boxes = kept.len();
                add((l * loss::V1Weights::OFFICIAL.hard)?)?;
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
    m: &fgclip::fgclip2::FgClip2,
    batch: &Batch,
    cfg: &ObjectiveConfig,
    threshold: f32,
    coll: &dyn Collective,
) -> Result<StepLoss> {
    let Pixels::Naflex { pixel_values, valid, grids } = &batch.pixels else {
        return Err(TrainError::Objective("FG-CLIP 2 needs NaFlex patches, the batch holds fixed-size images".into()));
    };
    let input = fgclip::fgclip2::NaflexInput { pixel_values, valid, grids };
    let any_boxes = batch.box_nums.iter().any(|&n| n > 0);
    let any_hard = batch.hard_nums.iter().any(|&n| n > 0);
    let region_on = cfg.region && any_boxes && batch.text_long.is_some();
    let hard_on = cfg.hard && any_hard && batch.text_long.is_some();
    let (image, dense) = if region_on || hard_on {
        let (g, d) = m.image_and_dense_features(&input)?;
        (g, Some(d))
    } else {
        (m.image_features(&input)?, None)
    };
    let image = l2_normalize(&image)?;
    let short = l2_normalize(&m.text_features(&batch.text_short, None, TextWalk::Short)?)?;
    let scalars = [m.logit_scale.exp()?, m.logit_bias.clone()];
    let sig = |i: &Tensor, t: &Tensor, q: usize, b: usize, s: &[Tensor]| -> Result<Tensor> {
        Ok(loss::siglip(i, t, q, b, &s[0], &s[1])?)
    };
    let mut report = LossReport::default();
    let (short_own, short_bw) = global_loss(&image, &short, &scalars, coll, &sig)?;
    report.global_short = scalar(&short_own)?;
    let Some(long_ids) = &batch.text_long else {
        // Official: without long captions the forward returns the short sigmoid loss only.
        report.total = report.global_short;
        return Ok(StepLoss { backward: short_bw, report });
    };
    let long = l2_normalize(&m.text_features(long_ids, None, TextWalk::Long)?)?;
    let (long_own, long_bw) = global_loss(&image, &long, &scalars, coll, &sig)?;
    report.global_long = Some(scalar(&long_own)?);
    let mut total = (long_own + short_own)?;
    let mut backward = (long_bw + short_bw)?;

    let mut fine_terms: Vec<Tensor> = Vec::new();
    let mut threshold_new = threshold;
    let mut skip_rest = false;
    if let Some(dense) = &dense {
        let dense_of = |i: usize| -> Result<(Tensor, usize, usize)> {
            let (h, w) = grids[i];
            Ok((dense.get(i)?.narrow(0, 0, h * w)?, h, w))
        };
        if region_on {
            let slots = batch.valid_box_slots();
            let (feats, kept) = region_features(&dense_of, &batch.box_infos, &slots)?;
            report.dropped_boxes += slots.len() - kept.len();
            if let Some(feats) = feats {
                let text_rows: Vec<usize> = kept.iter().map(|&k| slots[k]).collect();
                let texts = l2_normalize(&m.text_features(&rows(&batch.box_texts, &text_rows)?, None, TextWalk::Box)?)?;
                let regions = l2_normalize(&feats)?;
                let s = model.var("logit_scale_finegraind")?.as_tensor().exp()?;
                let l = loss::pairwise_contrastive(&regions, &texts, &s)?;
                report.boxes = kept.len();
                let tic = if cfg.tic { loss::tic(&texts)? } else { None };
                match (cfg.tic, tic) {
                    (true, None) if cfg.official_skip => skip_rest = true,
                    (_, tic) => {
                        report.region = Some(scalar(&l)?);
                        fine_terms.push((l * loss::V2Weights::OFFICIAL.region)?);
                        if let Some(t) = tic {
                            report.tic = Some(scalar(&t)?);
                            fine_terms.push((t * loss::V2Weights::OFFICIAL.tic)?);
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
                let text_rows: Vec<usize> = kept.iter().flat_map(|&k| k * HARD_CAPTIONS..(k + 1) * HARD_CAPTIONS).collect();
                let texts = l2_normalize(&m.text_features(&rows(&batch.hard_texts, &text_rows)?, None, TextWalk::Box)?)?;
                let regions = l2_normalize(&feats)?;
                let s = model.var("logit_scale_hardneg")?.as_tensor().exp()?;
                let h = loss::hard_composite(&regions, &texts, &s, threshold)?;
                report.hard = Some(scalar(&h.total)?);
                report.hard_contrastive = Some(scalar(&h.contrastive)?);
                report.hard_pair = Some(scalar(&h.pair)?);
                report.hard_cmr = Some(scalar(&h.cmr)?);
                report.hard_boxes = kept.len();
                threshold_new = h.threshold_new;
                fine_terms.push((h.total * loss::V2Weights::OFFICIAL.hard)?);
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
