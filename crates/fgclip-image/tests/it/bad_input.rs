//! Bad input gives a clear `ImageError` naming the file — never a panic.

use crate::common;
use std::path::PathBuf;

use common::data_dir;
use fgclip_image::{decode_rgb, load_rgb, ImageError};

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("fgclip-image-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn jpeg_bytes() -> Vec<u8> {
    std::fs::read(data_dir().join("pil/q90_420.jpg")).unwrap()
}

fn png_bytes() -> Vec<u8> {
    std::fs::read(data_dir().join("pil/rgba.png")).unwrap()
}

#[test]
fn missing_file() {
    let p = scratch_dir().join("does_not_exist.jpg");
    let e = load_rgb(&p).unwrap_err();
    assert!(matches!(e, ImageError::NotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("does_not_exist.jpg") && msg.contains("not found"), "{msg}");
}

#[test]
fn directory_is_unreadable() {
    let e = load_rgb(&scratch_dir()).unwrap_err();
    assert!(matches!(e, ImageError::Unreadable { .. }), "{e:?}");
    assert!(e.to_string().contains("fgclip-image-bad-input"), "{e}");
}

#[test]
fn zero_byte_file() {
    let p = scratch_dir().join("empty.jpg");
    std::fs::write(&p, b"").unwrap();
    let e = load_rgb(&p).unwrap_err();
    assert!(matches!(e, ImageError::Empty { .. }), "{e:?}");
    assert!(e.to_string().contains("empty.jpg"), "{e}");
}

#[test]
fn text_file_named_jpg() {
    let p = scratch_dir().join("notes.jpg");
    std::fs::write(&p, "this is not an image\n").unwrap();
    let e = load_rgb(&p).unwrap_err();
    assert!(matches!(e, ImageError::UnsupportedFormat { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("notes.jpg") && msg.contains("not a JPEG"), "{msg}");
}

#[test]
fn truncated_jpeg() {
    let b = jpeg_bytes();
    let p = scratch_dir().join("half.jpg");
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    let e = load_rgb(&p).unwrap_err();
    assert!(matches!(e, ImageError::Truncated { .. }), "{e:?}");
    assert!(e.to_string().contains("half.jpg") && e.to_string().contains("truncated"), "{e}");
    // Pillow also reports a file that only lacks the final EOI marker as truncated, and a bare header.
    for cut in [b.len() - 2, b.len() - 1, 4, 20, 200] {
        let e = decode_rgb(&b[..cut], "cut.jpg").unwrap_err();
        assert!(matches!(e, ImageError::Truncated { .. }), "cut at {cut}: {e:?}");
    }
}

#[test]
fn corrupt_jpeg_is_an_error() {
    let mut b = jpeg_bytes();
    // Destroy everything after SOI + APP0 marker start: libjpeg must reject it.
    for x in b.iter_mut().skip(4) {
        *x = 0x00;
    }
    let e = decode_rgb(&b, "zeros.jpg").unwrap_err();
    assert!(matches!(e, ImageError::Corrupt { .. } | ImageError::Truncated { .. }), "{e:?}");
    assert!(e.to_string().contains("zeros.jpg"), "{e}");
}

#[test]
fn trailing_garbage_after_jpeg_is_accepted() {
    let mut b = jpeg_bytes();
    let good = decode_rgb(&b, "ok.jpg").unwrap();
    b.extend_from_slice(b"trailing bytes that Pillow ignores");
    assert_eq!(decode_rgb(&b, "trail.jpg").unwrap(), good);
}

#[test]
fn truncated_png() {
    let b = png_bytes();
    for cut in [b.len() / 2, 40, 9] {
        let e = decode_rgb(&b[..cut], "cut.png").unwrap_err();
        assert!(matches!(e, ImageError::Truncated { .. } | ImageError::Corrupt { .. }), "cut at {cut}: {e:?}");
        assert!(e.to_string().contains("cut.png"), "{e}");
    }
}

/// Deterministic xorshift so the "fuzz" cases are reproducible.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn damaged_files_never_panic() {
    let mut s = 0x9E3779B97F4A7C15u64;
    for (name, orig) in [("fuzz.jpg", jpeg_bytes()), ("fuzz.png", png_bytes())] {
        for i in 0..300 {
            let mut b = orig.clone();
            match i % 3 {
                0 => b.truncate((xorshift(&mut s) as usize) % b.len()),
                1 => {
                    for _ in 0..1 + xorshift(&mut s) % 8 {
                        let at = (xorshift(&mut s) as usize) % b.len();
                        b[at] = xorshift(&mut s) as u8;
                    }
                }
                _ => {
                    let at = 3 + (xorshift(&mut s) as usize) % (b.len() - 3);
                    b.drain(at..(at + 1 + (xorshift(&mut s) as usize) % 16).min(b.len()));
                }
            }
            match decode_rgb(&b, name) {
                Ok(img) => assert_eq!(img.data.len(), img.width * img.height * 3),
                Err(e) => assert!(e.to_string().contains(name), "{e}"),
            }
        }
    }
}
