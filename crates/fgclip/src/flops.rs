//! Matmul FLOPs per input, counted analytically from a configuration (2·M·N·K per GEMM, attention's QKᵀ and
//! PV included; norms, softmax and activations left out as they are a few percent). Used by `info` and the
//! benchmark to report the fraction of the machine's peak that a run reaches.

use crate::config::{ClipTextConfig, ClipVisionConfig, Fgclip2TextConfig, Fgclip2VisionConfig};

/// One pre-LN transformer block over `n` tokens of width `d` with an MLP of width `m`:
/// q, k, v, o projections 8·n·d², attention 4·n²·d, MLP 4·n·d·m.
pub fn block(n: usize, d: usize, m: usize) -> f64 {
    let (n, d, m) = (n as f64, d as f64, m as f64);
    8.0 * n * d * d + 4.0 * n * n * d + 4.0 * n * d * m
}

/// FG-CLIP image embedding: conv patch embedding, L blocks over 1 + g² tokens, projection.
pub fn fgclip_image(v: &ClipVisionConfig, projection_dim: usize) -> f64 {
    let g = v.grid();
    let patch = 2.0 * (g * g) as f64 * (v.num_channels * v.patch_size * v.patch_size) as f64 * v.hidden_size as f64;
    patch
        + v.num_hidden_layers as f64 * block(g * g + 1, v.hidden_size, v.intermediate_size)
        + 2.0 * (v.hidden_size * projection_dim) as f64
}

/// FG-CLIP text embedding of `len` tokens.
pub fn fgclip_text(t: &ClipTextConfig, len: usize, projection_dim: usize) -> f64 {
    t.num_hidden_layers as f64 * block(len, t.hidden_size, t.intermediate_size)
        + 2.0 * (t.hidden_size * projection_dim) as f64
}

/// FG-CLIP 2 image embedding with `n` patches: linear patch embedding, L blocks, MAP head (one query).
pub fn fgclip2_image(v: &Fgclip2VisionConfig, n: usize) -> f64 {
    let (d, m) = (v.hidden_size as f64, v.intermediate_size as f64);
    let nf = n as f64;
    let patch = 2.0 * nf * (v.num_channels * v.patch_size * v.patch_size) as f64 * d;
    let head = 2.0 * d * d + 4.0 * nf * d * d + 4.0 * nf * d + 2.0 * d * d + 4.0 * d * m;
    patch + v.num_hidden_layers as f64 * block(n, v.hidden_size, v.intermediate_size) + head
}

/// FG-CLIP 2 text embedding of `len` tokens (short head).
pub fn fgclip2_text(t: &Fgclip2TextConfig, len: usize) -> f64 {
    t.num_hidden_layers as f64 * block(len, t.hidden_size, t.intermediate_size)
        + 2.0 * (t.hidden_size * t.projection_size()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_b16_is_about_35_gflop() {
        let v: ClipVisionConfig = serde_json::from_str(r#"{"patch_size": 16}"#).unwrap();
        let f = fgclip_image(&v, 512) / 1e9;
        assert!((34.0..36.5).contains(&f), "{f}");
    }
}
