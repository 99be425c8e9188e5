//! FG-CLIP v1 preprocessing parity with the official outputs in shared/fixtures/fgclip_v1/inputs.safetensors.
//! Skips (with a message) when the fixtures are absent.

use crate::common;
use common::{fixtures_dir, max_abs_diff, u8_diff, Tensors, FIXTURE_IMAGES};
use fgclip_image::clip::{self, OPENAI_MEAN, OPENAI_STD};
use fgclip_image::load_rgb;
use fgclip_image::resample::resize_bicubic;

#[test]
fn v1_resized_uint8_is_pixel_exact() {
    let Some(dir) = fixtures_dir() else { return };
    let t = Tensors::open(&dir.join("fgclip_v1/inputs.safetensors"));
    let (shape, want) = t.u8("image_resized_uint8");
    assert_eq!(shape, [3, 112, 112, 3]);
    for (i, f) in FIXTURE_IMAGES.iter().enumerate() {
        let img = load_rgb(&dir.join("images").join(f)).unwrap();
        let r = resize_bicubic(&img, 112, 112);
        let (maxd, n) = u8_diff(&r.data, &want[i * 112 * 112 * 3..(i + 1) * 112 * 112 * 3]);
        assert_eq!((maxd, n), (0, 0), "{f}: resized uint8 differs from PIL (max {maxd}, {n} values)");
    }
}

#[test]
fn v1_pixel_values_within_1e6() {
    let Some(dir) = fixtures_dir() else { return };
    let t = Tensors::open(&dir.join("fgclip_v1/inputs.safetensors"));
    let (shape, want) = t.f32("pixel_values");
    assert_eq!(shape, [3, 3, 112, 112]);
    let imgs: Vec<_> = FIXTURE_IMAGES.iter().map(|f| load_rgb(&dir.join("images").join(f)).unwrap()).collect();
    let got = clip::preprocess_many(&imgs, 112, OPENAI_MEAN, OPENAI_STD);
    let n = 3 * 112 * 112;
    for (i, g) in got.iter().enumerate() {
        let d = max_abs_diff(g, &want[i * n..(i + 1) * n]);
        eprintln!("v1 pixel_values {}: max abs diff {d:e}", FIXTURE_IMAGES[i]);
        assert!(d <= 1e-6, "{}: pixel_values max abs diff {d}", FIXTURE_IMAGES[i]);
    }
}

#[test]
fn v1_processor_only_path_within_1e6() {
    let Some(dir) = fixtures_dir() else { return };
    let t = Tensors::open(&dir.join("fgclip_v1/inputs.safetensors"));
    let (_, want) = t.f32("pixel_values_processor_only");
    let n = 3 * 112 * 112;
    for (i, f) in FIXTURE_IMAGES.iter().enumerate() {
        let img = load_rgb(&dir.join("images").join(f)).unwrap();
        let got = clip::preprocess_processor_only(&img, 112, OPENAI_MEAN, OPENAI_STD);
        let d = max_abs_diff(&got, &want[i * n..(i + 1) * n]);
        eprintln!("v1 processor-only {f}: max abs diff {d:e}");
        assert!(d <= 1e-6, "{f}: processor-only pixel_values max abs diff {d}");
    }
}

#[test]
fn v1_rect_128x160_within_1e6() {
    let Some(dir) = fixtures_dir() else { return };
    let t = Tensors::open(&dir.join("fgclip_v1/inputs.safetensors"));
    let (shape, want) = t.f32("pixel_values_rect_128x160");
    assert_eq!(shape, [1, 3, 128, 160]);
    let img = load_rgb(&dir.join("images/cat_dfclor.jpg")).unwrap();
    let got = clip::preprocess_hw(&img, 128, 160, OPENAI_MEAN, OPENAI_STD);
    let d = max_abs_diff(&got, &want);
    eprintln!("v1 rect 128x160: max abs diff {d:e}");
    assert!(d <= 1e-6, "rect pixel_values max abs diff {d}");
}
