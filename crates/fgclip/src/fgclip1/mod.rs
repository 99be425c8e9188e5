//! FG-CLIP (ICML 2025; official: `fgclip/model/clip_strc/fgclip.py` `FGCLIPModel`, branch `v1.0`).
//!
//! A CLIP model with a second text regime for long captions. Features (all unnormalised, spec §2.3):
//! * image: `visual_projection(post_layernorm(CLS))`;
//! * text: short → `text_projection`, long → `text_filip_projection`;
//! * dense: the last block re-run with attention replaced by its value path, CLS dropped, `post_layernorm`,
//!   `visual_projection` → one joint-space vector per patch;
//! * regions: RoIAlign (1×1, aligned) of the dense map.
//! Logits: `exp(logit_scale)·cos`, softmax over texts.

pub mod text;
pub mod vision;

use candle_core::{Module, Tensor};

use crate::checkpoint::Weights;
use crate::config::FgClipConfig;
use crate::nn::roi_align::{roi_align, GridBox};
use crate::nn::Linear;
use crate::Result;

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
    pub fn load(w: &Weights, cfg: &FgClipConfig) -> Result<Self> {
        let (dv, dt, p) = (cfg.vision.hidden_size, cfg.text.hidden_size, cfg.projection_dim);
        Ok(Self {
            vision_model: VisionTower::load(&w.pp("vision_model"), &cfg.vision)?,
            text_model: TextTower::load(&w.pp("text_model"), &cfg.text)?,
            visual_projection: Linear::load(&w.pp("visual_projection"), dv, p, false)?,
            text_projection: Linear::load(&w.pp("text_projection"), dt, p, false)?,
            text_filip_projection: Linear::load(&w.pp("text_filip_projection"), dt, p, false)?,
            logit_scale: w.get((), "logit_scale")?,
            cfg: cfg.clone(),
        })
    }

    /// bf16 CPU inference: packs the encoders' Linear weights to bf16 and drops their f32 copies (see
    /// `Encoder::set_fast_bf16_releasing_f32`); the model then serves untracked f32 CPU inputs only.
    pub fn set_fast_bf16_inference(&mut self) -> Result<()> {
        self.vision_model.encoder.set_fast_bf16_releasing_f32(true)?;
        self.text_model.encoder.set_fast_bf16_releasing_f32(false)?;
        Ok(())
    }

    /// Enables (or disables with `None`) the CPU inference fast path of both towers.
    pub fn set_fast(&mut self, precision: Option<crate::nn::fast::GemmPrecision>) -> Result<()> {
        self.vision_model.encoder.set_fast(precision)?;
        self.text_model.encoder.set_fast(precision)?;
        Ok(())
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
        let last = self.vision_model.encoder.layers.last().expect("vision encoder has layers");
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
