//! Portable kernels (any target): same packed layouts and the same arithmetic as the AVX512-BF16 path —
//! bf16-rounded inputs, exact f32 products, f32 sums in the same order — written so LLVM can vectorise the
//! NR-wide inner loops.

use super::{f32_to_bf16, gelu_tanh_f32, quick_gelu_f32, EpiKind, Tile, MR, NR};

/// As `avx512::pack_a`: rows of `x` (length `k`), pairs `[p0, p0 + kp)` → bf16 pairs at stride `lda`.
pub(super) fn pack_a(x: &[f32], rows: usize, k: usize, p0: usize, kp: usize, a: &mut [u32], lda: usize) {
    for r in 0..rows {
        let src = &x[r * k..(r + 1) * k];
        let dst = &mut a[r * lda..r * lda + kp];
        for (i, d) in dst.iter_mut().enumerate() {
            let kk = 2 * (p0 + i);
            let lo = src.get(kk).map_or(0, |&v| f32_to_bf16(v)) as u32;
            let hi = src.get(kk + 1).map_or(0, |&v| f32_to_bf16(v)) as u32;
            *d = lo | (hi << 16);
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

/// Portable microkernel over `mr` rows.
///
/// # Safety
/// Same contract as `avx512::tile`: the tile's pointers are valid for the rows/columns it names and no other
/// thread touches this C tile.
pub(super) unsafe fn tile(mr: usize, t: &Tile) {
    let nc = t.nc;
    let mut acc = [[0f32; NR]; MR];
    // SAFETY (whole function): the caller guarantees the extents used to build each slice below.
    if !t.first {
        for (r, row) in acc.iter_mut().enumerate().take(mr) {
            row[..nc].copy_from_slice(std::slice::from_raw_parts(t.c.add(r * t.ldc), nc));
        }
    }
    let b = std::slice::from_raw_parts(t.b, t.kp * NR);
    for (r, row) in acc.iter_mut().enumerate().take(mr) {
        let a = std::slice::from_raw_parts(t.a.add(r * t.lda), t.kp);
        for (p, &aw) in a.iter().enumerate() {
            let (a0, a1) = (lo(aw), hi(aw));
            let bp: &[u32; NR] = b[p * NR..(p + 1) * NR].try_into().unwrap();
            for j in 0..NR {
                // vdpbf16ps order: the odd (high) product first, then the even one; products are exact.
                let s = row[j] + a1 * hi(bp[j]);
                row[j] = s + a0 * lo(bp[j]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(mr) {
        let c = std::slice::from_raw_parts_mut(t.c.add(r * t.ldc), nc);
        if t.last && t.epi.kind != EpiKind::None {
            let bias = std::slice::from_raw_parts(t.epi.bias, nc);
            let res = if t.epi.kind == EpiKind::Residual {
                std::slice::from_raw_parts(t.epi.res.add(r * t.epi.ldr), nc)
            } else {
                &[][..]
            };
            for j in 0..nc {
                let x = row[j] + bias[j];
                c[j] = match t.epi.kind {
                    EpiKind::GeluTanh => gelu_tanh_f32(x),
                    EpiKind::QuickGelu => quick_gelu_f32(x),
                    EpiKind::Residual => x + res[j],
                    _ => x,
                };
            }
        } else {
            c.copy_from_slice(&row[..nc]);
        }
    }
}
