//! FG-CLIP 2 vision tower = SigLIP 2 NaFlex ViT (official: `fgclip2/model/strcs/modeling_fgclip2.py`
//! `Fgclip2VisionEmbeddings`, `Fgclip2VisionTransformer`, docs/models.md#fg-clip-2-vision-tower).
//!
//! Variable-resolution patches (`[B, N, p·p·3]`, padded, with a validity mask) → linear patch embedding +
//! the learned 16×16 position table resized per image (antialiased bilinear) → L pre-LN blocks with a key
//! padding mask → `post_layernorm` on all tokens → MAP head (probe attention) = image embedding. The separate
//! `dense_feature_head` turns the same tokens into per-patch features.

use candle_core::{Result as CResult, Tensor};

use crate::checkpoint::Weights;
use crate::config::Fgclip2VisionConfig;
use crate::nn::interp::resize_position_table;
use crate::nn::{Encoder, KeyMask, LayerNorm, Linear, MapHead};
use crate::plan::ExecutionPlan;
use crate::Result;

#[derive(Clone, Debug)]
pub struct VisionTower {
    pub patch_embedding: Linear,    // [Dv, p·p·C]
    pub position_embedding: Tensor, // [G², Dv]
    pub encoder: Encoder,
    pub post_layernorm: LayerNorm,
    pub head: MapHead,
    pub cfg: Fgclip2VisionConfig,
}

impl VisionTower {
    /// `w` is the `vision_model` prefix.
    pub fn load(w: &Weights, cfg: &Fgclip2VisionConfig, plan: &ExecutionPlan) -> Result<Self> {
        let d = cfg.hidden_size;
        let ops = plan.ops();
        let patch_dim = cfg.num_channels * cfg.patch_size * cfg.patch_size;
        let emb = w.pp("embeddings");
        Ok(Self {
            patch_embedding: Linear::load(&emb.pp("patch_embedding"), patch_dim, d, true, ops)?,
            position_embedding: emb.pp("position_embedding").get((cfg.num_patches, d), "weight")?,
            encoder: Encoder::load(&w.pp("encoder"), &cfg.block_dims(), plan.blocks(), false)?,
            post_layernorm: LayerNorm::load(&w.pp("post_layernorm"), d, cfg.layer_norm_eps, ops)?,
            head: MapHead::load(&w.pp("head"), &cfg.block_dims(), ops)?,
            cfg: cfg.clone(),
        })
    }

    /// Per-image position embeddings `[B, N, Dv]`: the table resized to each image's (rows, cols) grid,
    /// row-major; padding rows get row 0 of the resized table (as the official code does).
    pub fn position_embeddings(&self, grids: &[(usize, usize)], n: usize) -> CResult<Tensor> {
        let g = self.cfg.position_grid();
        let dev = self.position_embedding.device();
        let per_image = grids
            .iter()
            .map(|&(h, w)| {
                let t = resize_position_table(&self.position_embedding, g, h, w, dev)?;
                let real = h * w;
                if real < n {
                    let pad = t.narrow(0, 0, 1)?.broadcast_as((n - real, t.dim(1)?))?;
                    Tensor::cat(&[&t, &pad.contiguous()?], 0)
                } else {
                    Ok(t)
                }
            })
            .collect::<CResult<Vec<_>>>()?;
        Tensor::stack(&per_image, 0)
    }

    /// `Fgclip2VisionEmbeddings`: `[B, N, p·p·C]` → `[B, N, Dv]`.
    pub fn embeddings(&self, pixel_values: &Tensor, grids: &[(usize, usize)]) -> CResult<Tensor> {
        let n = pixel_values.dim(1)?;
        let x = self.patch_embedding.forward(pixel_values)?;
        x + self.position_embeddings(grids, n)?
    }

    /// Post-layernormed tokens `[B, N, Dv]` (HF `last_hidden_state`).
    pub fn last_hidden_state(
        &self,
        pixel_values: &Tensor,
        grids: &[(usize, usize)],
        mask: &KeyMask,
    ) -> CResult<Tensor> {
        let x = self.embeddings(pixel_values, grids)?;
        let x = self.encoder.forward(&x, mask)?;
        self.post_layernorm.forward(&x)
    }
}
