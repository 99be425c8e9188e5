//! Image bytes → `decode_rgb` (content-sniffed JPEG / PNG / GIF / BMP / WebP / TIFF) → both preprocessors.
//!
//! JPEG errors travel as Rust unwinding out of libjpeg's callbacks (`resume_unwind`, caught in `decode_rgb`), so
//! this target needs `panic = "unwind"`, which is what cargo-fuzz builds with (it does not pass `-Cpanic=abort`).
//! `resume_unwind` does not run the panic hook, so libfuzzer-sys' abort-on-panic hook only fires on real panics.
#![no_main]

use fgclip_image::{decode_rgb, ImageProcessor, PatchBudget};
use libfuzzer_sys::fuzz_target;

/// Preprocess only images up to ~4 megapixels (bigger ones are valid but make each run slow).
const MAX_PIXELS: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(img) = decode_rgb(data, "fuzz") else { return };
    assert_eq!(img.data.len(), img.width * img.height * 3, "decoded buffer size");
    if img.width * img.height > MAX_PIXELS {
        return;
    }
    let square = ImageProcessor::square(224, 16).process(&[img.clone()], PatchBudget::Dynamic);
    if let Ok(b) = &square {
        assert_eq!(b.values.len(), b.dims.iter().product::<usize>(), "square: values vs dims");
        assert!(b.values.iter().all(|v| v.is_finite()), "square: non-finite pixel value");
    }
    let naflex = ImageProcessor::naflex(16).process(&[img], PatchBudget::Dynamic);
    if let Ok(b) = &naflex {
        assert_eq!(b.values.len(), b.dims.iter().product::<usize>(), "naflex: values vs dims");
        assert!(b.values.iter().all(|v| v.is_finite()), "naflex: non-finite pixel value");
        if let Some(valid) = &b.valid {
            assert!(valid.iter().all(|v| *v == 0.0 || *v == 1.0), "naflex: mask not 0/1");
        }
    }
});
