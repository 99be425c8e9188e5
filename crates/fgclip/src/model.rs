//! The small uniform API over both families, in the spirit of open_clip: load, prepare images, encode images
//! and texts, dense and region features, logits and probabilities as each family defines them.
//!
//! Every feature is returned exactly as the official feature function returns it (unnormalised unless noted);
//! use [`crate::nn::l2_normalize`] for cosine similarities. Batched calls equal one-at-a-time calls: FG-CLIP 2
//! chooses each image's patch budget from that image alone (the official processor takes the max over the call,
//! which makes an embedding depend on its neighbours) and padding is masked.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use fgclip_image::{ImageProcessor, PatchBudget, RgbImage};
use fgclip_kernels::cpu::Isa;

use crate::checkpoint::Weights;
use crate::config::{Family, ModelConfig};
use crate::family::{ScoreHead, Towers};
use crate::fgclip1::FgClip;
use crate::fgclip2::FgClip2;
use crate::hub::{self, ModelFiles};
use crate::nn::roi_align::{GridBox, MAX_BOX_EXTENT_CELLS};
use crate::pixels::PreparedImages;
use crate::plan::{ExecutionPlan, Kernels, Precision};
use crate::registry::load_towers;
use crate::tokenize::{TextTokenizer, TokenBatch, TokenizerOptions};
use crate::{Error, Result, TextWalk};

/// Whether FG-CLIP 2 text encoding passes the padding mask (see `docs/tokenizer.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextMask {
    /// As the official usage `get_text_features(**tokenizer(...))`: a mask exactly when the checkpoint's
    /// tokenizer returns one (`model_input_names` in `tokenizer_config.json`).
    #[default]
    Auto,
    On,
    Off,
}

/// How to load a model. The execution plan is made from these once, in [`Model::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// f32 (the parity reference) or bf16 (bf16 matrix products, f32 accumulation); see [`Precision`].
    pub precision: Precision,
    /// `Reference` runs candle's own ops instead of the fused CPU kernels.
    pub kernels: Kernels,
    /// CPU kernel level; `None` takes `FGCLIP_CPU` or the detected one.
    pub isa: Option<Isa>,
    pub text_mask: TextMask,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            precision: Precision::F32,
            kernels: Kernels::Auto,
            isa: None,
            text_mask: TextMask::Auto,
        }
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

pub struct Model {
    towers: Box<dyn Towers>,
    pub config: ModelConfig,
    pub tokenizer: TextTokenizer,
    /// The image processor, built once from the family's defaults and `preprocessor_config.json`.
    pub processor: ImageProcessor,
    pub files: ModelFiles,
    pub weights: Weights,
    plan: ExecutionPlan,
    text_mask: bool,
}

impl Model {
    /// Loads `model`: a local folder in the official layout or a Hugging Face repo id (`qihoo360/fg-clip2-base`).
    pub fn load(model: &str, opts: &LoadOptions) -> Result<Self> {
        let files = hub::resolve(model)?;
        Self::from_files(files, opts)
    }

    pub fn from_files(files: ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let plan = ExecutionPlan::inference(&opts.device, opts.precision, opts.kernels, opts.isa)?;
        let config = ModelConfig::from_file(&files.config)?;
        let weights = Weights::from_safetensors(&files.weights, plan.weight_dtype(), &opts.device)?;
        let towers = load_towers(&config, &weights, &plan)?;
        let rules = towers.text_rules();
        let tok_opts = TokenizerOptions { lowercase: rules.lowercase, ..Default::default() };
        let tokenizer = TextTokenizer::from_files(&files, tok_opts)?;
        let text_mask = rules.accepts_mask
            && match opts.text_mask {
                TextMask::Auto => tokenizer.returns_attention_mask(),
                TextMask::On => true,
                TextMask::Off => false,
            };
        let mut processor = towers.image_processor();
        if let Some(path) = files.preprocessor_config.as_deref() {
            processor = processor.with_config_file(path).map_err(|e| Error::Config { path: e.path, msg: e.msg })?;
        }
        Ok(Self { towers, config, tokenizer, processor, files, weights, plan, text_mask })
    }

    pub fn family(&self) -> Family {
        self.towers.family()
    }

    /// The family's towers, through the trait both inference and training use.
    pub fn towers(&self) -> &dyn Towers {
        self.towers.as_ref()
    }

    /// How this model computes (device, precision, kernels), fixed at load.
    pub fn plan(&self) -> &ExecutionPlan {
        &self.plan
    }

    pub fn device(&self) -> &Device {
        &self.plan.device
    }

    pub fn precision(&self) -> Precision {
        self.plan.precision
    }

    /// The dtype of the model's tensors (f32 on the CPU in every precision).
    pub fn dtype(&self) -> DType {
        self.plan.weight_dtype()
    }

    /// Whether text encoding passes an attention mask.
    pub fn uses_text_mask(&self) -> bool {
        self.text_mask
    }

    /// Size of the joint embedding space.
    pub fn embed_dim(&self) -> usize {
        self.towers.embed_dim()
    }

    /// Token length of a walk (FG-CLIP: 77 / 248; FG-CLIP 2: 64 / 196 / 64).
    pub fn text_len(&self, walk: TextWalk) -> usize {
        self.towers.text_len(walk)
    }

    /// The walk region captions and box labels are encoded with (FG-CLIP 2: box; FG-CLIP: short).
    pub fn region_walk(&self) -> TextWalk {
        self.towers.region_walk()
    }

    /// The FG-CLIP towers, when this is an FG-CLIP model.
    pub fn fgclip(&self) -> Option<&FgClip> {
        self.towers.as_any().downcast_ref()
    }

    /// The FG-CLIP 2 towers, when this is an FG-CLIP 2 model.
    pub fn fgclip2(&self) -> Option<&FgClip2> {
        self.towers.as_any().downcast_ref()
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
        let batch = self.processor.process(images, budget).map_err(Error::input)?;
        PreparedImages::from_batch(batch, self.device(), self.dtype())
    }

    /// Global image embeddings `[B, D]` (unnormalised).
    pub fn encode_images(&self, images: &PreparedImages) -> Result<Tensor> {
        self.towers.encode_images(images)
    }

    /// Global embeddings and dense maps from one pass of the vision tower.
    pub fn encode_images_with_dense(&self, images: &PreparedImages) -> Result<(Tensor, Vec<DenseMap>)> {
        let (global, dense) = self.towers.encode_images_with_dense(images)?;
        Ok((global, split_dense(&dense, &images.grids)?))
    }

    /// Dense per-patch features of each image (unnormalised).
    pub fn dense_features(&self, images: &PreparedImages) -> Result<Vec<DenseMap>> {
        let dense = self.towers.encode_dense(images)?;
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
                    .map(|(k, b)| {
                        pixel_box_to_grid(b, (h, w), (d.rows, d.cols))
                            .map_err(|e| Error::input(format!("image {i}, box {k} {b:?}: {e}")))
                    })
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
        let ids = Tensor::from_vec(ids, (n, len), self.device())?;
        let mask = if self.text_mask { Some(Tensor::from_vec(attention_mask, (n, len), self.device())?) } else { None };
        self.encode_tokens(&ids, mask.as_ref(), walk)
    }

    /// Text embeddings from token ids `[M, L]` (u32) and an optional attention mask `[M, L]`.
    pub fn encode_tokens(&self, ids: &Tensor, attention_mask: Option<&Tensor>, walk: TextWalk) -> Result<Tensor> {
        self.towers.encode_tokens(&ids.to_dtype(DType::U32)?, attention_mask, walk)
    }

    // ------------------------------------------------------------------ scores

    /// The score head (scale, optional bias, softmax or sigmoid) as data.
    pub fn score_head(&self) -> ScoreHead {
        self.towers.score_head()
    }

    /// Image-to-text logits `[B_img, B_txt]` from unnormalised embeddings, as each family defines them:
    /// FG-CLIP `exp(logit_scale)·cos`; FG-CLIP 2 `exp(logit_scale)·cos + logit_bias`.
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        self.score_head().logits(image_embeds, text_embeds)
    }

    /// Probabilities from logits: softmax over the texts (FG-CLIP) or independent sigmoids (FG-CLIP 2).
    pub fn probabilities(&self, logits: &Tensor) -> Result<Tensor> {
        self.score_head().probabilities(logits)
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
pub fn pixel_box_to_grid(
    b: &[f32; 4],
    size_hw: (usize, usize),
    grid_rc: (usize, usize),
) -> std::result::Result<GridBox, String> {
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
