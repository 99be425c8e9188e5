//! Reduced JPEG decoding for indexing (`decode_rgb_at_least` + `ImageProcessor::process_reduced`): the scale is
//! the smallest that keeps the asked size, a JPEG too small to reduce decodes exactly as `decode_rgb`, and the
//! tower's input from a reduced decode stays close to the one from a full decode, with the original's size (and so
//! its budget, grid and box coordinates) kept.

use fgclip_image::{decode_rgb, decode_rgb_at_least, resample, ImageProcessor, PatchBudget, RgbImage};
use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder};

use crate::common::fixtures_dir;

/// A camera-sized JPEG: a fixture photo enlarged to `w × h` and saved at quality 90.
fn big_jpeg(w: usize, h: usize) -> Option<Vec<u8>> {
    let photo = decode_rgb(&std::fs::read(fixtures_dir()?.join("images/cat_dfclor.jpg")).unwrap(), "cat").unwrap();
    let big = resample::resize_bicubic(&photo, w, h);
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(&big.data, w as u32, h as u32, ExtendedColorType::Rgb8)
        .unwrap();
    Some(out)
}

#[test]
fn reduced_decode_picks_the_smallest_scale_that_keeps_the_asked_size() {
    let Some(jpeg) = big_jpeg(1601, 1203) else { return };
    // (asked at least) → (decoded size): sides are divided by 8, 4 or 2, rounded up.
    for ((mw, mh), want) in [
        ((200, 150), (201, 151)),
        ((202, 100), (401, 301)),
        ((448, 448), (801, 602)),
        ((801, 602), (801, 602)),
        ((900, 100), (1601, 1203)),
    ] {
        let img = decode_rgb_at_least(&jpeg, "big.jpg", mw, mh).unwrap();
        assert_eq!((img.width, img.height), want, "at least {mw}x{mh}");
        assert_eq!(img.data.len(), img.width * img.height * 3);
    }
    // No reduction possible: byte-identical to the full decode.
    let full = decode_rgb(&jpeg, "big.jpg").unwrap();
    assert_eq!(decode_rgb_at_least(&jpeg, "big.jpg", 1601, 1203).unwrap().data, full.data);
    // Not a JPEG: always in full.
    let png = std::fs::read(fixtures_dir().unwrap().join("images/df_cups.png")).unwrap();
    assert_eq!(decode_rgb_at_least(&png, "p.png", 1, 1).unwrap(), decode_rgb(&png, "p.png").unwrap());
    // Broken data still gives the decoder's error, not a panic.
    let err = decode_rgb_at_least(&jpeg[..jpeg.len() / 3], "cut.jpg", 100, 100).unwrap_err().to_string();
    assert!(err.contains("cut.jpg") && err.contains("truncated"), "{err}");
}

/// Mean absolute difference of two tower inputs, in units of one 8-bit level (the inputs are normalised by
/// `std`; `scale` = 255 · std brings them back to levels).
fn mean_level_diff(a: &[f32], b: &[f32], scale: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32 * scale
}

#[test]
fn tower_input_from_a_reduced_decode_matches_the_full_one_closely() {
    let Some(jpeg) = big_jpeg(2400, 1800) else { return };
    let full = decode_rgb(&jpeg, "big.jpg").unwrap();
    for (name, proc, budget) in [
        ("FG-CLIP 224", ImageProcessor::square(224, 16), PatchBudget::Dynamic),
        ("FG-CLIP 2 dynamic", ImageProcessor::naflex(16), PatchBudget::Dynamic),
        ("FG-CLIP 2 576", ImageProcessor::naflex(16), PatchBudget::Fixed(576)),
    ] {
        let (th, tw) = proc.input_size(full.height, full.width, budget).unwrap();
        let small: RgbImage = decode_rgb_at_least(&jpeg, "big.jpg", 2 * tw, 2 * th).unwrap();
        assert!(small.width < full.width && small.width >= 2 * tw && small.height >= 2 * th, "{name}");
        let exact = proc.process(&[&full], budget).unwrap();
        let reduced = proc.process_reduced(&small, (full.height, full.width), budget).unwrap();
        // Same shape, grid and reported size: the budget and boxes follow the original.
        assert_eq!(
            (&reduced.dims, &reduced.grids, &reduced.sizes),
            (&exact.dims, &exact.grids, &exact.sizes),
            "{name}"
        );
        let d = mean_level_diff(&reduced.values, &exact.values, 255.0 * proc.std[0]);
        // Measured: 0.2 to 0.3 of a level; a wrong scale, offset or channel order is tens of levels.
        assert!(d < 1.5, "{name}: tower inputs differ by {d} levels on average");
        // And with the original equal to the image itself, process_reduced is process.
        assert_eq!(proc.process_reduced(&full, (full.height, full.width), budget).unwrap().values, exact.values);
    }
}
