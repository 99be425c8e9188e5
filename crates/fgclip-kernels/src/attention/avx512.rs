//! AVX-512F kernels. Each takes slices, checks bounds once, and hands raw pointers to small
//! register-tile functions (`qk_tile`, `pv_tile`) whose shapes are const generics, so that their accumulator arrays
//! live in zmm registers (16 or 24 of the 32).
//!
//! The `unsafe fn`s here require a CPU with `avx512f`; they are reached only through [`Avx512`], which exists
//! only where it was detected.

use std::arch::x86_64::*;

use super::{Geom, Kernels};

/// Proof that this CPU has avx512f: the only way to reach the kernels below.
#[derive(Clone, Copy)]
pub(super) struct Avx512 {
    _detected: (),
}

impl Avx512 {
    pub(super) fn detect() -> Option<Self> {
        is_x86_feature_detected!("avx512f").then_some(Avx512 { _detected: () })
    }
}

// SAFETY (every `unsafe` block in this impl): `self` proves avx512f is available, the kernels' only
// precondition beyond what they check themselves.
impl Kernels for Avx512 {
    fn pack_kv(self, k: &[f32], ks: usize, v: &[f32], vs: usize, g: Geom, kp: &mut [f32], vp: &mut [f32]) {
        unsafe { pack_kv(k, ks, v, vs, g.nk, g.dh, kp, vp) }
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
    fn scores_direct(self, q: &[f32], k: &[f32], ks: usize, s: &mut [f32]) {
        unsafe { scores_direct(q, k, ks, s) }
    }
    fn pv_direct(self, p: &[f32], v: &[f32], vs: usize, inv: f32, o: &mut [f32]) {
        unsafe { pv_direct(p, v, vs, inv, o) }
    }
}

/// Rows per score tile (× 2 panels = 16 accumulators).
const QK_ROWS: usize = 8;
/// Rows per `P·V` tile (× 4 vectors of 16 dims = 24 accumulators).
const PV_ROWS: usize = 6;

/// `s[r][16p + l] = Σ_d q[r][d] · kp[p][d][l]` for `r < rows`, `p < panels` (layouts as in the parent module).
/// With `causal = Some(i0)` (row r is query i0 + r) a row group skips the panels none of its queries sees.
///
/// # Safety
/// The CPU must support avx512f.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
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
    assert!(q.len() >= rows * dh && kp.len() >= panels * 16 * dh);
    assert!(s_stride >= panels * 16 && s.len() >= (rows - 1) * s_stride + panels * 16);
    let (qp, kpp, sp) = (q.as_ptr(), kp.as_ptr(), s.as_mut_ptr());
    // Panel pairs outer: their 8 KiB (dh = 64) stay in L1 while every row group of the block passes over them.
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
            // SAFETY: rows r..r+mr of q (r+mr ≤ rows), panels p..p+np of kp (≤ panels) and the cells
            // s[r..r+mr][16p..16(p+np)] are in bounds by the asserts above; avx512f per this function's contract.
            unsafe {
                let (qt, kt, st) = (qp.add(r * dh), kpp.add(p * 16 * dh), sp.add(r * s_stride + p * 16));
                macro_rules! tile {
                    ($($m:literal),*) => {
                        match (mr, np) {
                            $(($m, 2) => qk_tile::<$m, 2>(qt, dh, kt, st, s_stride),
                              ($m, _) => qk_tile::<$m, 1>(qt, dh, kt, st, s_stride),)*
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

/// One `MR × 16·NP` score tile: for each d, broadcast `q[r][d]` and FMA it against the `NP` key vectors.
///
/// # Safety
/// avx512f; `q` readable for `MR·dh` floats, `kp` for `NP` panels of `16·dh`, `s` writable for `MR` rows of
/// `16·NP` at stride `s_stride`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn qk_tile<const MR: usize, const NP: usize>(
    q: *const f32,
    dh: usize,
    kp: *const f32,
    s: *mut f32,
    s_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NP]; MR];
    for d in 0..dh {
        let mut kv = [_mm512_setzero_ps(); NP];
        for (p, k) in kv.iter_mut().enumerate() {
            // SAFETY: p < NP, d < dh: inside the NP panels.
            *k = unsafe { _mm512_loadu_ps(kp.add(p * 16 * dh + d * 16)) };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r < MR, d < dh.
            let x = _mm512_set1_ps(unsafe { *q.add(r * dh + d) });
            for (a, &k) in acc_r.iter_mut().zip(&kv) {
                *a = _mm512_fmadd_ps(x, k, *a);
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

/// Prefetches `x[at..at + len]` (`len ≥ 1`, in bounds: checked by the callers' asserts).
#[inline]
fn prefetch_row(x: &[f32], at: usize, len: usize) {
    for c in (0..len).step_by(16).chain([len - 1]) {
        // SAFETY: prefetches never fault; the address is inside `x` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().add(at + c).cast()) };
    }
}

/// Lanes `0..n.min(16)` set.
#[inline]
pub(super) fn tail_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Softmax of `row[..valid]` in place, unnormalised (`exp(x - max)`), with the key bias added first; zeroes
/// `row[valid..]`. Returns `1 / Σ`. A row whose maximum is `-inf` becomes uniform.
///
/// # Safety
/// The CPU must support avx512f.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn softmax_row(row: &mut [f32], valid: usize, bias: Option<&[f32]>) -> f32 {
    let (live, dead) = row.split_at_mut(valid);
    dead.fill(0.0);
    let n = live.len();
    let x = live.as_mut_ptr();
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut vmax = ninf;
    // Masked loads/stores: lanes past `n` are neither read nor written (AVX-512 fault suppression), and read as
    // -inf so they drop out of the max and give exp = 0.
    match bias {
        Some(bias) => {
            assert!(bias.len() >= n);
            for j in (0..n).step_by(16) {
                let m = tail_mask(n - j);
                // SAFETY: the lanes selected by `m` are j..min(j+16, n), inside `live` and `bias`.
                unsafe {
                    let s = _mm512_add_ps(
                        _mm512_mask_loadu_ps(ninf, m, x.add(j)),
                        _mm512_maskz_loadu_ps(m, bias.as_ptr().add(j)),
                    );
                    _mm512_mask_storeu_ps(x.add(j), m, s);
                    vmax = _mm512_max_ps(vmax, s);
                }
            }
        }
        None => {
            for j in (0..n).step_by(16) {
                // SAFETY: as above.
                vmax = _mm512_max_ps(vmax, unsafe { _mm512_mask_loadu_ps(ninf, tail_mask(n - j), x.add(j)) });
            }
        }
    }
    let max = _mm512_reduce_max_ps(vmax);
    if max == f32::NEG_INFINITY {
        live.fill(1.0);
        return 1.0 / n as f32;
    }
    let vm = _mm512_set1_ps(max);
    let mut vsum = _mm512_setzero_ps();
    for j in (0..n).step_by(16) {
        let m = tail_mask(n - j);
        // SAFETY: as above.
        unsafe {
            let e = exp(_mm512_sub_ps(_mm512_mask_loadu_ps(ninf, m, x.add(j)), vm));
            _mm512_mask_storeu_ps(x.add(j), m, e);
            vsum = _mm512_add_ps(vsum, e);
        }
    }
    1.0 / _mm512_reduce_add_ps(vsum)
}

/// `exp(x)` for `x ≤ 0` (larger x fine up to overflow) as `2^t`, `t = x·log2(e)`: `t = n + f`, `|f| ≤ 1/2`, a
/// degree-5 polynomial for `2^f` (relative error < 2e-7, fitted for minimax relative error), `2^n` applied by
/// `vscalefps`. The rounding of `t` costs `|t|·2^-24` relative, which only matters where `e^x` is negligible
/// next to the row max's `1`. `t` is clamped at -150, where the result is exactly 0, so `-inf` and
/// `f32::MIN - max` give 0 without NaN; NaN propagates. 11 instructions for 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp(x: __m512) -> __m512 {
    // max(c, t) returns t when t is NaN.
    let t = _mm512_max_ps(_mm512_set1_ps(-150.0), _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm512_sub_ps(t, n);
    let mut p = _mm512_set1_ps(1.326_471e-3);
    // Fitted coefficients (the linear one is close to, but deliberately not, ln 2).
    #[allow(clippy::approx_constant)]
    for c in [9.671_507e-3, 5.550_733_6e-2, 2.402_224_2e-1, 0.693_147, 1.0] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// `o[r][..dhp] = inv[r] · Σ_{j<n} p[r][j] · vp[j][..dhp]` for `r < rows` (`dhp` a multiple of 16). With
/// `causal = Some(i0)` a row group stops at the last key its queries see (later p are 0: same result, bit for bit).
///
/// # Safety
/// The CPU must support avx512f.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
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
    assert!(dhp.is_multiple_of(16) && p_stride >= n && p.len() >= (rows - 1) * p_stride + n);
    assert!(vp.len() >= n * dhp && inv.len() >= rows && o.len() >= rows * dhp);
    let (pp, vpp, ip, op) = (p.as_ptr(), vp.as_ptr(), inv.as_ptr(), o.as_mut_ptr());
    let vecs = dhp / 16;
    // Column chunks of up to 64 dims (4 registers), so any head_dim works with ≤ 24 accumulators.
    for c in (0..vecs).step_by(4) {
        let nv = (vecs - c).min(4);
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(PV_ROWS);
            let n = causal.map_or(n, |i0| n.min(i0 + r + mr));
            // SAFETY: rows r..r+mr (≤ rows) of p over n keys, columns 16c..16(c+nv) (≤ dhp) of n rows of vp,
            // inv[r..r+mr] and o[r..r+mr][16c..16(c+nv)] are in bounds by the asserts above; avx512f per contract.
            unsafe {
                let (pt, vt, it, ot) = (pp.add(r * p_stride), vpp.add(c * 16), ip.add(r), op.add(r * dhp + c * 16));
                macro_rules! tile {
                    ($($m:literal),*) => {
                        match (mr, nv) {
                            $(($m, 4) => pv_tile::<$m, 4>(pt, p_stride, n, vt, dhp, it, ot),
                              ($m, 3) => pv_tile::<$m, 3>(pt, p_stride, n, vt, dhp, it, ot),
                              ($m, 2) => pv_tile::<$m, 2>(pt, p_stride, n, vt, dhp, it, ot),
                              ($m, _) => pv_tile::<$m, 1>(pt, p_stride, n, vt, dhp, it, ot),)*
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

/// One `MR × 16·NV` output tile: for each key j, broadcast `p[r][j]` and FMA it against the `NV` value vectors,
/// then scale row r by `inv[r]`.
///
/// # Safety
/// avx512f; `p` readable for `MR` rows of `n` at stride `p_stride`, `v` for `n` rows of `16·NV` at stride
/// `v_stride`, `inv` for `MR`, `o` writable for `MR` rows of `16·NV` at stride `v_stride`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pv_tile<const MR: usize, const NV: usize>(
    p: *const f32,
    p_stride: usize,
    n: usize,
    v: *const f32,
    v_stride: usize,
    inv: *const f32,
    o: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for j in 0..n {
        let mut vv = [_mm512_setzero_ps(); NV];
        for (c, x) in vv.iter_mut().enumerate() {
            // SAFETY: j < n, c < NV.
            *x = unsafe { _mm512_loadu_ps(v.add(j * v_stride + c * 16)) };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r < MR, j < n.
            let w = _mm512_set1_ps(unsafe { *p.add(r * p_stride + j) });
            for (a, &x) in acc_r.iter_mut().zip(&vv) {
                *a = _mm512_fmadd_ps(w, x, *a);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        // SAFETY: r < MR.
        let s = _mm512_set1_ps(unsafe { *inv.add(r) });
        for (c, &a) in acc_r.iter().enumerate() {
            // SAFETY: r < MR, c < NV.
            unsafe { _mm512_storeu_ps(o.add(r * v_stride + c * 16), _mm512_mul_ps(a, s)) };
        }
    }
}

/// Scores of one query against unpacked keys: `s[j] = Σ_d q[d] · k[j·k_stride + d]` for `j < s.len()`.
/// For tiny `q_len` (MAP head), where packing the keys would cost more than using them.
///
/// # Safety
/// The CPU must support avx512f.
#[target_feature(enable = "avx512f")]
unsafe fn scores_direct(q: &[f32], k: &[f32], k_stride: usize, s: &mut [f32]) {
    let (dh, n) = (q.len(), s.len());
    if n == 0 {
        return;
    }
    assert!(k.len() >= (n - 1) * k_stride + dh);
    for (j, out) in s.iter_mut().enumerate() {
        if j + super::PREFETCH_ROWS < n {
            prefetch_row(k, (j + super::PREFETCH_ROWS) * k_stride, dh);
        }
        let row = &k[j * k_stride..j * k_stride + dh];
        let mut acc = _mm512_setzero_ps();
        for c in (0..dh).step_by(16) {
            let m = tail_mask(dh - c);
            // SAFETY: lanes c..min(c+16, dh) of `q` and `row`.
            unsafe {
                acc = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(m, q.as_ptr().add(c)),
                    _mm512_maskz_loadu_ps(m, row.as_ptr().add(c)),
                    acc,
                );
            }
        }
        *out = _mm512_reduce_add_ps(acc);
    }
}

/// `o[..dh] = inv · Σ_j p[j] · v[j·v_stride..][..dh]` over unpacked values (`dh = o.len()`).
///
/// # Safety
/// The CPU must support avx512f.
#[target_feature(enable = "avx512f")]
unsafe fn pv_direct(p: &[f32], v: &[f32], v_stride: usize, inv: f32, o: &mut [f32]) {
    let (dh, n) = (o.len(), p.len());
    if n > 0 {
        assert!(v.len() >= (n - 1) * v_stride + dh);
    }
    for c0 in (0..dh).step_by(64) {
        // Up to 4 vectors of this 64-dim chunk; masks are empty past dh (no access).
        let masks: [__mmask16; 4] = std::array::from_fn(|t| tail_mask(dh.saturating_sub(c0 + 16 * t)));
        let mut acc = [_mm512_setzero_ps(); 4];
        for (j, &w) in p.iter().enumerate() {
            if j + super::PREFETCH_ROWS < n {
                prefetch_row(v, (j + super::PREFETCH_ROWS) * v_stride + c0, (dh - c0).min(64));
            }
            let w = _mm512_set1_ps(w);
            for (t, a) in acc.iter_mut().enumerate() {
                // SAFETY: lanes selected by masks[t] are columns < dh of value row j < n.
                let x = unsafe { _mm512_maskz_loadu_ps(masks[t], v.as_ptr().add(j * v_stride + c0 + 16 * t)) };
                *a = _mm512_fmadd_ps(w, x, *a);
            }
        }
        let s = _mm512_set1_ps(inv);
        for (t, &a) in acc.iter().enumerate() {
            // SAFETY: as above, columns < dh of `o`.
            unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr().add(c0 + 16 * t), masks[t], _mm512_mul_ps(a, s)) };
        }
    }
}

/// Packs one head's keys and values (as [`super::pack_kv`]): `k`, `v` hold row j at `j·stride`; keys go to
/// `kp[panel][d][lane]` through 16×16 in-register transposes, values to `vp[j][..dhp]` (zero-padded) with masked
/// vector copies. Prefetches the next panel's rows while working on one.
///
/// # Safety
/// The CPU must support avx512f.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn pack_kv(
    k: &[f32],
    k_stride: usize,
    v: &[f32],
    v_stride: usize,
    nk: usize,
    dh: usize,
    kp: &mut [f32],
    vp: &mut [f32],
) {
    if nk == 0 {
        return;
    }
    let dhp = dh.div_ceil(16) * 16;
    let panels = nk.div_ceil(16);
    assert!(k.len() >= (nk - 1) * k_stride + dh && v.len() >= (nk - 1) * v_stride + dh);
    assert!(kp.len() >= panels * 16 * dh && vp.len() >= nk * dhp);
    for p in 0..panels {
        let (j0, keys) = (16 * p, (nk - 16 * p).min(16));
        for j in j0 + 16..nk.min(j0 + 32) {
            for c in (0..dh).step_by(16).chain([dh - 1]) {
                // SAFETY: in bounds of `k` / `v` (row j < nk, column < dh); prefetches never fault anyway.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(k.as_ptr().add(j * k_stride + c).cast());
                    _mm_prefetch::<_MM_HINT_T0>(v.as_ptr().add(j * v_stride + c).cast());
                }
            }
        }
        for c in (0..dh).step_by(16) {
            let m = tail_mask(dh - c);
            let mut x = [_mm512_setzero_ps(); 16];
            for (l, x) in x.iter_mut().enumerate().take(keys) {
                // SAFETY: row j0 + l < nk, lanes c..min(c+16, dh).
                *x = unsafe { _mm512_maskz_loadu_ps(m, k.as_ptr().add((j0 + l) * k_stride + c)) };
            }
            transpose16(&mut x);
            for (t, &x) in x.iter().enumerate().take((dh - c).min(16)) {
                // SAFETY: dim c + t < dh of panel p < panels.
                unsafe { _mm512_storeu_ps(kp.as_mut_ptr().add(p * 16 * dh + (c + t) * 16), x) };
            }
        }
        for j in j0..j0 + keys {
            for c in (0..dhp).step_by(16) {
                // SAFETY: lanes past dh are neither read (masked) nor outside `vp` (row j has dhp floats).
                unsafe {
                    let x = _mm512_maskz_loadu_ps(tail_mask(dh.saturating_sub(c)), v.as_ptr().add(j * v_stride + c));
                    _mm512_storeu_ps(vp.as_mut_ptr().add(j * dhp + c), x);
                }
            }
        }
    }
}

/// In-place transpose of a 16×16 block (`x[row]` lane `col` ↔ `x[col]` lane `row`): unpack pairs of rows, shuffle
/// 64-bit pairs (4×4 transposes inside each 128-bit block), then two rounds of 128-bit block shuffles.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn transpose16(x: &mut [__m512; 16]) {
    let mut a = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        a[2 * k] = _mm512_unpacklo_ps(x[2 * k], x[2 * k + 1]);
        a[2 * k + 1] = _mm512_unpackhi_ps(x[2 * k], x[2 * k + 1]);
    }
    // b[4g + m], 128-bit block L: rows 4g..4g+4 at column 4L + m.
    let mut b = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        b[4 * g] = _mm512_shuffle_ps::<0x44>(a[4 * g], a[4 * g + 2]);
        b[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(a[4 * g], a[4 * g + 2]);
        b[4 * g + 2] = _mm512_shuffle_ps::<0x44>(a[4 * g + 1], a[4 * g + 3]);
        b[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(a[4 * g + 1], a[4 * g + 3]);
    }
    // Column 4L + m gathers block L of b[m], b[4 + m], b[8 + m], b[12 + m].
    for m in 0..4 {
        let c0 = _mm512_shuffle_f32x4::<0x44>(b[m], b[4 + m]);
        let c1 = _mm512_shuffle_f32x4::<0xEE>(b[m], b[4 + m]);
        let c2 = _mm512_shuffle_f32x4::<0x44>(b[8 + m], b[12 + m]);
        let c3 = _mm512_shuffle_f32x4::<0xEE>(b[8 + m], b[12 + m]);
        x[m] = _mm512_shuffle_f32x4::<0x88>(c0, c2);
        x[4 + m] = _mm512_shuffle_f32x4::<0xDD>(c0, c2);
        x[8 + m] = _mm512_shuffle_f32x4::<0x88>(c1, c3);
        x[12 + m] = _mm512_shuffle_f32x4::<0xDD>(c1, c3);
    }
}
