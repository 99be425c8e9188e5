//! The small uniform API over both families, in the spirit of open_clip: load, prepare images, encode images
//! and texts, dense and region features, logits and probabilities as each family defines them.
//!
//! Every feature is returned exactly as the official feature function returns it (unnormalised unless noted);
//! use [`crate::nn::l2_normalize`] for cosine similarities. Batched calls equal one-at-a-time calls: FG-CLIP 2
//! chooses each image's patch budget from that image alone (the official processor takes the max over the call,
//! which makes an embedding depend on its neighbours) and padding is masked.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use fgclip_image::RgbImage;

use crate::checkpoint::Weights;
use crate::config::{Family, ModelConfig};
use crate::fgclip1::FgClip;
use crate::fgclip2::{FgClip2, NaflexInput};
use crate::hub::{self, ModelFiles};
use crate::nn::roi_align::{GridBox, MAX_BOX_EXTENT_CELLS};
use crate::tokenize::{TextTokenizer, TokenBatch, TokenizerOptions};
use crate::{Error, Result, TextWalk};

/// Whether FG-CLIP 2 text encoding passes the padding mask (spec §10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextMask {
    /// As the official usage `get_text_features(**tokenizer(...))`: a mask exactly when the checkpoint's
    /// tokenizer returns one (`model_input_names` in `tokenizer_config.json`).
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Compute dtype (weights are converted on load). f32 is the parity reference.
    pub dtype: DType,
    pub text_mask: TextMask,
    /// Use the fused CPU inference kernels (`nn::fast`). Off gives the plain differentiable ops (same math).
    pub fast: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, dtype: DType::F32, text_mask: TextMask::Auto, fast: true }
    }
}

/// FG-CLIP 2 patch budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatchBudget {
    /// The official dynamic bucket (128/256/576/784/1024 from the image's own size), per image.
    #[default]
    Dynamic,
    /// A fixed budget: the official `dynamic_max_patches=False, max_num_patches=N`.
    Fixed(usize),
}

/// Image preprocessing constants read from `preprocessor_config.json` (defaults: the official ones).
#[derive(Debug, Clone)]
pub struct PreprocessConfig {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Preprocessed images ready for the vision tower.
#[derive(Debug, Clone)]
pub struct PreparedImages {
    /// FG-CLIP: `[B, 3, S, S]`. FG-CLIP 2: `[B, N, p·p·3]` padded to the largest image in the batch.
    pub pixel_values: Tensor,
    /// FG-CLIP 2 only: `[B, N]` 1 for real patches.
    pub valid: Option<Tensor>,
    /// Feature grid (rows, cols) of each image: (g, g) for FG-CLIP.
    pub grids: Vec<(usize, usize)>,
    /// Original image size (height, width) of each image, for mapping pixel boxes.
    pub sizes: Vec<(usize, usize)>,
}

impl PreparedImages {
    pub fn len(&self) -> usize {
        self.grids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.grids.is_empty()
    }
}

/// One image's dense features: `[rows·cols, D]`, row-major over the grid.
#[derive(Debug, Clone)]
pub struct DenseMap {
    pub features: Tensor,
    pub rows: usize,
    pub cols: usize,
}

impl DenseMap {
    /// `[rows, cols, D]`.
    pub fn as_grid(&self) -> Result<Tensor> {
        let d = self.features.dim(1)?;
        Ok(self.features.reshape((self.rows, self.cols, d))?)
    }
}

#[derive(Debug, Clone)]
pub enum Towers {
    FgClip(FgClip),
    FgClip2(FgClip2),
}

pub struct Model {
    pub towers: Towers,
    pub config: ModelConfig,
    pub tokenizer: TextTokenizer,
    pub preprocess: PreprocessConfig,
    pub files: ModelFiles,
    pub weights: Weights,
    device: Device,
    dtype: DType,
    text_mask: bool,
}

impl Model {
    /// Loads `model`: a local folder in the official layout or a Hugging Face repo id (`qihoo360/fg-clip2-base`).
    pub fn load(model: &str, opts: &LoadOptions) -> Result<Self> {
        let files = hub::resolve(model)?;
        Self::from_files(files, opts)
    }

    pub fn from_files(files: ModelFiles, opts: &LoadOptions) -> Result<Self> {
        // On the CPU, bf16 means bf16 GEMMs (AVX512-BF16, f32 accumulation) inside the fast path, with f32
        // tensors everywhere else: the tensor backend has no bf16 matmul.
        let cpu_bf16 = opts.device.is_cpu() && opts.dtype == DType::BF16;
        if cpu_bf16 && !opts.fast {
            return Err(Error::input("bf16 on the CPU needs the fast path (it has the bf16 GEMM)"));
        }
        let dtype = if cpu_bf16 { DType::F32 } else { opts.dtype };
        let config = ModelConfig::from_file(&files.config)?;
        let weights = Weights::from_safetensors(&files.weights, dtype, &opts.device)?;
        let mut towers = match &config {
            ModelConfig::FgClip(c) => Towers::FgClip(FgClip::load(&weights, c)?),
            ModelConfig::FgClip2(c) => Towers::FgClip2(FgClip2::load(&weights, c)?),
        };
        if cpu_bf16 {
            // Inference-only model: packed bf16 weights replace the f32 ones to keep one copy in memory.
            match &mut towers {
                Towers::FgClip(m) => m.set_fast_bf16_inference()?,
                Towers::FgClip2(m) => m.set_fast_bf16_inference()?,
            }
        } else if opts.fast && opts.device.is_cpu() {
            let p = Some(crate::nn::fast::GemmPrecision::F32);
            match &mut towers {
                Towers::FgClip(m) => m.set_fast(p)?,
                Towers::FgClip2(m) => m.set_fast(p)?,
            }
        }
        let family = config.family();
        // FG-CLIP 2 callers lower-case (spec §10.3); CLIP's tokenizer lower-cases by itself.
        let tok_opts = TokenizerOptions { lowercase: family == Family::FgClip2, ..Default::default() };
        let tokenizer = TextTokenizer::from_files(&files, tok_opts)?;
        let text_mask = match (family, opts.text_mask) {
            (Family::FgClip, _) => false, // never passed by any FG-CLIP code path
            (Family::FgClip2, TextMask::Auto) => tokenizer.returns_attention_mask(),
            (Family::FgClip2, TextMask::On) => true,
            (Family::FgClip2, TextMask::Off) => false,
        };
        let preprocess = read_preprocess_config(files.preprocessor_config.as_deref(), family)?;
        Ok(Self { towers, config, tokenizer, preprocess, files, weights, device: opts.device.clone(), dtype, text_mask })
    }

    pub fn family(&self) -> Family {
        self.config.family()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether text encoding passes an attention mask.
    pub fn uses_text_mask(&self) -> bool {
        self.text_mask
    }

    /// Size of the joint embedding space.
    pub fn embed_dim(&self) -> usize {
        match &self.config {
            ModelConfig::FgClip(c) => c.projection_dim,
            ModelConfig::FgClip2(c) => c.embed_dim(),
        }
    }

    /// Token length of a walk (FG-CLIP: 77 / 248; FG-CLIP 2: 64 / 196 / 64).
    pub fn text_len(&self, walk: TextWalk) -> usize {
        match &self.towers {
            Towers::FgClip(m) => match walk {
                TextWalk::Long => m.text_model.long_len,
                _ => m.cfg.text.max_position_embeddings,
            },
            Towers::FgClip2(m) => m.text_model.walk_len(walk),
        }
    }

    pub fn fgclip(&self) -> Option<&FgClip> {
        match &self.towers {
            Towers::FgClip(m) => Some(m),
            _ => None,
        }
    }

    pub fn fgclip2(&self) -> Option<&FgClip2> {
        match &self.towers {
            Towers::FgClip2(m) => Some(m),
            _ => None,
        }
    }

    // ------------------------------------------------------------------ images

    /// Decodes image files (PIL `convert("RGB")` semantics).
    pub fn load_images(paths: &[impl AsRef<Path>]) -> Result<Vec<RgbImage>> {
        paths
            .iter()
            .map(|p| {
                fgclip_image::load_rgb(p.as_ref())
                    .map_err(|e| Error::Image { path: p.as_ref().display().to_string(), msg: e.to_string() })
            })
            .collect()
    }

    /// Preprocesses images as the official code does: FG-CLIP squashes to S×S with PIL bicubic; FG-CLIP 2
    /// resizes each image (aspect kept, PIL bilinear) to the largest grid within its patch budget.
    pub fn prepare_images(&self, images: &[RgbImage], budget: PatchBudget) -> Result<PreparedImages> {
        if images.is_empty() {
            return Err(Error::input("no images given"));
        }
        let sizes: Vec<(usize, usize)> = images.iter().map(|im| (im.height, im.width)).collect();
        let (mean, std) = (self.preprocess.mean, self.preprocess.std);
        match &self.config {
            ModelConfig::FgClip(c) => {
                let s = c.vision.image_size;
                let per: Vec<Vec<f32>> = {
                    use rayon::prelude::*;
                    images.par_iter().map(|im| fgclip_image::clip::preprocess(im, s, mean, std)).collect()
                };
                let flat: Vec<f32> = per.concat();
                let pixel_values = Tensor::from_vec(flat, (images.len(), 3, s, s), &self.device)?.to_dtype(self.dtype)?;
                let g = c.vision.grid();
                Ok(PreparedImages { pixel_values, valid: None, grids: vec![(g, g); images.len()], sizes })
            }
            ModelConfig::FgClip2(c) => {
                let p = c.vision.patch_size;
                if let PatchBudget::Fixed(0) = budget {
                    return Err(Error::input("--max-patches must be at least 1"));
                }
                let per: Vec<fgclip_image::naflex::NaflexImage> = {
                    use rayon::prelude::*;
                    images
                        .par_iter()
                        .map(|im| {
                            let n = match budget {
                                PatchBudget::Dynamic => fgclip_image::naflex::bucket_max_patches(im.height, im.width),
                                PatchBudget::Fixed(n) => n,
                            };
                            fgclip_image::naflex::preprocess(im, p, n, mean, std)
                        })
                        .collect()
                };
                let row = p * p * c.vision.num_channels;
                let n = per.iter().map(|x| x.grid_h * x.grid_w).max().unwrap_or(0);
                let mut flat = vec![0f32; images.len() * n * row];
                let mut valid = vec![0f32; images.len() * n];
                for (i, x) in per.iter().enumerate() {
                    let real = x.grid_h * x.grid_w;
                    flat[i * n * row..i * n * row + real * row].copy_from_slice(&x.pixel_values[..real * row]);
                    valid[i * n..i * n + real].iter_mut().for_each(|v| *v = 1.0);
                }
                let pixel_values = Tensor::from_vec(flat, (images.len(), n, row), &self.device)?.to_dtype(self.dtype)?;
                let valid = Tensor::from_vec(valid, (images.len(), n), &self.device)?;
                let grids = per.iter().map(|x| (x.grid_h, x.grid_w)).collect();
                Ok(PreparedImages { pixel_values, valid: Some(valid), grids, sizes })
            }
        }
    }

    fn naflex<'a>(&self, images: &'a PreparedImages) -> Result<NaflexInput<'a>> {
        let valid = images.valid.as_ref().ok_or_else(|| Error::input("FG-CLIP 2 images need a patch mask"))?;
        Ok(NaflexInput { pixel_values: &images.pixel_values, valid, grids: &images.grids })
    }

    /// Global image embeddings `[B, D]` (unnormalised).
    pub fn encode_images(&self, images: &PreparedImages) -> Result<Tensor> {
        match &self.towers {
            Towers::FgClip(m) => m.image_features(&images.pixel_values),
            Towers::FgClip2(m) => m.image_features(&self.naflex(images)?),
        }
    }

    /// Global embeddings and dense maps from one pass of the vision tower.
    pub fn encode_images_with_dense(&self, images: &PreparedImages) -> Result<(Tensor, Vec<DenseMap>)> {
        let (global, dense) = match &self.towers {
            Towers::FgClip(m) => m.image_and_dense_features(&images.pixel_values)?,
            Towers::FgClip2(m) => m.image_and_dense_features(&self.naflex(images)?)?,
        };
        Ok((global, split_dense(&dense, &images.grids)?))
    }

    /// Dense per-patch features of each image (unnormalised).
    pub fn dense_features(&self, images: &PreparedImages) -> Result<Vec<DenseMap>> {
        let dense = match &self.towers {
            Towers::FgClip(m) => m.dense_features(&images.pixel_values)?,
            Towers::FgClip2(m) => m.dense_features(&self.naflex(images)?)?,
        };
        split_dense(&dense, &images.grids)
    }

    /// Region features for boxes `[x1, y1, x2, y2]` in ORIGINAL image pixels, one list per image → one
    /// `[K_i, D]` tensor per image, unnormalised (FG-CLIP `get_image_box_roi_features`, FG-CLIP 2
    /// `get_image_region_features`). Degenerate boxes give zero vectors.
    pub fn region_features(&self, images: &PreparedImages, boxes: &[Vec<[f32; 4]>]) -> Result<Vec<Tensor>> {
        let dense = self.dense_features(images)?;
        self.regions_from_dense(&dense, &images.sizes, boxes)
    }

    /// RoIAlign on already computed dense maps (avoids a second tower pass).
    pub fn regions_from_dense(
        &self,
        dense: &[DenseMap],
        sizes: &[(usize, usize)],
        boxes: &[Vec<[f32; 4]>],
    ) -> Result<Vec<Tensor>> {
        if boxes.len() != dense.len() {
            return Err(Error::input(format!(
                "boxes are given for {} images but there are {} images",
                boxes.len(),
                dense.len()
            )));
        }
        dense
            .iter()
            .zip(sizes)
            .zip(boxes)
            .enumerate()
            .map(|(i, ((d, &(h, w)), bs))| {
                let grid_boxes = bs
                    .iter()
                    .enumerate()
                    .map(|(k, b)| pixel_box_to_grid(b, (h, w), (d.rows, d.cols)).map_err(|e| {
                        Error::input(format!("image {i}, box {k} {b:?}: {e}"))
                    }))
                    .collect::<Result<Vec<GridBox>>>()?;
                Ok(crate::nn::roi_align::roi_align(&d.features, d.rows, d.cols, &grid_boxes)?)
            })
            .collect()
    }

    // ------------------------------------------------------------------ texts

    /// Tokenises as the official usage does for `walk` (padding to the walk's exact length).
    pub fn tokenize(&self, texts: &[&str], walk: TextWalk) -> Result<TokenBatch> {
        self.tokenizer.encode(texts, self.text_len(walk))
    }

    /// Text embeddings `[M, D]` (unnormalised).
    pub fn encode_texts(&self, texts: &[&str], walk: TextWalk) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(Error::input("no texts given"));
        }
        let TokenBatch { ids, attention_mask, n, len } = self.tokenize(texts, walk)?;
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = if self.text_mask {
            Some(Tensor::from_vec(attention_mask, (n, len), &self.device)?)
        } else {
            None
        };
        self.encode_tokens(&ids, mask.as_ref(), walk)
    }

    /// Text embeddings from token ids `[M, L]` (u32) and an optional attention mask `[M, L]`.
    pub fn encode_tokens(&self, ids: &Tensor, attention_mask: Option<&Tensor>, walk: TextWalk) -> Result<Tensor> {
        let ids = ids.to_dtype(DType::U32)?;
        match &self.towers {
            // FG-CLIP's box texts use the short walk (spec §2.2).
            Towers::FgClip(m) => m.text_features(&ids, walk == TextWalk::Long),
            Towers::FgClip2(m) => m.text_features(&ids, attention_mask, walk),
        }
    }

    // ------------------------------------------------------------------ scores

    /// Image-to-text logits `[B_img, B_txt]` from unnormalised embeddings, as each family defines them:
    /// FG-CLIP `exp(logit_scale)·cos`; FG-CLIP 2 `exp(logit_scale)·cos + logit_bias`.
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let i = crate::nn::l2_normalize(&image_embeds.to_dtype(DType::F32)?)?;
        let t = crate::nn::l2_normalize(&text_embeds.to_dtype(DType::F32)?)?;
        let cos = i.matmul(&t.t()?)?;
        Ok(match &self.towers {
            Towers::FgClip(m) => cos.broadcast_mul(&m.logit_scale.to_dtype(DType::F32)?.exp()?)?,
            Towers::FgClip2(m) => cos
                .broadcast_mul(&m.logit_scale.to_dtype(DType::F32)?.exp()?)?
                .broadcast_add(&m.logit_bias.to_dtype(DType::F32)?)?,
        })
    }

    /// Probabilities from logits: softmax over the texts (FG-CLIP) or independent sigmoids (FG-CLIP 2).
    pub fn probabilities(&self, logits: &Tensor) -> Result<Tensor> {
        Ok(match self.family() {
            Family::FgClip => candle_nn::ops::softmax_last_dim(logits)?,
            Family::FgClip2 => candle_nn::ops::sigmoid(logits)?,
        })
    }
}

/// Splits `[B, N, D]` dense output into per-image maps of their real rows.
fn split_dense(dense: &Tensor, grids: &[(usize, usize)]) -> Result<Vec<DenseMap>> {
    grids
        .iter()
        .enumerate()
        .map(|(i, &(rows, cols))| {
            let features = dense.get(i)?.narrow(0, 0, rows * cols)?;
            Ok(DenseMap { features, rows, cols })
        })
        .collect()
}

/// Original-pixel xyxy → feature-grid units (`x·cols/W`, `y·rows/H`), rejecting non-finite coordinates and
/// boxes absurdly far outside the image. Boxes partly or wholly outside follow torchvision (outside samples
/// contribute 0).
pub fn pixel_box_to_grid(b: &[f32; 4], size_hw: (usize, usize), grid_rc: (usize, usize)) -> std::result::Result<GridBox, String> {
    if b.iter().any(|v| !v.is_finite()) {
        return Err("coordinates must be finite numbers".into());
    }
    let (h, w) = (size_hw.0 as f32, size_hw.1 as f32);
    let (rows, cols) = (grid_rc.0 as f32, grid_rc.1 as f32);
    let g = [b[0] / w * cols, b[1] / h * rows, b[2] / w * cols, b[3] / h * rows];
    let limit = MAX_BOX_EXTENT_CELLS.min(4.0 * rows.max(cols) + 4.0);
    if g.iter().any(|v| v.abs() > limit) {
        return Err(format!("box lies far outside the {}x{} image", size_hw.1, size_hw.0));
    }
    Ok(g)
}

fn read_preprocess_config(path: Option<&Path>, family: Family) -> Result<PreprocessConfig> {
    let default = match family {
        Family::FgClip => PreprocessConfig { mean: fgclip_image::clip::OPENAI_MEAN, std: fgclip_image::clip::OPENAI_STD },
        Family::FgClip2 => PreprocessConfig { mean: [0.5; 3], std: [0.5; 3] },
    };
    let Some(path) = path else { return Ok(default) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config { path: path.into(), msg: format!("cannot read: {e}") })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config { path: path.into(), msg: format!("invalid JSON: {e}") })?;
    let triple = |key: &str, def: [f32; 3]| -> Result<[f32; 3]> {
        match v.get(key) {
            None => Ok(def),
            Some(a) => {
                let xs: Vec<f32> = serde_json::from_value(a.clone())
                    .map_err(|e| Error::Config { path: path.into(), msg: format!("field `{key}`: {e}") })?;
                match xs.as_slice() {
                    [a, b, c] => Ok([*a, *b, *c]),
                    [a] => Ok([*a; 3]),
                    _ => Err(Error::Config { path: path.into(), msg: format!("field `{key}` must have 3 values") }),
                }
            }
        }
    };
    let cfg = PreprocessConfig { mean: triple("image_mean", default.mean)?, std: triple("image_std", default.std)? };
    if cfg.std.iter().any(|s| *s == 0.0) {
        return Err(Error::Config { path: path.into(), msg: "field `image_std` has a zero".into() });
    }
    Ok(cfg)
}
