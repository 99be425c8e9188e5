//! Multi-head attention as the official towers compute it: q, k, v projections with bias, q scaled by
//! `head_dim^-0.5`, additive masks with `finfo(dtype).min` (not −inf, spec §10.13), softmax, output projection.
//! One struct serves HF's separate `q_proj/k_proj/v_proj/out_proj` and `torch.nn.MultiheadAttention`'s packed
//! `in_proj_weight` (MAP and dense heads of FG-CLIP 2).

use candle_core::{DType, Device, Module, Result as CResult, Tensor, D};

use super::layers::Linear;
use crate::checkpoint::Weights;
use crate::Result;

/// Which keys a query may attend to.
#[derive(Clone, Debug)]
pub enum KeyMask {
    /// Every key (vision towers without padding).
    None,
    /// Causal (FG-CLIP text tower): query i sees keys 0..=i.
    Causal,
    /// Additive key bias `[B, 1, 1, N]`: 0 for real keys, `finfo.min` for padding (NaFlex patches, text pads).
    Keys(Tensor),
}

/// The most negative finite value of `dtype`, as `torch.finfo(dtype).min`.
pub fn mask_value(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => -3.3895313892515355e38,
        DType::F16 => -65504.0,
        DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    }
}

impl KeyMask {
    /// From a `[B, N]` 0/1 mask (1 = real): HF `_prepare_4d_attention_mask`, broadcast to every query row.
    pub fn from_valid(valid: &Tensor, dtype: DType) -> CResult<Self> {
        let (b, n) = valid.dims2()?;
        let valid = valid.to_dtype(DType::F32)?;
        let bias = ((valid.ones_like()? - valid)? * mask_value(dtype).max(f32::MIN as f64))?;
        Ok(KeyMask::Keys(bias.to_dtype(dtype)?.reshape((b, 1, 1, n))?))
    }

    /// Additive `[nq, nk]` causal bias.
    pub fn causal_bias(n: usize, dtype: DType, device: &Device) -> CResult<Tensor> {
        let m = mask_value(dtype) as f32;
        let v: Vec<f32> = (0..n).flat_map(|i| (0..n).map(move |j| if j > i { m } else { 0.0 })).collect();
        Tensor::from_vec(v, (n, n), device)?.to_dtype(dtype)
    }
}

#[derive(Clone, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub num_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    /// HF layout: `{q,k,v,out}_proj.{weight,bias}`.
    pub fn load_separate(w: &Weights, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q_proj: Linear::load(&w.pp("q_proj"), dim, dim, true)?,
            k_proj: Linear::load(&w.pp("k_proj"), dim, dim, true)?,
            v_proj: Linear::load(&w.pp("v_proj"), dim, dim, true)?,
            out_proj: Linear::load(&w.pp("out_proj"), dim, dim, true)?,
            num_heads: heads,
            head_dim: dim / heads,
        })
    }

    /// `torch.nn.MultiheadAttention` layout: `in_proj_weight [3D, D]` (rows q, k, v), `in_proj_bias [3D]`,
    /// `out_proj.{weight,bias}`.
    pub fn load_packed(w: &Weights, dim: usize, heads: usize) -> Result<Self> {
        let wi = w.get((3 * dim, dim), "in_proj_weight")?;
        let bi = w.get(3 * dim, "in_proj_bias")?;
        let part = |i: usize| -> Result<Linear> {
            Ok(Linear { weight: wi.narrow(0, i * dim, dim)?, bias: Some(bi.narrow(0, i * dim, dim)?) })
        };
        Ok(Self {
            q_proj: part(0)?,
            k_proj: part(1)?,
            v_proj: part(2)?,
            out_proj: Linear::load(&w.pp("out_proj"), dim, dim, true)?,
            num_heads: heads,
            head_dim: dim / heads,
        })
    }

    /// Self-attention over `x` `[B, N, D]`.
    pub fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        self.attend(x, x, mask)
    }

    /// Attention of queries `q_in` `[B, Nq, D]` over keys/values `kv_in` `[B, Nk, D]`.
    pub fn attend(&self, q_in: &Tensor, kv_in: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        let (b, nq, d) = q_in.dims3()?;
        let nk = kv_in.dim(1)?;
        let (h, dh) = (self.num_heads, self.head_dim);
        let weights = [&self.q_proj.weight, &self.k_proj.weight, &self.v_proj.weight, &self.out_proj.weight];
        let training = super::tracked(&[q_in, kv_in]) || super::tracked(&weights);
        if training && super::grad_ops::usable(&[q_in, kv_in]) && super::grad_ops::usable(&weights) {
            // Training on the CPU: one fused op with a backward instead of per-head reshapes and matmuls.
            let (q, k, v) = (self.q_proj.forward(q_in)?, self.k_proj.forward(kv_in)?, self.v_proj.forward(kv_in)?);
            let o = super::grad_ops::attention(&q, &k, &v, h, (dh as f64).powf(-0.5) as f32, mask)?;
            return self.out_proj.forward(&o);
        }
        let q = (self.q_proj.forward(q_in)? * (dh as f64).powf(-0.5))?;
        let k = self.k_proj.forward(kv_in)?;
        let v = self.v_proj.forward(kv_in)?;
        let q = q.reshape((b, nq, h, dh))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, nk, h, dh))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, nk, h, dh))?.transpose(1, 2)?.contiguous()?;
        let scores = q.matmul(&k.t()?)?; // [B, H, Nq, Nk]
        let scores = match mask {
            KeyMask::None => scores,
            KeyMask::Causal => scores.broadcast_add(&KeyMask::causal_bias(nk, scores.dtype(), scores.device())?)?,
            KeyMask::Keys(bias) => scores.broadcast_add(bias)?,
        };
        let probs = softmax_last_dim(&scores)?;
        let o = probs.matmul(&v)?; // [B, H, Nq, Dh]
        let o = o.transpose(1, 2)?.reshape((b, nq, d))?;
        self.out_proj.forward(&o)
    }

    /// The value path alone, `out_proj(v_proj(x))` (FG-CLIP dense features).
    pub fn value_path(&self, x: &Tensor) -> CResult<Tensor> {
        self.out_proj.forward(&self.v_proj.forward(x)?)
    }
}

/// Softmax over the last dimension: candle's fused kernel when no gradient is needed; when one is, our fused op
/// with a backward on the CPU (`grad_ops`), the composed (differentiable) one elsewhere.
pub fn softmax_last_dim(x: &Tensor) -> CResult<Tensor> {
    if x.track_op() && super::grad_ops::usable(&[x]) {
        super::grad_ops::softmax_last_dim(x)
    } else if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}
