//! Decoding and resampling against Pillow 13 outputs of small synthetic images kept in tests/data
//! (made by tests/data/gen_pil_cases.py). Always runs (no external fixtures needed).

use crate::common;
use common::{data_dir, u8_diff, Tensors};
use fgclip_image::resample::{resize, Filter};
use fgclip_image::{load_rgb, RgbImage};

fn expected() -> Tensors {
    Tensors::open(&data_dir().join("pil_expected.safetensors"))
}

#[test]
fn decode_matches_pillow_convert_rgb() {
    let t = expected();
    let mut names: Vec<String> = t.names().into_iter().filter(|n| n.starts_with("decode.")).collect();
    names.sort();
    assert!(names.len() >= 16, "expected all decode cases, got {names:?}");
    let mut failures = vec![];
    for name in &names {
        let file = name.strip_prefix("decode.").unwrap();
        let (shape, want) = t.u8(name);
        let img = load_rgb(&data_dir().join("pil").join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!([img.height, img.width, 3], shape[..], "{file} size");
        let (maxd, n) = u8_diff(&img.data, &want);
        if maxd != 0 {
            failures.push(format!("{file}: max abs diff {maxd}, {n} values differ"));
        }
    }
    assert!(failures.is_empty(), "decode mismatches vs Pillow:\n{}", failures.join("\n"));
}

#[test]
fn resize_matches_pillow_bit_exact() {
    let t = expected();
    let src = load_rgb(&data_dir().join("pil/resize_src.png")).unwrap();
    assert_eq!((src.width, src.height), (57, 43));
    let mut count = 0;
    let mut failures = vec![];
    for name in t.names() {
        let Some(rest) = name.strip_prefix("resize.") else {
            continue;
        };
        let (fname, size) = rest.split_once('.').unwrap();
        let (w, h) = size.split_once('x').unwrap();
        let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
        let filter = match fname {
            "bicubic" => Filter::Bicubic,
            "bilinear" => Filter::Bilinear,
            other => panic!("unknown filter {other}"),
        };
        let (_, want) = t.u8(&name);
        let got: RgbImage = resize(&src, w, h, filter);
        let (maxd, n) = u8_diff(&got.data, &want);
        if maxd != 0 {
            failures.push(format!("{name}: max abs diff {maxd}, {n} values differ"));
        }
        count += 1;
    }
    assert!(count >= 20, "expected resize cases, found {count}");
    assert!(failures.is_empty(), "resize mismatches vs Pillow:\n{}", failures.join("\n"));
}
