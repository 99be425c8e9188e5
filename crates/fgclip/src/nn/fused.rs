//! The fused CPU inference block: a whole pre-LN encoder block as one custom op over f32 slices, built from the
//! layers of `block.rs` / `map_head.rs` by the execution plan (the layers do not know about it).
//!
//! Stock candle spends most of a ViT block outside its GEMMs (head reshapes and copies, separate bias,
//! activation and residual passes, a spinning thread barrier per elementwise op — docs/candle-notes.md). Here a block is
//! LayerNorm → one fused QKV GEMM → our fused attention kernel (reads heads straight out of the QKV buffer) →
//! out-projection GEMM with the residual add fused into its store → LayerNorm → fc1 GEMM with bias+activation
//! fused → fc2 GEMM with the residual fused. GEMMs run in f32 (the `gemm` crate, same as candle's) or, in bf16
//! mode, through our AVX512-BF16 kernel with f32 accumulation.
//!
//! Inference only, on the CPU: the plan builds it for CPU inference models; training and other devices run the
//! layers themselves, which this must match (tested in `tests/fast_path.rs`).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result as CResult, Shape, Tensor};
use fgclip_kernels::attention::{attention_with, AttnMask, AttnShape};
use fgclip_kernels::cpu::Isa;
use fgclip_kernels::gemm::{linear_bf16_with, Epilogue, Kernel, PackedBf16};
use rayon::prelude::*;

use super::attention::Attention;
use super::block::EncoderLayer;
use super::layers::{LayerNorm, Linear};
use super::map_head::MapHead;
use super::mask::KeyMask;

use crate::config::Activation;

/// GEMM precision of the fused path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPrecision {
    /// f32 everywhere: the parity reference.
    F32,
    /// bf16 weights and GEMM inputs, f32 accumulation and everything else f32.
    Bf16,
}

/// A Linear layer's weights prepared for the fused path.
enum FusedWeight {
    /// The model's own `[n_out, k]` f32 tensor, read in place (no second copy of the weights).
    F32(Tensor),
    Bf16(PackedBf16),
}

impl std::fmt::Debug for FusedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FusedWeight::F32(t) => write!(f, "F32{:?}", t.dims()),
            FusedWeight::Bf16(p) => write!(f, "Bf16[{}, {}]", p.n_out(), p.k()),
        }
    }
}

#[derive(Debug)]
pub struct FusedLinear {
    w: FusedWeight,
    bias: Vec<f32>,
    n_out: usize,
    k: usize,
    isa: Isa,
}

fn to_vec(t: &Tensor) -> CResult<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()
}

/// What to do with `x·Wᵀ` when storing it.
#[derive(Clone, Copy)]
pub enum Epi<'a> {
    Bias,
    BiasAct(Activation),
    BiasResidual(&'a [f32]),
}

/// Where a GEMM writes: `out[r·stride + off + j]`.
pub struct OutView<'a> {
    pub data: &'a mut [f32],
    pub stride: usize,
    pub off: usize,
}

impl FusedLinear {
    pub fn new(l: &Linear, precision: GemmPrecision, isa: Isa) -> CResult<Self> {
        let (n_out, k) = l.weight.dims2()?;
        let bias = match &l.bias {
            Some(b) => to_vec(b)?,
            None => vec![0.0; n_out],
        };
        let w = match precision {
            GemmPrecision::F32 => FusedWeight::F32(l.weight.to_dtype(candle_core::DType::F32)?.contiguous()?),
            GemmPrecision::Bf16 => FusedWeight::Bf16(PackedBf16::from_f32(&to_vec(&l.weight)?, n_out, k)),
        };
        Ok(Self { w, bias, n_out, k, isa })
    }

    /// Several layers' outputs side by side (q, k, v → one QKV GEMM); used for packed bf16 weights, where the
    /// packing is a new copy anyway.
    pub fn concat(ls: &[&Linear], precision: GemmPrecision, isa: Isa) -> CResult<Self> {
        let w = Tensor::cat(&ls.iter().map(|l| l.weight.clone()).collect::<Vec<_>>(), 0)?;
        let mut bias = vec![];
        for l in ls {
            bias.push(match &l.bias {
                Some(b) => b.clone(),
                None => Tensor::zeros(l.weight.dim(0)?, l.weight.dtype(), l.weight.device())?,
            });
        }
        Self::new(&Linear::new(w, Some(Tensor::cat(&bias, 0)?), ls[0].ops), precision, isa)
    }

    pub fn n_out(&self) -> usize {
        self.n_out
    }

    /// `out[m, n_out] = epi(x[m, k] · Wᵀ)`, dense output.
    pub fn forward(&self, x: &[f32], m: usize, epi: Epi, out: &mut [f32]) -> CResult<()> {
        let n = self.n_out;
        self.forward_into(x, m, epi, OutView { data: out, stride: n, off: 0 })
    }

    /// Same, writing into columns `[off, off + n_out)` of rows of width `stride`.
    pub fn forward_into(&self, x: &[f32], m: usize, epi: Epi, out: OutView) -> CResult<()> {
        let (n, k) = (self.n_out, self.k);
        if x.len() != m * k || out.data.len() < m * out.stride || out.off + n > out.stride {
            candle_core::bail!("fused linear: bad sizes (m {m}, k {k}, n {n})");
        }
        match &self.w {
            FusedWeight::Bf16(p) => {
                if out.stride != n {
                    candle_core::bail!("fused linear: bf16 GEMM writes dense rows");
                }
                let e = match epi {
                    Epi::Bias => Epilogue::Bias(&self.bias),
                    Epi::BiasAct(Activation::GeluTanh) => Epilogue::BiasGeluTanh(&self.bias),
                    Epi::BiasAct(Activation::QuickGelu) => Epilogue::BiasQuickGelu(&self.bias),
                    Epi::BiasAct(Activation::Gelu) => candle_core::bail!("fused path: erf GELU is not supported"),
                    Epi::BiasResidual(r) => Epilogue::BiasResidual(&self.bias, r),
                };
                linear_bf16_with(Kernel::for_isa(self.isa), x, m, p, e, out.data);
            }
            FusedWeight::F32(w) => {
                let (st, layout) = w.storage_and_layout();
                let w: &[f32] = match (&*st, layout.contiguous_offsets()) {
                    (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => &v[a..b],
                    _ => candle_core::bail!("fused linear: weights must be contiguous f32 on the CPU"),
                };
                // SAFETY: x is [m, k] row-major; w is [n, k] row-major, read as its transpose [k, n] (row stride 1,
                // column stride k); out rows have `stride` ≥ off + n columns and m rows (checked above).
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out.data.as_mut_ptr().add(out.off),
                        1,
                        out.stride as isize,
                        false,
                        x.as_ptr(),
                        1,
                        k as isize,
                        w.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(rayon::current_num_threads()),
                    );
                }
                drop(st);
                // One pass over the output applies bias, activation and residual together.
                let (bias, stride, off) = (&self.bias, out.stride, out.off);
                const ROWS: usize = 16;
                out.data[..m * stride].par_chunks_mut(stride * ROWS).enumerate().for_each(|(ci, chunk)| {
                    for (ri, row) in chunk.chunks_mut(stride).enumerate() {
                        let row = &mut row[off..off + n];
                        match epi {
                            Epi::Bias => row.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
                            Epi::BiasAct(a) => {
                                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                                act_inplace(a, row);
                            }
                            Epi::BiasResidual(res) => {
                                let r0 = (ci * ROWS + ri) * n;
                                row.iter_mut().zip(bias).zip(&res[r0..r0 + n]).for_each(|((v, b), r)| *v = r + (*v + b))
                            }
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

/// Vectorised activations (libm's scalar `tanhf` cost ~16% of an f32 block).
fn act_inplace(a: Activation, row: &mut [f32]) {
    match a {
        Activation::GeluTanh => fgclip_kernels::activation::gelu_tanh_inplace(row),
        Activation::QuickGelu => fgclip_kernels::activation::quick_gelu_inplace(row),
        // FusedBlock::new refuses erf-GELU models, so this is never reached.
        Activation::Gelu => {}
    }
}

thread_local! {
    /// Scratch buffers reused across blocks and calls: fresh multi-megabyte allocations come back from the
    /// kernel as zeroed pages, and clearing them cost ~11% of an f32 block.
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A scratch buffer of exactly `len` floats (contents unspecified: every user overwrites it fully).
fn take(len: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        match s.iter().position(|b| b.len() == len) {
            Some(i) => s.swap_remove(i),
            None => s.pop().unwrap_or_default(),
        }
    });
    v.resize(len, 0.0);
    v
}

fn give(v: Vec<f32>) {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < 8 {
            s.push(v);
        }
    });
}

/// LayerNorm over rows of width `d` (the shared row kernel, 8 rows per parallel task).
pub fn layer_norm_rows(x: &[f32], d: usize, w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(w.len(), d);
    fgclip_kernels::norm::layer_norm_rows(x, w, b, eps, out, 8);
}

/// An encoder block's weights prepared for the fused path.
#[derive(Debug)]
pub struct FusedBlock {
    /// `None` for FG-CLIP 2's dense head, which attends over its input directly and has no residual around
    /// the attention (`h = attn(x); h = h + mlp(ln(h))`).
    ln1: Option<(Vec<f32>, Vec<f32>, f32)>,
    ln2: (Vec<f32>, Vec<f32>, f32),
    /// f32: q, k, v GEMMs writing into one `[m, 3d]` buffer; bf16: one fused GEMM.
    qkv: Vec<FusedLinear>,
    out_proj: FusedLinear,
    fc1: FusedLinear,
    fc2: FusedLinear,
    act: Activation,
    heads: usize,
    head_dim: usize,
    dim: usize,
    bf16: bool,
    isa: Isa,
}

/// q, k, v projections: three GEMMs writing into one strided buffer in f32 (reading the model's weights in
/// place), one fused GEMM over packed weights in bf16 (the packing is a new copy anyway).
fn qkv_linears(a: &Attention, precision: GemmPrecision, isa: Isa) -> CResult<Vec<FusedLinear>> {
    Ok(match precision {
        GemmPrecision::F32 => vec![
            FusedLinear::new(&a.q_proj, precision, isa)?,
            FusedLinear::new(&a.k_proj, precision, isa)?,
            FusedLinear::new(&a.v_proj, precision, isa)?,
        ],
        GemmPrecision::Bf16 => vec![FusedLinear::concat(&[&a.q_proj, &a.k_proj, &a.v_proj], precision, isa)?],
    })
}

fn ln_parts(l: &LayerNorm) -> CResult<(Vec<f32>, Vec<f32>, f32)> {
    Ok((to_vec(&l.weight)?, to_vec(&l.bias)?, l.eps as f32))
}

impl FusedBlock {
    /// A pre-LN encoder block; `None` for blocks the fused path does not cover (erf GELU).
    pub fn new(l: &EncoderLayer, precision: GemmPrecision, isa: Isa) -> CResult<Option<Self>> {
        Self::build(Some(&l.layer_norm1), &l.self_attn, &l.layer_norm2, &l.mlp, precision, isa)
    }

    /// FG-CLIP 2's dense feature head (`MapHead::dense`) in the same kernels.
    pub fn from_map_head(h: &MapHead, precision: GemmPrecision, isa: Isa) -> CResult<Option<Self>> {
        Self::build(None, &h.attention, &h.layernorm, &h.mlp, precision, isa)
    }

    fn build(
        ln1: Option<&LayerNorm>,
        a: &Attention,
        ln2: &LayerNorm,
        mlp: &super::layers::Mlp,
        precision: GemmPrecision,
        isa: Isa,
    ) -> CResult<Option<Self>> {
        if mlp.act.kind == Activation::Gelu {
            return Ok(None);
        }
        Ok(Some(Self {
            ln1: ln1.map(ln_parts).transpose()?,
            ln2: ln_parts(ln2)?,
            qkv: qkv_linears(a, precision, isa)?,
            out_proj: FusedLinear::new(&a.out_proj, precision, isa)?,
            fc1: FusedLinear::new(&mlp.fc1, precision, isa)?,
            fc2: FusedLinear::new(&mlp.fc2, precision, isa)?,
            act: mlp.act.kind,
            heads: a.num_heads,
            head_dim: a.head_dim,
            dim: a.num_heads * a.head_dim,
            bf16: precision == GemmPrecision::Bf16,
            isa,
        }))
    }

    /// Runs the block on a `[b, n, d]` f32 CPU tensor.
    pub fn forward(self: &Arc<Self>, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        let op = FusedBlockOp { block: self, mask: FusedMask::from_key_mask(mask)? };
        x.contiguous()?.apply_op1_no_bwd(&op)
    }

    /// `"f32 GEMM, avx2"`-style summary for `fgclip info`.
    pub fn describe(&self) -> String {
        let gemm = if self.bf16 { "bf16 GEMM" } else { "f32 GEMM" };
        format!("{gemm}, {} kernels", self.isa)
    }

    /// The block on `x` `[b, n, d]` (row-major f32).
    pub fn run(&self, x: &[f32], b: usize, n: usize, mask: &FusedMask) -> CResult<Vec<f32>> {
        let d = self.dim;
        let m = b * n;
        let mut h = take(m * d);
        let attn_in: &[f32] = match &self.ln1 {
            Some((w, b, eps)) => {
                layer_norm_rows(x, d, w, b, *eps, &mut h);
                &h
            }
            None => x,
        };
        let mut qkv = take(m * 3 * d);
        if let [fused] = self.qkv.as_slice() {
            fused.forward(attn_in, m, Epi::Bias, &mut qkv)?;
        } else {
            for (i, l) in self.qkv.iter().enumerate() {
                l.forward_into(attn_in, m, Epi::Bias, OutView { data: &mut qkv, stride: 3 * d, off: i * d })?;
            }
        }
        let shape = AttnShape { batch: b, q_len: n, kv_len: n, heads: self.heads, head_dim: self.head_dim };
        let scale = (self.head_dim as f32).powf(-0.5);
        // bf16 mode also takes bf16 products inside attention (f32 softmax and accumulation).
        attention_with(
            self.isa,
            self.bf16,
            &qkv,
            3 * d,
            0,
            &qkv,
            3 * d,
            d,
            &qkv,
            3 * d,
            2 * d,
            &shape,
            scale,
            mask.as_attn(),
            &mut h,
        );
        let mut x1 = take(m * d);
        let epi = if self.ln1.is_some() { Epi::BiasResidual(x) } else { Epi::Bias };
        self.out_proj.forward(&h, m, epi, &mut x1)?;
        layer_norm_rows(&x1, d, &self.ln2.0, &self.ln2.1, self.ln2.2, &mut h);
        let mut f = take(m * self.fc1.n_out());
        self.fc1.forward(&h, m, Epi::BiasAct(self.act), &mut f)?;
        let mut x2 = vec![0f32; m * d];
        self.fc2.forward(&f, m, Epi::BiasResidual(&x1), &mut x2)?;
        for buf in [h, qkv, x1, f] {
            give(buf);
        }
        Ok(x2)
    }
}

/// The attention mask in host form.
#[derive(Debug, Clone)]
pub enum FusedMask {
    None,
    Causal,
    /// `[b, n]` additive key bias.
    KeyBias(Vec<f32>),
}

impl FusedMask {
    pub fn from_key_mask(m: &KeyMask) -> CResult<Self> {
        Ok(match m {
            KeyMask::None => FusedMask::None,
            KeyMask::Causal => FusedMask::Causal,
            KeyMask::Keys(t) => FusedMask::KeyBias(to_vec(t)?),
        })
    }

    fn as_attn(&self) -> AttnMask<'_> {
        match self {
            FusedMask::None => AttnMask::None,
            FusedMask::Causal => AttnMask::Causal,
            FusedMask::KeyBias(v) => AttnMask::KeyBias(v),
        }
    }
}

/// candle custom op running a [`FusedBlock`] on a CPU tensor.
pub struct FusedBlockOp<'a> {
    pub block: &'a Arc<FusedBlock>,
    pub mask: FusedMask,
}

impl CustomOp1 for FusedBlockOp<'_> {
    fn name(&self) -> &'static str {
        "fgclip-fused-block"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (b, n, d) = layout.shape().dims3()?;
        if d != self.block.dim {
            candle_core::bail!("fused block: width {d}, expected {}", self.block.dim);
        }
        let data = match storage {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("fused block: f32 input expected"),
        };
        let x = match layout.contiguous_offsets() {
            Some((s, e)) => &data[s..e],
            None => candle_core::bail!("fused block: contiguous input expected"),
        };
        let y = self.block.run(x, b, n, &self.mask)?;
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }
}
