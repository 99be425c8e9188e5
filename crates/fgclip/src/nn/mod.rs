//! Layers shared by both families. Everything here is built from differentiable candle ops so the same
//! code trains; where candle has a faster fused kernel without a gradient, it is used only when no tensor
//! involved is tracked by autograd (see [`tracked`]), and a test checks both paths agree.

pub mod attention;
pub mod fast;
pub mod interp;
pub mod layers;
pub mod map_head;
pub mod roi_align;

pub use attention::{Attention, KeyMask};
pub use layers::{Act, BlockDims, Encoder, EncoderLayer, LayerNorm, Linear, Mlp};
pub use map_head::MapHead;

use candle_core::Tensor;

/// True when autograd would record an op on any of `ts`.
pub fn tracked(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op())
}

/// L2 normalisation along the last dimension, as the official code does it (`x / x.norm(dim=-1)`, no epsilon).
/// A zero vector stays zero instead of becoming NaN.
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(candle_core::D::Minus1)?.sqrt()?;
    // Zero rows (degenerate boxes) divide by 1 rather than 0: a defined result, never NaN.
    let safe = norm.eq(0.0)?.where_cond(&norm.ones_like()?, &norm)?;
    x.broadcast_div(&safe)
}
