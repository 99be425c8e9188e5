//! FG-CLIP 2 (official: `fgclip2/model/strcs/modeling_fgclip2.py` `Fgclip2Model` and `fgclip2.py`
//! `FG_CLIP2_Model`, branch `main`).
//!
//! Features (docs/models.md#fg-clip-2-features): image = MAP-pooled tokens (no projection); text = short / box / long walks; dense =
//! `dense_feature_head` self-attention over the tokens; regions = RoIAlign of the dense map in each image's own
//! grid. Logits are SigLIP's: `exp(logit_scale)·cos + logit_bias`, sigmoid probabilities.

pub mod text;
pub mod vision;

use candle_core::Tensor;

use crate::checkpoint::Weights;
use crate::config::{Family, Fgclip2Config};
use crate::family::{Normalizer, ScoreHead, TextRules, Towers};
use crate::nn::roi_align::{roi_align, GridBox};
use crate::nn::{Block, KeyMask, Linear, MapHead};
use crate::pixels::PreparedImages;
use crate::plan::ExecutionPlan;
use crate::{Error, Result, TextWalk};

pub use text::TextTower;
pub use vision::VisionTower;

#[derive(Clone, Debug)]
pub struct FgClip2 {
    pub vision_model: VisionTower,
    pub text_model: TextTower,
    /// Run as a block: its dense self-attention, fused on the CPU inference path.
    pub dense_feature_head: Block<MapHead>,
    pub longtext_head: Linear,
    pub boxtext_head: Linear,
    pub logit_scale: Tensor, // [1], log
    pub logit_bias: Tensor,  // [1]
    pub cfg: Fgclip2Config,
}

/// A padded NaFlex batch: patches `[B, N, p·p·C]`, validity `[B, N]` (1 = real patch), grids (rows, cols).
pub struct NaflexInput<'a> {
    pub pixel_values: &'a Tensor,
    pub valid: &'a Tensor,
    pub grids: &'a [(usize, usize)],
}

impl FgClip2 {
    pub fn load(w: &Weights, cfg: &Fgclip2Config, plan: &ExecutionPlan) -> Result<Self> {
        let v = &cfg.vision;
        let dt = cfg.text.hidden_size;
        let ops = plan.ops();
        let dense = MapHead::load(&w.pp("dense_feature_head"), &v.block_dims(), ops)?;
        Ok(Self {
            vision_model: VisionTower::load(&w.pp("vision_model"), v, plan)?,
            text_model: TextTower::load(&w.pp("text_model"), &cfg.text, plan)?,
            dense_feature_head: Block::build(dense, plan.blocks(), true)?,
            longtext_head: Linear::load(&w.pp("longtext_head"), dt, dt, true, ops)?,
            boxtext_head: Linear::load(&w.pp("boxtext_head"), dt, dt, true, ops)?,
            logit_scale: w.get(1, "logit_scale")?,
            logit_bias: w.get(1, "logit_bias")?,
            cfg: cfg.clone(),
        })
    }

    fn tokens(&self, input: &NaflexInput) -> Result<(Tensor, KeyMask)> {
        let mask = KeyMask::from_valid(input.valid, input.pixel_values.dtype())?;
        let x = self.vision_model.last_hidden_state(input.pixel_values, input.grids, &mask)?;
        Ok((x, mask))
    }

    /// `get_image_features` → `[B, Dv]`.
    pub fn image_features(&self, input: &NaflexInput) -> Result<Tensor> {
        let (x, mask) = self.tokens(input)?;
        Ok(self.vision_model.head.pool(&x, &mask)?)
    }

    /// Global and dense features from one pass: (`[B, Dv]`, `[B, N, Dv]`; only the first rows·cols rows of
    /// each image are meaningful).
    pub fn image_and_dense_features(&self, input: &NaflexInput) -> Result<(Tensor, Tensor)> {
        let (x, mask) = self.tokens(input)?;
        let global = self.vision_model.head.pool(&x, &mask)?;
        let dense = self.dense_feature_head.forward(&x, &mask)?;
        Ok((global, dense))
    }

    /// `get_image_dense_feature` → `[B, N, Dv]`.
    pub fn dense_features(&self, input: &NaflexInput) -> Result<Tensor> {
        let (x, mask) = self.tokens(input)?;
        Ok(self.dense_feature_head.forward(&x, &mask)?)
    }

    /// `get_text_features(ids, attention_mask, walk_type)` → `[B, D]`.
    pub fn text_features(&self, ids: &Tensor, attention_mask: Option<&Tensor>, walk: TextWalk) -> Result<Tensor> {
        let (_, pooled) = self.text_model.forward(ids, attention_mask, walk)?;
        let head = match walk {
            TextWalk::Short => &self.text_model.head,
            TextWalk::Box => &self.boxtext_head,
            TextWalk::Long => &self.longtext_head,
        };
        Ok(head.forward(&pooled)?)
    }

    /// RoIAlign on one image's dense map (its first rows·cols tokens, `[rows·cols, D]`) with boxes in that
    /// image's grid units → `[K, D]`, unnormalised (`get_image_region_features`).
    pub fn roi_features(&self, dense: &Tensor, grid: (usize, usize), boxes: &[GridBox]) -> Result<Tensor> {
        Ok(roi_align(dense, grid.0, grid.1, boxes)?)
    }
}

impl FgClip2 {
    fn naflex<'a>(images: &'a PreparedImages) -> Result<NaflexInput<'a>> {
        let valid =
            images.valid.as_ref().ok_or_else(|| Error::input("FG-CLIP 2 images need a patch mask (NaFlex input)"))?;
        Ok(NaflexInput { pixel_values: &images.pixel_values, valid, grids: &images.grids })
    }
}

impl Towers for FgClip2 {
    fn family(&self) -> Family {
        Family::FgClip2
    }

    fn embed_dim(&self) -> usize {
        self.cfg.embed_dim()
    }

    fn text_len(&self, walk: TextWalk) -> usize {
        self.text_model.walk_len(walk)
    }

    fn region_walk(&self) -> TextWalk {
        TextWalk::Box
    }

    fn text_rules(&self) -> TextRules {
        TextRules { lowercase: true, accepts_mask: true }
    }

    fn image_processor(&self) -> fgclip_image::ImageProcessor {
        fgclip_image::ImageProcessor::naflex(self.cfg.vision.patch_size)
    }

    fn encode_images(&self, images: &PreparedImages) -> Result<Tensor> {
        self.image_features(&Self::naflex(images)?)
    }

    fn encode_images_with_dense(&self, images: &PreparedImages) -> Result<(Tensor, Tensor)> {
        self.image_and_dense_features(&Self::naflex(images)?)
    }

    fn encode_dense(&self, images: &PreparedImages) -> Result<Tensor> {
        self.dense_features(&Self::naflex(images)?)
    }

    fn encode_tokens(&self, ids: &Tensor, attention_mask: Option<&Tensor>, walk: TextWalk) -> Result<Tensor> {
        self.text_features(ids, attention_mask, walk)
    }

    fn score_head(&self) -> ScoreHead {
        ScoreHead {
            logit_scale: self.logit_scale.clone(),
            logit_bias: Some(self.logit_bias.clone()),
            normalizer: Normalizer::Sigmoid,
        }
    }

    fn describe_blocks(&self) -> Vec<(String, String)> {
        let first = |e: &crate::nn::Encoder| e.blocks.first().map(|b| b.describe()).unwrap_or_default();
        vec![
            ("vision blocks".into(), first(&self.vision_model.encoder)),
            ("text blocks".into(), first(&self.text_model.encoder)),
            ("dense head".into(), self.dense_feature_head.describe()),
        ]
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
