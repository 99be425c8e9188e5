//! FG-CLIP 2 text tower = SigLIP 2's bidirectional text transformer with three walks (official:
//! `modeling_fgclip2.py` `Fgclip2TextTransformer` / `Fgclip2Model.get_text_features`, docs/models.md#fg-clip-2-text-tower):
//!
//! | walk  | positions                                      | head            |
//! |-------|------------------------------------------------|-----------------|
//! | short | `position_embedding` (64 rows)                 | `text_model.head` |
//! | box   | `position_embedding` (64 rows)                 | `boxtext_head`  |
//! | long  | `ori` for i < keep_len (20), `res` after (196) | `longtext_head` |
//!
//! Pooling takes the LAST position (index L−1), usually a pad token — SigLIP's convention, so texts must be
//! padded to exactly the trained length. A key padding mask applies only when the tokenizer returns one.

use candle_core::{IndexOp, Tensor};

use crate::checkpoint::Weights;
use crate::config::Fgclip2TextConfig;
use crate::nn::{Encoder, KeyMask, LayerNorm, Linear};
use crate::plan::ExecutionPlan;
use crate::{Error, Result, TextWalk};

#[derive(Clone, Debug)]
pub struct TextTower {
    pub token_embedding: Tensor,        // [V, Dt]
    pub position_embedding: Tensor,     // [64, Dt]
    pub position_embedding_ori: Tensor, // [196, Dt]
    pub position_embedding_res: Tensor, // [196, Dt]
    pub encoder: Encoder,
    pub final_layer_norm: LayerNorm,
    pub head: Linear, // Dt → projection_size
    pub cfg: Fgclip2TextConfig,
}

impl TextTower {
    /// `w` is the `text_model` prefix.
    pub fn load(w: &Weights, cfg: &Fgclip2TextConfig, plan: &ExecutionPlan) -> Result<Self> {
        let d = cfg.hidden_size;
        let ops = plan.ops();
        let emb = w.pp("embeddings");
        Ok(Self {
            token_embedding: emb.pp("token_embedding").get((cfg.vocab_size, d), "weight")?,
            position_embedding: emb.pp("position_embedding").get((cfg.max_position_embeddings, d), "weight")?,
            position_embedding_ori: emb.pp("position_embedding_ori").get((cfg.longtext_len, d), "weight")?,
            position_embedding_res: emb.pp("position_embedding_res").get((cfg.longtext_len, d), "weight")?,
            encoder: Encoder::load(&w.pp("encoder"), &cfg.block_dims(), plan.blocks(), false)?,
            final_layer_norm: LayerNorm::load(&w.pp("final_layer_norm"), d, cfg.layer_norm_eps, ops)?,
            head: Linear::load(&w.pp("head"), d, cfg.projection_size(), true, ops)?,
            cfg: cfg.clone(),
        })
    }

    /// The token length a walk is trained at (64 for short/box, 196 for long).
    pub fn walk_len(&self, walk: TextWalk) -> usize {
        match walk {
            TextWalk::Long => self.cfg.longtext_len,
            TextWalk::Short | TextWalk::Box => self.cfg.max_position_embeddings,
        }
    }

    fn positions(&self, len: usize, walk: TextWalk) -> Result<Tensor> {
        match walk {
            TextWalk::Long => {
                if len != self.cfg.longtext_len {
                    return Err(Error::input(format!(
                        "FG-CLIP 2 long text must be exactly {} tokens (got {len})",
                        self.cfg.longtext_len
                    )));
                }
                let keep = self.cfg.keep_len;
                let head = self.position_embedding_ori.narrow(0, 0, keep)?;
                let tail = self.position_embedding_res.narrow(0, keep, len - keep)?;
                Ok(Tensor::cat(&[&head, &tail], 0)?)
            }
            TextWalk::Short | TextWalk::Box => {
                if len > self.cfg.max_position_embeddings {
                    return Err(Error::input(format!(
                        "FG-CLIP 2 short/box text has at most {} tokens (got {len})",
                        self.cfg.max_position_embeddings
                    )));
                }
                Ok(self.position_embedding.narrow(0, 0, len)?)
            }
        }
    }

    /// `ids` `[B, L]` (u32), optional `attention_mask` `[B, L]` (1 = real) → (last hidden state `[B, L, Dt]`,
    /// pooled `[B, Dt]` = state at position L−1, before any head).
    pub fn forward(&self, ids: &Tensor, attention_mask: Option<&Tensor>, walk: TextWalk) -> Result<(Tensor, Tensor)> {
        let (b, len) = ids.dims2()?;
        let vocab = self.cfg.vocab_size as u32;
        let flat = ids.flatten_all()?;
        if let Some(bad) = flat.to_vec1::<u32>()?.iter().find(|&&t| t >= vocab) {
            return Err(Error::input(format!("token id {bad} is outside the vocabulary ({vocab})")));
        }
        let tok = self.token_embedding.index_select(&flat, 0)?.reshape((b, len, self.cfg.hidden_size))?;
        let x = tok.broadcast_add(&self.positions(len, walk)?.unsqueeze(0)?)?;
        let mask = match attention_mask {
            Some(m) => KeyMask::from_valid(m, x.dtype())?,
            None => KeyMask::None,
        };
        let x = self.encoder.forward(&x, &mask)?;
        let x = self.final_layer_norm.forward(&x)?;
        let pooled = x.i((.., len - 1))?;
        Ok((x, pooled))
    }
}
