//! AVX512-BF16 kernels: A-block conversion (`vcvtne2ps2bf16`) and the MR × NR microkernel (`vdpbf16ps`).
//! Every function here requires AVX-512F/BW/VL + BF16; callers check [`super::has_avx512_bf16`] first.

// Index loops over the const-size accumulator arrays are deliberate: after full unrolling every index is a
// constant, which is what lets LLVM keep the arrays in registers.
#![allow(clippy::needless_range_loop)]

use super::{EpiKind, Tile, MR, NR};
use std::arch::x86_64::*;

/// zmm vectors per row of a tile.
const NV: usize = NR / 16;

/// Converts rows `[0, rows)` of `x` (row length `k`), pairs `[p0, p0 + kp)`, to bf16 pairs in `a`
/// (row stride `lda` words). Pairs past `k` get zeros.
pub(super) fn pack_a(x: &[f32], rows: usize, k: usize, p0: usize, kp: usize, a: &mut [u32], lda: usize) {
    assert!(x.len() >= rows * k && 2 * p0 < k && kp <= lda && a.len() >= rows * lda);
    assert!(super::has_avx512_bf16());
    // SAFETY: the CPU features were checked above; bounds: reads stay in x[r·k + 2p0 .. r·k + min(k, 2(p0+kp))]
    // (masked), writes in a[r·lda .. r·lda + kp].
    unsafe { pack_a_impl(x.as_ptr(), rows, k, p0, kp, a.as_mut_ptr(), lda) }
}

/// # Safety
/// AVX512-BF16 present; `x` valid for `rows × k` reads, `a` for `rows × lda` writes, `2·p0 < k`, `kp ≤ lda`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_a_impl(x: *const f32, rows: usize, k: usize, p0: usize, kp: usize, a: *mut u32, lda: usize) {
    // Values of this block: x[2p0 .. e), e = min(k, 2(p0 + kp)); 32 values = 16 pairs per step.
    let e = k.min(2 * (p0 + kp));
    let len = e - 2 * p0;
    for r in 0..rows {
        let src = x.add(r * k + 2 * p0);
        let dst = a.add(r * lda);
        let mut i = 0;
        while i + 32 <= len {
            let lo = _mm512_loadu_ps(src.add(i));
            let hi = _mm512_loadu_ps(src.add(i + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.add(i / 2).cast(), v);
            i += 32;
        }
        if i < len {
            // Tail: masked loads give zeros past `len`, which also pads an odd K.
            let rem = len - i;
            let mlo = mask16(rem);
            let mhi = mask16(rem.saturating_sub(16));
            let lo = _mm512_maskz_loadu_ps(mlo, src.add(i));
            let hi = _mm512_maskz_loadu_ps(mhi, src.wrapping_add(i + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            // Pairs written: ceil(rem / 2) ≤ 16.
            _mm512_mask_storeu_epi32(dst.add(i / 2).cast(), mask16(rem.div_ceil(2)), v);
        }
    }
}

/// Mask of the lowest `n.min(16)` lanes.
#[inline(always)]
fn mask16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Runs the microkernel on a tile of `mr` (1..=MR) rows.
///
/// # Safety
/// AVX512-BF16 present (checked by the caller once per call); the tile's pointers are valid: `a` for `mr` rows of
/// `kp` words at stride `lda`, `b` for `kp·NR` words 64-byte aligned, `c` (and `epi.res`) for `mr` rows of
/// `nc` floats at stride `ldc` (`ldr`), `epi.bias` for `nc` floats when used; no other thread touches this C tile.
pub(super) unsafe fn tile(mr: usize, t: &Tile) {
    debug_assert!((1..=MR).contains(&mr) && (1..=NR).contains(&t.nc));
    const { assert!(MR == 8, "extend the dispatch below when changing MR") };
    match mr {
        1 => ukernel::<1>(t),
        2 => ukernel::<2>(t),
        3 => ukernel::<3>(t),
        4 => ukernel::<4>(t),
        5 => ukernel::<5>(t),
        6 => ukernel::<6>(t),
        7 => ukernel::<7>(t),
        8 => ukernel::<8>(t),
        _ => unreachable!(),
    }
}

/// The R × NR microkernel: C prefetch, the K loop ([`accumulate`]), then epilogue and (masked) stores.
/// Addresses of masked-off vectors may lie past the slices' ends (masked lanes are never accessed, prefetches
/// never fault), hence `wrapping_add` for them.
///
/// # Safety
/// As [`tile`], with `R == mr`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn ukernel<const R: usize>(t: &Tile) {
    let masks: [__mmask16; NV] = std::array::from_fn(|v| mask16(t.nc.saturating_sub(16 * v)));
    if t.first {
        // Fetch the C tile for writing now (prefetchw), so its misses (often DRAM for large M) overlap the K loop
        // instead of stalling the stores at the end. (Later K blocks load C right away anyway.)
        for r in 0..R {
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_ET0>(t.c.wrapping_add(r * t.ldc + 16 * v).cast());
            }
        }
    }
    if t.last && t.epi.kind == EpiKind::Residual {
        // Same for the residual tile the epilogue will read.
        for r in 0..R {
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_T0>(t.epi.res.wrapping_add(r * t.epi.ldr + 16 * v).cast());
            }
        }
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    accumulate::<R>(t, &masks, &mut acc);
    let full = t.nc == NR;

    if t.last && t.epi.kind != EpiKind::None {
        let bias: [__m512; NV] =
            std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], t.epi.bias.wrapping_add(16 * v)));
        for r in 0..R {
            for v in 0..NV {
                let x = _mm512_add_ps(acc[r][v], bias[v]);
                acc[r][v] = match t.epi.kind {
                    EpiKind::GeluTanh => gelu_tanh(x),
                    EpiKind::QuickGelu => quick_gelu(x),
                    EpiKind::Residual => _mm512_add_ps(
                        x,
                        _mm512_maskz_loadu_ps(masks[v], t.epi.res.wrapping_add(r * t.epi.ldr + 16 * v)),
                    ),
                    _ => x,
                };
            }
        }
    }
    for r in 0..R {
        for v in 0..NV {
            let dst = t.c.wrapping_add(r * t.ldc + 16 * v);
            if full {
                _mm512_storeu_ps(dst, acc[r][v]);
            } else {
                _mm512_mask_storeu_ps(dst, masks[v], acc[r][v]);
            }
        }
    }
}

/// The K loop of the microkernel, kept out of line so the accumulator array is promoted to registers (the
/// epilogue's data-dependent code would otherwise pin it to the stack). Writes `out` once at the end: returning
/// the array instead makes it the return slot in memory, and every `vdpbf16ps` is then followed by a store.
///
/// # Safety
/// As [`tile`].
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn accumulate<const R: usize>(t: &Tile, masks: &[__mmask16; NV], out: &mut [[__m512; NV]; R]) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    if !t.first {
        for r in 0..R {
            for v in 0..NV {
                acc[r][v] = _mm512_maskz_loadu_ps(masks[v], t.c.wrapping_add(r * t.ldc + 16 * v));
            }
        }
    }
    let (lda, mut a, mut b) = (t.lda, t.a, t.b);
    // One k-pair: NV aligned B loads, then per row a 32-bit broadcast of its A pair (a plain load on Zen 4) and
    // NV `vdpbf16ps` — 3 + 8 loads per 24 dot products, far below the load ports' limit.
    macro_rules! step {
        ($u:expr) => {{
            let mut bv = [_mm512_setzero_si512(); NV];
            for v in 0..NV {
                bv[v] = _mm512_load_si512(b.add($u * NR + 16 * v).cast());
            }
            for r in 0..R {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * lda + $u) as i32));
                for v in 0..NV {
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, std::mem::transmute::<__m512i, __m512bh>(bv[v]));
                }
            }
        }};
    }
    // Unrolled ×4 so the loop overhead and pointer bumps vanish among 96 dot products.
    let mut p = t.kp;
    while p >= 4 {
        step!(0);
        step!(1);
        step!(2);
        step!(3);
        a = a.add(4);
        b = b.add(4 * NR);
        p -= 4;
    }
    while p > 0 {
        step!(0);
        a = a.add(1);
        b = b.add(NR);
        p -= 1;
    }
    *out = acc;
}

/// e^x for x ≤ 88 (Cephes expf polynomial on [-ln2/2, ln2/2], ~1 ulp; scalef applies 2^n, underflow → 0).
#[inline]
#[target_feature(enable = "avx512f")]
fn exp(x: __m512) -> __m512 {
    let x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0)), _mm512_set1_ps(-104.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let r2 = _mm512_mul_ps(r, r);
    let e = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
    _mm512_scalef_ps(e, n)
}

/// x·σ(t) = x / (1 + e^(−t)).
#[inline]
#[target_feature(enable = "avx512f")]
fn x_sigmoid(x: __m512, t: __m512) -> __m512 {
    let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), t));
    _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
}

/// 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) = x·σ(2√(2/π)(x + 0.044715x³)).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn gelu_tanh(x: __m512) -> __m512 {
    let x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    let u = _mm512_fmadd_ps(_mm512_set1_ps(0.044715), x3, x);
    x_sigmoid(x, _mm512_mul_ps(_mm512_set1_ps(2.0 * 0.797_884_6), u))
}

/// x·σ(1.702x).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn quick_gelu(x: __m512) -> __m512 {
    x_sigmoid(x, _mm512_mul_ps(_mm512_set1_ps(1.702), x))
}
