//! FG-CLIP 2 (official: `fgclip2/model/strcs/modeling_fgclip2.py` `Fgclip2Model` and `fgclip2.py`
//! `FG_CLIP2_Model`, branch `main`).
//!
//! Features (spec §3.4): image = MAP-pooled tokens (no projection); text = short / box / long walks; dense =
//! `dense_feature_head` self-attention over the tokens; regions = RoIAlign of the dense map in each image's own
//! grid. Logits are SigLIP's: `exp(logit_scale)·cos + logit_bias`, sigmoid probabilities.

pub mod text;
pub mod vision;

use candle_core::{Module, Tensor};

use crate::checkpoint::Weights;
use crate::config::Fgclip2Config;
use crate::nn::roi_align::{roi_align, GridBox};
use crate::nn::{KeyMask, Linear, MapHead};
use crate::{Result, TextWalk};

pub use text::TextTower;
pub use vision::VisionTower;

#[derive(Clone, Debug)]
pub struct FgClip2 {
    pub vision_model: VisionTower,
    pub text_model: TextTower,
    pub dense_feature_head: MapHead,
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
    pub fn load(w: &Weights, cfg: &Fgclip2Config) -> Result<Self> {
        let v = &cfg.vision;
        let dt = cfg.text.hidden_size;
        Ok(Self {
            vision_model: VisionTower::load(&w.pp("vision_model"), v)?,
            text_model: TextTower::load(&w.pp("text_model"), &cfg.text)?,
            dense_feature_head: MapHead::load(&w.pp("dense_feature_head"), &v.block_dims())?,
            longtext_head: Linear::load(&w.pp("longtext_head"), dt, dt, true)?,
            boxtext_head: Linear::load(&w.pp("boxtext_head"), dt, dt, true)?,
            logit_scale: w.get(1, "logit_scale")?,
            logit_bias: w.get(1, "logit_bias")?,
            cfg: cfg.clone(),
        })
    }

    /// bf16 CPU inference: packs the encoders' Linear weights to bf16 and drops their f32 copies (see
    /// `Encoder::set_fast_bf16_releasing_f32`); the model then serves untracked f32 CPU inputs only.
    pub fn set_fast_bf16_inference(&mut self) -> Result<()> {
        self.vision_model.encoder.set_fast_bf16_releasing_f32(false)?;
        self.text_model.encoder.set_fast_bf16_releasing_f32(false)?;
        self.dense_feature_head.set_fast_dense(Some(crate::nn::fast::GemmPrecision::Bf16))?;
        Ok(())
    }

    /// Enables (or disables with `None`) the CPU inference fast path of both towers.
    pub fn set_fast(&mut self, precision: Option<crate::nn::fast::GemmPrecision>) -> Result<()> {
        self.vision_model.encoder.set_fast(precision)?;
        self.text_model.encoder.set_fast(precision)?;
        self.dense_feature_head.set_fast_dense(precision)?;
        Ok(())
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
        let dense = self.dense_feature_head.dense(&x, &mask)?;
        Ok((global, dense))
    }

    /// `get_image_dense_feature` → `[B, N, Dv]`.
    pub fn dense_features(&self, input: &NaflexInput) -> Result<Tensor> {
        let (x, mask) = self.tokens(input)?;
        Ok(self.dense_feature_head.dense(&x, &mask)?)
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
