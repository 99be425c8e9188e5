//! Training-path CPU ops with hand-written backward passes: multi-head attention, Linear, LayerNorm, softmax over
//! the last dimension and QuickGELU, each one fused op forward and one backward.
//!
//! Why: composed from candle's elementwise ops, a LayerNorm is ~8 tensor passes forward and ~20 backward, a
//! softmax 5 and ~8, QuickGELU 4 and ~8 — each pass allocating a fresh tensor and (for the small ones) waking the
//! thread pool; attention adds per-head transposes and copies around batched small matmuls. In a ViT training
//! step those passes, not the GEMMs, were most of the time (BENCHMARKS.md, training). The math is the textbook
//! one; `tests` below check value and gradient against the composed ops.
//!
//! Only for f32 CPU tensors: the execution plan picks these ops (`OpSet::CpuTrain`) for CPU training, the
//! composed ops elsewhere. Our own
//! reductions run over fixed-size row chunks summed in order and the GEMMs are the `gemm` crate's (as candle's
//! matmul), so repeated runs give the same bits whatever the scheduling (the trainer's resume test compares runs
//! bit for bit).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use fgclip_kernels::attention::{attention_f32, AttnMask, AttnShape};
// LayerNorm's row arithmetic is the shared kernel's (also used by the fused inference block).
use fgclip_kernels::norm::row_stats;
use rayon::prelude::*;

use super::mask::KeyMask;

/// Rows per parallel task (and per partial sum of the parameter gradients).
const ROWS_PER_TASK: usize = 64;

/// The elements of a contiguous f32 CPU storage as a slice (custom ops' inputs); `what` names it in errors.
pub fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{what}: expected f32 storage") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// [`f32_slice`] for the destination of an in-place op.
pub fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{what}: expected f32 storage") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut v[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Linear: y = x Wᵀ + b
// ---------------------------------------------------------------------------------------------------------

/// `x Wᵀ + b` for `x` `[rows, in]`, `w` `[out, in]` (PyTorch layout), `b` `[out]`: the bias is written first and
/// the GEMM accumulates onto it (no separate broadcast pass), and the backward is three direct products
/// (`dx = g W`, `dW = gᵀ x`, `db = Σ g`) instead of candle's matmul + transpose + broadcast backward chain.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (_, k) = x.dims2()?;
    let (_, kw) = w.dims2()?;
    if k != kw {
        candle_core::bail!("linear: input {:?} does not match weight {:?}", x.dims(), w.dims());
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearOp),
        None => x.apply_op2(&w, LinearOp),
    }
}

struct LinearOp;

/// A row-major f32 matrix view: element (r, c) at `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

fn mat(data: &[f32], rs: usize, cs: usize) -> Mat<'_> {
    Mat { data, rs, cs }
}

/// `dst (m × n, row stride dst_rs) = [dst +] beta · lhs (m × k) · rhs (k × n)` through the `gemm` crate, on the
/// rayon pool (`parallel`) or on this thread (called per attention head, in parallel over heads). `accumulate`
/// keeps dst's values. Every element the shapes and strides reach must be in bounds (asserted).
#[allow(clippy::too_many_arguments)]
fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    beta: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rs: usize, cs: usize, r: usize, c: usize| (r - 1) * rs + (c - 1) * cs;
    assert!(last(dst_rs, 1, m, n) < dst.len(), "gemm_strided: dst too short");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        last(lhs.rs, lhs.cs, m, k) < lhs.data.len() && last(rhs.rs, rhs.cs, k, n) < rhs.data.len(),
        "gemm_strided: operand too short"
    );
    let par = if parallel { gemm::Parallelism::Rayon(rayon::current_num_threads()) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every element the strides reach inside the slices; dst does not alias them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            par,
        );
    }
}

impl LinearOp {
    fn fwd(&self, x: &[f32], xl: &Layout, w: &[f32], wl: &Layout, b: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = xl.shape().dims2()?;
        let (n, _) = wl.shape().dims2()?;
        let mut y = vec![0f32; rows * n];
        if let Some(b) = b {
            if b.len() != n {
                candle_core::bail!("linear: bias has {} entries for {n} outputs", b.len());
            }
            y.par_chunks_mut(n * ROWS_PER_TASK).for_each(|c| c.chunks_mut(n).for_each(|r| r.copy_from_slice(b)));
        }
        // x [rows, k] · Wᵀ: W is [n, k] row-major, read as [k, n] (row stride 1, column stride k).
        gemm_strided(rows, n, k, &mut y, n, b.is_some(), mat(x, k, 1), mat(w, 1, k), 1.0, true);
        Ok((CpuStorage::F32(y), Shape::from((rows, n))))
    }

    fn bwd_all(x: &Tensor, w: &Tensor, bias: bool, g: &Tensor) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (rows, k) = x.dims2()?;
        let n = w.dim(0)?;
        let all = x.apply_op3_no_bwd(w, &g.contiguous()?, &LinearBwd { bias })?;
        let dx = all.narrow(0, 0, rows * k)?.reshape((rows, k))?;
        let dw = all.narrow(0, rows * k, n * k)?.reshape((n, k))?;
        let db = if bias { Some(all.narrow(0, rows * k + n * k, n)?) } else { None };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "fgclip-linear"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.fwd(f32_slice(s1, l1, "linear x")?, l1, f32_slice(s2, l2, "linear weight")?, l2, None)
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Self::bwd_all(x, w, false, g)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fgclip-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(
            f32_slice(s1, l1, "linear x")?,
            l1,
            f32_slice(s2, l2, "linear weight")?,
            l2,
            Some(f32_slice(s3, l3, "linear bias")?),
        )
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = Self::bwd_all(x, w, true, g)?;
        Ok((Some(dx), Some(dw), db))
    }
}

/// Linear backward: `[dx (rows×k) | dW (n×k) | db (n, when there is a bias)]` in one buffer.
struct LinearBwd {
    bias: bool,
}

impl CustomOp3 for LinearBwd {
    fn name(&self) -> &'static str {
        "fgclip-linear-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (
            f32_slice(s1, l1, "linear backward x")?,
            f32_slice(s2, l2, "linear backward weight")?,
            f32_slice(s3, l3, "linear backward gradient")?,
        );
        let (rows, k) = l1.shape().dims2()?;
        let (n, _) = l2.shape().dims2()?;
        if g.len() != rows * n {
            candle_core::bail!("linear backward: gradient has {} elements for {rows}×{n}", g.len());
        }
        let mut out = vec![0f32; rows * k + n * k + if self.bias { n } else { 0 }];
        let (dx, rest) = out.split_at_mut(rows * k);
        let (dw, db) = rest.split_at_mut(n * k);
        // dx [rows, k] = g [rows, n] · W [n, k]
        gemm_strided(rows, k, n, dx, k, false, mat(g, n, 1), mat(w, k, 1), 1.0, true);
        // dW [n, k] = gᵀ [n, rows] · x [rows, k]
        gemm_strided(n, k, rows, dw, k, false, mat(g, 1, n), mat(x, k, 1), 1.0, true);
        if self.bias {
            // db = Σ_rows g, in fixed row chunks summed in order (deterministic).
            let partials: Vec<Vec<f32>> = g
                .par_chunks(n * ROWS_PER_TASK)
                .map(|c| {
                    let mut acc = vec![0f32; n];
                    for r in c.chunks(n) {
                        acc.iter_mut().zip(r).for_each(|(a, v)| *a += v);
                    }
                    acc
                })
                .collect();
            for p in &partials {
                db.iter_mut().zip(p).for_each(|(a, v)| *a += v);
            }
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Multi-head attention core: softmax(scale·q·kᵀ + mask)·v with merged heads
// ---------------------------------------------------------------------------------------------------------

/// Which keys each query sees, owned (the op outlives the caller's mask).
#[derive(Clone, Debug)]
enum Mask {
    None,
    Causal,
    /// `[batch, kv_len]` additive bias.
    KeyBias(Vec<f32>),
}

/// `softmax(scale·q_h·k_hᵀ + mask)·v_h` for every head `h` (columns `h·head_dim..`) of `q` `[B, Nq, D]`, `k`, `v`
/// `[B, Nk, D]`; returns `[B, Nq, D]` with the heads merged, as the output projection takes them. Forward: the
/// fused kernel of `fgclip-kernels`; backward: the scores of each (batch, head) are recomputed and the four
/// gradient products run as GEMMs straight on the strided head columns (no transposes or copies of q, k, v).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32, mask: &KeyMask) -> Result<Tensor> {
    let (b, _, d) = q.dims3()?;
    let (bk, nk, dk) = k.dims3()?;
    if bk != b || dk != d || v.dims() != k.dims() || heads == 0 || d % heads != 0 {
        candle_core::bail!("attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads", q.dims(), k.dims(), v.dims());
    }
    let mask = match mask {
        KeyMask::None => Mask::None,
        KeyMask::Causal => Mask::Causal,
        KeyMask::Keys(t) => {
            let bias = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            if bias.len() != b * nk {
                candle_core::bail!("attention: key mask has {} entries for {b}×{nk} keys", bias.len());
            }
            Mask::KeyBias(bias)
        }
    };
    let op = AttentionOp { heads, scale, mask };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

struct AttentionOp {
    heads: usize,
    scale: f32,
    mask: Mask,
}

impl AttentionOp {
    fn attn_mask(&self) -> AttnMask<'_> {
        match &self.mask {
            Mask::None => AttnMask::None,
            Mask::Causal => AttnMask::Causal,
            Mask::KeyBias(v) => AttnMask::KeyBias(v),
        }
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "fgclip-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) =
            (f32_slice(s1, l1, "attention q")?, f32_slice(s2, l2, "attention k")?, f32_slice(s3, l3, "attention v")?);
        let (b, nq, d) = l1.shape().dims3()?;
        let nk = l2.shape().dims3()?.1;
        let shape = AttnShape { batch: b, q_len: nq, kv_len: nk, heads: self.heads, head_dim: d / self.heads };
        let mut out = vec![0f32; b * nq * d];
        attention_f32(q, d, 0, k, d, 0, v, d, 0, &shape, self.scale, self.attn_mask(), &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, nq, d) = q.dims3()?;
        let nk = k.dim(1)?;
        // One op: the gradients of q, k and v laid end to end.
        let bwd = AttentionBwd { fwd: self, o: o.contiguous()?, g: g.contiguous()? };
        let all = q.apply_op3_no_bwd(k, v, &bwd)?;
        let dq = all.narrow(0, 0, b * nq * d)?.reshape((b, nq, d))?;
        let dk = all.narrow(0, b * nq * d, b * nk * d)?.reshape((b, nk, d))?;
        let dv = all.narrow(0, b * (nq + nk) * d, b * nk * d)?.reshape((b, nk, d))?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

struct AttentionBwd<'a> {
    fwd: &'a AttentionOp,
    o: Tensor,
    g: Tensor,
}

impl CustomOp3 for AttentionBwd<'_> {
    fn name(&self) -> &'static str {
        "fgclip-attention-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) =
            (f32_slice(s1, l1, "attention q")?, f32_slice(s2, l2, "attention k")?, f32_slice(s3, l3, "attention v")?);
        let (o_st, o_l) = self.o.storage_and_layout();
        let (g_st, g_l) = self.g.storage_and_layout();
        let (candle_core::Storage::Cpu(o_s), candle_core::Storage::Cpu(g_s)) = (&*o_st, &*g_st) else {
            candle_core::bail!("attention backward: output and gradient must be on the CPU")
        };
        let (o, g) = (f32_slice(o_s, o_l, "attention output")?, f32_slice(g_s, g_l, "attention gradient")?);
        let (b, nq, d) = l1.shape().dims3()?;
        let nk = l2.shape().dims3()?.1;
        let (heads, scale) = (self.fwd.heads, self.fwd.scale);
        let dh = d / heads;
        // Per (batch, head): dq_h [nq, dh], dk_h [nk, dh], dv_h [nk, dh], computed independently.
        let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..b * heads)
            .into_par_iter()
            .map(|task| {
                let (bi, h) = (task / heads, task % heads);
                let qh = &q[bi * nq * d + h * dh..];
                let kh = &k[bi * nk * d + h * dh..];
                let vh = &v[bi * nk * d + h * dh..];
                let oh = &o[bi * nq * d + h * dh..];
                let gh = &g[bi * nq * d + h * dh..];
                // P = softmax(scale·Q Kᵀ + mask), recomputed.
                let mut p = vec![0f32; nq * nk];
                gemm_strided(nq, nk, dh, &mut p, nk, false, mat(qh, d, 1), mat(kh, 1, d), scale, false);
                for i in 0..nq {
                    let row = &mut p[i * nk..(i + 1) * nk];
                    let seen = match &self.fwd.mask {
                        Mask::Causal => (i + 1).min(nk),
                        _ => nk,
                    };
                    if let Mask::KeyBias(bias) = &self.fwd.mask {
                        for (s, &bb) in row.iter_mut().zip(&bias[bi * nk..(bi + 1) * nk]) {
                            *s += if bb == f32::NEG_INFINITY { f32::MIN } else { bb };
                        }
                    }
                    let max = row[..seen].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for s in row[..seen].iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let inv = 1.0 / sum;
                    row[..seen].iter_mut().for_each(|s| *s *= inv);
                    row[seen..].fill(0.0);
                }
                // dV = Pᵀ dO
                let mut dv = vec![0f32; nk * dh];
                gemm_strided(nk, dh, nq, &mut dv, dh, false, mat(&p, 1, nk), mat(gh, d, 1), 1.0, false);
                // dP = dO Vᵀ, then dS = P ⊙ (dP − rowsum(dO ⊙ O)) in place
                let mut ds = vec![0f32; nq * nk];
                gemm_strided(nq, nk, dh, &mut ds, nk, false, mat(gh, d, 1), mat(vh, 1, d), 1.0, false);
                for i in 0..nq {
                    let di: f32 = (0..dh).map(|c| gh[i * d + c] * oh[i * d + c]).sum();
                    for (x, &pp) in ds[i * nk..(i + 1) * nk].iter_mut().zip(&p[i * nk..(i + 1) * nk]) {
                        *x = pp * (*x - di);
                    }
                }
                // dQ = scale · dS K, dK = scale · dSᵀ Q
                let mut dq = vec![0f32; nq * dh];
                gemm_strided(nq, dh, nk, &mut dq, dh, false, mat(&ds, nk, 1), mat(kh, d, 1), scale, false);
                let mut dk = vec![0f32; nk * dh];
                gemm_strided(nk, dh, nq, &mut dk, dh, false, mat(&ds, 1, nk), mat(qh, d, 1), scale, false);
                (dq, dk, dv)
            })
            .collect();
        // Scatter the heads into [dq | dk | dv], each [B, N, D] with merged heads.
        let mut out = vec![0f32; b * (nq + 2 * nk) * d];
        let (dq_all, rest) = out.split_at_mut(b * nq * d);
        let (dk_all, dv_all) = rest.split_at_mut(b * nk * d);
        for (task, (dq, dk, dv)) in parts.iter().enumerate() {
            let (bi, h) = (task / heads, task % heads);
            for (dst, src, n) in [(&mut *dq_all, dq, nq), (&mut *dk_all, dk, nk), (&mut *dv_all, dv, nk)] {
                for r in 0..n {
                    let at = (bi * n + r) * d + h * dh;
                    dst[at..at + dh].copy_from_slice(&src[r * dh..(r + 1) * dh]);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(b * (nq + 2 * nk) * d)))
    }
}

// ---------------------------------------------------------------------------------------------------------
// LayerNorm
// ---------------------------------------------------------------------------------------------------------

/// `y = (x − mean) / sqrt(var + eps) · w + b` over the last dimension (biased variance, as torch).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    x.apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNormOp { eps: eps as f32 })
}

struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fgclip-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "layer_norm x")?;
        let w = f32_slice(s2, l2, "layer_norm weight")?;
        let b = f32_slice(s3, l3, "layer_norm bias")?;
        let d = w.len();
        if d == 0 || b.len() != d || x.len() % d != 0 || l1.dims().last() != Some(&d) {
            candle_core::bail!("layer_norm: input {:?} does not end in the parameters' size {d}", l1.dims());
        }
        let mut y = vec![0f32; x.len()];
        fgclip_kernels::norm::layer_norm_rows(x, w, b, self.eps, &mut y, ROWS_PER_TASK);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.dim(0)?;
        let rows = x.elem_count() / d.max(1);
        // One op computes dx (rows × d) followed by dw and db (one row each).
        let all = x.apply_op3_no_bwd(w, &g.contiguous()?, &LayerNormBwd { eps: self.eps })?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.narrow(0, rows, 1)?.reshape(d)?;
        let db = all.narrow(0, rows + 1, 1)?.reshape(d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct LayerNormBwd {
    eps: f32,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "fgclip-layer-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "layer_norm backward x")?;
        let w = f32_slice(s2, l2, "layer_norm backward weight")?;
        let g = f32_slice(s3, l3, "layer_norm backward gradient")?;
        let d = w.len();
        if g.len() != x.len() || d == 0 || x.len() % d != 0 {
            candle_core::bail!("layer_norm backward: shapes do not match");
        }
        let rows = x.len() / d;
        let mut out = vec![0f32; x.len() + 2 * d];
        let (dx, _) = out.split_at_mut(x.len());
        // dx per row; per task, the partial sums of dw = Σ g·x̂ and db = Σ g.
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK).zip(g.par_chunks(d * ROWS_PER_TASK)))
            .map(|(dxc, (xc, gc))| {
                let mut acc = vec![0f32; 2 * d];
                let mut xhat = vec![0f32; d];
                for ((dxr, xr), gr) in dxc.chunks_mut(d).zip(xc.chunks(d)).zip(gc.chunks(d)) {
                    let (mean, rstd) = row_stats(xr, self.eps);
                    let (mut s_gy, mut s_gyx) = (0f32, 0f32);
                    for i in 0..d {
                        xhat[i] = (xr[i] - mean) * rstd;
                        let gy = gr[i] * w[i];
                        s_gy += gy;
                        s_gyx += gy * xhat[i];
                        acc[i] += gr[i] * xhat[i];
                        acc[d + i] += gr[i];
                    }
                    let (m_gy, m_gyx) = (s_gy / d as f32, s_gyx / d as f32);
                    for i in 0..d {
                        dxr[i] = rstd * (gr[i] * w[i] - m_gy - xhat[i] * m_gyx);
                    }
                }
                acc
            })
            .collect();
        let tail = &mut out[rows * d..];
        for p in &partials {
            for (t, v) in tail.iter_mut().zip(p) {
                *t += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Softmax over the last dimension
// ---------------------------------------------------------------------------------------------------------

/// Softmax over the last dimension with a backward (`dx = y ⊙ (g − Σ g⊙y)`).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxOp)
}

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "fgclip-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "softmax")?;
        let n = *l.dims().last().unwrap_or(&1);
        let mut y = vec![0f32; x.len()];
        if n > 0 {
            y.par_chunks_mut(n * ROWS_PER_TASK).zip(x.par_chunks(n * ROWS_PER_TASK)).for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(n).zip(xc.chunks(n)) {
                    let max = xr.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        *o = (v - max).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    yr.iter_mut().for_each(|o| *o *= inv);
                }
            });
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBwd)?))
    }
}

struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "fgclip-softmax-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, "softmax backward y")?;
        let g = f32_slice(s2, l2, "softmax backward gradient")?;
        let n = *l1.dims().last().unwrap_or(&1);
        if g.len() != y.len() {
            candle_core::bail!("softmax backward: shapes do not match");
        }
        let mut dx = vec![0f32; y.len()];
        if n > 0 {
            dx.par_chunks_mut(n * ROWS_PER_TASK)
                .zip(y.par_chunks(n * ROWS_PER_TASK).zip(g.par_chunks(n * ROWS_PER_TASK)))
                .for_each(|(dc, (yc, gc))| {
                    for ((dr, yr), gr) in dc.chunks_mut(n).zip(yc.chunks(n)).zip(gc.chunks(n)) {
                        let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                        for i in 0..n {
                            dr[i] = yr[i] * (gr[i] - dot);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------------------
// QuickGELU: x · σ(1.702 x)
// ---------------------------------------------------------------------------------------------------------

/// CLIP's QuickGELU with a backward (`σ(a x) + a x σ(a x)(1 − σ(a x))`, a = 1.702).
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(QuickGeluOp)
}

const QUICK_GELU_A: f32 = 1.702;

#[inline]
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Elementwise map over a contiguous f32 tensor in parallel chunks.
fn map_f32(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(16 * 1024).zip(x.par_chunks(16 * 1024)).for_each(|(yc, xc)| {
        for (o, &v) in yc.iter_mut().zip(xc) {
            *o = f(v);
        }
    });
    y
}

struct QuickGeluOp;

impl CustomOp1 for QuickGeluOp {
    fn name(&self) -> &'static str {
        "fgclip-quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "quick_gelu")?;
        Ok((CpuStorage::F32(map_f32(x, |v| v * sigmoid(QUICK_GELU_A * v))), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &QuickGeluBwd)?))
    }
}

struct QuickGeluBwd;

impl CustomOp2 for QuickGeluBwd {
    fn name(&self) -> &'static str {
        "fgclip-quick-gelu-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "quick_gelu backward x")?;
        let g = f32_slice(s2, l2, "quick_gelu backward gradient")?;
        if g.len() != x.len() {
            candle_core::bail!("quick_gelu backward: shapes do not match");
        }
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(16 * 1024).zip(x.par_chunks(16 * 1024).zip(g.par_chunks(16 * 1024))).for_each(
            |(dc, (xc, gc))| {
                for ((o, &v), &gv) in dc.iter_mut().zip(xc).zip(gc) {
                    let s = sigmoid(QUICK_GELU_A * v);
                    *o = gv * (s + QUICK_GELU_A * v * s * (1.0 - s));
                }
            },
        );
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Value and gradients of a fused op against the composed reference, through a non-trivial loss.
    fn check(name: &str, vars: &[&Var], fused: &Tensor, composed: &Tensor, weight: &Tensor, tol: f32) {
        assert!(max_diff(fused, composed) < tol, "{name} value: {}", max_diff(fused, composed));
        let gf = (fused * weight).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (composed * weight).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (a, b) =
                (gf.get(v.as_tensor()).expect("fused gradient"), gc.get(v.as_tensor()).expect("composed gradient"));
            assert!(max_diff(a, b) < tol, "{name} gradient {i}: {}", max_diff(a, b));
        }
    }

    #[test]
    fn layer_norm_matches_composed_value_and_gradients() {
        let dev = Device::Cpu;
        // 150 rows: more than two row tasks, the last one partial.
        let x = Var::from_tensor(&Tensor::randn(0.3f32, 2.0, (3, 50, 96), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.2, 96, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.1, 96, &dev).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1.0, (3, 50, 96), &dev).unwrap();
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let composed =
            crate::nn::reference::layer_norm_composed(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        check("layer_norm", &[&x, &w, &b], &fused, &composed, &r, 2e-5);
    }

    #[test]
    fn softmax_matches_composed_value_and_gradient_with_masked_keys() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 3, 70, 70), &dev).unwrap();
        // finfo.min on some keys, as the attention masks add.
        let mask: Vec<f32> = (0..70).map(|j| if j % 7 == 3 { f32::MIN } else { 0.0 }).collect();
        let x = x.broadcast_add(&Tensor::new(mask.as_slice(), &dev).unwrap()).unwrap();
        let x = Var::from_tensor(&x).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 3, 70, 70), &dev).unwrap();
        let fused = softmax_last_dim(x.as_tensor()).unwrap();
        let composed = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
        check("softmax", &[&x], &fused, &composed, &r, 1e-6);
    }

    #[test]
    fn quick_gelu_matches_composed_value_and_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (5, 40_000), &dev).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1.0, (5, 40_000), &dev).unwrap();
        let fused = quick_gelu(x.as_tensor()).unwrap();
        let composed = x.as_tensor().mul(&candle_nn::ops::sigmoid(&(x.as_tensor() * 1.702).unwrap()).unwrap()).unwrap();
        check("quick_gelu", &[&x], &fused, &composed, &r, 1e-5);
    }

    /// The fused attention against the composed per-head ops (reshape, transpose, matmul, softmax, matmul), for
    /// every mask kind and for one query over many keys (the MAP head).
    #[test]
    fn attention_matches_composed_value_and_gradients() {
        let dev = Device::Cpu;
        let (b, heads, dh) = (2, 3, 8);
        let d = heads * dh;
        let composed = |q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, mask: &KeyMask| -> Tensor {
            let (nq, nk) = (q.dim(1).unwrap(), k.dim(1).unwrap());
            let split = |t: &Tensor, n: usize| {
                t.reshape((b, n, heads, dh)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()
            };
            let s = (split(q, nq).matmul(&split(k, nk).t().unwrap()).unwrap() * scale).unwrap();
            let s = match mask {
                KeyMask::None => s,
                KeyMask::Causal => s.broadcast_add(&KeyMask::causal_bias(nk, DType::F32, &dev).unwrap()).unwrap(),
                KeyMask::Keys(bias) => s.broadcast_add(bias).unwrap(),
            };
            let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
            p.matmul(&split(v, nk)).unwrap().transpose(1, 2).unwrap().reshape((b, nq, d)).unwrap()
        };
        let valid =
            Tensor::new(&[[1f32, 1., 1., 1., 1., 1., 0., 0., 0.], [1., 1., 1., 1., 1., 1., 1., 1., 1.]], &dev).unwrap();
        let cases = [
            (9, 9, KeyMask::None),
            (9, 9, KeyMask::Causal),
            (9, 9, KeyMask::from_valid(&valid, DType::F32).unwrap()),
            (1, 9, KeyMask::from_valid(&valid, DType::F32).unwrap()),
        ];
        for (nq, nk, mask) in cases {
            let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nq, d), &dev).unwrap()).unwrap();
            let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nk, d), &dev).unwrap()).unwrap();
            let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nk, d), &dev).unwrap()).unwrap();
            let r = Tensor::randn(0f32, 1.0, (b, nq, d), &dev).unwrap();
            let scale = (dh as f64).powf(-0.5);
            let fused = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), heads, scale as f32, &mask).unwrap();
            let reference = composed(q.as_tensor(), k.as_tensor(), v.as_tensor(), scale, &mask);
            check(&format!("attention {nq}x{nk} {mask:?}"), &[&q, &k, &v], &fused, &reference, &r, 2e-5);
        }
    }

    #[test]
    fn linear_matches_composed_value_and_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (150, 40), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.2, (24, 40), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.1, 24, &dev).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1.0, (150, 24), &dev).unwrap();
        let composed = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        let fused = linear(x.as_tensor(), w.as_tensor(), None).unwrap();
        check("linear without bias", &[&x, &w], &fused, &composed, &r, 2e-5);
        let composed = composed.broadcast_add(b.as_tensor()).unwrap();
        let fused = linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor())).unwrap();
        check("linear with bias", &[&x, &w, &b], &fused, &composed, &r, 2e-5);
    }

    /// Same inputs, same bits, whatever the thread pool does (the trainer's resume test relies on it).
    #[test]
    fn layer_norm_gradients_are_deterministic() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (400, 64), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.2, 64, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::zeros(64, DType::F32, &dev).unwrap()).unwrap();
        let grads = || {
            let y = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6).unwrap();
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            g.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
        };
        let first = grads();
        for _ in 0..5 {
            assert_eq!(grads(), first);
        }
    }
}
