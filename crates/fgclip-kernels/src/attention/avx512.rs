//! AVX-512F kernels. The public-to-parent functions take slices, check bounds once, and hand raw pointers to small
//! register-tile functions (`qk_tile`, `pv_tile`) whose shapes are const generics, so that their accumulator arrays
//! live in zmm registers (16 or 24 of the 32).
//!
//! Safety of everything here: the CPU must support `avx512f` (the parent only calls these with `Isa::Avx512`).

use std::arch::x86_64::*;

/// Rows per score tile (× 2 panels = 16 accumulators).
const QK_ROWS: usize = 8;
/// Rows per `P·V` tile (× 4 vectors of 16 dims = 24 accumulators).
const PV_ROWS: usize = 6;

/// `s[r][16p + l] = Σ_d q[r][d] · kp[p][d][l]` for `r < rows`, `p < panels` (layouts as in the parent module).
///
/// # Safety
/// The CPU must support avx512f.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn scores(
    q: &[f32],
    dh: usize,
    rows: usize,
    kp: &[f32],
    panels: usize,
    s: &mut [f32],
    s_stride: usize,
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
unsafe fn qk_tile<const MR: usize, const NP: usize>(q: *const f32, dh: usize, kp: *const f32, s: *mut f32, s_stride: usize) {
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

/// Lanes `0..n.min(16)` set.
#[inline]
fn tail_mask(n: usize) -> __mmask16 {
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
                    let s = _mm512_add_ps(_mm512_mask_loadu_ps(ninf, m, x.add(j)), _mm512_maskz_loadu_ps(m, bias.as_ptr().add(j)));
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

/// `exp(x)` for `x ≤ 0` (larger x also fine up to overflow), ≈1 ulp: `x = n·ln2 + r`, `|r| ≤ ln2/2`, Cephes'
/// `expf` polynomial for `e^r`, `2^n` applied by `vscalefps`. Below -104 the result is exactly 0 (as f32 `expf`),
/// which also maps `-inf` and `f32::MIN - max` to 0 without NaN; NaN propagates.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp(x: __m512) -> __m512 {
    // max(c, x) returns x when x is NaN.
    let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    _mm512_scalef_ps(e, n)
}

/// `o[r][..dhp] = inv[r] · Σ_{j<n} p[r][j] · vp[j][..dhp]` for `r < rows` (`dhp` a multiple of 16).
///
/// # Safety
/// The CPU must support avx512f.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pv(
    p: &[f32],
    p_stride: usize,
    rows: usize,
    n: usize,
    vp: &[f32],
    dhp: usize,
    inv: &[f32],
    o: &mut [f32],
) {
    if rows == 0 {
        return;
    }
    assert!(dhp % 16 == 0 && p_stride >= n && p.len() >= (rows - 1) * p_stride + n);
    assert!(vp.len() >= n * dhp && inv.len() >= rows && o.len() >= rows * dhp);
    let (pp, vpp, ip, op) = (p.as_ptr(), vp.as_ptr(), inv.as_ptr(), o.as_mut_ptr());
    let vecs = dhp / 16;
    // Column chunks of up to 64 dims (4 registers), so any head_dim works with ≤ 24 accumulators.
    for c in (0..vecs).step_by(4) {
        let nv = (vecs - c).min(4);
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(PV_ROWS);
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
