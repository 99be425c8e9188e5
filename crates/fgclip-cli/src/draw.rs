//! Drawing helpers for the `boxes` and `heatmap` commands: box outlines, a colour map, alpha blending, bilinear
//! upsampling of a small score grid, and text from a built-in 5×7 bitmap font.
//!
//! Everything works on `image::RgbImage` (8-bit RGB) so the result can be written with the `image` crate's
//! encoders. The font is our own tiny table rather than a font crate: labels are short ASCII strings, and a
//! scalable bitmap keeps the binary small and the output byte-stable across platforms.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

/// Distinct, saturated colours for successive boxes (cycled when there are more boxes than colours).
pub const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],   // red
    [60, 180, 75],   // green
    [0, 130, 200],   // blue
    [255, 225, 25],  // yellow
    [245, 130, 48],  // orange
    [145, 30, 180],  // purple
    [70, 240, 240],  // cyan
    [240, 50, 230],  // magenta
    [210, 245, 60],  // lime
    [250, 190, 212], // pink
];

/// The colour of box `i`.
pub fn palette(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}

/// Black or white, whichever reads better on `bg` (by its luma).
pub fn contrast_text(bg: [u8; 3]) -> [u8; 3] {
    let luma = 0.299 * bg[0] as f32 + 0.587 * bg[1] as f32 + 0.114 * bg[2] as f32;
    if luma > 140.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

/// Converts the library's image buffer into the `image` crate's (copying it).
pub fn to_rgb_image(img: &fgclip::fgclip_image::RgbImage) -> RgbImage {
    img.clone().into_image()
}

/// A line thickness and a font scale that stay legible across image sizes (2 px / 1× on small images).
pub fn auto_sizes(width: u32, height: u32) -> (u32, u32) {
    let short = width.min(height);
    let thickness = (short / 200).clamp(2, 12);
    let scale = ((short as f32 / 240.0).round() as u32).clamp(1, 8);
    (thickness, scale)
}

/// Fills the rectangle `[x0, x1) × [y0, y1)` (clipped to the image).
pub fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, color: [u8; 3]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (xa, xb) = (x0.max(0), x1.min(w));
    let (ya, yb) = (y0.max(0), y1.min(h));
    for y in ya..yb {
        for x in xa..xb {
            img.put_pixel(x as u32, y as u32, Rgb(color));
        }
    }
}

/// Outlines the box `[x1, y1, x2, y2]` (pixel coordinates, may lie partly outside) with a border `thickness`
/// pixels wide drawn inward from the box edge, so a box at the image border stays visible.
pub fn draw_rect(img: &mut RgbImage, b: [f32; 4], color: [u8; 3], thickness: u32) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    // Clip to the image first: a box sticking out is drawn along the image edge.
    let x0 = (b[0].floor() as i64).clamp(0, w);
    let y0 = (b[1].floor() as i64).clamp(0, h);
    let x1 = (b[2].ceil() as i64).clamp(0, w);
    let y1 = (b[3].ceil() as i64).clamp(0, h);
    if x1 <= x0 || y1 <= y0 {
        return;
    }
    let t = thickness.max(1) as i64;
    fill_rect(img, x0, y0, x1, (y0 + t).min(y1), color); // top
    fill_rect(img, x0, (y1 - t).max(y0), x1, y1, color); // bottom
    fill_rect(img, x0, y0, (x0 + t).min(x1), y1, color); // left
    fill_rect(img, (x1 - t).max(x0), y0, x1, y1, color); // right
}

// ------------------------------------------------------------------ colour map

/// Viridis (matplotlib's perceptually uniform map) sampled at 9 evenly spaced points; intermediate values are
/// interpolated linearly, which stays within a few levels of the full 256-entry table.
const VIRIDIS: [[f32; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [72.0, 40.0, 120.0],
    [62.0, 73.0, 137.0],
    [49.0, 104.0, 142.0],
    [38.0, 130.0, 142.0],
    [31.0, 158.0, 137.0],
    [53.0, 183.0, 121.0],
    [110.0, 206.0, 88.0],
    [253.0, 231.0, 37.0],
];

/// Viridis colour of `t` in [0, 1] (clamped; NaN maps to the low end).
pub fn viridis(t: f32) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let pos = t * (VIRIDIS.len() - 1) as f32;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f32;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |k: usize| (a[k] + (b[k] - a[k]) * f).round().clamp(0.0, 255.0) as u8;
    [mix(0), mix(1), mix(2)]
}

// ------------------------------------------------------------------ grids and blending

/// Bilinear upsampling of a row-major `rows × cols` grid to `out_h × out_w`, with half-pixel centres
/// (`align_corners=False`, edges clamped): each grid cell covers an equal share of the output, as the
/// patches cover the image.
pub fn upsample_bilinear(grid: &[f32], rows: usize, cols: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    if rows == 0 || cols == 0 || out_h == 0 || out_w == 0 || grid.len() != rows * cols {
        return vec![0.0; out_h * out_w];
    }
    // Source coordinate and the two neighbours / weight for each output column (and row).
    let axis = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        (0..n_out)
            .map(|o| {
                let s = ((o as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).clamp(0.0, (n_in - 1) as f32);
                let lo = s.floor() as usize;
                let hi = (lo + 1).min(n_in - 1);
                (lo, hi, s - lo as f32)
            })
            .collect()
    };
    let xs = axis(cols, out_w);
    let ys = axis(rows, out_h);
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = grid[y0 * cols + x0] * (1.0 - fx) + grid[y0 * cols + x1] * fx;
            let bot = grid[y1 * cols + x0] * (1.0 - fx) + grid[y1 * cols + x1] * fx;
            out.push(top * (1.0 - fy) + bot * fy);
        }
    }
    out
}

/// Blends `overlay` over `base` in place: `alpha · overlay + (1 − alpha) · base` (alpha clamped to [0, 1]).
pub fn alpha_blend(base: &mut RgbImage, overlay: &RgbImage, alpha: f32) {
    let a = alpha.clamp(0.0, 1.0);
    for (p, q) in base.pixels_mut().zip(overlay.pixels()) {
        for k in 0..3 {
            p.0[k] = (a * q.0[k] as f32 + (1.0 - a) * p.0[k] as f32).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Checks, before any work, that `path` (given as `flag`) names an image format we can write.
pub fn check_output_path(path: &Path, flag: &str) -> Result<()> {
    match image::ImageFormat::from_path(path) {
        Ok(f) if f.writing_enabled() => Ok(()),
        _ => anyhow::bail!("{flag} {}: unknown or unwritable image format; use a .png file name", path.display()),
    }
}

/// Writes `img` (format from the extension, PNG recommended), creating the parent folder.
pub fn save(img: &RgbImage, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating folder {}", parent.display()))?;
    }
    img.save(path).with_context(|| format!("writing image {}", path.display()))
}

// ------------------------------------------------------------------ text

/// Glyph cell (5×7 glyph plus one column / row of spacing), in font pixels.
pub const GLYPH_W: u32 = 6;
pub const GLYPH_H: u32 = 8;

/// The 5×7 glyph of an ASCII character: 7 rows top to bottom, bit 4 = leftmost column. Anything outside
/// printable ASCII draws as '?'.
fn glyph(c: char) -> [u8; 7] {
    match c {
        ' ' => [0, 0, 0, 0, 0, 0, 0],
        '!' => [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100],
        '"' => [0b01010, 0b01010, 0b01010, 0, 0, 0, 0],
        '#' => [0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010],
        '$' => [0b00100, 0b01111, 0b10100, 0b01110, 0b00101, 0b11110, 0b00100],
        '%' => [0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011],
        '&' => [0b01100, 0b10010, 0b10100, 0b01000, 0b10101, 0b10010, 0b01101],
        '\'' => [0b00100, 0b00100, 0b01000, 0, 0, 0, 0],
        '(' => [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010],
        ')' => [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000],
        '*' => [0, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0],
        '+' => [0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0],
        ',' => [0, 0, 0, 0, 0b01100, 0b00100, 0b01000],
        '-' => [0, 0, 0, 0b11111, 0, 0, 0],
        '.' => [0, 0, 0, 0, 0, 0b01100, 0b01100],
        '/' => [0, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0],
        '0' => [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
        '1' => [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        '2' => [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
        '3' => [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110],
        '4' => [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
        '5' => [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
        '6' => [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
        '7' => [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
        '8' => [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
        '9' => [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
        ':' => [0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0],
        ';' => [0, 0b01100, 0b01100, 0, 0b01100, 0b00100, 0b01000],
        '<' => [0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010],
        '=' => [0, 0, 0b11111, 0, 0b11111, 0, 0],
        '>' => [0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000],
        '?' => [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100],
        '@' => [0b01110, 0b10001, 0b00001, 0b01101, 0b10101, 0b10101, 0b01110],
        'A' => [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        'B' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110],
        'C' => [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110],
        'D' => [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100],
        'E' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111],
        'F' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000],
        'G' => [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111],
        'H' => [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        'I' => [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        'J' => [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100],
        'K' => [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001],
        'L' => [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111],
        'M' => [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001],
        'N' => [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001],
        'O' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        'P' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000],
        'Q' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101],
        'R' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001],
        'S' => [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110],
        'T' => [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100],
        'U' => [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        'V' => [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100],
        'W' => [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010],
        'X' => [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001],
        'Y' => [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100],
        'Z' => [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111],
        '[' => [0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110],
        '\\' => [0, 0b10000, 0b01000, 0b00100, 0b00010, 0b00001, 0],
        ']' => [0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110],
        '^' => [0b00100, 0b01010, 0b10001, 0, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0b11111],
        '`' => [0b01000, 0b00100, 0b00010, 0, 0, 0, 0],
        'a' => [0, 0, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111],
        'b' => [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110],
        'c' => [0, 0, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110],
        'd' => [0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111],
        'e' => [0, 0, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110],
        'f' => [0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000],
        'g' => [0, 0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110],
        'h' => [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001],
        'i' => [0b00100, 0, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110],
        'j' => [0b00010, 0, 0b00110, 0b00010, 0b00010, 0b10010, 0b01100],
        'k' => [0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010],
        'l' => [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        'm' => [0, 0, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001],
        'n' => [0, 0, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001],
        'o' => [0, 0, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110],
        'p' => [0, 0, 0b11110, 0b10001, 0b11110, 0b10000, 0b10000],
        'q' => [0, 0, 0b01101, 0b10011, 0b01111, 0b00001, 0b00001],
        'r' => [0, 0, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000],
        's' => [0, 0, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110],
        't' => [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110],
        'u' => [0, 0, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101],
        'v' => [0, 0, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100],
        'w' => [0, 0, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010],
        'x' => [0, 0, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001],
        'y' => [0, 0, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110],
        'z' => [0, 0, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111],
        '{' => [0b00010, 0b00100, 0b00100, 0b01000, 0b00100, 0b00100, 0b00010],
        '|' => [0b00100; 7],
        '}' => [0b01000, 0b00100, 0b00100, 0b00010, 0b00100, 0b00100, 0b01000],
        '~' => [0, 0, 0b01000, 0b10101, 0b00010, 0, 0],
        _ => glyph('?'),
    }
}

/// Size in pixels of `text` drawn at `scale` (one line; no trailing spacing column / row).
pub fn text_size(text: &str, scale: u32) -> (u32, u32) {
    let n = text.chars().count() as u32;
    if n == 0 {
        return (0, 0);
    }
    ((n * GLYPH_W - 1) * scale, (GLYPH_H - 1) * scale)
}

/// Draws `text` with its top-left corner at (x, y), each font pixel a `scale × scale` square; clipped to the image.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, color: [u8; 3], scale: u32) {
    let s = scale.max(1) as i64;
    for (i, c) in text.chars().enumerate() {
        let gx = x + i as i64 * GLYPH_W as i64 * s;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (0b10000 >> col) != 0 {
                    let px = gx + col as i64 * s;
                    let py = y + row as i64 * s;
                    fill_rect(img, px, py, px + s, py + s, color);
                }
            }
        }
    }
}

/// Draws `text` on a filled background box (padding of one font pixel) with its top-left corner at (x, y),
/// shifted to stay inside the image where it fits. Returns the box drawn `(x, y, w, h)`.
pub fn draw_label(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    text: &str,
    fg: [u8; 3],
    bg: [u8; 3],
    scale: u32,
) -> (i64, i64, i64, i64) {
    let (tw, th) = text_size(text, scale);
    let pad = scale.max(1) as i64;
    let (bw, bh) = (tw as i64 + 2 * pad, th as i64 + 2 * pad);
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let x = x.min(iw - bw).max(0);
    let y = y.min(ih - bh).max(0);
    fill_rect(img, x, y, x + bw, y + bh, bg);
    draw_text(img, x + pad, y + pad, text, fg, scale);
    (x, y, bw, bh)
}

fn th_of(scale: u32) -> i64 {
    text_size("0", scale).1 as i64
}

/// Draws a vertical colour bar (high values at the top) in the bottom-right corner with the values at its ends
/// written beside it, so a heatmap reads without the terminal output.
pub fn draw_colorbar(img: &mut RgbImage, lo: f32, hi: f32, scale: u32) {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let s = scale.max(1) as i64;
    let bar_w = 4 * s;
    let bar_h = (ih / 3).clamp(8, 400).max(3 * th_of(scale));
    let hi_txt = format!("{hi:.3}");
    let lo_txt = format!("{lo:.3}");
    let tw = text_size(&hi_txt, scale).0.max(text_size(&lo_txt, scale).0) as i64;
    let th = th_of(scale);
    let margin = 2 * s;
    // Panel: [numbers][gap][bar], framed by the margin, anchored to the bottom-right corner.
    let panel_w = margin + tw + margin + bar_w + margin;
    let panel_h = margin + bar_h + margin;
    if panel_w > iw || panel_h > ih {
        return; // image too small for a legible bar; the values are printed anyway
    }
    let (px, py) = (iw - panel_w, ih - panel_h);
    fill_rect(img, px, py, iw, ih, [0, 0, 0]);
    let bar_x = px + margin + tw + margin;
    let bar_y = py + margin;
    for r in 0..bar_h {
        let t = 1.0 - r as f32 / (bar_h - 1).max(1) as f32;
        fill_rect(img, bar_x, bar_y + r, bar_x + bar_w, bar_y + r + 1, viridis(t));
    }
    // Numbers right-aligned against the bar: the maximum level with its top, the minimum with its bottom.
    let hi_x = bar_x - margin - text_size(&hi_txt, scale).0 as i64;
    let lo_x = bar_x - margin - text_size(&lo_txt, scale).0 as i64;
    draw_text(img, hi_x, bar_y, &hi_txt, [255, 255, 255], scale);
    draw_text(img, lo_x, bar_y + bar_h - th, &lo_txt, [255, 255, 255], scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsample_constant_and_corners() {
        let g = [1.0, 1.0, 1.0, 1.0];
        assert!(upsample_bilinear(&g, 2, 2, 5, 7).iter().all(|v| (v - 1.0).abs() < 1e-6));
        let g = [0.0, 1.0];
        let u = upsample_bilinear(&g, 1, 2, 1, 4);
        assert_eq!(u.len(), 4);
        assert!(u[0] == 0.0 && u[3] == 1.0 && u[1] < u[2]);
    }

    #[test]
    fn viridis_ends_and_nan() {
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        assert_eq!(viridis(f32::NAN), viridis(0.0));
        assert_eq!(viridis(2.0), viridis(1.0));
    }

    #[test]
    fn drawing_clips_instead_of_panicking() {
        let mut img = RgbImage::new(20, 10);
        draw_rect(&mut img, [-50.0, -50.0, 500.0, 500.0], [255, 0, 0], 3);
        draw_rect(&mut img, [5.0, 5.0, 5.0, 2.0], [255, 0, 0], 3);
        draw_label(&mut img, 15, 8, "a very long label é", [0, 0, 0], [255, 255, 255], 2);
        draw_colorbar(&mut img, -1.0, 1.0, 1);
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
    }

    #[test]
    fn every_printable_ascii_has_a_glyph() {
        let q = glyph('?');
        for c in ' '..='~' {
            if c != '?' {
                assert_ne!(glyph(c), q, "{c:?} falls back to '?'");
            }
        }
    }
}
