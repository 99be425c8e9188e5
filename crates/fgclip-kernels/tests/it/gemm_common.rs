//! Shared helpers of the gemm tests: deterministic random data and f64 references.
#![allow(dead_code, clippy::needless_range_loop)]

use fgclip_kernels::gemm::{bf16_to_f32, f32_to_bf16, Epilogue, Kernel, PackedBf16};

pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| ((self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale).collect()
    }
}

pub fn kernels() -> Vec<Kernel> {
    let mut k = vec![Kernel::Portable, Kernel::PortableBaseline];
    if fgclip_kernels::gemm::has_avx512_bf16() {
        k.push(Kernel::Avx512Bf16);
    } else {
        eprintln!("note: CPU lacks AVX512-BF16, only the portable kernel is tested");
    }
    k
}

pub fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16_to_f32(f32_to_bf16(x))).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpiSel {
    None,
    Bias,
    Gelu,
    Quick,
    Residual,
}
pub const ALL_EPI: [EpiSel; 5] = [EpiSel::None, EpiSel::Bias, EpiSel::Gelu, EpiSel::Quick, EpiSel::Residual];

pub fn epilogue<'a>(sel: EpiSel, bias: &'a [f32], res: &'a [f32]) -> Epilogue<'a> {
    match sel {
        EpiSel::None => Epilogue::None,
        EpiSel::Bias => Epilogue::Bias(bias),
        EpiSel::Gelu => Epilogue::BiasGeluTanh(bias),
        EpiSel::Quick => Epilogue::BiasQuickGelu(bias),
        EpiSel::Residual => Epilogue::BiasResidual(bias, res),
    }
}

pub fn apply_epi_f64(sel: EpiSel, acc: f64, bias: f64, res: f64) -> f64 {
    let x = acc + bias;
    match sel {
        EpiSel::None => acc,
        EpiSel::Bias => x,
        EpiSel::Gelu => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()),
        EpiSel::Quick => x / (1.0 + (-1.702 * x).exp()),
        EpiSel::Residual => x + res,
    }
}

/// f64 dot products `x[i]·w[j]` and the Cauchy–Schwarz scale `‖x_i‖·‖w_j‖` (the error yardstick).
pub struct Reference {
    pub m: usize,
    pub n: usize,
    pub dot: Vec<f64>,
    pub scale: Vec<f64>,
}

pub fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Reference {
    let mut dot = vec![0f64; m * n];
    let mut scale = vec![0f64; m * n];
    let wn: Vec<f64> =
        (0..n).map(|j| w[j * k..(j + 1) * k].iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()).collect();
    for i in 0..m {
        let xi = &x[i * k..(i + 1) * k];
        let xn = xi.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        for j in 0..n {
            let wj = &w[j * k..(j + 1) * k];
            dot[i * n + j] = xi.iter().zip(wj).map(|(&a, &b)| a as f64 * b as f64).sum();
            scale[i * n + j] = xn * wn[j];
        }
    }
    Reference { m, n, dot, scale }
}

/// Max over elements of `|out − epi(ref)| / (‖x_i‖‖w_j‖ + |b_j| + |r_ij| + tiny)`.
pub fn max_rel_err(out: &[f32], r: &Reference, sel: EpiSel, bias: &[f32], res: &[f32]) -> f64 {
    let mut worst = 0f64;
    for i in 0..r.m {
        for j in 0..r.n {
            let idx = i * r.n + j;
            let (b, rr) = (bias[j] as f64, res[idx] as f64);
            let want = apply_epi_f64(sel, r.dot[idx], b, rr);
            let denom = r.scale[idx] + b.abs() + rr.abs() + 1e-30;
            let e = (out[idx] as f64 - want).abs() / denom;
            assert!(e.is_finite(), "non-finite result at ({i}, {j}): {} vs {want}", out[idx]);
            worst = worst.max(e);
        }
    }
    worst
}

pub fn packed(w: &[f32], n: usize, k: usize) -> PackedBf16 {
    PackedBf16::from_f32(w, n, k)
}
