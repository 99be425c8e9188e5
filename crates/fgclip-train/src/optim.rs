//! AdamW with the official trainers' parameter groups, and the warmup + cosine schedule (docs/losses.md#fg-clip-objective, docs/losses.md#fg-clip-2-objective).
//!
//! Groups (both trainers): a parameter gets weight decay unless it belongs to a LayerNorm module or its name
//! contains "bias" — so embeddings, logit scales and probes *are* decayed, as in the official runs. Update rule =
//! `torch.optim.AdamW` (decoupled decay `p ← p·(1 − lr·wd)`, bias-corrected moments). Moments are kept in f32 and
//! saved with checkpoints so a resumed run continues bit-for-bit on the CPU.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{backprop::GradStore, CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Tensor, Var};
use rayon::prelude::*;

use crate::error::{Result, TrainError};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// FG-CLIP stage 2 (`scripts/train.sh`, HF defaults): β = (0.9, 0.999), ε = 1e-8, wd 0.001, lr 1e-6.
    pub fn fgclip() -> Self {
        Self { lr: 1e-6, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.001 }
    }
    /// FG-CLIP 2 stage 2 (`stage2_fgclip2.sh`): β = (0.9, 0.98), ε = 1e-6, wd 0.001, lr 1e-6.
    pub fn fgclip2() -> Self {
        Self { lr: 1e-6, beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.001 }
    }
}

/// Whether the official grouping decays this parameter.
pub fn decays(name: &str) -> bool {
    // CLIP spells one of them `pre_layrnorm`.
    let in_layer_norm = name.contains("layer_norm") || name.contains("layernorm") || name.contains("layrnorm");
    !in_layer_norm && !name.contains("bias")
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

pub struct AdamW {
    slots: Vec<Slot>,
    pub cfg: AdamWConfig,
    /// Updates applied so far (bias correction uses step + 1).
    pub step: usize,
}

impl AdamW {
    /// Optimises `vars` (name, var), in the given order.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                // Two allocations: the update writes the moments in place, so they must not share storage.
                let m = Tensor::zeros(var.dims(), DType::F32, var.device())?;
                let v = Tensor::zeros(var.dims(), DType::F32, var.device())?;
                Ok(Slot { decay: decays(&name), name, m, v, var })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { slots, cfg, step: 0 })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// One update at learning rate `lr` with the gradients in `grads` (parameters without a gradient are left
    /// alone, as torch does for `grad is None`). `grad_scale` multiplies every gradient first (1/accumulation).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step_with(grads, lr, grad_scale, true)
    }

    /// [`step`](Self::step); `in_place = false` forces the tensor-op form that non-CPU devices use (tests
    /// compare the two).
    fn step_with(&mut self, grads: &GradStore, lr: f64, grad_scale: f64, in_place: bool) -> Result<()> {
        let c = self.cfg;
        let t = (self.step + 1) as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else { continue };
            let wd = if s.decay { c.weight_decay } else { 0.0 };
            let p = s.var.as_tensor();
            if in_place && p.device().is_cpu() && p.dtype() == DType::F32 && p.is_contiguous() {
                // In place, three passes, no allocation (the tensor-op form below makes ~12 allocating passes
                // over every parameter; for FG-CLIP-base that is several GB of memory traffic per update).
                let g = g.to_dtype(DType::F32)?.contiguous()?;
                let moments = Moments { beta1: c.beta1 as f32, beta2: c.beta2 as f32, grad_scale: grad_scale as f32 };
                s.m.inplace_op2(&g, &MomentOp { m: moments, second: false })?;
                s.v.inplace_op2(&g, &MomentOp { m: moments, second: true })?;
                let upd = Update {
                    lr: lr as f32,
                    decay: (1.0 - lr * wd) as f32,
                    bc1: bc1 as f32,
                    bc2: bc2 as f32,
                    eps: c.eps as f32,
                };
                p.inplace_op3(&s.m, &s.v, &upd)?;
                continue;
            }
            let g = if grad_scale != 1.0 { (g.to_dtype(DType::F32)? * grad_scale)? } else { g.to_dtype(DType::F32)? };
            let m = ((&s.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + c.eps)?;
            let upd = ((&m / bc1)? / denom)?;
            let p = s.var.as_tensor().to_dtype(DType::F32)?;
            let p = if wd != 0.0 { (p * (1.0 - lr * wd))? } else { p };
            let p = (p - (upd * lr)?)?;
            s.var.set(&p.to_dtype(s.var.dtype())?)?;
            s.m = m;
            s.v = v;
        }
        self.step += 1;
        Ok(())
    }

    /// Moments by `<name>.exp_avg` / `<name>.exp_avg_sq`, plus the step count, for checkpoints.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut ts: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            ts.insert(format!("{}.exp_avg", s.name), s.m.to_device(&Device::Cpu)?);
            ts.insert(format!("{}.exp_avg_sq", s.name), s.v.to_device(&Device::Cpu)?);
        }
        ts.insert("__step__".into(), Tensor::new(&[self.step as u32], &Device::Cpu)?);
        let tmp = path.with_extension("tmp");
        candle_core::safetensors::save(&ts, &tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let err = |msg: String| TrainError::Checkpoint { path: path.into(), msg };
        let ts = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| err(e.to_string()))?;
        for s in &mut self.slots {
            for (suffix, dst) in [("exp_avg", &mut s.m), ("exp_avg_sq", &mut s.v)] {
                let key = format!("{}.{suffix}", s.name);
                let t = ts.get(&key).ok_or_else(|| err(format!("optimizer state `{key}` is missing")))?;
                if t.dims() != s.var.dims() {
                    return Err(err(format!(
                        "optimizer state `{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        s.var.dims()
                    )));
                }
                *dst = t.to_device(s.var.device())?;
            }
        }
        let step = ts.get("__step__").ok_or_else(|| err("optimizer step count is missing".into()))?;
        self.step = step.to_vec1::<u32>()?[0] as usize;
        Ok(())
    }
}

use fgclip::nn::grad_ops::{f32_slice, f32_slice_mut};

/// Elements per parallel chunk of the in-place updates.
const CHUNK: usize = 1 << 16;

#[derive(Clone, Copy)]
struct Moments {
    beta1: f32,
    beta2: f32,
    grad_scale: f32,
}

/// `m ← β1·m + (1−β1)·g` or (second) `v ← β2·v + (1−β2)·g²`, in place, `g` already scaled by `grad_scale`.
struct MomentOp {
    m: Moments,
    second: bool,
}

impl InplaceOp2 for MomentOp {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, g_l: &Layout) -> candle_core::Result<()> {
        let dst = f32_slice_mut(dst, dst_l, "AdamW moment")?;
        let g = f32_slice(g, g_l, "AdamW gradient")?;
        if g.len() != dst.len() {
            candle_core::bail!("AdamW: gradient has {} elements, the moment {}", g.len(), dst.len());
        }
        let Moments { beta1, beta2, grad_scale } = self.m;
        let second = self.second;
        dst.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(d, g)| {
            for (d, &g) in d.iter_mut().zip(g) {
                let g = g * grad_scale;
                *d = if second { *d * beta2 + g * g * (1.0 - beta2) } else { *d * beta1 + g * (1.0 - beta1) };
            }
        });
        Ok(())
    }
}

/// `p ← p·(1 − lr·wd) − lr · (m/bc1) / (√(v/bc2) + ε)`, in place.
struct Update {
    lr: f32,
    decay: f32,
    bc1: f32,
    bc2: f32,
    eps: f32,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        m_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> candle_core::Result<()> {
        let p = f32_slice_mut(dst, dst_l, "AdamW parameter")?;
        let m = f32_slice(m, m_l, "AdamW first moment")?;
        let v = f32_slice(v, v_l, "AdamW second moment")?;
        if m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!("AdamW: moments do not match the parameter's {} elements", p.len());
        }
        p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK))).for_each(|(p, (m, v))| {
            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                let upd = (m / self.bc1) / ((v / self.bc2).sqrt() + self.eps);
                *p = *p * self.decay - upd * self.lr;
            }
        });
        Ok(())
    }
}

/// Learning-rate schedule: linear warmup from 0, then cosine decay to 0 (HF `get_cosine_schedule_with_warmup`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// The learning rate of update number `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_groups_follow_the_official_rule() {
        assert!(decays("vision_model.encoder.layers.0.mlp.fc1.weight"));
        assert!(decays("text_model.embeddings.token_embedding.weight"));
        assert!(decays("logit_scale"));
        assert!(!decays("vision_model.encoder.layers.0.mlp.fc1.bias"));
        assert!(!decays("vision_model.pre_layrnorm.weight"));
        assert!(!decays("text_model.final_layer_norm.weight"));
        assert!(!decays("vision_model.head.layernorm.weight"));
    }

    /// One step against torch.optim.AdamW worked by hand: p=1, g=0.5, lr=0.1, wd=0.01 →
    /// p·(1−lr·wd) = 0.999, m̂ = 0.5, v̂ = 0.25, p − lr·m̂/(√v̂+ε) = 0.899; a bias gets no decay: 0.9.
    #[test]
    fn one_step_matches_torch_adamw() {
        let dev = Device::Cpu;
        let w = Var::new(&[1f32], &dev).unwrap();
        let b = Var::new(&[1f32], &dev).unwrap();
        let cfg = AdamWConfig { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        let mut opt = AdamW::new(vec![("fc.weight".into(), w.clone()), ("fc.bias".into(), b.clone())], cfg).unwrap();
        let loss = ((w.as_tensor() * 0.5).unwrap() + (b.as_tensor() * 0.5).unwrap()).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.1, 1.0).unwrap();
        let wv = w.as_tensor().to_vec1::<f32>().unwrap()[0];
        let bv = b.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((wv - 0.899).abs() < 1e-6, "{wv}");
        assert!((bv - 0.9).abs() < 1e-6, "{bv}");
    }

    /// The in-place CPU update equals the tensor-op form (used on other devices) over several steps, with
    /// accumulation scaling and both decay groups.
    #[test]
    fn in_place_update_equals_tensor_op_form() {
        let dev = Device::Cpu;
        let cfg = AdamWConfig { lr: 0.01, beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.1 };
        let init = Tensor::randn(0f32, 1.0, (70_000,), &dev).unwrap();
        let run = |in_place: bool| -> Vec<f32> {
            let w = Var::from_tensor(&init.copy().unwrap()).unwrap();
            let b = Var::from_tensor(&init.narrow(0, 0, 100).unwrap().copy().unwrap()).unwrap();
            let mut opt =
                AdamW::new(vec![("fc.weight".into(), w.clone()), ("fc.bias".into(), b.clone())], cfg).unwrap();
            for step in 0..4 {
                let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap()
                    + b.as_tensor().sin().unwrap().sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                opt.step_with(&grads, 0.01 * (step + 1) as f64, 0.5, in_place).unwrap();
            }
            let mut out = w.as_tensor().to_vec1::<f32>().unwrap();
            out.extend(b.as_tensor().to_vec1::<f32>().unwrap());
            out
        };
        let (a, b) = (run(true), run(false));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "in-place vs tensor ops: {worst}");
    }

    #[test]
    fn warmup_then_cosine_to_zero() {
        let s = Schedule { base_lr: 1.0, warmup_steps: 4, total_steps: 14 };
        assert_eq!(s.lr(0), 0.0);
        assert_eq!(s.lr(2), 0.5);
        assert_eq!(s.lr(4), 1.0);
        assert!((s.lr(9) - 0.5).abs() < 1e-12);
        assert!(s.lr(14).abs() < 1e-12);
    }
}
