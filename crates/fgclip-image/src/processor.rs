//! One image processor for inference and training: built once from a family's defaults and the checkpoint's
//! `preprocessor_config.json`, it turns decoded images into a framework-free [`PixelBatch`].
//!
//! * Square layout (FG-CLIP): PIL bicubic squash to `S×S`, then the processor's resize/crop when its size
//!   differs from `S` (a no-op for every release), rescale and normalise → `[B, 3, S, S]`.
//! * NaFlex layout (FG-CLIP 2): per image a patch budget ([`PatchBudget`]), the largest grid within it (aspect
//!   kept, PIL bilinear), normalised patches → `[B, N, p·p·3]` with a `[B, N]` validity mask.

use std::borrow::Borrow;
use std::path::Path;

use rayon::prelude::*;

use crate::{clip, naflex, resample, RgbImage};

/// How images are laid out for the vision tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelLayout {
    /// Squashed to `size × size`; `processor_size` is the processor's own size when it differs (then its
    /// shortest-edge resize and centre crop run on the squashed image).
    Square { size: usize, processor_size: Option<usize> },
    /// NaFlex patch sequences of `patch × patch` pixels.
    Naflex { patch: usize },
}

/// FG-CLIP 2's patch budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PatchBudget {
    /// The official dynamic bucket (128/256/576/784/1024) from each image's own size, so an image's pixels never
    /// depend on the other images of the call (the official processor takes the max over the call).
    #[default]
    Dynamic,
    /// A fixed budget: the official `dynamic_max_patches=False, max_num_patches=N`.
    Fixed(usize),
    /// The official training collator: the bucket of the largest image, for every image, and padding to it.
    BatchMax,
}

/// A preprocessed batch, framework-free.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PixelBatch {
    /// Row-major values of shape `dims`.
    pub values: Vec<f32>,
    /// `[B, 3, S, S]` (square) or `[B, N, p·p·3]` (NaFlex, padded to the longest image or to the budget).
    pub dims: Vec<usize>,
    /// NaFlex: `[B, N]`, 1 for real patches.
    pub valid: Option<Vec<f32>>,
    /// Feature grid (rows, cols) of each image: (g, g) for the square layout.
    pub grids: Vec<(usize, usize)>,
    /// Size (height, width) of each image as given (before any resize), for mapping pixel boxes.
    pub sizes: Vec<(usize, usize)>,
}

/// Why a processor could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct ProcessorConfigError {
    pub path: std::path::PathBuf,
    pub msg: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessor {
    pub layout: PixelLayout,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Square patch size of the vision tower (the feature grid is `size / patch`).
    pub patch: usize,
    /// The training collator squashes images with a side below `.0` pixels to `.1 × .1` (PIL bicubic) first.
    pub small_image_squash: Option<(usize, usize)>,
}

impl ImageProcessor {
    /// FG-CLIP's processor: squash to `size`, OpenAI CLIP mean/std.
    pub fn square(size: usize, patch: usize) -> Self {
        Self {
            layout: PixelLayout::Square { size, processor_size: None },
            mean: clip::OPENAI_MEAN,
            std: clip::OPENAI_STD,
            patch,
            small_image_squash: None,
        }
    }

    /// FG-CLIP 2's processor: NaFlex patches, mean = std = 0.5.
    pub fn naflex(patch: usize) -> Self {
        Self {
            layout: PixelLayout::Naflex { patch },
            mean: naflex::FGCLIP2_MEAN,
            std: naflex::FGCLIP2_STD,
            patch,
            small_image_squash: None,
        }
    }

    /// Applies a `preprocessor_config.json`: `image_mean`, `image_std` (3 values, or 1 for all channels) and, for
    /// the square layout, `size.shortest_edge` / `crop_size`. Absent fields keep the defaults.
    pub fn with_config_file(mut self, path: &Path) -> Result<Self, ProcessorConfigError> {
        let err = |msg: String| ProcessorConfigError { path: path.to_path_buf(), msg };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let triple = |key: &str, def: [f32; 3]| -> Result<[f32; 3], ProcessorConfigError> {
            match v.get(key) {
                None => Ok(def),
                Some(a) => {
                    let xs: Vec<f32> =
                        serde_json::from_value(a.clone()).map_err(|e| err(format!("field `{key}`: {e}")))?;
                    match xs.as_slice() {
                        [a, b, c] => Ok([*a, *b, *c]),
                        [a] => Ok([*a; 3]),
                        _ => Err(err(format!("field `{key}` must have 3 values"))),
                    }
                }
            }
        };
        self.mean = triple("image_mean", self.mean)?;
        self.std = triple("image_std", self.std)?;
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite()) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(err(
                "field `image_std` has a zero or a non-finite value (or `image_mean` is not finite)".into()
            ));
        }
        if let PixelLayout::Square { size, .. } = self.layout {
            // When both equal the squash size the processor's resize and crop are no-ops; otherwise they act on
            // the squashed image.
            let edge = v.pointer("/size/shortest_edge").and_then(|x| x.as_u64()).map(|x| x as usize);
            let crop = v.pointer("/crop_size/height").and_then(|x| x.as_u64()).map(|x| x as usize);
            let processor_size = match (edge, crop) {
                (Some(e), Some(c)) if e != c => {
                    return Err(err(format!("size.shortest_edge {e} != crop_size {c} is not supported")));
                }
                (Some(0), _) | (_, Some(0)) => {
                    return Err(err("size.shortest_edge / crop_size must be positive".into()))
                }
                (Some(e), _) | (None, Some(e)) if e != size => Some(e),
                _ => None,
            };
            self.layout = PixelLayout::Square { size, processor_size };
        }
        Ok(self)
    }

    fn squashes(&self, h: usize, w: usize) -> bool {
        matches!(self.small_image_squash, Some((min, _)) if h < min || w < min)
    }

    /// The training collator's small-image rule (see [`ImageProcessor::small_image_squash`]).
    pub fn with_small_image_squash(mut self, min_side: usize, to: usize) -> Self {
        self.small_image_squash = Some((min_side, to));
        self
    }

    /// Preprocesses `images` (in parallel). Errors name the problem (no images, a zero budget).
    pub fn process<R: Borrow<RgbImage> + Sync>(&self, images: &[R], budget: PatchBudget) -> Result<PixelBatch, String> {
        let sizes: Vec<(usize, usize)> = images.iter().map(|im| (im.borrow().height, im.borrow().width)).collect();
        self.process_sized(images, sizes, budget)
    }

    /// The `(height, width)` in pixels the tower sees for an image of `h × w` (`None` for
    /// [`PatchBudget::BatchMax`], which depends on the other images, or when the training squash applies).
    pub fn input_size(&self, h: usize, w: usize, budget: PatchBudget) -> Option<(usize, usize)> {
        if self.squashes(h, w) {
            return None;
        }
        match (self.layout, budget) {
            // Squashed to size × size first, whatever comes after.
            (PixelLayout::Square { size, .. }, _) => Some((size, size)),
            (PixelLayout::Naflex { .. }, PatchBudget::BatchMax | PatchBudget::Fixed(0)) => None,
            (PixelLayout::Naflex { patch }, PatchBudget::Fixed(n)) => Some(naflex_target(h, w, patch, Some(n))),
            (PixelLayout::Naflex { patch }, PatchBudget::Dynamic) => Some(naflex_target(h, w, patch, None)),
        }
    }

    /// Preprocesses one image that was decoded at a reduced size (`decode_rgb_at_least`) from an original of
    /// `original_hw`: every decision that depends on the size (FG-CLIP 2's patch budget and grid) is taken from
    /// the original, and the batch reports the original size, so boxes stay in the original's pixels. With
    /// `original_hw` equal to the image's own size this is [`ImageProcessor::process`].
    pub fn process_reduced(
        &self,
        image: &RgbImage,
        original_hw: (usize, usize),
        budget: PatchBudget,
    ) -> Result<PixelBatch, String> {
        self.process_sized(&[image], vec![original_hw], budget)
    }

    /// `sizes[i]`: the size image `i` stands for (its own, or its original's when decoded reduced).
    fn process_sized<R: Borrow<RgbImage> + Sync>(
        &self,
        images: &[R],
        sizes: Vec<(usize, usize)>,
        budget: PatchBudget,
    ) -> Result<PixelBatch, String> {
        if images.is_empty() {
            return Err("no images given".into());
        }
        // Each image, squashed first where the training rule says so, and the size it stands for from here on
        // (the squashed one, or the original's).
        let (squashed, effective): (Vec<std::borrow::Cow<RgbImage>>, Vec<(usize, usize)>) = images
            .par_iter()
            .zip(&sizes)
            .map(|(im, &(h, w))| match self.small_image_squash {
                Some((_, to)) if self.squashes(h, w) => {
                    (std::borrow::Cow::Owned(resample::resize_bicubic(im.borrow(), to, to)), (to, to))
                }
                _ => (std::borrow::Cow::Borrowed(im.borrow()), (h, w)),
            })
            .unzip();
        let b = images.len();
        match self.layout {
            PixelLayout::Square { size, processor_size } => {
                let out = processor_size.unwrap_or(size);
                let per: Vec<Vec<f32>> = squashed
                    .par_iter()
                    .map(|im| match processor_size {
                        None => clip::preprocess(im, size, self.mean, self.std),
                        Some(p) => {
                            let sq = resample::resize_bicubic(im, size, size);
                            clip::preprocess_processor_only(&sq, p, self.mean, self.std)
                        }
                    })
                    .collect();
                let g = out / self.patch.max(1);
                Ok(PixelBatch {
                    values: per.concat(),
                    dims: vec![b, 3, out, out],
                    valid: None,
                    grids: vec![(g, g); b],
                    sizes,
                })
            }
            PixelLayout::Naflex { patch } => {
                let (fixed, pad_to_budget) = match budget {
                    PatchBudget::Fixed(0) => return Err("the patch budget (--max-patches) must be at least 1".into()),
                    PatchBudget::Fixed(n) => (Some(n), false),
                    PatchBudget::Dynamic => (None, false),
                    PatchBudget::BatchMax => (Some(naflex::batch_max_patches(&effective)), true),
                };
                let per: Vec<naflex::NaflexImage> = squashed
                    .par_iter()
                    .zip(&effective)
                    .map(|(im, &(h, w))| {
                        let (th, tw) = naflex_target(h, w, patch, fixed);
                        naflex::patchify(&resample::resize_bilinear(im, tw, th), patch, self.mean, self.std)
                    })
                    .collect();
                let longest = per.iter().map(|x| x.num_patches()).max().unwrap_or(0);
                let n = if pad_to_budget { fixed.unwrap_or(longest) } else { longest };
                let nb = naflex::pad_batch(&per, n);
                let valid = nb.pixel_attention_mask.iter().map(|&m| m as f32).collect();
                let row = patch * patch * 3;
                Ok(PixelBatch {
                    values: nb.pixel_values,
                    dims: vec![b, n, row],
                    valid: Some(valid),
                    grids: per.iter().map(|x| (x.grid_h, x.grid_w)).collect(),
                    sizes,
                })
            }
        }
    }
}

/// The NaFlex input size of an `h × w` image: under `fixed` patches, or under its own dynamic bucket.
fn naflex_target(h: usize, w: usize, patch: usize, fixed: Option<usize>) -> (usize, usize) {
    naflex::target_size(h, w, patch, fixed.unwrap_or_else(|| naflex::bucket_max_patches(h, w)))
}

impl PixelBatch {
    /// Joins batches made by the same processor into one (NaFlex rows padded to the longest image, masked), so
    /// images can be preprocessed one by one on worker threads and encoded together. An image's values do not
    /// change: padding is masked, so batched encodings equal one-at-a-time ones.
    pub fn concat(parts: Vec<PixelBatch>) -> Result<PixelBatch, String> {
        let first = parts.first().ok_or("no pixel batches to join")?;
        let naflex = first.valid.is_some();
        let row_len: usize = first.dims[2..].iter().product();
        if parts.iter().any(|p| p.valid.is_some() != naflex || p.dims.len() != first.dims.len()) {
            return Err("pixel batches from different processors cannot be joined".into());
        }
        if !naflex {
            if parts.iter().any(|p| p.dims[1..] != first.dims[1..]) {
                return Err("square pixel batches of different sizes cannot be joined".into());
            }
            let b = parts.iter().map(|p| p.dims[0]).sum();
            let mut dims = first.dims.clone();
            dims[0] = b;
            let mut out = PixelBatch { values: Vec::new(), dims, valid: None, grids: vec![], sizes: vec![] };
            for p in parts {
                out.values.extend(p.values);
                out.grids.extend(p.grids);
                out.sizes.extend(p.sizes);
            }
            return Ok(out);
        }
        if parts.iter().any(|p| p.dims[2] != first.dims[2]) {
            return Err("NaFlex pixel batches with different patch sizes cannot be joined".into());
        }
        let n = parts.iter().map(|p| p.dims[1]).max().unwrap_or(0);
        let b: usize = parts.iter().map(|p| p.dims[0]).sum();
        let mut values = Vec::with_capacity(b * n * row_len);
        let mut valid = Vec::with_capacity(b * n);
        let (mut grids, mut sizes) = (Vec::with_capacity(b), Vec::with_capacity(b));
        for p in parts {
            let (pb, pn) = (p.dims[0], p.dims[1]);
            let pv = p.valid.as_deref().unwrap_or(&[]);
            for i in 0..pb {
                values.extend_from_slice(&p.values[i * pn * row_len..(i + 1) * pn * row_len]);
                values.resize(values.len() + (n - pn) * row_len, 0.0);
                valid.extend_from_slice(&pv[i * pn..(i + 1) * pn]);
                valid.resize(valid.len() + (n - pn), 0.0);
            }
            grids.extend(p.grids);
            sizes.extend(p.sizes);
        }
        Ok(PixelBatch { values, dims: vec![b, n, row_len], valid: Some(valid), grids, sizes })
    }
}
