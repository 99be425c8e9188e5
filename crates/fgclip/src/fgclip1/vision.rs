//! FG-CLIP vision tower = OpenAI/HF CLIP ViT (official: `fgclip/model/clip_strc/modeling_clip.py`
//! `CLIPVisionTransformer`, docs/models.md#fg-clip-vision-tower).
//!
//! pixels → conv patch embedding (no bias) → [CLS; patches] + positions → `pre_layrnorm` → L pre-LN blocks →
//! `post_layernorm(CLS)` = pooled. The dense path (docs/models.md#fg-clip-features) also needs the input of the last block.

use candle_core::{Result as CResult, Tensor};

use crate::checkpoint::Weights;
use crate::config::ClipVisionConfig;
use crate::nn::{Encoder, KeyMask, LayerNorm};
use crate::plan::ExecutionPlan;
use crate::Result;

#[derive(Clone, Debug)]
pub struct VisionTower {
    pub patch_embedding: Tensor,    // [Dv, 3, p, p]
    pub class_embedding: Tensor,    // [Dv]
    pub position_embedding: Tensor, // [1 + g², Dv]
    pub pre_layrnorm: LayerNorm,
    pub encoder: Encoder,
    pub post_layernorm: LayerNorm,
    pub cfg: ClipVisionConfig,
}

/// What one pass of the tower yields.
pub struct VisionOutput {
    /// `post_layernorm(last_hidden_state[:, 0])`, `[B, Dv]`.
    pub pooled: Tensor,
    /// Output of the last block, `[B, 1 + g², Dv]` (not layer-normed, as HF returns it).
    pub last_hidden_state: Tensor,
    /// Input of the last block (HF `hidden_states[-2]`), `[B, 1 + g², Dv]`.
    pub penultimate: Tensor,
}

impl VisionTower {
    /// `w` is the `vision_model` prefix.
    pub fn load(w: &Weights, cfg: &ClipVisionConfig, plan: &ExecutionPlan) -> Result<Self> {
        let (d, p, g) = (cfg.hidden_size, cfg.patch_size, cfg.grid());
        let (ops, eps) = (plan.ops(), cfg.layer_norm_eps);
        let emb = w.pp("embeddings");
        Ok(Self {
            patch_embedding: emb.pp("patch_embedding").get((d, cfg.num_channels, p, p), "weight")?,
            class_embedding: emb.get(d, "class_embedding")?,
            position_embedding: emb.pp("position_embedding").get((g * g + 1, d), "weight")?,
            pre_layrnorm: LayerNorm::load(&w.pp("pre_layrnorm"), d, eps, ops)?,
            // The dense path re-runs the last block's value path: keep that block's layer.
            encoder: Encoder::load(&w.pp("encoder"), &cfg.block_dims(), plan.blocks(), true)?,
            post_layernorm: LayerNorm::load(&w.pp("post_layernorm"), d, eps, ops)?,
            cfg: cfg.clone(),
        })
    }

    /// `[B, 3, S, S]` → `[B, 1 + g², Dv]` (after `pre_layrnorm`).
    pub fn embeddings(&self, pixel_values: &Tensor) -> CResult<Tensor> {
        let b = pixel_values.dim(0)?;
        let d = self.cfg.hidden_size;
        let patches = pixel_values.conv2d(&self.patch_embedding, 0, self.cfg.patch_size, 1, 1)?; // [B, D, g, g]
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // [B, g², D], row-major over the grid
        let cls = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?;
        let x = x.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        self.pre_layrnorm.forward(&x)
    }

    pub fn forward(&self, pixel_values: &Tensor) -> CResult<VisionOutput> {
        let x = self.embeddings(pixel_values)?;
        let (last, penultimate) = self.encoder.forward_with_penultimate(&x, &KeyMask::None)?;
        let cls = last.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.post_layernorm.forward(&cls)?;
        Ok(VisionOutput { pooled, last_hidden_state: last, penultimate })
    }
}
