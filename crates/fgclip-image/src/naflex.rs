//! FG-CLIP 2 NaFlex preprocessing (variable resolution, patch sequences).
//!
//! Mirrors the slow `Fgclip2ImageProcessor` (= transformers `Siglip2ImageProcessor._preprocess` plus FG-CLIP 2's
//! `_determine_max_value` bucket): `get_image_size_for_max_num_patches` (f64 binary search, bit-for-bit), HF `resize`
//! → Pillow BILINEAR on the uint8 image, `rescale` (f64 × 1/255 → f32), `normalize` (f32), and
//! `convert_image_to_patches` (`(gh, p, gw, p, C) → (gh, gw, p, p, C)` → `[gh·gw, p·p·C]`). Padding to the patch
//! budget is left to the caller ([`pad_batch`] does it the way the processor does).

use rayon::prelude::*;

use crate::clip::normalize_lut;
use crate::resample::resize_bilinear;
use crate::RgbImage;

/// FG-CLIP 2 image mean/std (mean = std = 0.5 → pixels in [-1, 1]).
pub const FGCLIP2_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
/// See [`FGCLIP2_MEAN`].
pub const FGCLIP2_STD: [f32; 3] = [0.5, 0.5, 0.5];
/// FG-CLIP 2 patch size.
pub const PATCH_SIZE: usize = 16;

/// FG-CLIP 2 `_determine_max_value` on an image of `h`×`w`: `n = (W // 16) * (H // 16)`;
/// `n > 784 → 1024`, `> 576 → 784`, `> 256 → 576`, `> 128 → 256`, else 128.
pub fn bucket_max_patches(h: usize, w: usize) -> usize {
    let n = (w / 16) * (h / 16);
    if n > 784 {
        1024
    } else if n > 576 {
        784
    } else if n > 256 {
        576
    } else if n > 128 {
        256
    } else {
        128
    }
}

/// The processor's budget with `dynamic_max_patches=True`: the max of [`bucket_max_patches`] over a call's images
/// (sizes as `(h, w)`). 128 for an empty list.
pub fn batch_max_patches(sizes_hw: &[(usize, usize)]) -> usize {
    sizes_hw.iter().map(|&(h, w)| bucket_max_patches(h, w)).max().unwrap_or(128)
}

/// transformers `get_image_size_for_max_num_patches(image_height, image_width, patch_size, max_num_patches)` with
/// `eps = 1e-5`: the largest scale (binary search over `[eps / 10, 100]` until the interval is `< eps`) whose
/// per-side `max(patch, ceil(size * scale / patch) * patch)` grid has at most `max_num_patches` patches.
/// Returns `(target_h, target_w)`. Same f64 operations in the same order as the Python code.
pub fn target_size(h: usize, w: usize, patch: usize, max_patches: usize) -> (usize, usize) {
    assert!(patch > 0, "patch size must be positive");
    let eps: f64 = 1e-5;
    let scaled = |scale: f64, size: usize| -> usize {
        let s = size as f64 * scale;
        let s = (s / patch as f64).ceil() * patch as f64; // math.ceil(...) * patch_size (exact in f64)
        (s as usize).max(patch)
    };
    let (mut lo, mut hi) = (eps / 10.0, 100.0f64);
    while hi - lo >= eps {
        let scale = (lo + hi) / 2.0;
        let th = scaled(scale, h);
        let tw = scaled(scale, w);
        let n = (th as f64 / patch as f64) * (tw as f64 / patch as f64);
        if n <= max_patches as f64 {
            lo = scale;
        } else {
            hi = scale;
        }
    }
    (scaled(lo, h), scaled(lo, w))
}

/// One preprocessed image: only its real patches (no padding).
#[derive(Clone, Debug, PartialEq)]
pub struct NaflexImage {
    /// `[grid_h * grid_w, patch * patch * 3]`, patches row-major over the grid, inside a patch `(py, px, c)`.
    pub pixel_values: Vec<f32>,
    /// Patch rows (`spatial_shapes[0]`).
    pub grid_h: usize,
    /// Patch columns (`spatial_shapes[1]`).
    pub grid_w: usize,
}

impl NaflexImage {
    /// `grid_h * grid_w`.
    pub fn num_patches(&self) -> usize {
        self.grid_h * self.grid_w
    }

    /// Length of one patch vector (`patch * patch * 3`).
    pub fn patch_dim(&self) -> usize {
        self.pixel_values.len().checked_div(self.num_patches()).unwrap_or(0)
    }
}

/// Resize (PIL bilinear) to [`target_size`], rescale, normalise and patchify one image.
pub fn preprocess(img: &RgbImage, patch: usize, max_patches: usize, mean: [f32; 3], std: [f32; 3]) -> NaflexImage {
    let (th, tw) = target_size(img.height, img.width, patch, max_patches);
    let resized = resize_bilinear(img, tw, th);
    patchify(&resized, patch, mean, std)
}

/// Rescale + normalise + `convert_image_to_patches` of an image whose sides are multiples of `patch`.
pub fn patchify(img: &RgbImage, patch: usize, mean: [f32; 3], std: [f32; 3]) -> NaflexImage {
    assert!(
        img.width.is_multiple_of(patch) && img.height.is_multiple_of(patch),
        "patchify: {}x{} is not a multiple of the patch size {patch}",
        img.width,
        img.height
    );
    let lut = normalize_lut(mean, std);
    let (gh, gw) = (img.height / patch, img.width / patch);
    let dim = patch * patch * 3;
    let mut out = vec![0f32; gh * gw * dim];
    for (pi, dst) in out.chunks_exact_mut(dim).enumerate() {
        let (gy, gx) = (pi / gw, pi % gw);
        for py in 0..patch {
            let y = gy * patch + py;
            let src = &img.data[(y * img.width + gx * patch) * 3..][..patch * 3];
            let d = &mut dst[py * patch * 3..][..patch * 3];
            for (o, s) in d.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
                o[0] = lut[0][s[0] as usize];
                o[1] = lut[1][s[1] as usize];
                o[2] = lut[2][s[2] as usize];
            }
        }
    }
    NaflexImage { pixel_values: out, grid_h: gh, grid_w: gw }
}

/// [`preprocess`] over many images in parallel (rayon), all with the same budget.
pub fn preprocess_many(
    imgs: &[RgbImage],
    patch: usize,
    max_patches: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Vec<NaflexImage> {
    imgs.par_iter().map(|im| preprocess(im, patch, max_patches, mean, std)).collect()
}

/// The processor's default call (`dynamic_max_patches=True`): budget = [`batch_max_patches`] of the images,
/// FG-CLIP 2 patch size / mean / std. Returns the budget and the per-image results.
pub fn preprocess_dynamic(imgs: &[RgbImage]) -> (usize, Vec<NaflexImage>) {
    let sizes: Vec<_> = imgs.iter().map(|im| (im.height, im.width)).collect();
    let max_patches = batch_max_patches(&sizes);
    (max_patches, preprocess_many(imgs, PATCH_SIZE, max_patches, FGCLIP2_MEAN, FGCLIP2_STD))
}

/// A padded batch as the processor returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct NaflexBatch {
    /// `[B, max_patches, patch_dim]`, zero rows after each image's patches.
    pub pixel_values: Vec<f32>,
    /// `[B, max_patches]`, 1 for real patches, 0 for padding.
    pub pixel_attention_mask: Vec<i32>,
    /// `[B, 2]` = `(grid_h, grid_w)`.
    pub spatial_shapes: Vec<i64>,
    pub batch: usize,
    pub max_patches: usize,
    pub patch_dim: usize,
}

/// Zero-pads each image to `max_patches` rows (padding at the end) and stacks them.
/// Panics if an image has more than `max_patches` patches or the patch dims differ.
pub fn pad_batch(imgs: &[NaflexImage], max_patches: usize) -> NaflexBatch {
    let patch_dim = imgs.first().map(|im| im.patch_dim()).unwrap_or(0);
    let b = imgs.len();
    let mut pixel_values = vec![0f32; b * max_patches * patch_dim];
    let mut mask = vec![0i32; b * max_patches];
    let mut shapes = Vec::with_capacity(2 * b);
    for (i, im) in imgs.iter().enumerate() {
        let n = im.num_patches();
        assert!(n <= max_patches, "image {i} has {n} patches, more than the budget {max_patches}");
        assert_eq!(im.patch_dim(), patch_dim, "image {i} has a different patch size");
        pixel_values[i * max_patches * patch_dim..][..n * patch_dim].copy_from_slice(&im.pixel_values);
        mask[i * max_patches..][..n].fill(1);
        shapes.extend([im.grid_h as i64, im.grid_w as i64]);
    }
    NaflexBatch { pixel_values, pixel_attention_mask: mask, spatial_shapes: shapes, batch: b, max_patches, patch_dim }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket_max_patches(480, 640), 1024);
        assert_eq!(bucket_max_patches(224, 224), 256);
        assert_eq!(bucket_max_patches(16 * 16, 16 * 8), 128);
        assert_eq!(bucket_max_patches(16 * 16, 16 * 8 + 16), 256);
        assert_eq!(bucket_max_patches(1, 1), 128);
    }

    #[test]
    fn patch_order_is_row_major_then_py_px_c() {
        let (w, h) = (32, 16);
        let data = (0..w * h).flat_map(|i| [(i % 251) as u8, 0, 255]).collect();
        let img = RgbImage { width: w, height: h, data };
        let r = patchify(&img, 16, [0.0; 3], [1.0; 3]);
        assert_eq!((r.grid_h, r.grid_w), (1, 2));
        // patch 1, py = 3, px = 5, c = 0 → pixel (y = 3, x = 16 + 5)
        let v = r.pixel_values[768 + (3 * 16 + 5) * 3];
        assert_eq!(v, (((3 * w + 21) % 251) as f64 * (1.0 / 255.0)) as f32);
        assert_eq!(r.pixel_values[768 + (3 * 16 + 5) * 3 + 2], 1.0);
    }
}
