//! RoIAlign with torchvision's exact semantics for the one configuration both models use:
//! `roi_align(fmap, boxes, output_size=(1,1), spatial_scale=1.0, sampling_ratio=-1, aligned=True)` ().
//!
//! With a 1×1 output, RoIAlign is linear in the feature map: each box is a weighted sum of grid cells. We build
//! that `[K, H·W]` weight matrix on the host (sample positions and bilinear weights computed in f32 exactly as
//! torchvision's CPU kernel does) and apply it with one matmul, which keeps the op differentiable for the
//! regional losses of training and batches all boxes of an image.

use candle_core::{Device, Result as CResult, Tensor};

/// A box `[x1, y1, x2, y2]` in feature-grid units (0..W, 0..H).
pub type GridBox = [f32; 4];

/// Adds the contribution of one bilinear sample at (y, x) to `row` (torchvision `bilinear_interpolate` /
/// `pre_calc_for_bilinear_interpolate`, including its border rules).
fn add_sample(row: &mut [f64], h: usize, w: usize, mut y: f32, mut x: f32, scale: f64) {
    let (hf, wf) = (h as f32, w as f32);
    if y < -1.0 || y > hf || x < -1.0 || x > wf {
        return; // outside: contributes 0
    }
    if y <= 0.0 {
        y = 0.0;
    }
    if x <= 0.0 {
        x = 0.0;
    }
    let mut y_low = y as usize;
    let mut x_low = x as usize;
    let y_high;
    let x_high;
    if y_low >= h - 1 {
        y_low = h - 1;
        y_high = h - 1;
        y = y_low as f32;
    } else {
        y_high = y_low + 1;
    }
    if x_low >= w - 1 {
        x_low = w - 1;
        x_high = w - 1;
        x = x_low as f32;
    } else {
        x_high = x_low + 1;
    }
    let ly = y - y_low as f32;
    let lx = x - x_low as f32;
    let hy = 1.0 - ly;
    let hx = 1.0 - lx;
    row[y_low * w + x_low] += (hy * hx) as f64 * scale;
    row[y_low * w + x_high] += (hy * lx) as f64 * scale;
    row[y_high * w + x_low] += (ly * hx) as f64 * scale;
    row[y_high * w + x_high] += (ly * lx) as f64 * scale;
}

/// The RoIAlign weights of one box over an `h × w` grid (row-major cells). A degenerate box (x2 ≤ x1 or
/// y2 ≤ y1) has no samples and gives all zeros, as torchvision does.
pub fn box_weights(h: usize, w: usize, b: &GridBox) -> Vec<f32> {
    let mut row = vec![0f64; h * w];
    if h == 0 || w == 0 {
        return vec![0.0; h * w];
    }
    // aligned=True: pixel centres at +0.5, so shift by −0.5 and do not clamp the size to ≥ 1.
    let (x1, y1, x2, y2) = (b[0] - 0.5, b[1] - 0.5, b[2] - 0.5, b[3] - 0.5);
    let roi_w = x2 - x1;
    let roi_h = y2 - y1;
    // sampling_ratio = −1: an adaptive ceil(size) × ceil(size) grid of samples per (single) bin.
    let gh = roi_h.ceil();
    let gw = roi_w.ceil();
    if !(gh >= 1.0 && gw >= 1.0) {
        return vec![0.0; h * w];
    }
    let (gh, gw) = (gh as usize, gw as usize);
    let count = (gh * gw).max(1) as f64;
    for iy in 0..gh {
        let y = y1 + (iy as f32 + 0.5) * roi_h / gh as f32;
        for ix in 0..gw {
            let x = x1 + (ix as f32 + 0.5) * roi_w / gw as f32;
            add_sample(&mut row, h, w, y, x, 1.0 / count);
        }
    }
    row.into_iter().map(|v| v as f32).collect()
}

/// `[K, h·w]` weight matrix for `boxes` on an `h × w` grid.
pub fn weight_matrix(h: usize, w: usize, boxes: &[GridBox], device: &Device) -> CResult<Tensor> {
    let data: Vec<f32> = boxes.iter().flat_map(|b| box_weights(h, w, b)).collect();
    Tensor::from_vec(data, (boxes.len(), h * w), device)
}

/// RoIAlign of `boxes` on a row-major feature map `fmap` `[h·w, C]` → `[K, C]`.
pub fn roi_align(fmap: &Tensor, h: usize, w: usize, boxes: &[GridBox]) -> CResult<Tensor> {
    let c = fmap.dim(1)?;
    if boxes.is_empty() {
        return Tensor::zeros((0, c), fmap.dtype(), fmap.device());
    }
    let wm = weight_matrix(h, w, boxes, fmap.device())?.to_dtype(fmap.dtype())?;
    wm.matmul(&fmap.contiguous()?)
}

/// Longest side, in grid cells, that a box may have: beyond it the sample grid (ceil(size)² samples) would be
/// huge while almost every sample falls outside the map and contributes 0.
pub const MAX_BOX_EXTENT_CELLS: f32 = 4096.0;

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct transcription of the sampling loop applied to a map, for checking the weight matrix.
    fn reference(fmap: &[f32], h: usize, w: usize, b: &GridBox) -> f32 {
        let wts = box_weights(h, w, b);
        wts.iter().zip(fmap).map(|(a, v)| a * v).sum()
    }

    #[test]
    fn full_map_box_averages_cells_like_torchvision() {
        // 2×2 map, box covering it: 2×2 samples at the cell centres → plain mean.
        let fmap = [1.0, 2.0, 3.0, 4.0];
        let v = reference(&fmap, 2, 2, &[0.0, 0.0, 2.0, 2.0]);
        assert!((v - 2.5).abs() < 1e-6, "{v}");
    }

    #[test]
    fn degenerate_box_is_zero_not_nan() {
        let w = box_weights(3, 3, &[1.0, 1.0, 1.0, 2.0]);
        assert!(w.iter().all(|v| *v == 0.0));
        let w = box_weights(3, 3, &[2.0, 2.0, 1.0, 1.0]);
        assert!(w.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn box_outside_map_contributes_zero() {
        let w = box_weights(3, 3, &[10.0, 10.0, 12.0, 12.0]);
        assert!(w.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn weights_sum_to_one_inside() {
        let w = box_weights(7, 7, &[0.3, 1.2, 5.9, 6.4]);
        let s: f32 = w.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "{s}");
    }
}
