//! In-place activations over slices, vectorised with the same AVX-512 `exp` as the GEMM epilogues (runtime
//! detected; scalar fallback with the same `x·σ(t)` formulas). libm's scalar `tanhf` cost ~16% of an f32 ViT
//! block when used per element.

/// GELU, tanh approximation: `0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))`, computed as `x·σ(2√(2/π)(…))`.
pub fn gelu_tanh_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was detected at run time.
        unsafe { avx512::map(x, Act::GeluTanh) };
        return;
    }
    x.iter_mut().for_each(|v| *v = crate::gemm::gelu_tanh_f32(*v));
}

/// Quick GELU `x·σ(1.702x)` (OpenAI CLIP).
pub fn quick_gelu_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was detected at run time.
        unsafe { avx512::map(x, Act::QuickGelu) };
        return;
    }
    x.iter_mut().for_each(|v| *v = crate::gemm::quick_gelu_f32(*v));
}

#[derive(Clone, Copy)]
#[allow(dead_code)]
enum Act {
    GeluTanh,
    QuickGelu,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Act;
    use std::arch::x86_64::*;

    /// Applies `act` to `x` 16 lanes at a time; the tail goes through a masked load/store.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn map(x: &mut [f32], act: Act) {
        let f = |v: __m512| match act {
            Act::GeluTanh => crate::gemm::avx512_gelu_tanh(v),
            Act::QuickGelu => crate::gemm::avx512_quick_gelu(v),
        };
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` has exactly 16 elements.
            unsafe {
                let v = _mm512_loadu_ps(c.as_ptr());
                _mm512_storeu_ps(c.as_mut_ptr(), f(v));
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let m: __mmask16 = (1u32 << rest.len()).wrapping_sub(1) as __mmask16;
            // SAFETY: the mask covers exactly `rest.len()` < 16 elements.
            unsafe {
                let v = _mm512_maskz_loadu_ps(m, rest.as_ptr());
                _mm512_mask_storeu_ps(rest.as_mut_ptr(), m, f(v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_and_scalar_forms_agree_with_the_definitions() {
        let xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.01).collect();
        let mut g = xs.clone();
        gelu_tanh_inplace(&mut g);
        let mut q = xs.clone();
        quick_gelu_inplace(&mut q);
        for (i, &x) in xs.iter().enumerate() {
            let xd = x as f64;
            let gt = 0.5 * xd * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            let qt = xd / (1.0 + (-1.702 * xd).exp());
            assert!((g[i] as f64 - gt).abs() <= 1e-6 * (1.0 + gt.abs()), "gelu({x}) = {} vs {gt}", g[i]);
            assert!((q[i] as f64 - qt).abs() <= 1e-6 * (1.0 + qt.abs()), "quick_gelu({x}) = {} vs {qt}", q[i]);
        }
    }
}
