//! FG-CLIP 2's attention heads (official: `modeling_fgclip2.py` `Fgclip2MultiheadAttentionPoolingHead`).
//!
//! One parameter set (`probe`, `attention` = `nn.MultiheadAttention`, `layernorm`, `mlp`) is used two ways:
//! * pooling (`vision_model.head`): the learned probe attends over the patch tokens → the image embedding;
//! * dense (`dense_feature_head`): every token attends over every token (the probe is unused) → per-patch
//!   features (see `docs/models.md`).
//!
//! In both the residual is around the MLP only: `h = attn; h = h + mlp(ln(h))`.

use candle_core::{Result as CResult, Tensor};

use super::attention::Attention;
use super::layers::{LayerNorm, Mlp};
use super::mask::KeyMask;
use super::ops::OpSet;
use crate::checkpoint::Weights;
use crate::config::BlockDims;
use crate::Result;

#[derive(Clone, Debug)]
pub struct MapHead {
    pub probe: Tensor,
    pub attention: Attention,
    pub layernorm: LayerNorm,
    pub mlp: Mlp,
}

impl MapHead {
    pub fn load(w: &Weights, d: &BlockDims, ops: OpSet) -> Result<Self> {
        Ok(Self {
            probe: w.get((1, 1, d.hidden), "probe")?,
            attention: Attention::load_packed(&w.pp("attention"), d.hidden, d.heads, ops)?,
            layernorm: LayerNorm::load(&w.pp("layernorm"), d.hidden, d.eps, ops)?,
            mlp: Mlp::load(&w.pp("mlp"), d.hidden, d.intermediate, d.act, ops)?,
        })
    }

    fn finish(&self, h: Tensor) -> CResult<Tensor> {
        let m = self.mlp.forward(&self.layernorm.forward(&h)?)?;
        h + m
    }

    /// Attention pooling: `[B, N, D]` → `[B, D]`.
    pub fn pool(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        let (b, _, d) = x.dims3()?;
        let probe = self.probe.broadcast_as((b, 1, d))?.contiguous()?;
        let h = self.attention.attend(&probe, x, mask)?;
        self.finish(h)?.squeeze(1)
    }

    /// Dense self-attention over all tokens: `[B, N, D]` → `[B, N, D]`.
    pub fn dense(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        let h = self.attention.attend(x, x, mask)?;
        self.finish(h)
    }
}
