//! Pillow-exact uint8 resampling.
//!
//! Mirrors Pillow `ImagingResample` / `ImagingResampleInner` with `precompute_coeffs`, `normalize_coeffs_8bpc`,
//! `ImagingResampleHorizontal_8bpc` and `ImagingResampleVertical_8bpc` (`src/libImaging/Resample.c`), i.e. what
//! `Image.resize((w, h), resample)` does for an "RGB" image with the default box and `reducing_gap=None`:
//!
//! * separable: a horizontal pass over only the source rows the vertical pass will read, then a vertical pass;
//! * the filter support is scaled by the downscale factor (area-aware antialiasing when shrinking, plain
//!   interpolation when enlarging);
//! * per output position the f64 weights are normalised to sum 1, then rounded to fixed point with
//!   `PRECISION_BITS = 22` (away from zero), accumulated in `i32` starting from 1/2, shifted and clipped to 0..=255
//!   after each pass (so the intermediate image is uint8, as in Pillow).
//!
//! The same float expressions are evaluated in the same order as the C code, so the coefficient tables — and hence
//! the output — are bit-identical. Tables are computed once per call (per (in, out) size and axis); the pixel loops
//! allocate nothing.

use crate::RgbImage;

/// Pillow's `PRECISION_BITS` (32 - 8 - 2): 8 bits for the result, 2 for overflow of negative lobes.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resampling filters (Pillow's `Image.Resampling`, the ones the FG-CLIP processors use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BILINEAR` (triangle, support 1).
    Bilinear,
    /// `Image.BICUBIC` (Keys cubic with a = -0.5, support 2).
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    #[inline]
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Bilinear => {
                let x = if x < 0.0 { -x } else { x };
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = if x < 0.0 { -x } else { x };
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point coefficient table for one axis (`precompute_coeffs` + `normalize_coeffs_8bpc`).
#[derive(Clone, Debug)]
pub struct Coeffs {
    /// Max taps per output position (`ksize`); row `i` of `k` is `k[i * ksize..][..ksize]`.
    ksize: usize,
    /// `(first source index, number of taps)` per output position.
    bounds: Vec<(usize, usize)>,
    k: Vec<i32>,
}

impl Coeffs {
    /// Table for resampling `in_size` source samples (box `0..in_size`) to `out_size` samples.
    pub fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        assert!(in_size > 0 && out_size > 0, "resample: sizes must be positive ({in_size} -> {out_size})");
        // Pillow passes the box edges as C floats; `(double)(in1 - in0)` of integer sizes is exact.
        let in0 = 0.0f32 as f64;
        let in1 = in_size as f32;
        let scale = (in1 - 0.0f32) as f64 / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut k = vec![0i32; out_size * ksize];
        let mut w = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = in0 + (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C: (int)(center - support + 0.5) truncates toward zero, then clamps.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut ww = 0.0f64;
            for (x, wx) in w.iter_mut().enumerate().take(n) {
                // C: (x + xmin - center + 0.5) * ss with int x + xmin.
                let v = filter.eval(((x + xmin) as f64 - center + 0.5) * ss);
                *wx = v;
                ww += v;
            }
            let row = &mut k[xx * ksize..(xx + 1) * ksize];
            for x in 0..n {
                let v = if ww != 0.0 { w[x] / ww } else { w[x] };
                // normalize_coeffs_8bpc: (int)(±0.5 + v * (1 << PRECISION_BITS)), truncation toward zero.
                let scaled = v * (1i32 << PRECISION_BITS) as f64;
                row[x] = if v < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 };
            }
            bounds.push((xmin, n));
        }
        Coeffs { ksize, bounds, k }
    }

    /// Number of output positions.
    pub fn out_size(&self) -> usize {
        self.bounds.len()
    }

    #[inline]
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[i];
        (start, &self.k[i * self.ksize..i * self.ksize + n])
    }
}

/// Pillow `clip8`: `in >> PRECISION_BITS` clipped to 0..=255 (arithmetic shift, as the lookup table does).
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// `Image.resize((w, h), filter)` of an RGB image, bit-exact with Pillow. A same-size resize is a copy (as in
/// Pillow); a zero output size gives an empty image.
pub fn resize(img: &RgbImage, w: usize, h: usize, filter: Filter) -> RgbImage {
    assert_eq!(img.data.len(), img.width * img.height * 3, "RgbImage data length does not match its size");
    if w == 0 || h == 0 || img.width == 0 || img.height == 0 {
        return RgbImage::zeros(w, h);
    }
    if w == img.width && h == img.height {
        return img.clone();
    }
    let need_h = w != img.width;
    let need_v = h != img.height;
    let cv = Coeffs::new(img.height, h, filter);

    // Horizontal pass, only over the source rows the vertical pass reads (ybox_first..ybox_last).
    let (tmp_owned, tmp_ref, row_offset);
    if need_h {
        let ch = Coeffs::new(img.width, w, filter);
        let first = cv.bounds[0].0;
        let last = cv.bounds[h - 1].0 + cv.bounds[h - 1].1;
        let mut out = vec![0u8; (last - first) * w * 3];
        horizontal(&img.data, img.width, first, last, &ch, &mut out);
        tmp_owned = RgbImage { width: w, height: last - first, data: out };
        tmp_ref = &tmp_owned;
        row_offset = first;
    } else {
        tmp_ref = img;
        row_offset = 0;
    }
    if !need_v {
        // Only reached when need_h: the temp image already is the full result.
        return tmp_ref.clone();
    }
    let mut out = vec![0u8; w * h * 3];
    vertical(&tmp_ref.data, tmp_ref.width, row_offset, &cv, &mut out);
    RgbImage { width: w, height: h, data: out }
}

/// `ImagingResampleHorizontal_8bpc` for rows `first..last` of an RGB buffer of width `in_w`.
fn horizontal(src: &[u8], in_w: usize, first: usize, last: usize, c: &Coeffs, out: &mut [u8]) {
    let out_w = c.out_size();
    for (yy, y) in (first..last).enumerate() {
        let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
        let orow = &mut out[yy * out_w * 3..(yy + 1) * out_w * 3];
        for xx in 0..out_w {
            let (xmin, k) = c.taps(xx);
            let px = &row[xmin * 3..(xmin + k.len()) * 3];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (p, &kx) in px.chunks_exact(3).zip(k) {
                // Wrapping ops: identical to the C int arithmetic whenever that is defined (it always is for
                // uint8 input: 255 * sum|k| < 2^31 by the choice of PRECISION_BITS).
                s0 = s0.wrapping_add((p[0] as i32).wrapping_mul(kx));
                s1 = s1.wrapping_add((p[1] as i32).wrapping_mul(kx));
                s2 = s2.wrapping_add((p[2] as i32).wrapping_mul(kx));
            }
            orow[xx * 3] = clip8(s0);
            orow[xx * 3 + 1] = clip8(s1);
            orow[xx * 3 + 2] = clip8(s2);
        }
    }
}

/// `ImagingResampleVertical_8bpc`: source row of output row `yy` tap `t` is `bounds[yy].0 + t - row_offset`.
/// Accumulates whole rows at a time (integer sums, so the order does not change the result) to stay
/// cache-friendly and vectorisable.
fn vertical(src: &[u8], w: usize, row_offset: usize, c: &Coeffs, out: &mut [u8]) {
    let stride = w * 3;
    let mut acc = vec![0i32; stride];
    for yy in 0..c.out_size() {
        let (ymin, k) = c.taps(yy);
        acc.fill(HALF);
        for (t, &ky) in k.iter().enumerate() {
            let y = ymin + t - row_offset;
            let row = &src[y * stride..(y + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add((p as i32).wrapping_mul(ky));
            }
        }
        for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// `Image.resize((w, h), Image.BICUBIC)` (Pillow's default filter for RGB), bit-exact.
pub fn resize_bicubic(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    resize(img, w, h, Filter::Bicubic)
}

/// `Image.resize((w, h), Image.BILINEAR)`, bit-exact.
pub fn resize_bilinear(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    resize(img, w, h, Filter::Bilinear)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for (i, o) in [(640, 112), (480, 112), (112, 640), (7, 3), (3, 7), (1024, 736), (100, 99)] {
            for f in [Filter::Bilinear, Filter::Bicubic] {
                let c = Coeffs::new(i, o, f);
                for xx in 0..o {
                    let (_, k) = c.taps(xx);
                    let s: i64 = k.iter().map(|&v| v as i64).sum();
                    assert!((s - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{i}->{o} {f:?} {xx}: {s}");
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage { width: 37, height: 23, data: [10u8, 200, 255].repeat(37 * 23) };
        for f in [Filter::Bilinear, Filter::Bicubic] {
            for (w, h) in [(5, 4), (80, 50), (37, 10), (12, 23), (1, 1)] {
                let r = resize(&img, w, h, f);
                assert_eq!((r.width, r.height), (w, h));
                assert!(r.data.chunks_exact(3).all(|p| p == [10, 200, 255]), "{f:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn same_size_is_copy_and_zero_size_is_empty() {
        let img = RgbImage { width: 3, height: 2, data: (0..18).collect() };
        assert_eq!(resize_bicubic(&img, 3, 2), img);
        assert_eq!(resize_bilinear(&img, 0, 5).data.len(), 0);
    }
}
