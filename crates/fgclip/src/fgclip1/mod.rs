//! FG-CLIP (ICML 2025; official: `fgclip/model/clip_strc/fgclip.py` `FGCLIPModel`, branch `v1.0`).
//!
//! A CLIP model with a second text regime for long captions. Features (all unnormalised, docs/models.md#fg-clip-features):
//! * image: `visual_projection(post_layernorm(CLS))`;
//! * text: short → `text_projection`, long → `text_filip_projection`;
//! * dense: the last block re-run with attention replaced by its value path, CLS dropped, `post_layernorm`,
//!   `visual_projection` → one joint-space vector per patch;
//! * regions: RoIAlign (1×1, aligned) of the dense map.
//!
//! Logits: `exp(logit_scale)·cos`, softmax over texts.

pub mod text;
pub mod vision;

use candle_core::Tensor;

use crate::checkpoint::Weights;
use crate::config::{Family, FgClipConfig};
use crate::family::{Normalizer, ScoreHead, TextRules, Towers};
use crate::nn::roi_align::{roi_align, GridBox};
use crate::nn::Linear;
use crate::pixels::PreparedImages;
use crate::plan::ExecutionPlan;
use crate::{Error, Result, TextWalk};

pub use text::TextTower;
pub use vision::{VisionOutput, VisionTower};

#[derive(Clone, Debug)]
pub struct FgClip {
    pub vision_model: VisionTower,
    pub text_model: TextTower,
    pub visual_projection: Linear,
    pub text_projection: Linear,
    pub text_filip_projection: Linear,
    /// log of the global logit scale.
    pub logit_scale: Tensor,
    pub cfg: FgClipConfig,
}

impl FgClip {
    pub fn load(w: &Weights, cfg: &FgClipConfig, plan: &ExecutionPlan) -> Result<Self> {
        let (dv, dt, p) = (cfg.vision.hidden_size, cfg.text.hidden_size, cfg.projection_dim);
        let ops = plan.ops();
        Ok(Self {
            vision_model: VisionTower::load(&w.pp("vision_model"), &cfg.vision, plan)?,
            text_model: TextTower::load(&w.pp("text_model"), &cfg.text, plan)?,
            visual_projection: Linear::load(&w.pp("visual_projection"), dv, p, false, ops)?,
            text_projection: Linear::load(&w.pp("text_projection"), dt, p, false, ops)?,
            text_filip_projection: Linear::load(&w.pp("text_filip_projection"), dt, p, false, ops)?,
            logit_scale: w.get((), "logit_scale")?,
            cfg: cfg.clone(),
        })
    }

    /// `get_image_features`: `[B, 3, S, S]` → `[B, P]`.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let out = self.vision_model.forward(pixel_values)?;
        Ok(self.visual_projection.forward(&out.pooled)?)
    }

    /// Global and dense features from one pass of the tower: (`[B, P]`, `[B, g², P]`).
    pub fn image_and_dense_features(&self, pixel_values: &Tensor) -> Result<(Tensor, Tensor)> {
        let out = self.vision_model.forward(pixel_values)?;
        let global = self.visual_projection.forward(&out.pooled)?;
        let dense = self.dense_from_penultimate(&out.penultimate)?;
        Ok((global, dense))
    }

    /// `get_image_dense_features`: `[B, 3, S, S]` → `[B, g², P]`, row-major over the grid.
    pub fn dense_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let out = self.vision_model.forward(pixel_values)?;
        self.dense_from_penultimate(&out.penultimate)
    }

    fn dense_from_penultimate(&self, penultimate: &Tensor) -> Result<Tensor> {
        // The plan keeps the last block's layer for this path, whatever the fusion.
        let last = self.vision_model.encoder.blocks.last().and_then(|b| b.layer());
        let last = last.ok_or_else(|| Error::input("the vision tower has no layers for the dense path"))?;
        let x = last.forward_value_path(penultimate)?;
        let n = x.dim(1)?;
        let patches = x.narrow(1, 1, n - 1)?; // drop CLS
        let patches = self.vision_model.post_layernorm.forward(&patches)?;
        Ok(self.visual_projection.forward(&patches)?)
    }

    /// `get_text_features(ids, walk_short_pos = !long)`: `[B, L]` → `[B, P]`.
    pub fn text_features(&self, ids: &Tensor, long: bool) -> Result<Tensor> {
        let (_, pooled) = self.text_model.forward(ids, long)?;
        let proj = if long { &self.text_filip_projection } else { &self.text_projection };
        Ok(proj.forward(&pooled)?)
    }

    /// `get_image_box_roi_features` for one image's dense map `[g², P]` and boxes in grid units → `[K, P]`
    /// (unnormalised, as the official function returns them).
    pub fn roi_features(&self, dense: &Tensor, boxes: &[GridBox]) -> Result<Tensor> {
        let g = self.cfg.vision.grid();
        Ok(roi_align(dense, g, g, boxes)?)
    }
}

impl Towers for FgClip {
    fn family(&self) -> Family {
        Family::FgClip
    }

    fn embed_dim(&self) -> usize {
        self.cfg.projection_dim
    }

    fn text_len(&self, walk: TextWalk) -> usize {
        match walk {
            TextWalk::Long => self.text_model.long_len,
            TextWalk::Short | TextWalk::Box => self.cfg.text.max_position_embeddings,
        }
    }

    fn region_walk(&self) -> TextWalk {
        TextWalk::Short
    }

    fn text_rules(&self) -> TextRules {
        TextRules { lowercase: false, accepts_mask: false }
    }

    fn image_processor(&self) -> fgclip_image::ImageProcessor {
        fgclip_image::ImageProcessor::square(self.cfg.vision.image_size, self.cfg.vision.patch_size)
    }

    fn encode_images(&self, images: &PreparedImages) -> Result<Tensor> {
        self.image_features(&images.pixel_values)
    }

    fn encode_images_with_dense(&self, images: &PreparedImages) -> Result<(Tensor, Tensor)> {
        self.image_and_dense_features(&images.pixel_values)
    }

    fn encode_dense(&self, images: &PreparedImages) -> Result<Tensor> {
        self.dense_features(&images.pixel_values)
    }

    fn encode_tokens(&self, ids: &Tensor, _attention_mask: Option<&Tensor>, walk: TextWalk) -> Result<Tensor> {
        // Box captions use the short walk; the causal tower never takes a padding mask.
        self.text_features(ids, walk == TextWalk::Long)
    }

    fn score_head(&self) -> ScoreHead {
        ScoreHead { logit_scale: self.logit_scale.clone(), logit_bias: None, normalizer: Normalizer::Softmax }
    }

    fn describe_blocks(&self) -> Vec<(String, String)> {
        let first = |e: &crate::nn::Encoder| e.blocks.first().map(|b| b.describe()).unwrap_or_default();
        vec![
            ("vision blocks".into(), first(&self.vision_model.encoder)),
            ("text blocks".into(), first(&self.text_model.encoder)),
        ]
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
