//! LayerNorm over rows, the one place its arithmetic is written for the CPU paths (the fused inference block
//! and the training op with its backward both call it): two passes, mean then biased variance, in f32, as
//! PyTorch's CPU kernel does.

use rayon::prelude::*;

/// Mean and `1/sqrt(var + eps)` of one row.
#[inline]
pub fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `out = (x − mean)·rstd·w + b` for one row.
#[inline]
pub fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let (mean, rstd) = row_stats(x, eps);
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

/// [`layer_norm_row`] over every row of width `w.len()` of `x`, in parallel over chunks of `rows_per_task` rows
/// (each row's result does not depend on the chunking).
pub fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32], rows_per_task: usize) {
    let d = w.len();
    assert!(d > 0 && b.len() == d && x.len().is_multiple_of(d) && out.len() == x.len(), "layer_norm_rows: bad sizes");
    let chunk = d * rows_per_task.max(1);
    out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(oc, xc)| {
        for (o, xr) in oc.chunks_mut(d).zip(xc.chunks(d)) {
            layer_norm_row(xr, w, b, eps, o);
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalises_each_row() {
        let x = [1.0f32, 2.0, 3.0, 4.0, -2.0, 0.0, 2.0, 4.0];
        let (w, b) = ([1.0f32; 4], [0.0f32; 4]);
        let mut out = [0f32; 8];
        super::layer_norm_rows(&x, &w, &b, 0.0, &mut out, 1);
        for row in out.chunks(4) {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| v * v).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{row:?}");
        }
    }
}
