//! Linear, LayerNorm (with gradient), activations, the MLP and the pre-LN transformer block shared by the
//! CLIP and SigLIP 2 towers (HF `CLIPEncoderLayer` / `Siglip2EncoderLayer`: identical structure and names).

use candle_core::{Module, Result as CResult, Tensor, D};

use super::attention::{Attention, KeyMask};
use crate::checkpoint::Weights;
use crate::config::Activation;
use crate::Result;

/// `y = x Wᵀ + b` with PyTorch's `[out, in]` weight layout.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get((out_dim, in_dim), "weight")?;
        let bias = if bias { Some(w.get(out_dim, "bias")?) } else { None };
        Ok(Self { weight, bias })
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        // Flatten leading dims so one GEMM does the whole batch.
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("linear input has a last dim");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, in_dim))?;
        let mut params = vec![x, &self.weight];
        params.extend(self.bias.as_ref());
        let y = if super::tracked(&params) && super::grad_ops::usable(&params) {
            // Training on the CPU: bias in the GEMM, a direct backward (grad_ops).
            super::grad_ops::linear(&x2, &self.weight, self.bias.as_ref())?
        } else {
            let y = x2.matmul(&self.weight.t()?)?;
            match &self.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            }
        };
        let mut out = dims;
        *out.last_mut().unwrap() = self.weight.dim(0)?;
        y.reshape(out)
    }
}

/// LayerNorm over the last dimension. The composed form keeps gradients for input, weight and bias (candle's
/// fused `layer_norm` has none — stack notes); the fused kernel is used only when nothing is tracked.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: w.get(dim, "weight")?, bias: w.get(dim, "bias")?, eps })
    }

    /// The differentiable composition (also the reference for the fused path's test).
    pub fn forward_composed(&self, x: &Tensor) -> CResult<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        y.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        if super::tracked(&[x, &self.weight, &self.bias]) {
            if super::grad_ops::usable(&[x, &self.weight, &self.bias]) {
                super::grad_ops::layer_norm(x, &self.weight, &self.bias, self.eps)
            } else {
                self.forward_composed(x)
            }
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

/// Activation as named in `config.json`.
#[derive(Clone, Copy, Debug)]
pub struct Act(pub Activation);

impl Module for Act {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        match self.0 {
            Activation::QuickGelu if x.track_op() && super::grad_ops::usable(&[x]) => super::grad_ops::quick_gelu(x),
            Activation::QuickGelu => x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?),
            Activation::GeluTanh => x.gelu(),
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub act: Act,
}

impl Mlp {
    pub fn load(w: &Weights, dim: usize, hidden: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(&w.pp("fc1"), dim, hidden, true)?,
            fc2: Linear::load(&w.pp("fc2"), hidden, dim, true)?,
            act: Act(act),
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
    }
}

/// Pre-LN block: `x += attn(ln1(x)); x += mlp(ln2(x))`.
#[derive(Clone, Debug)]
pub struct EncoderLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: Attention,
    pub layer_norm2: LayerNorm,
    pub mlp: Mlp,
    /// The CPU inference fast path for this block, when enabled (see `nn::fast`).
    pub fast: Option<std::sync::Arc<super::fast::FastBlock>>,
    /// Set when the f32 Linear weights were dropped after packing them for the bf16 fast path (keeps one copy
    /// of the weights in memory); the plain path is then unavailable for this block.
    pub f32_released: bool,
}

impl EncoderLayer {
    pub fn load(w: &Weights, dim: usize, heads: usize, inter: usize, act: Activation, eps: f64) -> Result<Self> {
        Ok(Self {
            layer_norm1: LayerNorm::load(&w.pp("layer_norm1"), dim, eps)?,
            self_attn: Attention::load_separate(&w.pp("self_attn"), dim, heads)?,
            layer_norm2: LayerNorm::load(&w.pp("layer_norm2"), dim, eps)?,
            mlp: Mlp::load(&w.pp("mlp"), dim, inter, act)?,
            fast: None,
            f32_released: false,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        if let Some(block) = &self.fast {
            // Same math as below in fused kernels; only for untracked f32 CPU tensors.
            if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && !x.track_op() {
                let op = super::fast::FastBlockOp { block, mask: super::fast::FastMask::from_key_mask(mask)? };
                return x.contiguous()?.apply_op1_no_bwd(&op);
            }
        }
        if self.f32_released {
            candle_core::bail!(
                "this model was loaded for bf16 CPU inference (its f32 weights were released): only untracked f32 CPU \
                 inputs are supported; load it with dtype f32 for other uses"
            );
        }
        let h = self.self_attn.forward(&self.layer_norm1.forward(x)?, mask)?;
        let x = (x + h)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&x)?)?;
        x + h
    }

    /// FG-CLIP's "forward without attention" (official: `fgclip.py` dense path): attention replaced by its
    /// value path, `x += out_proj(v_proj(ln1(x)))`, residuals and MLP kept.
    pub fn forward_value_path(&self, x: &Tensor) -> CResult<Tensor> {
        if self.f32_released {
            candle_core::bail!("the value path needs this block's f32 weights, which were released for bf16 inference");
        }
        let v = self.self_attn.value_path(&self.layer_norm1.forward(x)?)?;
        let x = (x + v)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&x)?)?;
        x + h
    }
}

/// The sizes of a tower's transformer blocks, read from its config (`hidden_size`, `num_hidden_layers`, ...).
#[derive(Clone, Copy, Debug)]
pub struct BlockDims {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub act: Activation,
    pub eps: f64,
}

/// A stack of encoder layers.
#[derive(Clone, Debug)]
pub struct Encoder {
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// `w` is the tower's `encoder` prefix.
    pub fn load(w: &Weights, d: &BlockDims) -> Result<Self> {
        let w = w.pp("layers");
        let layers = (0..d.layers)
            .map(|i| EncoderLayer::load(&w.pp(i), d.hidden, d.heads, d.intermediate, d.act, d.eps))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// Runs every layer; returns the output and the input of the last layer (HF `hidden_states[-2]`).
    pub fn forward_with_penultimate(&self, x: &Tensor, mask: &KeyMask) -> CResult<(Tensor, Tensor)> {
        let mut x = x.clone();
        let mut penultimate = x.clone();
        for layer in &self.layers {
            penultimate = x.clone();
            x = layer.forward(&x, mask)?;
        }
        Ok((x, penultimate))
    }

    /// Prepares (or, with `None`, drops) the CPU inference fast path of every block.
    pub fn set_fast(&mut self, precision: Option<super::fast::GemmPrecision>) -> CResult<()> {
        for l in &mut self.layers {
            if l.f32_released {
                candle_core::bail!("the f32 weights of this encoder were released for bf16 inference");
            }
            l.fast = None;
            if let Some(p) = precision {
                l.fast = super::fast::FastBlock::new(l, p)?.map(std::sync::Arc::new);
            }
        }
        Ok(())
    }

    /// For bf16 CPU inference: packs every block and drops its f32 Linear weights right away, so the peak
    /// memory stays near one copy of the weights (packed bf16 + the rest in f32) instead of 1.5 copies.
    /// `keep_last` keeps the last block's f32 weights (FG-CLIP's dense path re-runs that block's value path).
    pub fn set_fast_bf16_releasing_f32(&mut self, keep_last: bool) -> CResult<()> {
        let n = self.layers.len();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let Some(block) = super::fast::FastBlock::new(l, super::fast::GemmPrecision::Bf16)? else { continue };
            l.fast = Some(std::sync::Arc::new(block));
            if keep_last && i + 1 == n {
                continue;
            }
            let empty = |t: &Tensor| Tensor::zeros(0, t.dtype(), t.device());
            let a = &mut l.self_attn;
            for lin in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.out_proj, &mut l.mlp.fc1, &mut l.mlp.fc2] {
                lin.weight = empty(&lin.weight)?;
            }
            l.f32_released = true;
        }
        Ok(())
    }

    pub fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, mask)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fused kernel (inference) and the composed ops (training) must agree.
    #[test]
    fn fused_and_composed_layer_norm_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (4, 7, 96), &dev).unwrap();
        let ln = LayerNorm {
            weight: Tensor::randn(1f32, 0.2, 96, &dev).unwrap(),
            bias: Tensor::randn(0f32, 0.1, 96, &dev).unwrap(),
            eps: 1e-5,
        };
        let a = ln.forward(&x).unwrap();
        let b = ln.forward_composed(&x).unwrap();
        let d: f32 = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert!(d < 1e-5, "{d}");
    }

    /// With a tracked input the composed path is taken and gradients reach weight, bias and input.
    #[test]
    fn layer_norm_has_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 8), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.2, 8, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.1, 8, &dev).unwrap()).unwrap();
        let ln = LayerNorm { weight: w.as_tensor().clone(), bias: b.as_tensor().clone(), eps: 1e-5 };
        let y = ln.forward(x.as_tensor()).unwrap();
        let loss = (y.sqr().unwrap() * 0.5).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        for t in [x.as_tensor(), w.as_tensor(), b.as_tensor()] {
            let s: f32 = g.get(t).expect("gradient").abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(s > 0.0);
        }
    }
}
