//! FG-CLIP 2's attention heads (official: `modeling_fgclip2.py` `Fgclip2MultiheadAttentionPoolingHead`).
//!
//! One parameter set (`probe`, `attention` = `nn.MultiheadAttention`, `layernorm`, `mlp`) is used two ways:
//! * pooling (`vision_model.head`): the learned probe attends over the patch tokens → the image embedding;
//! * dense (`dense_feature_head`): every token attends over every token (the probe is unused) → per-patch
//!   features (spec §3.4, pitfall §10.11).
//!
//! In both the residual is around the MLP only: `h = attn; h = h + mlp(ln(h))`.

use candle_core::{Module, Result as CResult, Tensor};

use super::attention::{Attention, KeyMask};
use super::layers::{BlockDims, LayerNorm, Mlp};
use crate::checkpoint::Weights;
use crate::Result;

#[derive(Clone, Debug)]
pub struct MapHead {
    pub probe: Tensor,
    pub attention: Attention,
    pub layernorm: LayerNorm,
    pub mlp: Mlp,
    /// CPU inference fast path of [`MapHead::dense`], when enabled.
    pub fast_dense: Option<std::sync::Arc<super::fast::FastBlock>>,
}

impl MapHead {
    pub fn load(w: &Weights, d: &BlockDims) -> Result<Self> {
        let (dim, heads, inter, act, eps) = (d.hidden, d.heads, d.intermediate, d.act, d.eps);
        Ok(Self {
            probe: w.get((1, 1, dim), "probe")?,
            attention: Attention::load_packed(&w.pp("attention"), dim, heads)?,
            layernorm: LayerNorm::load(&w.pp("layernorm"), dim, eps)?,
            mlp: Mlp::load(&w.pp("mlp"), dim, inter, act)?,
            fast_dense: None,
        })
    }

    fn finish(&self, h: Tensor) -> CResult<Tensor> {
        let m = self.mlp.forward(&self.layernorm.forward(&h)?)?;
        h + m
    }

    /// Attention pooling: `[B, N, D]` → `[B, D]`.
    pub fn pool(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        let b = x.dim(0)?;
        let d = x.dim(2)?;
        let probe = self.probe.broadcast_as((b, 1, d))?.contiguous()?;
        let h = self.attention.attend(&probe, x, mask)?;
        self.finish(h)?.squeeze(1)
    }

    /// Prepares (or drops, with `None`) the fast path of [`MapHead::dense`].
    pub fn set_fast_dense(&mut self, precision: Option<super::fast::GemmPrecision>) -> CResult<()> {
        self.fast_dense = match precision {
            Some(p) => super::fast::FastBlock::from_map_head(self, p)?.map(std::sync::Arc::new),
            None => None,
        };
        Ok(())
    }

    /// Dense self-attention over all tokens: `[B, N, D]` → `[B, N, D]`.
    pub fn dense(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        if let Some(block) = &self.fast_dense {
            if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && !x.track_op() {
                let op = super::fast::FastBlockOp { block, mask: super::fast::FastMask::from_key_mask(mask)? };
                return x.contiguous()?.apply_op1_no_bwd(&op);
            }
        }
        let h = self.attention.attend(x, x, mask)?;
        self.finish(h)
    }
}
