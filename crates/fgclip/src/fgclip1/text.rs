//! FG-CLIP text tower: CLIP's causal text transformer with two position regimes (official:
//! `modeling_clip.py` `CLIPTextTransformer` with `walk_short_pos`, docs/models.md#fg-clip-text-tower).
//!
//! * short (≤ 77 tokens): the original 77-row `position_embedding`;
//! * long (exactly 248 tokens): `position_embedding_ori` for positions < 20, `position_embedding_res` after —
//!   the LongCLIP-style stretched tables, trained independently.
//!
//! Pooling takes the hidden state at the FIRST eos (49407; pad is also 49407).

use candle_core::{IndexOp, Result as CResult, Tensor};

use crate::checkpoint::Weights;
use crate::config::ClipTextConfig;
use crate::nn::{Encoder, KeyMask, LayerNorm};
use crate::plan::ExecutionPlan;
use crate::{Error, Result};

/// Positions below this come from `position_embedding_ori` in the long walk (hard-coded in the official code).
pub const KEEP_LEN: usize = 20;
/// `FGCLIPModel.__init__` forces this eos id, whatever the config says.
pub const EOS_ID: u32 = 49407;

#[derive(Clone, Debug)]
pub struct TextTower {
    pub token_embedding: Tensor,        // [V, Dt]
    pub position_embedding: Tensor,     // [77, Dt]
    pub position_embedding_ori: Tensor, // [248, Dt]
    pub position_embedding_res: Tensor, // [248, Dt]
    pub encoder: Encoder,
    pub final_layer_norm: LayerNorm,
    pub cfg: ClipTextConfig,
    /// Rows of the long tables (248 in every release).
    pub long_len: usize,
}

impl TextTower {
    /// `w` is the `text_model` prefix.
    pub fn load(w: &Weights, cfg: &ClipTextConfig, plan: &ExecutionPlan) -> Result<Self> {
        let d = cfg.hidden_size;
        let emb = w.pp("embeddings");
        // The long tables' length is the checkpoint's (248 = 4·77 − 3·20 in every release); a missing table is
        // reported by the `get` below with that expected shape.
        let long_len = match emb.pp("position_embedding_res").shape_of("weight") {
            Ok(s) if s.len() == 2 && s[0] > KEEP_LEN => s[0],
            Ok(s) => {
                return Err(Error::TensorShape {
                    name: "text_model.embeddings.position_embedding_res.weight".into(),
                    expected: vec![4 * cfg.max_position_embeddings - 3 * KEEP_LEN, d],
                    found: s,
                })
            }
            Err(_) => 4 * cfg.max_position_embeddings - 3 * KEEP_LEN,
        };
        Ok(Self {
            token_embedding: emb.pp("token_embedding").get((cfg.vocab_size, d), "weight")?,
            position_embedding: emb.pp("position_embedding").get((cfg.max_position_embeddings, d), "weight")?,
            position_embedding_ori: emb.pp("position_embedding_ori").get((long_len, d), "weight")?,
            position_embedding_res: emb.pp("position_embedding_res").get((long_len, d), "weight")?,
            encoder: Encoder::load(&w.pp("encoder"), &cfg.block_dims(), plan.blocks(), false)?,
            final_layer_norm: LayerNorm::load(&w.pp("final_layer_norm"), d, cfg.layer_norm_eps, plan.ops())?,
            cfg: cfg.clone(),
            long_len,
        })
    }

    fn positions(&self, len: usize, long: bool) -> Result<Tensor> {
        if long {
            if len != self.long_len {
                return Err(Error::input(format!(
                    "FG-CLIP long text must be exactly {} tokens (got {len})",
                    self.long_len
                )));
            }
            let head = self.position_embedding_ori.narrow(0, 0, KEEP_LEN)?;
            let tail = self.position_embedding_res.narrow(0, KEEP_LEN, len - KEEP_LEN)?;
            Ok(Tensor::cat(&[&head, &tail], 0)?)
        } else {
            if len > self.cfg.max_position_embeddings {
                return Err(Error::input(format!(
                    "FG-CLIP short text has at most {} tokens (got {len})",
                    self.cfg.max_position_embeddings
                )));
            }
            Ok(self.position_embedding.narrow(0, 0, len)?)
        }
    }

    /// `ids` `[B, L]` (u32) → (last hidden state after `final_layer_norm` `[B, L, Dt]`, pooled `[B, Dt]`).
    pub fn forward(&self, ids: &Tensor, long: bool) -> Result<(Tensor, Tensor)> {
        let (b, len) = ids.dims2()?;
        let vocab = self.cfg.vocab_size as u32;
        let host: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        if let Some(bad) = host.iter().find(|&&t| t >= vocab) {
            return Err(Error::input(format!("token id {bad} is outside the vocabulary ({vocab})")));
        }
        let tok = self.token_embedding.index_select(&ids.flatten_all()?, 0)?.reshape((b, len, self.cfg.hidden_size))?;
        let x = tok.broadcast_add(&self.positions(len, long)?.unsqueeze(0)?)?;
        let x = self.encoder.forward(&x, &KeyMask::Causal)?;
        let x = self.final_layer_norm.forward(&x)?;
        // First eos per row; torch's argmax over an all-false row gives 0, kept for fidelity.
        let idx: Vec<u32> =
            host.chunks(len).map(|row| row.iter().position(|&t| t == EOS_ID).unwrap_or(0) as u32).collect();
        let pooled = pool_rows(&x, &idx)?;
        Ok((x, pooled))
    }
}

/// `x[b, idx[b]]` for every row: `[B, L, D]` → `[B, D]`.
pub fn pool_rows(x: &Tensor, idx: &[u32]) -> CResult<Tensor> {
    let rows = idx.iter().enumerate().map(|(b, &i)| x.i((b, i as usize))).collect::<CResult<Vec<_>>>()?;
    Tensor::stack(&rows, 0)
}
