//! Image decoding and Pillow-exact preprocessing for FG-CLIP (v1) and FG-CLIP 2.
//!
//! Mirrors, upstream:
//! * `PIL.Image.open(path).convert("RGB")` → [`load_rgb`] / [`decode_rgb`] (module `decode`);
//! * Pillow `ImagingResample` (`src/libImaging/Resample.c`, uint8 path) → [`resample`];
//! * FG-CLIP v1: `img.resize((S, S))` + `CLIPImageProcessor` (slow/PIL) → [`clip`];
//! * FG-CLIP 2: `Fgclip2ImageProcessor` (slow/PIL, = transformers `Siglip2ImageProcessor` + dynamic bucket) →
//!   [`naflex`].
//!
//! JPEG decoding uses libjpeg's error handling through Rust unwinding (caught inside [`decode_rgb`]), so the crate
//! needs `panic = "unwind"` (the default); with `panic = "abort"` a corrupt JPEG would abort the process.
//!
//! Images are held as [`RgbImage`], this crate's own plain interleaved 8-bit RGB buffer (row-major, `HWC`), not
//! `image::RgbImage`: it keeps the public API free of the `image` crate's generics and versions. Conversions to and
//! from `image::RgbImage` are provided.

pub mod clip;
mod decode;
pub mod naflex;
pub mod processor;
pub mod resample;

use std::path::PathBuf;

pub use decode::{
    apply_orientation, decode_rgb, decode_rgb_at_least, load_rgb, read_header, ImageHeader, MAX_IMAGE_PIXELS,
};
pub use processor::{ImageProcessor, PatchBudget, PixelBatch, PixelLayout, ProcessorConfigError};

/// An 8-bit RGB image, interleaved, row-major: `data[(y * width + x) * 3 + c]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

impl RgbImage {
    /// Wraps an interleaved RGB buffer; `None` if `data.len() != width * height * 3`.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        let expected = width.checked_mul(height)?.checked_mul(3)?;
        (data.len() == expected).then_some(Self { width, height, data })
    }

    /// A black image.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self { width, height, data: vec![0; width * height * 3] }
    }

    /// `[r, g, b]` at column `x`, row `y` (panics when out of bounds).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(x < self.width && y < self.height, "pixel ({x}, {y}) outside {}x{}", self.width, self.height);
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// `(height, width)`, the order the processors and `spatial_shapes` use.
    pub fn size_hw(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Converts into the `image` crate's buffer type (no copy).
    pub fn into_image(self) -> image::RgbImage {
        image::RgbImage::from_raw(self.width as u32, self.height as u32, self.data)
            .expect("RgbImage invariant: data.len() == width * height * 3")
    }
}

impl From<image::RgbImage> for RgbImage {
    fn from(img: image::RgbImage) -> Self {
        let (w, h) = img.dimensions();
        Self { width: w as usize, height: h as usize, data: img.into_raw() }
    }
}

/// Why an image could not be loaded. Every message names the file (or the name given to [`decode_rgb`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("image file not found: {}", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read image file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image file is empty (0 bytes): {name}")]
    Empty { name: String },
    #[error("image file is truncated: {name} ({detail})")]
    Truncated { name: String, detail: String },
    #[error("image file is corrupt: {name}: {detail}")]
    Corrupt { name: String, detail: String },
    #[error("unsupported image format: {name}: {detail}")]
    UnsupportedFormat { name: String, detail: String },
    #[error("image has zero size ({width}x{height}): {name}")]
    ZeroSize { name: String, width: usize, height: usize },
    #[error("image is too large ({width}x{height} = {} pixels, limit {limit}, as Pillow's decompression-bomb check): {name}", width * height)]
    TooLarge { name: String, width: usize, height: usize, limit: usize },
}

impl ImageError {
    /// The file name / path the error is about.
    pub fn name(&self) -> String {
        match self {
            ImageError::NotFound { path } | ImageError::Unreadable { path, .. } => path.display().to_string(),
            ImageError::Empty { name }
            | ImageError::Truncated { name, .. }
            | ImageError::Corrupt { name, .. }
            | ImageError::UnsupportedFormat { name, .. }
            | ImageError::ZeroSize { name, .. }
            | ImageError::TooLarge { name, .. } => name.clone(),
        }
    }
}
