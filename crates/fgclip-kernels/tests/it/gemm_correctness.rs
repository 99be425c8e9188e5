//! `linear_bf16` against f64 references: (1) computed from the bf16-rounded inputs — only the f32 accumulation
//! order may differ, so the error must be ≪ 1e-5 of ‖x_i‖‖w_j‖; (2) computed from the original f32 inputs — the
//! bf16 input rounding (2⁻⁹ relative) dominates. All kernels (AVX512-BF16 when present; the portable one, with and without its AVX2 build), every
//! epilogue, and the edge shapes (M, K, N not multiples of the tile sizes, odd K).

use crate::gemm_common;
use fgclip_kernels::gemm::{bf16_to_f32, f32_to_bf16, linear_bf16_with, Kernel, PackedBf16};
use gemm_common::*;

const MS: [usize; 5] = [1, 2, 13, 197, 300];
const KS: [usize; 5] = [1, 3, 64, 768, 771];
const NS: [usize; 4] = [1, 17, 48, 769];

/// Tolerance relative to ‖x_i‖‖w_j‖ against the f64 product of the bf16-rounded inputs.
const TOL_ROUNDED: f64 = 1e-5;
/// Tolerance relative to ‖x_i‖‖w_j‖ against the f64 product of the unrounded inputs (bf16 has 8 bits).
const TOL_F32: f64 = 1e-2;

/// Returns the worst errors seen (vs the bf16-rounded reference, vs the f32 reference).
fn check_shape(m: usize, k: usize, n: usize, sels: &[EpiSel], seed: u64) -> (f64, f64) {
    let mut worst = (0f64, 0f64);
    let mut rng = Rng(seed);
    let x = rng.vec(m * k, 1.0);
    let w = rng.vec(n * k, 0.5);
    let bias = rng.vec(n, 0.3);
    let res = rng.vec(m * n, 2.0);
    let pw = packed(&w, n, k);
    assert_eq!((pw.n_out(), pw.k()), (n, k));
    let exact = reference(&round_bf16(&x), &round_bf16(&w), m, n, k);
    let unrounded = reference(&x, &w, m, n, k);
    for kernel in kernels() {
        for &sel in sels {
            let mut out = vec![f32::NAN; m * n];
            linear_bf16_with(kernel, &x, m, &pw, epilogue(sel, &bias, &res), &mut out);
            let e = max_rel_err(&out, &exact, sel, &bias, &res);
            assert!(e < TOL_ROUNDED, "{kernel:?} {sel:?} m={m} k={k} n={n}: error {e:e} vs bf16-rounded reference");
            worst.0 = worst.0.max(e);
            let e = max_rel_err(&out, &unrounded, sel, &bias, &res);
            assert!(e < TOL_F32, "{kernel:?} {sel:?} m={m} k={k} n={n}: error {e:e} vs f32 reference");
            worst.1 = worst.1.max(e);
        }
    }
    worst
}

/// The whole M × K × N grid; epilogues rotate over the grid (all five are covered on every K).
#[test]
fn grid_all_shapes() {
    let mut idx = 0;
    let mut worst = (0f64, 0f64);
    for &k in &KS {
        for &m in &MS {
            for &n in &NS {
                let sels = [ALL_EPI[idx % 5], ALL_EPI[(idx + 2) % 5]];
                let e = check_shape(m, k, n, &sels, 1000 + idx as u64);
                worst = (worst.0.max(e.0), worst.1.max(e.1));
                idx += 1;
            }
        }
    }
    eprintln!(
        "{idx} shapes: worst error / (‖x_i‖‖w_j‖) {:.2e} vs bf16-rounded inputs, {:.2e} vs f32 inputs",
        worst.0, worst.1
    );
}

/// Every epilogue on shapes with edge tiles in all three dimensions and several K blocks.
#[test]
fn every_epilogue() {
    for (i, &(m, k, n)) in [(13, 771, 769), (197, 64, 48), (2, 3, 17), (300, 768, 17)].iter().enumerate() {
        check_shape(m, k, n, &ALL_EPI, 77 + i as u64);
    }
}

/// Large pre-activations: the GELU tails (σ saturating to 0 or 1) must stay finite and exact.
#[test]
fn epilogue_tails() {
    let (m, k, n) = (5, 64, 40);
    let mut rng = Rng(5);
    let x = rng.vec(m * k, 1.0);
    let w = rng.vec(n * k, 1.0);
    let bias: Vec<f32> = (0..n).map(|j| (j as f32 - 20.0) * 6.0).collect(); // −120 … 114
    let res = vec![0f32; m * n];
    let pw = packed(&w, n, k);
    let exact = reference(&round_bf16(&x), &round_bf16(&w), m, n, k);
    for kernel in kernels() {
        for sel in [EpiSel::Gelu, EpiSel::Quick] {
            let mut out = vec![f32::NAN; m * n];
            linear_bf16_with(kernel, &x, m, &pw, epilogue(sel, &bias, &res), &mut out);
            let e = max_rel_err(&out, &exact, sel, &bias, &res);
            assert!(e < TOL_ROUNDED, "{kernel:?} {sel:?}: error {e:e}");
        }
    }
}

#[test]
fn bf16_rounding() {
    // Round to nearest, ties to even; NaN stays NaN; infinities and overflow to infinity; subnormals flush.
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie → even (down)
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie → even (up)
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
    assert_eq!(f32_to_bf16(f32::NEG_INFINITY), 0xff80);
    assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    assert_eq!(f32_to_bf16(f32::from_bits(1)), 0);
    assert_eq!(f32_to_bf16(-f32::from_bits(0x007f_ffff)), 0x8000);
    // Packed weights are the rounded values.
    let mut rng = Rng(9);
    let (n, k) = (37, 11);
    let w = rng.vec(n * k, 3.0);
    let pw = PackedBf16::from_f32(&w, n, k);
    for j in 0..n {
        for kk in 0..k {
            assert_eq!(pw.get(j, kk), bf16_to_f32(f32_to_bf16(w[j * k + kk])));
        }
    }
    let nr = fgclip_kernels::gemm::NR;
    assert!(pw.bytes() >= n.div_ceil(nr) * nr * k.div_ceil(2) * 4);
}

/// The portable kernel reproduces the AVX512-BF16 kernel bit for bit when no transcendental epilogue is used
/// (same rounding of the inputs, exact products, same summation order) — including subnormal inputs, which
/// both flush.
#[test]
fn portable_matches_avx512_bits() {
    if !fgclip_kernels::gemm::has_avx512_bf16() {
        eprintln!("skipped: no AVX512-BF16");
        return;
    }
    for &(m, k, n) in &[(13, 771, 769), (197, 768, 48), (1, 3, 17)] {
        let mut rng = Rng(m as u64 * 31 + k as u64);
        let mut x = rng.vec(m * k, 1.0);
        x[0] = f32::from_bits(0x0000_1234); // subnormal
        let w = rng.vec(n * k, 0.5);
        let bias = rng.vec(n, 0.3);
        let res = rng.vec(m * n, 2.0);
        let pw = packed(&w, n, k);
        for sel in [EpiSel::None, EpiSel::Bias, EpiSel::Residual] {
            let mut a = vec![0f32; m * n];
            linear_bf16_with(Kernel::Avx512Bf16, &x, m, &pw, epilogue(sel, &bias, &res), &mut a);
            for kernel in [Kernel::Portable, Kernel::PortableBaseline] {
                let mut b = vec![0f32; m * n];
                linear_bf16_with(kernel, &x, m, &pw, epilogue(sel, &bias, &res), &mut b);
                let diff = a.iter().zip(&b).filter(|(p, q)| p.to_bits() != q.to_bits()).count();
                assert_eq!(diff, 0, "{kernel:?} m={m} k={k} n={n} {sel:?}: {diff} elements differ");
            }
        }
    }
}
