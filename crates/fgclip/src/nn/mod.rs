//! The neural-network pieces shared by both families, layered so that each module only uses the ones above it
//! in this list (no cycles):
//!
//! 1. leaf ops: [`mask`] (attention masks), [`reference`] (candle compositions), [`grad_ops`] (fused CPU ops
//!    with hand-written backward), [`ops`] (the op set a layer computes with), [`interp`], [`roi_align`];
//! 2. layers: [`layers`] (Linear, LayerNorm, activation, MLP) ← [`attention`] ← [`block`] (the pre-LN block),
//!    [`map_head`] (FG-CLIP 2's pooling and dense heads);
//! 3. [`fused`]: the fused CPU inference block, built from a layer;
//! 4. [`encoder`]: a block as the plan built it (fused kernel or layer) and the stack of blocks.

pub mod attention;
pub mod block;
pub mod encoder;
pub mod fused;
pub mod grad_ops;
pub mod interp;
pub mod layers;
pub mod map_head;
pub mod mask;
pub mod ops;
pub mod reference;
pub mod roi_align;

pub use attention::Attention;
pub use block::EncoderLayer;
pub use encoder::{Block, BlockBuild, Encoder};
pub use fused::GemmPrecision;
pub use layers::{Act, LayerNorm, Linear, Mlp};
pub use map_head::MapHead;
pub use mask::KeyMask;
pub use ops::OpSet;

use candle_core::Tensor;

/// L2 normalisation along the last dimension, as the official code does it (`x / x.norm(dim=-1)`, no epsilon).
/// A zero vector stays zero instead of becoming NaN, and so does its gradient.
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let sq = x.sqr()?.sum_keepdim(candle_core::D::Minus1)?;
    // Zero rows (degenerate boxes) divide by 1 rather than 0. The mask goes before the sqrt: masking after it
    // would still send 0 · ∞ = NaN back through sqrt's derivative at 0.
    let safe = sq.eq(0.0)?.where_cond(&sq.ones_like()?, &sq)?;
    x.broadcast_div(&safe.sqrt()?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// A zero row used to give a finite value but a NaN gradient (0 · ∞ through sqrt's derivative).
    #[test]
    fn l2_normalize_zero_row_has_finite_gradient() {
        let x = Var::from_tensor(&Tensor::new(&[[3f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap()).unwrap();
        let y = super::l2_normalize(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!(g.iter().flatten().all(|v| v.is_finite()), "gradient {g:?}");
        // d/dx Σ x/|x| at (3,4): (|x|² − x·Σx)/|x|³ = (25 − 7·3)/125, (25 − 7·4)/125.
        assert!((g[0][0] - 4.0 / 125.0).abs() < 1e-6 && (g[0][1] + 3.0 / 125.0).abs() < 1e-6, "{g:?}");
    }
}
