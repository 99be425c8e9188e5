//! FG-CLIP (v1) image preprocessing.
//!
//! Mirrors the official path `Image.open(f).convert("RGB").resize((S, S))` (Pillow default filter BICUBIC, an
//! aspect-ratio-breaking squash) followed by transformers' slow `CLIPImageProcessor.preprocess` (resize shortest
//! edge + center crop are then no-ops), whose numerics are `rescale` (`image.astype(float64) * (1/255)` cast to
//! float32) and `normalize` (`(x - mean) / std` in float32), channel-first output.
//!
//! Also provided: [`preprocess_processor_only`] — `CLIPImageProcessor` on the raw image (`get_resize_output_image_size`
//! shortest edge → S with `int()` truncation of the long side, PIL bicubic, `center_crop`), what `AutoProcessor`
//! alone does — and [`preprocess_hw`] for a non-square squash.

use rayon::prelude::*;

use crate::resample::resize_bicubic;
use crate::RgbImage;

/// OpenAI CLIP mean (`OPENAI_CLIP_MEAN`, as stored in FG-CLIP's `preprocessor_config.json`).
pub const OPENAI_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP std (`OPENAI_CLIP_STD`). Literals as written in the config; the f32 rounding is what HF's
/// `np.array(std, dtype=float32)` does too.
#[allow(clippy::excessive_precision)]
pub const OPENAI_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The 256 possible outputs per channel of HF's `rescale` + `normalize`: `((v as f64 * (1/255)) as f32 - mean) / std`
/// in f32. A table gives the same bits as computing per pixel and is much cheaper.
pub(crate) fn normalize_lut(mean: [f32; 3], std: [f32; 3]) -> [[f32; 256]; 3] {
    // transformers' default rescale_factor 1/255 = 0.00392156862745098 (the same f64 as Python's 1 / 255).
    let rescale: f64 = 1.0 / 255.0;
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let x = (v as f64 * rescale) as f32;
            *out = (x - mean[c]) / std[c];
        }
    }
    lut
}

/// Rescales and normalises an RGB uint8 image into channel-first `[3, H, W]` f32 (no resize).
pub fn to_chw_normalized(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let lut = normalize_lut(mean, std);
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    let (r, rest) = out.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (i, p) in img.data.chunks_exact(3).enumerate() {
        r[i] = lut[0][p[0] as usize];
        g[i] = lut[1][p[1] as usize];
        b[i] = lut[2][p[2] as usize];
    }
    out
}

/// FG-CLIP v1 official preprocessing: bicubic squash to `size`×`size`, rescale, normalise. Returns `[3, S, S]`.
pub fn preprocess(img: &RgbImage, size: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    preprocess_hw(img, size, size, mean, std)
}

/// Bicubic squash to `height`×`width` (PIL `resize((width, height))`), rescale, normalise → `[3, H, W]`.
pub fn preprocess_hw(img: &RgbImage, height: usize, width: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    to_chw_normalized(&resize_bicubic(img, width, height), mean, std)
}

/// [`preprocess`] over many images in parallel (rayon); each item is `[3, S, S]`.
pub fn preprocess_many(imgs: &[RgbImage], size: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<Vec<f32>> {
    imgs.par_iter().map(|im| preprocess(im, size, mean, std)).collect()
}

/// transformers `get_resize_output_image_size(image, size=shortest_edge, default_to_square=False)`:
/// the short side becomes `shortest_edge`, the long side `int(shortest_edge * long / short)`. Returns `(h, w)`.
pub fn shortest_edge_size(height: usize, width: usize, shortest_edge: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = (shortest_edge as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (new_long, shortest_edge)
    } else {
        (shortest_edge, new_long)
    }
}

/// transformers `center_crop` (top = (H - h) // 2, left = (W - w) // 2) for a crop no larger than the image.
pub fn center_crop(img: &RgbImage, crop_h: usize, crop_w: usize) -> RgbImage {
    assert!(crop_h <= img.height && crop_w <= img.width, "center_crop larger than the image is not supported");
    let top = (img.height - crop_h) / 2;
    let left = (img.width - crop_w) / 2;
    let mut data = Vec::with_capacity(crop_h * crop_w * 3);
    for y in top..top + crop_h {
        let start = (y * img.width + left) * 3;
        data.extend_from_slice(&img.data[start..start + crop_w * 3]);
    }
    RgbImage { width: crop_w, height: crop_h, data }
}

/// `CLIPImageProcessor` alone on the raw image: shortest edge → `size` (bicubic), center crop `size`×`size`,
/// rescale, normalise → `[3, S, S]`. Not the official FG-CLIP path (which squashes first).
pub fn preprocess_processor_only(img: &RgbImage, size: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let (h, w) = shortest_edge_size(img.height, img.width, size);
    let resized = resize_bicubic(img, w, h);
    to_chw_normalized(&center_crop(&resized, size, size), mean, std)
}
