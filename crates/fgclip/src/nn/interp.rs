//! Antialiased bilinear resizing of FG-CLIP 2's learned position table, as
//! `F.interpolate(mode="bilinear", align_corners=False, antialias=True)` computes it (PyTorch
//! `_upsample_bilinear2d_aa`: a separable triangle filter whose support widens by the downscale factor, weights
//! normalised per output pixel). When enlarging it equals plain half-pixel bilinear.
//!
//! The resize is linear, so it is applied as two small matmuls (`Wy · T · Wxᵀ`): differentiable, no custom op.

use candle_core::{Device, Result as CResult, Tensor};

/// `[out, in]` interpolation weights along one axis.
pub fn aa_bilinear_weights(input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    // PyTorch computes these in the input's opmath type (f32 for an f32 table).
    let scale = input as f32 / output as f32;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    for i in 0..output {
        let center = scale * (i as f32 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(input as i64).max(0) as usize;
        let mut ws = Vec::with_capacity(xmax.saturating_sub(xmin));
        let mut total = 0f32;
        for j in xmin..xmax {
            let x = ((j as f32 - center + 0.5) * invscale).abs();
            let wv = if x < 1.0 { 1.0 - x } else { 0.0 };
            ws.push(wv);
            total += wv;
        }
        for (k, j) in (xmin..xmax).enumerate() {
            m[i * input + j] = if total != 0.0 { ws[k] / total } else { 0.0 };
        }
    }
    m
}

/// Resizes a row-major `[g·g, D]` table (grid `g × g`, row = y) to `[h·w, D]`.
pub fn resize_position_table(table: &Tensor, g: usize, h: usize, w: usize, device: &Device) -> CResult<Tensor> {
    let d = table.dim(1)?;
    let dtype = table.dtype();
    let wy = Tensor::from_vec(aa_bilinear_weights(g, h), (h, g), device)?.to_dtype(dtype)?;
    let wx = Tensor::from_vec(aa_bilinear_weights(g, w), (w, g), device)?.to_dtype(dtype)?;
    // rows: [h, g] · [g, g·D] → [h, g, D]
    let a = wy.matmul(&table.reshape((g, g * d))?)?.reshape((h, g, d))?;
    // columns: for each output row y, [w, g] · [g, D]
    let out = wx.unsqueeze(0)?.broadcast_as((h, w, g))?.contiguous()?.matmul(&a)?; // [h, w, D]
    out.reshape((h * w, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_same_size() {
        let m = aa_bilinear_weights(4, 4);
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(m[i * 4 + j], if i == j { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn rows_sum_to_one() {
        for (i, o) in [(8, 5), (8, 27), (16, 3), (3, 16)] {
            let m = aa_bilinear_weights(i, o);
            for r in 0..o {
                let s: f32 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}->{o} row {r}: {s}");
            }
        }
    }

    #[test]
    fn downscale_by_two_averages_pairs() {
        // 4 → 2 with antialias: support 2, centre 1.0 → taps at 0,1,2 with weights 0.25,0.75,0.75?; check symmetry.
        let m = aa_bilinear_weights(4, 2);
        let s0: f32 = m[0..4].iter().sum();
        assert!((s0 - 1.0).abs() < 1e-6);
        assert!((m[0] - m[7]).abs() < 1e-6 && (m[1] - m[6]).abs() < 1e-6);
    }
}
