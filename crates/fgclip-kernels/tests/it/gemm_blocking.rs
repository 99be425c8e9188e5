//! The result does not depend on the cache blocking: forcing other K-block and row-block sizes (a global tuning
//! hook, hence this separate test binary) must give the same bits.

use crate::gemm_common;
use fgclip_kernels::gemm::{linear_bf16_with, tune_force_blocks, Epilogue};
use gemm_common::*;

#[test]
fn blocking_does_not_change_bits() {
    for &(m, k, n) in &[(70, 4001, 100), (300, 771, 97)] {
        let mut rng = Rng((m + k + n) as u64);
        let x = rng.vec(m * k, 1.0);
        let w = rng.vec(n * k, 0.5);
        let bias = rng.vec(n, 0.3);
        let pw = packed(&w, n, k);
        for kernel in kernels() {
            let mut outs = Vec::new();
            for (mc, kcp) in [(0, 0), (8, 1), (24, 37), (1000, 5000), (16, 64)] {
                tune_force_blocks(mc, kcp);
                let mut out = vec![0f32; m * n];
                linear_bf16_with(kernel, &x, m, &pw, Epilogue::BiasGeluTanh(&bias), &mut out);
                outs.push(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            tune_force_blocks(0, 0);
            for (i, o) in outs.iter().enumerate().skip(1) {
                assert!(o == &outs[0], "{kernel:?} {m}×{k}×{n}: blocking #{i} changed the result");
            }
        }
    }
}
