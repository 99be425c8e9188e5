//! Decoding with `PIL.Image.open(f).convert("RGB")` semantics.
//!
//! Mirrors: Pillow `Image.open` (content sniffing, not the file extension), `JpegImagePlugin` (libjpeg-turbo,
//! `CMYK;I` raw mode for CMYK/YCCK JPEGs), `PngImagePlugin` modes, `ImageFile.load` ("image file is truncated"),
//! `Image.convert("RGB")` (`libImaging/Convert.c`: `l2rgb`, `la2rgb`, `rgba2rgb`, `cmyk2rgb`, `I;16` → clip) and
//! `Image._decompression_bomb_check`.
//!
//! Why a C decoder for JPEG: Pillow decodes JPEG with libjpeg-turbo (islow IDCT, fancy chroma upsampling). The
//! `image` crate's zune-jpeg differs from it by up to 4 levels on ~10% of the values of the fixture photos, and
//! `jpeg-decoder` by up to 3 on ~5%; MozJPEG's decoder (libjpeg-turbo code, built here from vendored C, plain C
//! without SIMD) is byte-identical. All other formats use the `image` crate (lossless formats decode identically;
//! the PIL mode rules are applied when converting to RGB).
//!
//! Known differences from Pillow (uncommon inputs): GIF — the `image` crate composes the first frame to RGBA and
//! transparent pixels become black, Pillow keeps the palette colour of the transparent index; lossy WebP — libwebp
//! vs `image-webp` upsampling may differ slightly (not measured); EXIF orientation is ignored by both (as Pillow's
//! `open` does).

use std::io::Cursor;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use image::{DynamicImage, ImageFormat};
use mozjpeg_sys as jsys;

use crate::{ImageError, RgbImage};

/// Largest accepted pixel count: Pillow raises `DecompressionBombError` above `2 * Image.MAX_IMAGE_PIXELS`
/// (`MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)` = 89,478,485).
pub const MAX_IMAGE_PIXELS: usize = 2 * 89_478_485;

/// Decodes like [`decode_rgb`], except that a JPEG is decoded at a reduced size when that still leaves at least
/// `min_w × min_h` pixels: libjpeg's scaled IDCT gives 1/2, 1/4 or 1/8 of each side (rounded up) for a fraction
/// of the work, as Pillow's `Image.draft` does. The pixels then differ from a full decode followed by a resize, so
/// this is for callers that trade exactness for speed (`fgclip index` on camera photos), never for `features`.
/// Other formats decode in full.
pub fn decode_rgb_at_least(
    bytes: &[u8],
    name_for_errors: &str,
    min_w: usize,
    min_h: usize,
) -> Result<RgbImage, ImageError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(bytes, name_for_errors, Some((min_w, min_h)));
    }
    decode_rgb(bytes, name_for_errors)
}

/// The IDCT scale numerator (out of 8) for a `w × h` JPEG: the smallest of 1, 2, 4, 8 that keeps both sides at
/// least `min_w × min_h` (sides round up, as libjpeg's `jdiv_round_up`).
fn jpeg_scale(w: usize, h: usize, min_w: usize, min_h: usize) -> u8 {
    [1u8, 2, 4]
        .into_iter()
        .find(|&k| (w * k as usize).div_ceil(8) >= min_w && (h * k as usize).div_ceil(8) >= min_h)
        .unwrap_or(8)
}

/// Reads and decodes an image file to RGB like `PIL.Image.open(path).convert("RGB")`.
///
/// The format is detected from the content (as Pillow does), not from the extension.
pub fn load_rgb(path: &Path) -> Result<RgbImage, ImageError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::NotFound { path: path.to_path_buf() })
        }
        Err(e) => return Err(ImageError::Unreadable { path: path.to_path_buf(), source: e }),
    };
    decode_rgb(&bytes, &path.display().to_string())
}

/// Decodes an in-memory image file to RGB like `PIL.Image.open(BytesIO(bytes)).convert("RGB")`.
/// `name_for_errors` is only used in error messages.
pub fn decode_rgb(bytes: &[u8], name_for_errors: &str) -> Result<RgbImage, ImageError> {
    let name = name_for_errors;
    if bytes.is_empty() {
        return Err(ImageError::Empty { name: name.to_string() });
    }
    // Pillow's JpegImagePlugin._accept: the first three bytes are FF D8 FF.
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(bytes, name, None);
    }
    match image::guess_format(bytes) {
        Ok(fmt @ (ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP | ImageFormat::Bmp | ImageFormat::Tiff)) => {
            decode_with_image_crate(bytes, fmt, name)
        }
        Ok(fmt) => Err(ImageError::UnsupportedFormat {
            name: name.to_string(),
            detail: format!("{fmt:?} is not supported (JPEG, PNG, WebP, GIF, BMP, TIFF are)"),
        }),
        Err(_) => Err(not_an_image(bytes, name)),
    }
}

/// Content that no supported decoder recognises.
fn not_an_image(bytes: &[u8], name: &str) -> ImageError {
    ImageError::UnsupportedFormat {
        name: name.to_string(),
        detail: format!(
            "content is not a JPEG, PNG, WebP, GIF, BMP or TIFF image (first bytes: {})",
            hex_prefix(bytes)
        ),
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    let mut s: String = bytes.iter().take(8).map(|b| format!("{b:02x} ")).collect();
    s.pop();
    if bytes.len() > 8 {
        s.push_str(" ...");
    }
    s
}

fn check_size(name: &str, width: usize, height: usize) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize { name: name.to_string(), width, height });
    }
    if width.saturating_mul(height) > MAX_IMAGE_PIXELS {
        return Err(ImageError::TooLarge { name: name.to_string(), width, height, limit: MAX_IMAGE_PIXELS });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// JPEG through libjpeg (MozJPEG build of the libjpeg-turbo decoder)
// ---------------------------------------------------------------------------------------------------------------

/// Unwinding payloads raised from libjpeg's callbacks (libjpeg's error handler must not return).
enum JpegAbort {
    /// `JWRN_JPEG_EOF`: the data ended early. libjpeg would continue with a fake EOI (grey fill); Pillow instead
    /// reports "image file is truncated", so we stop.
    Truncated,
    /// A fatal libjpeg error (`error_exit`), formatted message.
    Fatal(String),
}

/// libjpeg's `format_message` equivalent: the message table entry with its `%d`/`%x`/`%s` arguments filled in.
unsafe fn jpeg_message(cinfo: &mut jsys::jpeg_common_struct) -> String {
    let err = &mut *cinfo.err;
    let code = err.msg_code;
    let table = err.jpeg_message_table;
    if table.is_null() || code <= 0 || code > err.last_jpeg_message {
        return format!("libjpeg error code {code}");
    }
    let fmt_ptr = *table.add(code as usize);
    if fmt_ptr.is_null() {
        return format!("libjpeg error code {code}");
    }
    let fmt = std::ffi::CStr::from_ptr(fmt_ptr).to_string_lossy().into_owned();
    let ints: [i32; 8] = *err.msg_parm.i();
    let s_bytes: [i8; 80] = *err.msg_parm.s();
    let s_arg: String = {
        let bytes: Vec<u8> = s_bytes.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    // Same rule as libjpeg's format_message: a message with "%s" takes the string parameter, otherwise up to
    // eight int parameters in order.
    let mut out = String::new();
    let mut next_int = 0usize;
    let mut chars = fmt.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        let mut zero = false;
        let mut width = 0usize;
        if chars.peek() == Some(&'0') {
            zero = true;
            chars.next();
        }
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = width * 10 + d as usize;
            chars.next();
        }
        while matches!(chars.peek(), Some('l')) {
            chars.next();
        }
        let conv = chars.next().unwrap_or('%');
        let value = match conv {
            '%' => "%".to_string(),
            's' => s_arg.clone(),
            'd' | 'i' | 'u' | 'x' | 'X' | 'c' => {
                let v = ints.get(next_int).copied().unwrap_or(0);
                next_int += 1;
                match conv {
                    'x' => format!("{:x}", v),
                    'X' => format!("{:X}", v),
                    'u' => format!("{}", v as u32),
                    'c' => char::from_u32(v as u32).map(String::from).unwrap_or_default(),
                    _ => v.to_string(),
                }
            }
            other => format!("%{other}"),
        };
        if value.len() < width {
            out.extend(std::iter::repeat_n(if zero { '0' } else { ' ' }, width - value.len()));
        }
        out.push_str(&value);
    }
    out
}

unsafe extern "C-unwind" fn jpeg_error_exit(cinfo: &mut jsys::jpeg_common_struct) {
    let msg = jpeg_message(cinfo);
    // resume_unwind: no panic hook, no "thread panicked" noise; caught in decode_jpeg.
    panic::resume_unwind(Box::new(JpegAbort::Fatal(msg)));
}

unsafe extern "C-unwind" fn jpeg_emit_message(cinfo: &mut jsys::jpeg_common_struct, level: std::os::raw::c_int) {
    // level -1 = warning. Pillow ignores libjpeg warnings ("Corrupt JPEG data: N extraneous bytes", ...) except
    // running out of data, which its suspending source turns into "image file is truncated".
    if level == -1 && (*cinfo.err).msg_code == jsys::JWRN_JPEG_EOF as std::os::raw::c_int {
        panic::resume_unwind(Box::new(JpegAbort::Truncated));
    }
}

unsafe extern "C-unwind" fn jpeg_output_message(_cinfo: &mut jsys::jpeg_common_struct) {}

fn jpeg_error_mgr() -> jsys::jpeg_error_mgr {
    // SAFETY: jpeg_error_mgr is a plain C struct; jpeg_std_error fills every field.
    unsafe {
        let mut err: jsys::jpeg_error_mgr = std::mem::zeroed();
        jsys::jpeg_std_error(&mut err);
        err.error_exit = Some(jpeg_error_exit);
        err.emit_message = Some(jpeg_emit_message);
        err.output_message = Some(jpeg_output_message);
        err
    }
}

fn decode_jpeg(bytes: &[u8], name: &str, at_least: Option<(usize, usize)>) -> Result<RgbImage, ImageError> {
    match panic::catch_unwind(AssertUnwindSafe(|| decode_jpeg_inner(bytes, name, at_least))) {
        Ok(result) => result,
        Err(payload) => Err(match payload.downcast::<JpegAbort>() {
            Ok(abort) => match *abort {
                JpegAbort::Truncated => ImageError::Truncated {
                    name: name.to_string(),
                    detail: "JPEG data ends before the end of the image".to_string(),
                },
                // e.g. "Unsupported JPEG process: SOF type 0xc3" (lossless JPEG, which libjpeg-turbo 3 / Pillow can
                // read but this libjpeg-turbo-2-based decoder cannot) or unsupported colour transforms.
                JpegAbort::Fatal(msg) if msg.starts_with("Unsupported") => {
                    ImageError::UnsupportedFormat { name: name.to_string(), detail: format!("JPEG: {msg}") }
                }
                JpegAbort::Fatal(msg) => ImageError::Corrupt { name: name.to_string(), detail: format!("JPEG: {msg}") },
            },
            // Anything else is a bug in this crate or the wrapper: keep it a panic.
            Err(other) => panic::resume_unwind(other),
        }),
    }
}

fn io_to_image_error(e: std::io::Error, name: &str) -> ImageError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ImageError::Truncated { name: name.to_string(), detail: "JPEG data ends before the end of the image".into() }
    } else {
        ImageError::Corrupt { name: name.to_string(), detail: format!("JPEG: {e}") }
    }
}

fn decode_jpeg_inner(bytes: &[u8], name: &str, at_least: Option<(usize, usize)>) -> Result<RgbImage, ImageError> {
    use jsys::J_COLOR_SPACE::{JCS_CMYK, JCS_YCCK};
    let mut d = mozjpeg::Decompress::builder()
        .with_err(jpeg_error_mgr())
        .from_mem(bytes)
        .map_err(|e| io_to_image_error(e, name))?;
    let (width, height) = d.size();
    check_size(name, width, height)?;
    if let Some((min_w, min_h)) = at_least {
        d.scale(jpeg_scale(width, height, min_w, min_h));
    }
    let cmyk = matches!(d.color_space(), JCS_CMYK | JCS_YCCK);
    let (data, width, height) = if cmyk {
        // Pillow: mode "CMYK" read with raw mode "CMYK;I" (Adobe inverted convention assumed), then cmyk2rgb.
        let mut s = d.to_colorspace(JCS_CMYK).map_err(|e| io_to_image_error(e, name))?;
        let (w, h) = (s.width(), s.height());
        let px: Vec<u8> = s.read_scanlines::<u8>().map_err(|e| io_to_image_error(e, name))?;
        s.finish().map_err(|e| io_to_image_error(e, name))?;
        (cmyk_inverted_to_rgb(&px), w, h)
    } else {
        // YCbCr / grayscale / RGB JPEGs: libjpeg's RGB output equals Pillow's "RGB" / "L" → convert("RGB").
        let mut s = d.rgb().map_err(|e| io_to_image_error(e, name))?;
        let (w, h) = (s.width(), s.height());
        let px: Vec<u8> = s.read_scanlines::<u8>().map_err(|e| io_to_image_error(e, name))?;
        s.finish().map_err(|e| io_to_image_error(e, name))?;
        (px, w, h)
    };
    RgbImage::from_raw(width, height, data).ok_or_else(|| ImageError::Corrupt {
        name: name.to_string(),
        detail: "JPEG decoder returned fewer pixels than the header announced".into(),
    })
}

/// Pillow `Convert.c` `MULDIV255`: `a * b / 255` with its rounding.
#[inline]
fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// Stored (Adobe-inverted) CMYK → Pillow "CMYK;I" unpack (255 - v) → Pillow `cmyk2rgb`.
fn cmyk_inverted_to_rgb(px: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(px.len() / 4 * 3);
    for p in px.chunks_exact(4) {
        let (c, m, y, k) = (255 - p[0] as i32, 255 - p[1] as i32, 255 - p[2] as i32, 255 - p[3] as i32);
        let nk = 255 - k;
        for v in [c, m, y] {
            out.push((nk - muldiv255(v, nk)).clamp(0, 255) as u8);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Other formats through the `image` crate
// ---------------------------------------------------------------------------------------------------------------

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "PNG",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Jpeg => "JPEG",
        _ => "image",
    }
}

fn map_image_error(e: image::ImageError, name: &str, fmt: ImageFormat) -> ImageError {
    let name = name.to_string();
    let what = format_name(fmt);
    match e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated { name, detail: format!("{what} data ends early") }
        }
        image::ImageError::Unsupported(u) => ImageError::UnsupportedFormat { name, detail: format!("{what}: {u}") },
        other => {
            let msg = other.to_string();
            let lower = msg.to_lowercase();
            if lower.contains("eof") || lower.contains("end of file") || lower.contains("truncat") {
                ImageError::Truncated { name, detail: format!("{what}: {msg}") }
            } else {
                ImageError::Corrupt { name, detail: format!("{what}: {msg}") }
            }
        }
    }
}

fn decode_with_image_crate(bytes: &[u8], fmt: ImageFormat, name: &str) -> Result<RgbImage, ImageError> {
    let (w, h) = image::ImageReader::with_format(Cursor::new(bytes), fmt)
        .into_dimensions()
        .map_err(|e| map_image_error(e, name, fmt))?;
    check_size(name, w as usize, h as usize)?;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    // Our own pixel limit is checked above; let the decoder allocate what that limit allows.
    reader.no_limits();
    let img = reader.decode().map_err(|e| map_image_error(e, name, fmt))?;
    Ok(dynamic_to_rgb_like_pil(img))
}

/// `Image.convert("RGB")` for the modes Pillow opens these files in.
fn dynamic_to_rgb_like_pil(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        // "RGBA" → "RGB": alpha dropped, no compositing.
        DynamicImage::ImageRgba8(b) => b.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        // "L" → "RGB" replicates; "LA" → "RGB" replicates L, drops A.
        DynamicImage::ImageLuma8(b) => b.into_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => b.into_raw().chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        // 16-bit gray opens as "I;16"; Pillow's I;16 → RGB conversion clips at 255 (no scaling).
        DynamicImage::ImageLuma16(b) => b
            .into_raw()
            .iter()
            .flat_map(|&v| {
                let v = v.min(255) as u8;
                [v, v, v]
            })
            .collect(),
        // 16-bit LA / RGB / RGBA open as 8-bit modes through the ";16B" unpackers, which keep the high byte.
        DynamicImage::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| {
                let v = (p[0] >> 8) as u8;
                [v, v, v]
            })
            .collect(),
        DynamicImage::ImageRgb16(b) => b.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    RgbImage { width: w, height: h, data }
}

/// What a file's header says, read without decoding the pixels: size and EXIF orientation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub width: usize,
    pub height: usize,
    /// EXIF orientation tag (1..=8; 1 when absent or unreadable).
    pub orientation: u8,
}

/// Reads an image's size and EXIF orientation from its header (cheap: no pixels are decoded), so callers can
/// refuse oversized files before decoding them. `name_for_errors` is only used in error messages.
pub fn read_header(bytes: &[u8], name_for_errors: &str) -> Result<ImageHeader, ImageError> {
    use image::ImageDecoder;
    let name = name_for_errors;
    if bytes.is_empty() {
        return Err(ImageError::Empty { name: name.to_string() });
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt { name: name.to_string(), detail: e.to_string() })?;
    let Some(fmt) = reader.format() else { return Err(not_an_image(bytes, name)) };
    let mut decoder = reader.into_decoder().map_err(|e| map_image_error(e, name, fmt))?;
    let (w, h) = decoder.dimensions();
    let orientation = decoder.orientation().map(|o| o.to_exif()).unwrap_or(1);
    Ok(ImageHeader { width: w as usize, height: h as usize, orientation })
}

/// Turns a decoded image upright according to its EXIF orientation tag (what photo viewers show). The official
/// processors do not do this (Pillow's `open` ignores EXIF); collection search does, so that boxes are drawn on
/// the picture people see.
pub fn apply_orientation(img: RgbImage, orientation: u8) -> RgbImage {
    match image::metadata::Orientation::from_exif(orientation) {
        Some(o) if orientation != 1 => {
            let mut dynamic = DynamicImage::ImageRgb8(img.into_image());
            dynamic.apply_orientation(o);
            RgbImage::from(dynamic.into_rgb8())
        }
        _ => img,
    }
}
