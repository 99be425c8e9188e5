//! Batched == one-at-a-time, bit for bit: a row's result must not depend on the other rows of the call, on its
//! position in the row blocking, or on the thread count (which changes the task split).

use crate::gemm_common;
use fgclip_kernels::gemm::{linear_bf16_with, Kernel};
use gemm_common::*;

fn run(
    kernel: Kernel,
    x: &[f32],
    m: usize,
    pw: &fgclip_kernels::gemm::PackedBf16,
    sel: EpiSel,
    bias: &[f32],
    res: &[f32],
) -> Vec<f32> {
    let mut out = vec![0f32; m * pw.n_out()];
    linear_bf16_with(kernel, x, m, pw, epilogue(sel, bias, res), &mut out);
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn batched_equals_single_rows() {
    // K = 3072 → several K blocks; N = 2304 and M = 300 exercise both the row and the column split.
    for &(m, k, n) in &[(300, 771, 769), (64, 3072, 96), (40, 768, 2304)] {
        let mut rng = Rng((m * k + n) as u64);
        let x = rng.vec(m * k, 1.0);
        let w = rng.vec(n * k, 0.5);
        let bias = rng.vec(n, 0.3);
        let res = rng.vec(m * n, 1.0);
        let pw = packed(&w, n, k);
        for kernel in kernels() {
            for sel in [EpiSel::Gelu, EpiSel::Residual] {
                let all = run(kernel, &x, m, &pw, sel, &bias, &res);
                // Single rows, and sub-batches that start at odd offsets (rows land in other tile positions).
                let rows: Vec<usize> = (0..m).step_by(if m > 100 { 7 } else { 1 }).collect();
                for &i in &rows {
                    let one = run(kernel, &x[i * k..(i + 1) * k], 1, &pw, sel, &bias, &res[i * n..(i + 1) * n]);
                    assert_eq!(bits(&one), bits(&all[i * n..(i + 1) * n]), "{kernel:?} {sel:?} {m}×{k}×{n} row {i}");
                }
                for &(s, len) in &[(1usize, 13usize), (5, m - 5), (m / 2, m - m / 2)] {
                    let part = run(kernel, &x[s * k..(s + len) * k], len, &pw, sel, &bias, &res[s * n..(s + len) * n]);
                    assert_eq!(bits(&part), bits(&all[s * n..(s + len) * n]), "{kernel:?} {sel:?} rows {s}+{len}");
                }
            }
        }
    }
}

#[test]
fn thread_count_does_not_change_bits() {
    let (m, k, n) = (500, 768, 384);
    let mut rng = Rng(42);
    let x = rng.vec(m * k, 1.0);
    let w = rng.vec(n * k, 0.5);
    let bias = rng.vec(n, 0.3);
    let pw = packed(&w, n, k);
    for kernel in kernels() {
        let outs: Vec<Vec<u32>> = [1, 2, 3, 8]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                pool.install(|| bits(&run(kernel, &x, m, &pw, EpiSel::Bias, &bias, &[])))
            })
            .collect();
        for o in &outs[1..] {
            assert!(o == &outs[0], "{kernel:?}: thread count changed the result");
        }
    }
}
