//! The pre-LN transformer block shared by the CLIP and SigLIP 2 towers (HF `CLIPEncoderLayer` /
//! `Siglip2EncoderLayer`: identical structure and names).

use candle_core::{Result as CResult, Tensor};

use super::attention::Attention;
use super::layers::{LayerNorm, Mlp};
use super::mask::KeyMask;
use super::ops::OpSet;
use crate::checkpoint::Weights;
use crate::config::BlockDims;
use crate::Result;

/// Pre-LN block: `x += attn(ln1(x)); x += mlp(ln2(x))`.
#[derive(Clone, Debug)]
pub struct EncoderLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: Attention,
    pub layer_norm2: LayerNorm,
    pub mlp: Mlp,
}

impl EncoderLayer {
    pub fn load(w: &Weights, d: &BlockDims, ops: OpSet) -> Result<Self> {
        Ok(Self {
            layer_norm1: LayerNorm::load(&w.pp("layer_norm1"), d.hidden, d.eps, ops)?,
            self_attn: Attention::load_separate(&w.pp("self_attn"), d.hidden, d.heads, ops)?,
            layer_norm2: LayerNorm::load(&w.pp("layer_norm2"), d.hidden, d.eps, ops)?,
            mlp: Mlp::load(&w.pp("mlp"), d.hidden, d.intermediate, d.act, ops)?,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        let h = self.self_attn.forward(&self.layer_norm1.forward(x)?, mask)?;
        let x = (x + h)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&x)?)?;
        x + h
    }

    /// FG-CLIP's "forward without attention" (official `fgclip.py` dense path): attention replaced by its
    /// value path, `x += out_proj(v_proj(ln1(x)))`, residuals and MLP kept.
    pub fn forward_value_path(&self, x: &Tensor) -> CResult<Tensor> {
        let v = self.self_attn.value_path(&self.layer_norm1.forward(x)?)?;
        let x = (x + v)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&x)?)?;
        x + h
    }
}
