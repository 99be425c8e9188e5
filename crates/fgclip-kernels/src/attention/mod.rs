//! Fused multi-head attention on f32 slices: `out = softmax(scale·q·kᵀ + mask)·v` for every batch element and
//! head in one call. It reads q, k, v straight out of a fused QKV projection buffer (no reshape/transpose copies,
//! no `[B, H, Nq, Nk]` score tensor) and writes merged heads, ready for the output projection.
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
//! `16`-key panels transposed to `[panel][d][16]` (so one AVX-512 register holds one dimension of 16 keys) and its
//! values into rows padded to a multiple of 16 floats. Then, per block of [`Q_BLOCK`] queries (scaled by `scale`
//! while gathered, as CLIP does):
//!
//! 1. scores `S = Q·Kᵀ` into a `Q_BLOCK × kv_len` scratch (192 KiB at 1024 keys: stays in L2 next to the packed
//!    K and V, 256 KiB each), with an 8 query × 32 key register tile (broadcast q, FMA against key panels);
//! 2. softmax in place per row: add the mask, subtract the row max, `exp`, sum; the `1/sum` is applied to the
//!    output row instead of to the `Nk` probabilities;
//! 3. `O = P·V` with a 6 query × 64 dim register tile (broadcast p, FMA against value rows), scaled by `1/sum`
//!    and copied into the task's column slice of `out`.
//!
//! Causal blocks stop at the last key their last query sees; keys past a query's position get probability 0.
//!
//! # Numerics
//!
//! f32 throughout, FMA accumulation in fixed order, `exp` by a Cephes-style polynomial (≈1 ulp). The AVX-512 path
//! is picked at run time (`avx512f`); [`attention_f32_portable`] is the plain-Rust fallback, with the same
//! blocking. Masked keys behave as an additive `f32::MIN` (HF's `finfo.min`): their probability is exactly 0
//! unless every key of the row is masked, in which case the row gets the uniform average of the values over all
//! `kv_len` keys — what PyTorch's additive-mask softmax gives (`s + f32::MIN` rounds to `f32::MIN` for every key).
//! A `-inf` bias is accepted too and handled the same way (no NaN). `kv_len == 0` writes zeros.
//!
//! # Determinism
//!
//! Every output row is computed by the same sequence of operations whatever the batch size, the task split or the
//! thread count: query blocks start at multiples of [`Q_BLOCK`] of each batch element, register tiles never mix
//! rows in one accumulator, and reductions run in a fixed order. So one batch element's output is bit-identical
//! alone or inside a batch, for a given kernel (AVX-512 or portable).

#[cfg(target_arch = "x86_64")]
mod avx512;
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
    match Isa::detect() {
        Isa::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "avx512",
    }
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
    let io = Io::new(q, q_stride, q_off, k, k_stride, k_off, v, v_stride, v_off, shape, scale, mask, out.len());
    run(Isa::detect(), &io, out);
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
    let io = Io::new(q, q_stride, q_off, k, k_stride, k_off, v, v_stride, v_off, shape, scale, mask, out.len());
    run(Isa::Portable, &io, out);
}

#[derive(Clone, Copy, Debug)]
enum Isa {
    Portable,
    /// Only constructed by [`Isa::detect`] after `avx512f` was detected: the kernels' safety precondition.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        Isa::Portable
    }
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
            assert!(off + width <= stride, "attention: {name}_off {off} + heads·head_dim {width} > {name}_stride {stride}");
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

fn run(isa: Isa, io: &Io, out: &mut [f32]) {
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
            Ok(mut sc) => head_task(isa, io, &mut sc, b, h, q0, q1, optr),
            // Re-entered on this thread (cannot happen today: tasks do not call into rayon); stay correct.
            Err(_) => head_task(isa, io, &mut Scratch::default(), b, h, q0, q1, optr),
        });
    });
}

/// Queries `q0..q1` of head `h` of batch element `b` (`q0` a multiple of [`Q_BLOCK`]).
#[allow(clippy::too_many_arguments)]
fn head_task(isa: Isa, io: &Io, sc: &mut Scratch, b: usize, h: usize, q0: usize, q1: usize, out: OutPtr) {
    let s = io.s;
    let dh = s.head_dim;
    let g = Geom { dh, dhp: dh.div_ceil(16) * 16, nk: s.kv_len, nkp: s.kv_len.div_ceil(16) * 16 };
    grow(&mut sc.kp, g.nkp * dh);
    grow(&mut sc.vp, g.nk * g.dhp);
    grow(&mut sc.q, Q_BLOCK * dh);
    grow(&mut sc.s, Q_BLOCK * g.nkp);
    grow(&mut sc.o, Q_BLOCK * g.dhp);
    grow(&mut sc.inv, Q_BLOCK);

    pack_keys(&io.k, b, h, g, &mut sc.kp);
    pack_values(&io.v, b, h, g, &mut sc.vp);
    let causal = matches!(io.mask, AttnMask::Causal);
    let bias = match io.mask {
        AttnMask::KeyBias(all) => Some(&all[b * g.nk..(b + 1) * g.nk]),
        _ => None,
    };
    let width = s.heads * dh;

    for i0 in (q0..q1).step_by(Q_BLOCK) {
        let rows = (q1 - i0).min(Q_BLOCK);
        for r in 0..rows {
            let src = io.q.head(b * s.q_len + i0 + r, h, dh);
            for (d, x) in sc.q[r * dh..(r + 1) * dh].iter_mut().zip(src) {
                *d = x * io.scale;
            }
        }
        // Keys any query of this block sees.
        let kv_end = if causal { (i0 + rows).min(g.nk) } else { g.nk };
        let panels = kv_end.div_ceil(16);
        let qb = &sc.q[..rows * dh];
        let sb = &mut sc.s[..rows * g.nkp];
        let kp = &sc.kp[..panels * 16 * dh];
        match isa {
            Isa::Portable => portable::scores(qb, dh, rows, kp, panels, sb, g.nkp),
            // SAFETY: `Isa::Avx512` exists only when avx512f was detected.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::scores(qb, dh, rows, kp, panels, sb, g.nkp) },
        }
        for r in 0..rows {
            let valid = if causal { (i0 + r + 1).min(g.nk) } else { g.nk };
            let row = &mut sb[r * g.nkp..r * g.nkp + kv_end];
            sc.inv[r] = match isa {
                Isa::Portable => portable::softmax_row(row, valid, bias),
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512::softmax_row(row, valid, bias) },
            };
        }
        let ob = &mut sc.o[..rows * g.dhp];
        let vp = &sc.vp[..kv_end * g.dhp];
        match isa {
            Isa::Portable => portable::pv(sb, g.nkp, rows, kv_end, vp, g.dhp, &sc.inv[..rows], ob),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::pv(sb, g.nkp, rows, kv_end, vp, g.dhp, &sc.inv[..rows], ob) },
        }
        for r in 0..rows {
            let offset = (b * s.q_len + i0 + r) * width + h * dh;
            // SAFETY: offset + dh ≤ batch·q_len·width = out.len() (checked in `Io::new`); this task alone owns
            // head h of these queries of batch element b.
            unsafe { write_out(out, offset, &ob[r * g.dhp..r * g.dhp + dh]) };
        }
    }
}

/// Keys of head `h` → `kp[panel][d][lane]` (key = 16·panel + lane), zero-filling the last panel.
fn pack_keys(k: &View, b: usize, h: usize, g: Geom, kp: &mut [f32]) {
    let dh = g.dh;
    for (p, panel) in kp[..g.nkp * dh].chunks_exact_mut(16 * dh).enumerate() {
        for lane in 0..16 {
            let j = p * 16 + lane;
            if j < g.nk {
                for (d, &x) in k.head(b * g.nk + j, h, dh).iter().enumerate() {
                    panel[d * 16 + lane] = x;
                }
            } else {
                for d in 0..dh {
                    panel[d * 16 + lane] = 0.0;
                }
            }
        }
    }
}

/// Values of head `h` → `vp[key][0..dhp]`, zero-padding each row past `head_dim`.
fn pack_values(v: &View, b: usize, h: usize, g: Geom, vp: &mut [f32]) {
    for (j, row) in vp[..g.nk * g.dhp].chunks_exact_mut(g.dhp).enumerate() {
        row[..g.dh].copy_from_slice(v.head(b * g.nk + j, h, g.dh));
        row[g.dh..].fill(0.0);
    }
}
