//! AVX512-BF16 kernels for [`super::attention_bf16`]: the f32 kernels' blocking and tiles, with the two products
//! done by `vdpbf16ps`, which multiplies pairs of bf16 and adds both products into an f32 lane (twice the FMA
//! rate of f32). Operands are pairs along the reduction dimension, one pair per 32-bit word (element `2t` in the
//! low half, `2t + 1` in the high half):
//!
//! * keys `kp[panel][d/2][16]` (head dims paired; one key per lane), queries `q[r][d/2]` (broadcast per row);
//! * probabilities `p[r][j/2]`, converted in place over the f32 score row, and values `vp[j/2][dhp]` (keys
//!   paired; one output dim per lane).
//!
//! Rounding is to nearest even. The softmax (scores, max, exp, sum) stays f32; the sum is taken over the rounded
//! probabilities, so each row's weights sum to 1. Calls with `q_len ≤ 4` (`direct_task`, the MAP head) are
//! memory-bound and use the f32 AVX-512 kernels unchanged.
//!
//! The `unsafe fn`s here require `avx512f` and `avx512bf16`; they are reached only through [`Avx512Bf16`].

use std::arch::x86_64::*;

use super::avx512::{self, tail_mask, transpose16};
use super::{Geom, Kernels};

/// Rows per score tile and per `P·V` tile, as in the f32 kernels.
const QK_ROWS: usize = 8;
const PV_ROWS: usize = 6;

/// Proof that this CPU has avx512f and avx512bf16.
#[derive(Clone, Copy)]
pub(super) struct Avx512Bf16 {
    f32: avx512::Avx512,
}

impl Avx512Bf16 {
    pub(super) fn detect() -> Option<Self> {
        let f32 = avx512::Avx512::detect()?;
        is_x86_feature_detected!("avx512bf16").then_some(Avx512Bf16 { f32 })
    }
}

// SAFETY (every `unsafe` block in this impl): `self` proves avx512f and avx512bf16 are available, the kernels'
// only precondition beyond what they check themselves.
impl Kernels for Avx512Bf16 {
    fn pack_kv(self, k: &[f32], ks: usize, v: &[f32], vs: usize, g: Geom, kp: &mut [f32], vp: &mut [f32]) {
        unsafe { pack_kv(k, ks, v, vs, g.nk, g.dh, kp, vp) }
    }
    fn prep_q(self, q: &mut [f32], dh: usize) {
        for row in q.chunks_exact_mut(dh) {
            unsafe { pair_in_place(row) };
        }
    }
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
    ) {
        unsafe { scores(q, dh, rows, kp, panels, s, s_stride, causal) }
    }
    fn softmax_row(self, row: &mut [f32], valid: usize, bias: Option<&[f32]>) -> f32 {
        unsafe { softmax_row(row, valid, bias) }
    }
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
    ) {
        unsafe { pv(p, p_stride, rows, n, vp, dhp, inv, o, causal) }
    }
    // One query per task: memory-bound, the f32 kernels are as fast and exact.
    fn scores_direct(self, q: &[f32], k: &[f32], ks: usize, s: &mut [f32]) {
        self.f32.scores_direct(q, k, ks, s)
    }
    fn softmax_row_direct(self, row: &mut [f32], valid: usize, bias: Option<&[f32]>) -> f32 {
        self.f32.softmax_row(row, valid, bias)
    }
    fn pv_direct(self, p: &[f32], v: &[f32], vs: usize, inv: f32, o: &mut [f32]) {
        self.f32.pv_direct(p, v, vs, inv, o)
    }
}

/// Per lane: rounded to bf16 (nearest even), as f32 bits with the low 16 bits zero (so also the rounded f32).
#[inline]
#[target_feature(enable = "avx512f")]
fn round_bf16(x: __m512) -> __m512i {
    let b = _mm512_castps_si512(x);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
    let r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    _mm512_and_si512(r, _mm512_set1_epi32(0xffff_0000u32 as i32))
}

/// Per lane: the word of bf16 pair (`lo`, `hi`).
#[inline]
#[target_feature(enable = "avx512f")]
fn pair(lo: __m512, hi: __m512) -> __m512i {
    _mm512_or_si512(_mm512_srli_epi32::<16>(round_bf16(lo)), round_bf16(hi))
}

/// Reinterprets 16 words as 32 bf16.
#[inline]
#[target_feature(enable = "avx512f")]
fn bh(x: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte plain vectors; every bit pattern is a valid value of either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
}

/// Keys → `kp[panel][d/2][16]` words (16×16 transposes, then dims paired), values → `vp[j/2][..dhp]` words
/// (keys paired, dims past `head_dim` and a missing last key zero). `k`, `v` hold row j at `j·stride`.
///
/// # Safety
/// The CPU must support avx512f.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn pack_kv(k: &[f32], ks: usize, v: &[f32], vs: usize, nk: usize, dh: usize, kp: &mut [f32], vp: &mut [f32]) {
    if nk == 0 {
        return;
    }
    let (dhw, dhp, panels) = (dh.div_ceil(2), dh.div_ceil(16) * 16, nk.div_ceil(16));
    assert!(k.len() >= (nk - 1) * ks + dh && v.len() >= (nk - 1) * vs + dh);
    assert!(kp.len() >= panels * 16 * dhw && vp.len() >= nk.div_ceil(2) * dhp);
    let (kpp, vpp) = (kp.as_mut_ptr().cast::<__m512i>(), vp.as_mut_ptr().cast::<__m512i>());
    for p in 0..panels {
        let (j0, keys) = (16 * p, (nk - 16 * p).min(16));
        for j in j0 + 16..nk.min(j0 + 32) {
            for c in (0..dh).step_by(16).chain([dh - 1]) {
                // SAFETY: in bounds of `k` / `v`; prefetches never fault anyway.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(k.as_ptr().add(j * ks + c).cast());
                    _mm_prefetch::<_MM_HINT_T0>(v.as_ptr().add(j * vs + c).cast());
                }
            }
        }
        for c in (0..dh).step_by(16) {
            let m = tail_mask(dh - c);
            let mut x = [_mm512_setzero_ps(); 16];
            for (l, x) in x.iter_mut().enumerate().take(keys) {
                // SAFETY: row j0 + l < nk, lanes c..min(c+16, dh).
                *x = unsafe { _mm512_maskz_loadu_ps(m, k.as_ptr().add((j0 + l) * ks + c)) };
            }
            transpose16(&mut x);
            // x[t] is dim c + t of the 16 keys (zero past dh).
            for t in (0..(dh - c).min(16)).step_by(2) {
                // SAFETY: word (c + t)/2 < dhw of panel p < panels: inside `kp` (asserted).
                unsafe { _mm512_storeu_si512(kpp.add(p * dhw + (c + t) / 2), pair(x[t], x[t + 1])) };
            }
        }
        for jp in j0 / 2..(j0 + keys).div_ceil(2) {
            for c in (0..dhp).step_by(16) {
                let m = tail_mask(dh.saturating_sub(c));
                let m_hi = if 2 * jp + 1 < nk { m } else { 0 };
                // SAFETY: masked lanes are columns < dh of rows < nk; the store is word row jp < ⌈nk/2⌉ of `vp`.
                unsafe {
                    let lo = _mm512_maskz_loadu_ps(m, v.as_ptr().add(2 * jp * vs + c));
                    let hi = _mm512_maskz_loadu_ps(m_hi, v.as_ptr().add((2 * jp + 1).min(nk - 1) * vs + c));
                    _mm512_storeu_si512(vpp.add((jp * dhp + c) / 16), pair(lo, hi));
                }
            }
        }
    }
}

/// Scores from paired queries (`q` row r: `⌈dh/2⌉` words at `r·dh`) and paired key panels; as
/// [`avx512`]'s f32 `scores` otherwise.
///
/// # Safety
/// The CPU must support avx512f and avx512bf16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn scores(
    q: &[f32],
    dh: usize,
    rows: usize,
    kp: &[f32],
    panels: usize,
    s: &mut [f32],
    s_stride: usize,
    causal: Option<usize>,
) {
    if rows == 0 || panels == 0 {
        return;
    }
    let dhw = dh.div_ceil(2);
    assert!(q.len() >= (rows - 1) * dh + dhw && kp.len() >= panels * 16 * dhw);
    assert!(s_stride >= panels * 16 && s.len() >= (rows - 1) * s_stride + panels * 16);
    let (qp, kpp, sp) = (q.as_ptr().cast::<i32>(), kp.as_ptr().cast::<__m512i>(), s.as_mut_ptr());
    let mut p = 0;
    while p < panels {
        let np = (panels - p).min(2);
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(QK_ROWS);
            if causal.is_some_and(|i0| 16 * p >= i0 + r + mr) {
                r += mr;
                continue;
            }
            // SAFETY: rows r..r+mr of q, panels p..p+np of kp and cells s[r..r+mr][16p..16(p+np)] are in bounds
            // by the asserts above; CPU features per this function's contract.
            unsafe {
                let (qt, kt, st) = (qp.add(r * dh), kpp.add(p * dhw), sp.add(r * s_stride + p * 16));
                macro_rules! tile {
                    ($($m:literal),*) => {
                        match (mr, np) {
                            $(($m, 2) => qk_tile::<$m, 2>(qt, dh, dhw, kt, st, s_stride),
                              ($m, _) => qk_tile::<$m, 1>(qt, dh, dhw, kt, st, s_stride),)*
                            _ => unreachable!(),
                        }
                    };
                }
                tile!(1, 2, 3, 4, 5, 6, 7, 8);
            }
            r += mr;
        }
        p += np;
    }
}

/// One `MR × 16·NP` score tile: per dim pair, broadcast the query word of each row and `vdpbf16ps` it against
/// the `NP` key-panel vectors.
///
/// # Safety
/// avx512f + avx512bf16; `q` readable for `MR` rows of `dhw` words at stride `q_stride`, `kp` for `NP` panels of
/// `dhw` vectors, `s` writable for `MR` rows of `16·NP` floats at stride `s_stride`.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn qk_tile<const MR: usize, const NP: usize>(
    q: *const i32,
    q_stride: usize,
    dhw: usize,
    kp: *const __m512i,
    s: *mut f32,
    s_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NP]; MR];
    for t in 0..dhw {
        let mut kv = [bh(_mm512_setzero_si512()); NP];
        for (p, k) in kv.iter_mut().enumerate() {
            // SAFETY: p < NP, t < dhw.
            *k = bh(unsafe { _mm512_loadu_si512(kp.add(p * dhw + t)) });
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r < MR, t < dhw.
            let x = bh(_mm512_set1_epi32(unsafe { *q.add(r * q_stride + t) }));
            for (a, &k) in acc_r.iter_mut().zip(&kv) {
                *a = _mm512_dpbf16_ps(*a, x, k);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (p, &a) in acc_r.iter().enumerate() {
            // SAFETY: row r < MR, columns 16p..16p+16 < 16·NP.
            unsafe { _mm512_storeu_ps(s.add(r * s_stride + p * 16), a) };
        }
    }
}

/// The f32 softmax, then the row's probabilities rounded and paired in place ([`pair_in_place`]). Returns
/// `1 / Σ` of the rounded values.
///
/// # Safety
/// The CPU must support avx512f.
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row(row: &mut [f32], valid: usize, bias: Option<&[f32]>) -> f32 {
    // SAFETY: avx512f per this function's contract.
    unsafe {
        avx512::softmax_row(row, valid, bias);
        1.0 / pair_in_place(row)
    }
}

/// Rounds `x` to bf16 and pairs it in place: word t (at float t) holds floats 2t (low) and 2t + 1 (high; 0 past
/// the end). Returns the sum of the rounded values.
///
/// # Safety
/// The CPU must support avx512f.
#[target_feature(enable = "avx512f")]
unsafe fn pair_in_place(x: &mut [f32]) -> f32 {
    let n = x.len();
    let words = n.div_ceil(2);
    let xp = x.as_mut_ptr();
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    let mut sum = _mm512_setzero_ps();
    for w0 in (0..words).step_by(16) {
        // SAFETY: masked lanes are floats < n; the store writes words w0..min(w0+16, words) ≤ n, all of which come
        // from floats ≥ 2·w0 that this iteration has already loaded (later iterations read beyond).
        unsafe {
            let a = _mm512_maskz_loadu_ps(tail_mask(n - 2 * w0), xp.add(2 * w0));
            let b = _mm512_maskz_loadu_ps(tail_mask(n.saturating_sub(2 * w0 + 16)), xp.add(2 * w0 + 16));
            let (lo, hi) = (_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b));
            let (rl, rh) = (round_bf16(lo), round_bf16(hi));
            sum = _mm512_add_ps(sum, _mm512_add_ps(_mm512_castsi512_ps(rl), _mm512_castsi512_ps(rh)));
            let w = _mm512_or_si512(_mm512_srli_epi32::<16>(rl), rh);
            _mm512_mask_storeu_epi32(xp.add(w0).cast(), tail_mask(words - w0), w);
        }
    }
    _mm512_reduce_add_ps(sum)
}

/// `P·V` from paired probabilities (`p` row r: words at `r·p_stride`) and paired values; as [`avx512`]'s f32
/// `pv` otherwise.
///
/// # Safety
/// The CPU must support avx512f and avx512bf16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pv(
    p: &[f32],
    p_stride: usize,
    rows: usize,
    n: usize,
    vp: &[f32],
    dhp: usize,
    inv: &[f32],
    o: &mut [f32],
    causal: Option<usize>,
) {
    if rows == 0 {
        return;
    }
    let pairs = n.div_ceil(2);
    assert!(dhp.is_multiple_of(16) && p_stride >= pairs && p.len() >= (rows - 1) * p_stride + pairs);
    assert!(vp.len() >= pairs * dhp && inv.len() >= rows && o.len() >= rows * dhp);
    let (pp, vpp, ip, op) = (p.as_ptr().cast::<i32>(), vp.as_ptr().cast::<__m512i>(), inv.as_ptr(), o.as_mut_ptr());
    let vecs = dhp / 16;
    for c in (0..vecs).step_by(4) {
        let nv = (vecs - c).min(4);
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(PV_ROWS);
            let np = causal.map_or(n, |i0| n.min(i0 + r + mr)).div_ceil(2);
            // SAFETY: rows r..r+mr of p over np ≤ pairs words, vectors c..c+nv (≤ vecs) of np word rows of vp,
            // inv[r..r+mr] and o[r..r+mr][16c..16(c+nv)] are in bounds by the asserts; features per contract.
            unsafe {
                let (pt, vt, it, ot) = (pp.add(r * p_stride), vpp.add(c), ip.add(r), op.add(r * dhp + c * 16));
                macro_rules! tile {
                    ($($m:literal),*) => {
                        match (mr, nv) {
                            $(($m, 4) => pv_tile::<$m, 4>(pt, p_stride, np, vt, vecs, it, ot, dhp),
                              ($m, 3) => pv_tile::<$m, 3>(pt, p_stride, np, vt, vecs, it, ot, dhp),
                              ($m, 2) => pv_tile::<$m, 2>(pt, p_stride, np, vt, vecs, it, ot, dhp),
                              ($m, _) => pv_tile::<$m, 1>(pt, p_stride, np, vt, vecs, it, ot, dhp),)*
                            _ => unreachable!(),
                        }
                    };
                }
                tile!(1, 2, 3, 4, 5, 6);
            }
            r += mr;
        }
    }
}

/// One `MR × 16·NV` output tile: per key pair, broadcast each row's probability word and `vdpbf16ps` it against
/// the `NV` value vectors; then scale row r by `inv[r]`.
///
/// # Safety
/// avx512f + avx512bf16; `p` readable for `MR` rows of `np` words at stride `p_stride`, `v` for `np` rows of `NV`
/// vectors at stride `v_stride` vectors, `inv` for `MR`, `o` writable for `MR` rows of `16·NV` at stride `o_stride`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pv_tile<const MR: usize, const NV: usize>(
    p: *const i32,
    p_stride: usize,
    np: usize,
    v: *const __m512i,
    v_stride: usize,
    inv: *const f32,
    o: *mut f32,
    o_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for jp in 0..np {
        let mut vv = [bh(_mm512_setzero_si512()); NV];
        for (c, x) in vv.iter_mut().enumerate() {
            // SAFETY: jp < np, c < NV.
            *x = bh(unsafe { _mm512_loadu_si512(v.add(jp * v_stride + c)) });
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r < MR, jp < np.
            let w = bh(_mm512_set1_epi32(unsafe { *p.add(r * p_stride + jp) }));
            for (a, &x) in acc_r.iter_mut().zip(&vv) {
                *a = _mm512_dpbf16_ps(*a, w, x);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        // SAFETY: r < MR.
        let s = _mm512_set1_ps(unsafe { *inv.add(r) });
        for (c, &a) in acc_r.iter().enumerate() {
            // SAFETY: r < MR, c < NV.
            unsafe { _mm512_storeu_ps(o.add(r * o_stride + c * 16), _mm512_mul_ps(a, s)) };
        }
    }
}
