//! Forms built from candle's differentiable ops alone: the reference the fused ops are tested against, and the
//! `Composed` op set's implementation (any device, with gradients).

use candle_core::{Result as CResult, Tensor, D};

/// LayerNorm from candle's differentiable ops.
pub fn layer_norm_composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> CResult<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    y.broadcast_mul(w)?.broadcast_add(b)
}
