//! Fused multi-head attention on f32 slices: `out = softmax(scale·q·kᵀ + mask)·v` for every batch element and
//! head in one call. It reads q, k, v straight out of a fused QKV projection buffer (no reshape/transpose copies,
//! no `[B, H, Nq, Nk]` score tensor) and writes merged heads, ready for the output projection.
//!
//! Entry points: [`attention_with`] (the kernels of a CPU level the caller chose, f32 or bf16 products; the model's
//! execution plan calls this), and for convenience [`attention_f32`] (AVX-512 when detected, else portable),
//! [`attention_f32_portable`] (the fallback, for tests), [`attention_bf16`] (bf16 products with f32 accumulation
//! and f32 softmax: ~1.5× faster, errors ~1e-3 instead of ~1e-7).
//!
//! # Layout
//!
//! * `q`: `[batch, q_len, q_stride]`; head `h` of query `i` of batch `b` is
//!   `q[(b·q_len + i)·q_stride + q_off + h·head_dim ..][..head_dim]`. Same for `k` and `v` with `kv_len`.
//!   With one fused `[batch, len, 3·D]` QKV buffer pass it three times with offsets `0`, `D`, `2D` and stride `3D`;
//!   the MAP head passes its probe as `q` (`q_len = 1`) and a fused `[batch, N, 2·D]` KV buffer as `k`, `v`.
//! * `out`: `[batch, q_len, heads·head_dim]`, dense (exactly that length).
//!
//! # Blocking
//!
//! Work is split into tasks over `(batch, head)` pairs (and, when there are fewer than `4·threads` pairs, over
//! chunks of query blocks too), run on the current rayon pool. A task gathers its head's keys once into
//! 16-key panels transposed to `[panel][d][16]` (so one AVX-512 register holds one dimension of 16 keys) and its
//! values into rows padded to a multiple of 16 floats, prefetching the strided source rows ahead (they are KiBs
//! apart in a fused buffer, which defeats the hardware prefetchers). Then, per block of [`Q_BLOCK`] queries
//! (gathered and multiplied by `scale`, as CLIP scales q):
//!
//! 1. scores `S = Q·Kᵀ` into a `Q_BLOCK × kv_len` scratch (192 KiB at 1024 keys: it stays in L2 next to the
//!    packed K and V, 256 KiB each), with an 8 query × 32 key register tile (broadcast q, FMA against 2 panels);
//! 2. softmax in place per row: add the key bias, subtract the row max, `exp`, sum; the `1/sum` is applied to the
//!    output row instead of to the `kv_len` probabilities;
//! 3. `O = P·V` with a 6 query × 64 dim register tile (broadcast p, FMA against value rows), scaled by `1/sum`
//!    and copied into the task's column slice of `out`.
//!
//! Causal blocks stop at the last key their last query sees, and each 8-row (scores) or 6-row (`P·V`) group at
//! the last key its queries see; keys past a query's position get probability 0. With `q_len ≤ 4` (the MAP head)
//! packing would cost more than it saves: tasks take dot products against the strided key rows and sweep the
//! strided value rows directly. Per-thread scratch buffers are kept between calls (grown to the largest shape seen:
//! about 0.7 MiB per thread at 1024 keys, head_dim 64).
//!
//! # Numerics
//!
//! f32 throughout, FMA accumulation in a fixed order. AVX-512 `exp` is `2^(x·log2 e)` with a degree-5 polynomial
//! (relative error < 2e-7); the portable kernel uses `f32::exp`. Masked keys behave as an additive `f32::MIN`
//! (HF's `finfo.min`): their probability is exactly 0 unless every key of the row is masked, in which case the row
//! gets the uniform average of the values over all `kv_len` keys, which is what PyTorch's additive-mask softmax
//! gives (`s + f32::MIN` rounds to `f32::MIN` for every key). A `-inf` bias is accepted too and handled the same
//! way (no NaN). `kv_len == 0` writes zeros. Measured against an f64 reference: max abs error ~1e-7 for O(1)
//! inputs (tests assert 1e-5).
//!
//! # Determinism
//!
//! Every output row is computed by the same sequence of operations whatever the batch size, the task split or the
//! thread count: query blocks start at multiples of [`Q_BLOCK`] within each batch element, register tiles never mix
//! rows in one accumulator, reductions run in a fixed order, and the kernel choices (direct path, causal limits)
//! depend on the shape and position only. So one batch element's output is bit-identical alone or inside a batch,
//! for a given entry point on a given CPU.

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod bf16;
mod portable;

use std::cell::RefCell;

use rayon::prelude::*;

/// Queries per block: the score scratch is `Q_BLOCK × kv_len` floats. A multiple of both register tiles (8 rows
/// for scores, 6 for `P·V`). Fixed, as block boundaries must not depend on the batch (determinism).
pub const Q_BLOCK: usize = 48;

/// Problem size. `q_len` may differ from `kv_len` (MAP head: 1 query over N keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub batch: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// Which keys each query sees.
#[derive(Clone, Copy, Debug)]
pub enum AttnMask<'a> {
    /// Every key.
    None,
    /// Query `i` sees keys `0..=i` (top-left aligned when `q_len != kv_len`, as PyTorch's `is_causal`).
    Causal,
    /// Additive per-key bias `[batch, kv_len]` added to every query row of its batch element: `0` for real
    /// keys, `f32::MIN` (HF's `finfo.min`) for padding. Any finite values work (they are added to the scaled
    /// scores); `-inf` is treated like `f32::MIN`.
    KeyBias(&'a [f32]),
}

/// Which kernel [`attention_f32`] uses on this machine: `"avx512"` or `"portable"`.
pub fn attention_backend() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if avx512::Avx512::detect().is_some() {
        return "avx512";
    }
    "portable"
}

/// Whether [`attention_bf16`] has its bf16 kernel here (`avx512f` + `avx512bf16`); otherwise it runs
/// [`attention_f32`].
pub fn attention_bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    if bf16::Avx512Bf16::detect().is_some() {
        return true;
    }
    false
}

/// `out = softmax(scale·q·kᵀ + mask)·v` per batch element and head; see the [module docs](self) for layouts.
///
/// `q`: `[batch, q_len, q_stride]` with head `h` at columns `q_off + h·head_dim ..+head_dim` (likewise `k`, `v`
/// over `kv_len` rows); `out`: `[batch, q_len, heads·head_dim]`. Uses AVX-512 when the CPU has it, the
/// portable kernel otherwise; runs on the current rayon pool.
///
/// # Panics
/// If a slice is too short for its shape, stride and offset, a head overruns its row (`off + heads·head_dim >
/// stride`), `out` has the wrong length, or a key bias is not `batch·kv_len` long.
#[allow(clippy::too_many_arguments)]
pub fn attention_f32(
    q: &[f32],
    q_stride: usize,
    q_off: usize,
    k: &[f32],
    k_stride: usize,
    k_off: usize,
    v: &[f32],
    v_stride: usize,
    v_off: usize,
    shape: &AttnShape,
    scale: f32,
    mask: AttnMask,
    out: &mut [f32],
) {
    attention_with(
        crate::cpu::Isa::detect(),
        false,
        q,
        q_stride,
        q_off,
        k,
        k_stride,
        k_off,
        v,
        v_stride,
        v_off,
        shape,
        scale,
        mask,
        out,
    )
}

/// The attention of [`attention_f32`] / [`attention_bf16`] on the kernels of a chosen CPU level (the caller's
/// execution plan picks `isa` once; levels above what the CPU has are never passed, and fall back to the portable
/// kernel if they are). `bf16_products` takes the bf16 kernel where `isa` has it, as [`attention_bf16`] does.
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    isa: crate::cpu::Isa,
    bf16_products: bool,
    q: &[f32],
    q_stride: usize,
    q_off: usize,
    k: &[f32],
    k_stride: usize,
    k_off: usize,
    v: &[f32],
    v_stride: usize,
    v_off: usize,
    shape: &AttnShape,
    scale: f32,
    mask: AttnMask,
    out: &mut [f32],
) {
    let io = Io::new(q, q_stride, q_off, k, k_stride, k_off, v, v_stride, v_off, shape, scale, mask, out.len());
    #[cfg(target_arch = "x86_64")]
    {
        use crate::cpu::Isa;
        if bf16_products && isa >= Isa::Avx512Bf16 {
            if let Some(kern) = bf16::Avx512Bf16::detect() {
                return run(kern, &io, out);
            }
        }
        if isa >= Isa::Avx512 {
            if let Some(kern) = avx512::Avx512::detect() {
                return run(kern, &io, out);
            }
        }
    }
    let _ = (isa, bf16_products);
    run(portable::Portable, &io, out);
}

/// [`attention_f32`] with the portable (plain Rust, no intrinsics) kernel: the fallback on CPUs without
/// AVX-512, exposed for tests and comparisons. Same blocking, so it is deterministic in the same way.
#[allow(clippy::too_many_arguments)]
pub fn attention_f32_portable(
    q: &[f32],
    q_stride: usize,
    q_off: usize,
    k: &[f32],
    k_stride: usize,
    k_off: usize,
    v: &[f32],
    v_stride: usize,
    v_off: usize,
    shape: &AttnShape,
    scale: f32,
    mask: AttnMask,
    out: &mut [f32],
) {
    attention_with(
        crate::cpu::Isa::Portable,
        false,
        q,
        q_stride,
        q_off,
        k,
        k_stride,
        k_off,
        v,
        v_stride,
        v_off,
        shape,
        scale,
        mask,
        out,
    )
}

/// [`attention_f32`] with bf16 products: q (scaled), k, the probabilities and v are rounded to bf16 (round to
/// nearest even) and multiplied with `vdpbf16ps`, accumulating in f32; the softmax itself stays f32 (scores,
/// max, exp, sum — the sum over the bf16-rounded probabilities, so each row's weights still sum to 1).
/// 1.4–1.6× faster than the f32 kernel at 197–1024 tokens; max abs errors 2e-4–3e-3 for O(1) inputs instead of
/// ~1e-7 (test `bf16_error`). Calls with `q_len ≤ 4` (MAP head) run the f32 kernel. Same layouts, masks and
/// determinism. Without `avx512bf16` it runs [`attention_f32`].
#[allow(clippy::too_many_arguments)]
pub fn attention_bf16(
    q: &[f32],
    q_stride: usize,
    q_off: usize,
    k: &[f32],
    k_stride: usize,
    k_off: usize,
    v: &[f32],
    v_stride: usize,
    v_off: usize,
    shape: &AttnShape,
    scale: f32,
    mask: AttnMask,
    out: &mut [f32],
) {
    attention_with(
        crate::cpu::Isa::detect(),
        true,
        q,
        q_stride,
        q_off,
        k,
        k_stride,
        k_off,
        v,
        v_stride,
        v_off,
        shape,
        scale,
        mask,
        out,
    )
}

/// The steps of a task, per instruction set. Implementors are zero-sized tokens that can only be created where
/// their instructions exist (`Avx512::detect`, `Avx512Bf16::detect`): that is what makes these safe methods sound
/// although they call `#[target_feature]` code. Layouts of `kp`, `vp`, `q` and the probabilities are the
/// kernel's own (the f32 ones are described in the module docs; bf16 stores pairs of bf16 in 32-bit words).
trait Kernels: Copy + Send + Sync {
    /// Packs one head's keys and values (`k`, `v`: row j at `j·stride`) into `kp` (`nkp·dh` floats) and `vp`
    /// (`nk·dhp` floats).
    #[allow(clippy::too_many_arguments)]
    fn pack_kv(self, k: &[f32], ks: usize, v: &[f32], vs: usize, g: Geom, kp: &mut [f32], vp: &mut [f32]);
    /// Converts a block of scaled f32 queries (`rows × dh`, row stride `dh`) in place to the kernel's format.
    fn prep_q(self, _q: &mut [f32], _dh: usize) {}
    /// Scores of `rows` queries against `panels` key panels into rows of `s` (stride `s_stride`); with
    /// `causal = Some(i0)` (row r is query i0 + r) panels no query of a row group sees may be skipped.
    #[allow(clippy::too_many_arguments)]
    fn scores(
        self,
        q: &[f32],
        dh: usize,
        rows: usize,
        kp: &[f32],
        panels: usize,
        s: &mut [f32],
        s_stride: usize,
        causal: Option<usize>,
    );
    /// Softmax of `row[..valid]` in place (unnormalised, bias added first), zeroing `row[valid..]`; returns `1/Σ`.
    fn softmax_row(self, row: &mut [f32], valid: usize, bias: Option<&[f32]>) -> f32;
    /// `o[r][..dhp] = inv[r] · Σ_{j<n} p[r][j] · v[j]`; with `causal = Some(i0)` row r may stop after key i0 + r.
    #[allow(clippy::too_many_arguments)]
    fn pv(
        self,
        p: &[f32],
        p_stride: usize,
        rows: usize,
        n: usize,
        vp: &[f32],
        dhp: usize,
        inv: &[f32],
        o: &mut [f32],
        causal: Option<usize>,
    );
    /// [`Kernels::softmax_row`] for `direct_task`, which needs f32 probabilities.
    fn softmax_row_direct(self, row: &mut [f32], valid: usize, bias: Option<&[f32]>) -> f32 {
        self.softmax_row(row, valid, bias)
    }
    /// One query (scaled, f32) against unpacked keys: `s[j] = q · k[j·ks..][..dh]`.
    fn scores_direct(self, q: &[f32], k: &[f32], ks: usize, s: &mut [f32]);
    /// `o = inv · Σ_j p[j] · v[j·vs..][..dh]` over unpacked values.
    fn pv_direct(self, p: &[f32], v: &[f32], vs: usize, inv: f32, o: &mut [f32]);
}

/// One of q, k, v: rows of `stride` floats, this tensor's heads starting at column `off`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    stride: usize,
    off: usize,
}

impl View<'_> {
    /// Head `h` of row `row` (row = batch·len + position).
    #[inline]
    fn head(&self, row: usize, h: usize, dh: usize) -> &[f32] {
        let s = row * self.stride + self.off + h * dh;
        &self.data[s..s + dh]
    }

    /// Head `h` of rows `b·len ..< (b+1)·len` (`len ≥ 1`): row j starts at `j·stride` of the returned slice.
    fn head_rows(&self, b: usize, len: usize, h: usize, dh: usize) -> &[f32] {
        let s = b * len * self.stride + self.off + h * dh;
        &self.data[s..s + (len - 1) * self.stride + dh]
    }
}

/// Validated arguments.
struct Io<'a> {
    q: View<'a>,
    k: View<'a>,
    v: View<'a>,
    s: AttnShape,
    scale: f32,
    mask: AttnMask<'a>,
}

impl<'a> Io<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        q: &'a [f32],
        q_stride: usize,
        q_off: usize,
        k: &'a [f32],
        k_stride: usize,
        k_off: usize,
        v: &'a [f32],
        v_stride: usize,
        v_off: usize,
        shape: &AttnShape,
        scale: f32,
        mask: AttnMask<'a>,
        out_len: usize,
    ) -> Self {
        let s = *shape;
        let width = s.heads * s.head_dim;
        let check = |name: &str, data: &[f32], stride: usize, off: usize, len: usize| {
            assert!(
                off + width <= stride,
                "attention: {name}_off {off} + heads·head_dim {width} > {name}_stride {stride}"
            );
            let rows = s.batch * len;
            if rows > 0 && width > 0 {
                let need = (rows - 1) * stride + off + width;
                assert!(data.len() >= need, "attention: {name} has {} floats, shape needs {need}", data.len());
            }
        };
        check("q", q, q_stride, q_off, s.q_len);
        check("k", k, k_stride, k_off, s.kv_len);
        check("v", v, v_stride, v_off, s.kv_len);
        assert_eq!(out_len, s.batch * s.q_len * width, "attention: out must be [batch, q_len, heads·head_dim]");
        if let AttnMask::KeyBias(bias) = mask {
            assert_eq!(bias.len(), s.batch * s.kv_len, "attention: key bias must be [batch, kv_len]");
        }
        Io {
            q: View { data: q, stride: q_stride, off: q_off },
            k: View { data: k, stride: k_stride, off: k_off },
            v: View { data: v, stride: v_stride, off: v_off },
            s,
            scale,
            mask,
        }
    }
}

/// Up to this many queries, tasks skip packing K and V ([`direct_task`]): the MAP head has one query, and packing
/// costs about as much as a few queries' worth of work. Depends on the shape only (determinism).
const DIRECT_MAX_Q: usize = 4;

/// Per-thread buffers, reused across calls (a few hundred KiB at 1024 keys).
#[derive(Default)]
struct Scratch {
    /// Keys of one head, `[panel][d][16]`, zero-padded to whole panels.
    kp: Vec<f32>,
    /// Values of one head, `[key][dhp]`, `dhp` = head_dim rounded up to 16, zero-padded.
    vp: Vec<f32>,
    /// One query block of one head, scaled, `[Q_BLOCK][head_dim]`.
    q: Vec<f32>,
    /// Scores, then unnormalised probabilities, `[Q_BLOCK][nkp]`.
    s: Vec<f32>,
    /// Output block, `[Q_BLOCK][dhp]`.
    o: Vec<f32>,
    /// `1 / Σ exp` per row of the block.
    inv: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Sizes derived from the shape.
#[derive(Clone, Copy)]
struct Geom {
    dh: usize,
    /// head_dim rounded up to 16 (value rows, output rows).
    dhp: usize,
    nk: usize,
    /// kv_len rounded up to 16 (score rows).
    nkp: usize,
}

/// `out` shared by tasks that write disjoint `(batch, query, head)` cells.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: only used to write disjoint ranges from different tasks (see `write_out`), while the `&mut [f32]` it
// comes from is borrowed for the whole parallel section.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Copies `src` to `out[offset..offset + src.len()]`.
///
/// # Safety
/// `offset + src.len()` must not exceed the length of the slice `out` points into, that slice must outlive the
/// call, and no other thread may access this range concurrently. [`run`] guarantees both: the length was checked in
/// [`Io::new`], and each `(b, i, h)` cell belongs to exactly one task.
unsafe fn write_out(out: OutPtr, offset: usize, src: &[f32]) {
    // SAFETY: in bounds and unaliased per this function's contract.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out.0.add(offset), src.len()) }
}

fn run<K: Kernels>(kern: K, io: &Io, out: &mut [f32]) {
    let s = io.s;
    if out.is_empty() {
        return;
    }
    if s.kv_len == 0 {
        out.fill(0.0);
        return;
    }
    let blocks = s.q_len.div_ceil(Q_BLOCK);
    let pairs = s.batch * s.heads;
    let threads = rayon::current_num_threads().max(1);
    // Enough tasks for load balance (causal blocks differ in cost), but each chunk repacks its head's K and V,
    // so split queries only when there are few (batch, head) pairs.
    let want = if pairs >= 4 * threads { 1 } else { (4 * threads).div_ceil(pairs) };
    let per_chunk = blocks.div_ceil(want.min(blocks));
    let chunks = blocks.div_ceil(per_chunk);
    let optr = OutPtr(out.as_mut_ptr());
    (0..pairs * chunks).into_par_iter().for_each(|t| {
        let (pair, c) = (t / chunks, t % chunks);
        let (b, h) = (pair / s.heads, pair % s.heads);
        let q0 = c * per_chunk * Q_BLOCK;
        let q1 = ((c + 1) * per_chunk * Q_BLOCK).min(s.q_len);
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut sc) => head_task(kern, io, &mut sc, b, h, q0, q1, optr),
            // Re-entered on this thread (cannot happen today: tasks do not call into rayon); stay correct.
            Err(_) => head_task(kern, io, &mut Scratch::default(), b, h, q0, q1, optr),
        });
    });
}

/// Queries `q0..q1` of head `h` of batch element `b` (`q0` a multiple of [`Q_BLOCK`]).
#[allow(clippy::too_many_arguments)]
fn head_task<K: Kernels>(kern: K, io: &Io, sc: &mut Scratch, b: usize, h: usize, q0: usize, q1: usize, out: OutPtr) {
    let s = io.s;
    if s.q_len <= DIRECT_MAX_Q {
        return direct_task(kern, io, sc, b, h, q0, q1, out);
    }
    let dh = s.head_dim;
    let g = Geom { dh, dhp: dh.div_ceil(16) * 16, nk: s.kv_len, nkp: s.kv_len.div_ceil(16) * 16 };
    grow(&mut sc.kp, g.nkp * dh);
    grow(&mut sc.vp, g.nk * g.dhp);
    grow(&mut sc.q, Q_BLOCK * dh);
    grow(&mut sc.s, Q_BLOCK * g.nkp);
    grow(&mut sc.o, Q_BLOCK * g.dhp);
    grow(&mut sc.inv, Q_BLOCK);

    let (k, v) = (io.k.head_rows(b, g.nk, h, dh), io.v.head_rows(b, g.nk, h, dh));
    let (ks, vs) = (io.k.stride, io.v.stride);
    kern.pack_kv(k, ks, v, vs, g, &mut sc.kp, &mut sc.vp);
    let causal = matches!(io.mask, AttnMask::Causal);
    let bias = match io.mask {
        AttnMask::KeyBias(all) => Some(&all[b * g.nk..(b + 1) * g.nk]),
        _ => None,
    };
    let width = s.heads * dh;

    for i0 in (q0..q1).step_by(Q_BLOCK) {
        let rows = (q1 - i0).min(Q_BLOCK);
        for r in 0..rows {
            let ahead = b * s.q_len + i0 + r + PREFETCH_ROWS;
            if i0 + r + PREFETCH_ROWS < q1 {
                prefetch(io.q.data, ahead * io.q.stride + io.q.off + h * dh, dh);
            }
            let src = io.q.head(b * s.q_len + i0 + r, h, dh);
            for (d, x) in sc.q[r * dh..(r + 1) * dh].iter_mut().zip(src) {
                *d = x * io.scale;
            }
        }
        kern.prep_q(&mut sc.q[..rows * dh], dh);
        // Keys any query of this block sees.
        let kv_end = if causal { (i0 + rows).min(g.nk) } else { g.nk };
        let panels = kv_end.div_ceil(16);
        // Causal: row r of the block is query i0 + r, so kernels can skip keys past each row group.
        let tri = causal.then_some(i0);
        let qb = &sc.q[..rows * dh];
        let sb = &mut sc.s[..rows * g.nkp];
        let kp = &sc.kp[..panels * 16 * dh];
        kern.scores(qb, dh, rows, kp, panels, sb, g.nkp, tri);
        for r in 0..rows {
            let valid = if causal { (i0 + r + 1).min(g.nk) } else { g.nk };
            let row = &mut sb[r * g.nkp..r * g.nkp + kv_end];
            sc.inv[r] = kern.softmax_row(row, valid, bias);
        }
        let ob = &mut sc.o[..rows * g.dhp];
        let vp = &sc.vp[..kv_end * g.dhp];
        kern.pv(sb, g.nkp, rows, kv_end, vp, g.dhp, &sc.inv[..rows], ob, tri);
        for r in 0..rows {
            let offset = (b * s.q_len + i0 + r) * width + h * dh;
            // SAFETY: offset + dh ≤ batch·q_len·width = out.len() (checked in `Io::new`); this task alone owns
            // head h of these queries of batch element b.
            unsafe { write_out(out, offset, &ob[r * g.dhp..r * g.dhp + dh]) };
        }
    }
}

/// [`head_task`] without packing, for `q_len ≤ DIRECT_MAX_Q`: one query at a time, dot products straight
/// against the strided key rows and an FMA sweep over the strided value rows.
#[allow(clippy::too_many_arguments)]
fn direct_task<K: Kernels>(kern: K, io: &Io, sc: &mut Scratch, b: usize, h: usize, q0: usize, q1: usize, out: OutPtr) {
    let s = io.s;
    let (dh, nk) = (s.head_dim, s.kv_len);
    grow(&mut sc.q, dh);
    grow(&mut sc.s, nk);
    grow(&mut sc.o, dh);
    let (k, v) = (io.k.head_rows(b, nk, h, dh), io.v.head_rows(b, nk, h, dh));
    let (ks, vs) = (io.k.stride, io.v.stride);
    let bias = match io.mask {
        AttnMask::KeyBias(all) => Some(&all[b * nk..(b + 1) * nk]),
        _ => None,
    };
    for i in q0..q1 {
        let qs = &mut sc.q[..dh];
        for (d, x) in qs.iter_mut().zip(io.q.head(b * s.q_len + i, h, dh)) {
            *d = x * io.scale;
        }
        let valid = if matches!(io.mask, AttnMask::Causal) { (i + 1).min(nk) } else { nk };
        let (row, o) = (&mut sc.s[..valid], &mut sc.o[..dh]);
        kern.scores_direct(qs, k, ks, row);
        let inv = kern.softmax_row_direct(row, valid, bias);
        kern.pv_direct(row, v, vs, inv, o);
        // SAFETY: as in `head_task`.
        unsafe { write_out(out, (b * s.q_len + i) * s.heads * dh + h * dh, o) };
    }
}

/// Rows ahead to prefetch when gathering: the strided rows of a fused QKV buffer are KiBs apart, so the hardware
/// prefetchers miss them and gathering would otherwise wait on one cache miss after another.
const PREFETCH_ROWS: usize = 8;

/// Hints the CPU to start loading `data[idx..idx + len]` (ignored past the end; a no-op off x86-64).
#[inline]
fn prefetch(data: &[f32], idx: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len > 0 && idx + len <= data.len() {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for off in (0..len).step_by(16).chain([len - 1]) {
            // SAFETY: prefetches never fault, and the address is inside `data` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(idx + off).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, idx, len);
}

/// Keys of one head → `kp[panel][d][lane]` (key = 16·panel + lane, last panel zero-filled); values →
/// `vp[key][0..dhp]` (zero-padded past `head_dim`). `k`, `v` hold row j at `j·stride` ([`View::head_rows`]).
/// One pass over the rows, prefetching ahead.
fn pack_kv_portable(k: &[f32], ks: usize, v: &[f32], vs: usize, g: Geom, kp: &mut [f32], vp: &mut [f32]) {
    let dh = g.dh;
    for j in 0..g.nk {
        if j + PREFETCH_ROWS < g.nk {
            prefetch(k, (j + PREFETCH_ROWS) * ks, dh);
            prefetch(v, (j + PREFETCH_ROWS) * vs, dh);
        }
        let panel = &mut kp[(j / 16) * 16 * dh..][..16 * dh];
        for (d, &x) in k[j * ks..j * ks + dh].iter().enumerate() {
            panel[d * 16 + j % 16] = x;
        }
        let row = &mut vp[j * g.dhp..(j + 1) * g.dhp];
        row[..dh].copy_from_slice(&v[j * vs..j * vs + dh]);
        row[dh..].fill(0.0);
    }
    let panel = &mut kp[(g.nk / 16) * 16 * dh..g.nkp * dh];
    for d in 0..if g.nk.is_multiple_of(16) { 0 } else { dh } {
        panel[d * 16 + g.nk % 16..(d + 1) * 16].fill(0.0);
    }
}
