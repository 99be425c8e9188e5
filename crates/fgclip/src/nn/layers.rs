//! The leaf layers shared by both families: Linear, LayerNorm, the activation and the MLP. Each holds its
//! weights under the checkpoint's names and the [`OpSet`] it was built with; none knows about the fused paths.

use candle_core::{Result as CResult, Tensor};

use super::ops::OpSet;
use crate::checkpoint::Weights;
use crate::config::Activation;
use crate::Result;

/// `y = x Wᵀ + b` with PyTorch's `[out, in]` weight layout.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub ops: OpSet,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>, ops: OpSet) -> Self {
        Self { weight, bias, ops }
    }

    pub fn load(w: &Weights, in_dim: usize, out_dim: usize, bias: bool, ops: OpSet) -> Result<Self> {
        let weight = w.get((out_dim, in_dim), "weight")?;
        let bias = if bias { Some(w.get(out_dim, "bias")?) } else { None };
        Ok(Self { weight, bias, ops })
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        // Flatten leading dims so one GEMM does the whole batch.
        let mut dims = x.dims().to_vec();
        let Some(&in_dim) = dims.last() else { candle_core::bail!("linear: input has no dimensions") };
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = self.ops.linear(&x.reshape((rows, in_dim))?, &self.weight, self.bias.as_ref())?;
        *dims.last_mut().unwrap() = self.weight.dim(0)?;
        y.reshape(dims)
    }
}

/// LayerNorm over the last dimension.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
    pub ops: OpSet,
}

impl LayerNorm {
    pub fn load(w: &Weights, dim: usize, eps: f64, ops: OpSet) -> Result<Self> {
        Ok(Self { weight: w.get(dim, "weight")?, bias: w.get(dim, "bias")?, eps, ops })
    }

    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        self.ops.layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// Activation as named in `config.json`.
#[derive(Clone, Copy, Debug)]
pub struct Act {
    pub kind: Activation,
    pub ops: OpSet,
}

impl Act {
    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        match self.kind {
            Activation::QuickGelu => self.ops.quick_gelu(x),
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
    pub fn load(w: &Weights, dim: usize, hidden: usize, act: Activation, ops: OpSet) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(&w.pp("fc1"), dim, hidden, true, ops)?,
            fc2: Linear::load(&w.pp("fc2"), hidden, dim, true, ops)?,
            act: Act { kind: act, ops },
        })
    }

    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// The three op sets compute the same LayerNorm.
    #[test]
    fn layer_norm_agrees_across_op_sets() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (4, 7, 96), &dev).unwrap();
        let ln = |ops| LayerNorm {
            weight: Tensor::randn(1f32, 0.2, 96, &dev).unwrap(),
            bias: Tensor::randn(0f32, 0.1, 96, &dev).unwrap(),
            eps: 1e-5,
            ops,
        };
        let reference = ln(OpSet::Composed);
        for ops in [OpSet::Inference, OpSet::CpuTrain] {
            let other = LayerNorm { ops, ..reference.clone() };
            let d = max_diff(&other.forward(&x).unwrap(), &reference.forward(&x).unwrap());
            assert!(d < 1e-5, "{ops:?}: {d}");
        }
    }

    /// The training op sets give gradients to weight, bias and input.
    #[test]
    fn layer_norm_has_gradients() {
        let dev = Device::Cpu;
        for ops in [OpSet::Composed, OpSet::CpuTrain] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 8), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(1f32, 0.2, 8, &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.1, 8, &dev).unwrap()).unwrap();
            let ln = LayerNorm { weight: w.as_tensor().clone(), bias: b.as_tensor().clone(), eps: 1e-5, ops };
            let y = ln.forward(x.as_tensor()).unwrap();
            let loss = (y.sqr().unwrap() * 0.5).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            for t in [x.as_tensor(), w.as_tensor(), b.as_tensor()] {
                let s: f32 = g.get(t).expect("gradient").abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
                assert!(s > 0.0, "{ops:?}");
            }
        }
    }
}
