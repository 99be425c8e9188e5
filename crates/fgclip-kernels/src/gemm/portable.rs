//! Portable kernels (any target, used when AVX512-BF16 is absent): the same packed layouts and the same
//! arithmetic as the AVX512-BF16 path — bf16-rounded inputs, exact f32 products, f32 sums in the same order
//! (per k-pair the odd element first, as `vdpbf16ps` does), so both paths give bit-identical results for the
//! non-transcendental epilogues (barring subnormal products, which `vdpbf16ps` flushes to zero).
//!
//! A is converted to bf16-rounded f32 (twice the bytes of the bf16 block, but a plain broadcast load in the
//! kernel) and each B micro-panel is widened once to f32 (reused by all row tiles), both in the k order of the
//! sums (odd, even, odd, …). The microkernel is then a plain 6 × 16 f32 outer-product loop over fixed-size
//! arrays that LLVM vectorises. On x86_64 it is also compiled for AVX2 + FMA and picked at runtime (on Zen 4
//! that runs at about candle's f32 speed); aarch64 always has FMA. A fused multiply-add gives the same bits as
//! a multiply then add here, because every product is exact.

// Index loops over the const-size accumulator arrays are deliberate: after full unrolling every index is a
// constant, which is what lets LLVM keep the arrays in registers.
#![allow(clippy::needless_range_loop)]

use super::{f32_to_bf16, gelu_tanh_f32, quick_gelu_f32, EpiKind, Tile, NR};

/// Rows of the portable microkernel (6 × 16 f32 accumulators = 12 ymm / 24 NEON registers).
const PR: usize = 6;
/// Columns of the portable microkernel.
const PC: usize = 16;

/// Rows of `x` (length `k`), pairs `[p0, p0 + kp)` → bf16-rounded f32 values (as bits) in the order the sums
/// use — per pair the odd k first — i.e. `a[r·2lda + 2i] = x[2(p0+i)+1]`, `a[r·2lda + 2i + 1] = x[2(p0+i)]`.
pub(super) fn pack_a(x: &[f32], rows: usize, k: usize, p0: usize, kp: usize, a: &mut [u32], lda: usize) {
    let round = |v: Option<&f32>| (v.map_or(0, |&v| f32_to_bf16(v)) as u32) << 16;
    for r in 0..rows {
        let src = &x[r * k..(r + 1) * k];
        let dst = &mut a[r * 2 * lda..r * 2 * lda + 2 * kp];
        for (i, d) in dst.chunks_exact_mut(2).enumerate() {
            let kk = 2 * (p0 + i);
            d[0] = round(src.get(kk + 1));
            d[1] = round(src.get(kk));
        }
    }
}

#[inline(always)]
fn lo(w: u32) -> f32 {
    f32::from_bits(w << 16)
}
#[inline(always)]
fn hi(w: u32) -> f32 {
    f32::from_bits(w & 0xffff_0000)
}

/// Widens a B block (`kp` pairs × NR bf16 pairs) to f32 `[2p + (0: odd k, 1: even k)][NR]`.
pub(super) fn widen_b(b: &[u32], kp: usize, out: &mut Vec<f32>) {
    out.resize(2 * kp * NR, 0.0);
    for (src, dst) in b[..kp * NR].chunks_exact(NR).zip(out.chunks_exact_mut(2 * NR)) {
        let (h, l) = dst.split_at_mut(NR);
        for j in 0..NR {
            h[j] = hi(src[j]);
            l[j] = lo(src[j]);
        }
    }
}

/// Runs the portable microkernels over `mr` rows (any count, typically a task's whole row block) × `t.nc`
/// columns; `bf` is the panel's B block from [`widen_b`]. `baseline` skips the runtime-detected variants.
///
/// # Safety
/// The tile's pointers are valid for the rows/columns it names (as for `avx512::tile`) and no other thread
/// touches this C tile.
pub(super) unsafe fn tile(mr: usize, t: &Tile, bf: &[f32], baseline: bool) {
    debug_assert!(bf.len() >= 2 * t.kp * NR);
    if baseline {
        return tile_impl::<false>(mr, t, bf);
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        return tile_avx2(mr, t, bf);
    }
    #[cfg(target_arch = "aarch64")]
    return tile_impl::<true>(mr, t, bf);
    #[allow(unreachable_code)]
    tile_impl::<false>(mr, t, bf)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// # Safety
/// As [`tile`], on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(mr: usize, t: &Tile, bf: &[f32]) {
    tile_impl::<true>(mr, t, bf)
}

/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn tile_impl<const FMA: bool>(mr: usize, t: &Tile, bf: &[f32]) {
    let mut r0 = 0;
    while r0 < mr {
        let rows = PR.min(mr - r0);
        for c0 in (0..t.nc).step_by(PC) {
            let cols = PC.min(t.nc - c0);
            match rows {
                1 => micro::<1, FMA>(t, r0, c0, cols, bf),
                2 => micro::<2, FMA>(t, r0, c0, cols, bf),
                3 => micro::<3, FMA>(t, r0, c0, cols, bf),
                4 => micro::<4, FMA>(t, r0, c0, cols, bf),
                5 => micro::<5, FMA>(t, r0, c0, cols, bf),
                _ => micro::<6, FMA>(t, r0, c0, cols, bf),
            }
        }
        r0 += rows;
    }
}

/// `acc + a·b`; with `FMA` as one fused operation (same bits: the product is exact).
#[inline(always)]
fn madd<const FMA: bool>(acc: f32, a: f32, b: f32) -> f32 {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// R × PC block at rows `r0..`, columns `c0 .. c0 + cols` of the tile: a plain f32 GEMM over the widened
/// k sequence (odd, even, odd, even, …) of A (`pack_a`) and B (`widen_b`).
///
/// # Safety
/// As [`tile`]; `t.a` points at the widened A rows (stride `2·t.lda` words).
#[inline(always)]
unsafe fn micro<const R: usize, const FMA: bool>(t: &Tile, r0: usize, c0: usize, cols: usize, bf: &[f32]) {
    let mut acc = [[0f32; PC]; R];
    // SAFETY (whole function): the caller guarantees the extents read and written below; `bf` holds
    // 2·kp·NR values.
    if !t.first {
        for (r, row) in acc.iter_mut().enumerate() {
            row[..cols].copy_from_slice(std::slice::from_raw_parts(t.c.add((r0 + r) * t.ldc + c0), cols));
        }
    }
    let a: [*const f32; R] = std::array::from_fn(|r| t.a.add((r0 + r) * 2 * t.lda).cast::<f32>());
    let b = bf.as_ptr().add(c0);
    for kk in 0..2 * t.kp {
        let bv: [f32; PC] = b.add(kk * NR).cast::<[f32; PC]>().read_unaligned();
        for r in 0..R {
            let av = *a[r].add(kk);
            for j in 0..PC {
                acc[r][j] = madd::<FMA>(acc[r][j], av, bv[j]);
            }
        }
    }
    // Store first, then apply the epilogue in place (the tile is in L1): touching `acc` only with constant
    // indices keeps it in registers.
    for r in 0..R {
        let dst = t.c.add((r0 + r) * t.ldc + c0);
        if cols == PC {
            dst.cast::<[f32; PC]>().write_unaligned(acc[r]);
        } else {
            std::ptr::copy_nonoverlapping(acc[r].as_ptr(), dst, cols);
        }
    }
    if t.last && t.epi.kind != EpiKind::None {
        for r in 0..R {
            let c = std::slice::from_raw_parts_mut(t.c.add((r0 + r) * t.ldc + c0), cols);
            let bias = std::slice::from_raw_parts(t.epi.bias.add(c0), cols);
            for j in 0..cols {
                let x = c[j] + bias[j];
                c[j] = match t.epi.kind {
                    EpiKind::GeluTanh => gelu_tanh_f32(x),
                    EpiKind::QuickGelu => quick_gelu_f32(x),
                    EpiKind::Residual => x + *t.epi.res.add((r0 + r) * t.epi.ldr + c0 + j),
                    _ => x,
                };
            }
        }
    }
}
