//! The op set a layer computes with. It is chosen once, when the model is built (by the execution plan in
//! `crate::plan`), and stored in every layer: the layers say *what* they compute, the op set *how*. No flag,
//! device or autograd check is consulted while running.
//!
//! | op set      | where                     | gradient | how                                                   |
//! |-------------|---------------------------|----------|-------------------------------------------------------|
//! | `Inference` | any device, inference     | no       | candle's fused forward kernels (LayerNorm, softmax)   |
//! | `Composed`  | any device, training      | yes      | candle's differentiable compositions (the reference)  |
//! | `CpuTrain`  | CPU f32, training         | yes      | our fused ops with hand-written backward (`grad_ops`) |
//!
//! All three compute the same math; tests compare them (values and gradients).

use candle_core::{Result as CResult, Tensor, D};

use super::grad_ops;
use super::mask::KeyMask;
use super::reference::layer_norm_composed;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OpSet {
    #[default]
    Inference,
    Composed,
    CpuTrain,
}

impl OpSet {
    pub fn name(self) -> &'static str {
        match self {
            OpSet::Inference => "candle forward kernels",
            OpSet::Composed => "candle composed ops (differentiable)",
            OpSet::CpuTrain => "fused CPU f32 ops with backward",
        }
    }

    /// `x Wᵀ + b` for `x` `[rows, in]`, `w` `[out, in]` (PyTorch layout).
    pub fn linear(self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> CResult<Tensor> {
        if self == OpSet::CpuTrain {
            // Bias written first and accumulated onto by the GEMM; a direct three-product backward.
            return grad_ops::linear(x, w, b);
        }
        let y = x.matmul(&w.t()?)?;
        match b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// LayerNorm over the last dimension (biased variance, as torch).
    pub fn layer_norm(self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> CResult<Tensor> {
        match self {
            // candle's fused kernel has no gradient (docs/candle-notes.md), hence the other two.
            OpSet::Inference => candle_nn::ops::layer_norm(&x.contiguous()?, w, b, eps as f32),
            OpSet::Composed => layer_norm_composed(x, w, b, eps),
            OpSet::CpuTrain => grad_ops::layer_norm(x, w, b, eps),
        }
    }

    /// Softmax over the last dimension.
    pub fn softmax_last_dim(self, x: &Tensor) -> CResult<Tensor> {
        match self {
            OpSet::Inference => candle_nn::ops::softmax_last_dim(&x.contiguous()?),
            OpSet::Composed => candle_nn::ops::softmax(x, D::Minus1),
            OpSet::CpuTrain => grad_ops::softmax_last_dim(x),
        }
    }

    /// `x · sigmoid(1.702 x)` (CLIP's QuickGELU).
    pub fn quick_gelu(self, x: &Tensor) -> CResult<Tensor> {
        match self {
            OpSet::CpuTrain => grad_ops::quick_gelu(x),
            _ => x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?),
        }
    }

    /// Multi-head attention of projected queries `q` `[B, Nq, D]` over keys/values `[B, Nk, D]`:
    /// `softmax(scale·q·kᵀ + mask)·v` per head, heads merged back to `[B, Nq, D]`.
    pub fn attention(
        self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
        scale: f64,
        mask: &KeyMask,
    ) -> CResult<Tensor> {
        if self == OpSet::CpuTrain {
            // One fused op with a backward instead of per-head reshapes and batched small matmuls.
            return grad_ops::attention(q, k, v, heads, scale as f32, mask);
        }
        let (b, nq, d) = q.dims3()?;
        let nk = k.dim(1)?;
        let dh = d / heads;
        // q is scaled before the product, as the official towers do.
        let q = (q * scale)?.reshape((b, nq, heads, dh))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, nk, heads, dh))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, nk, heads, dh))?.transpose(1, 2)?.contiguous()?;
        let scores = mask.apply(q.matmul(&k.t()?)?)?; // [B, H, Nq, Nk]
        let probs = self.softmax_last_dim(&scores)?;
        let o = probs.matmul(&v)?; // [B, H, Nq, Dh]
        o.transpose(1, 2)?.reshape((b, nq, d))
    }
}
