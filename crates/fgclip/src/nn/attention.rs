//! Multi-head attention as the official towers compute it: q, k, v projections with bias, q scaled by
//! `head_dim^-0.5`, additive masks, softmax, output projection. One struct serves HF's separate
//! `q_proj/k_proj/v_proj/out_proj` and `torch.nn.MultiheadAttention`'s packed `in_proj_weight` (MAP and dense
//! heads of FG-CLIP 2).

use candle_core::{Result as CResult, Tensor};

use super::layers::Linear;
use super::mask::KeyMask;
use super::ops::OpSet;
use crate::checkpoint::Weights;
use crate::Result;

#[derive(Clone, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub num_heads: usize,
    pub head_dim: usize,
    pub ops: OpSet,
}

impl Attention {
    /// HF layout: `{q,k,v,out}_proj.{weight,bias}`.
    pub fn load_separate(w: &Weights, dim: usize, heads: usize, ops: OpSet) -> Result<Self> {
        Ok(Self {
            q_proj: Linear::load(&w.pp("q_proj"), dim, dim, true, ops)?,
            k_proj: Linear::load(&w.pp("k_proj"), dim, dim, true, ops)?,
            v_proj: Linear::load(&w.pp("v_proj"), dim, dim, true, ops)?,
            out_proj: Linear::load(&w.pp("out_proj"), dim, dim, true, ops)?,
            num_heads: heads,
            head_dim: dim / heads,
            ops,
        })
    }

    /// `torch.nn.MultiheadAttention` layout: `in_proj_weight [3D, D]` (rows q, k, v), `in_proj_bias [3D]`,
    /// `out_proj.{weight,bias}`.
    pub fn load_packed(w: &Weights, dim: usize, heads: usize, ops: OpSet) -> Result<Self> {
        let wi = w.get((3 * dim, dim), "in_proj_weight")?;
        let bi = w.get(3 * dim, "in_proj_bias")?;
        let part = |i: usize| -> Result<Linear> {
            Ok(Linear::new(wi.narrow(0, i * dim, dim)?, Some(bi.narrow(0, i * dim, dim)?), ops))
        };
        Ok(Self {
            q_proj: part(0)?,
            k_proj: part(1)?,
            v_proj: part(2)?,
            out_proj: Linear::load(&w.pp("out_proj"), dim, dim, true, ops)?,
            num_heads: heads,
            head_dim: dim / heads,
            ops,
        })
    }

    /// Self-attention over `x` `[B, N, D]`.
    pub fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        self.attend(x, x, mask)
    }

    /// Attention of queries `q_in` `[B, Nq, D]` over keys/values `kv_in` `[B, Nk, D]`.
    pub fn attend(&self, q_in: &Tensor, kv_in: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        let (q, k, v) = (self.q_proj.forward(q_in)?, self.k_proj.forward(kv_in)?, self.v_proj.forward(kv_in)?);
        let scale = (self.head_dim as f64).powf(-0.5);
        let o = self.ops.attention(&q, &k, &v, self.num_heads, scale, mask)?;
        self.out_proj.forward(&o)
    }

    /// The value path alone, `out_proj(v_proj(x))` (FG-CLIP dense features).
    pub fn value_path(&self, x: &Tensor) -> CResult<Tensor> {
        self.out_proj.forward(&self.v_proj.forward(x)?)
    }
}
