//! Which keys a query may attend to, in the additive form the official towers use: padding keys get
//! `finfo(dtype).min` rather than −inf (a fully masked row then stays finite, as in PyTorch; see
//! `docs/models.md`).

use candle_core::{DType, Device, Result as CResult, Tensor};

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

    /// `scores` `[B, H, Nq, Nk]` with the mask added.
    pub fn apply(&self, scores: Tensor) -> CResult<Tensor> {
        match self {
            KeyMask::None => Ok(scores),
            KeyMask::Causal => {
                let nk = scores.dim(candle_core::D::Minus1)?;
                scores.broadcast_add(&KeyMask::causal_bias(nk, scores.dtype(), scores.device())?)
            }
            KeyMask::Keys(bias) => scores.broadcast_add(bias),
        }
    }
}
