//! One training batch in the layout of the official collators (`DataCollatorForSupervisedDataset`, docs/data.md#training-batch-layout):
//! fixed 4 box slots per sample, valid counts, hard boxes packed to the front slots, hard texts as
//! `[11·N_h, L]` (positive first, then 10 negatives).
//!
//! [`Collator`] builds it from records and decoded images exactly as the official per-sample
//! `LazySupervisedBboxDataset.__getitem__` + `DataCollatorForSupervisedDataset.__call__` do (FG-CLIP: branch v1.0
//! `fgclip/train/train_fgclip.py`; FG-CLIP 2: branch main `fgclip2/train/train_fgclip2.py`, NaFlex path), spec
//! docs/losses.md, docs/data.md#training-batch-layout, docs/tokenizer.md#lower-casing,
//! docs/preprocessing.md#training-collator.

use candle_core::{Device, Tensor};
use fgclip::config::{Family, ModelConfig};
use fgclip::fgclip_image::{ImageProcessor, PatchBudget, RgbImage};
use fgclip::hub::ModelFiles;
use fgclip::tokenize::{TextTokenizer, TokenizerOptions};
use fgclip::PreparedImages;
use rand::RngCore;
use rayon::prelude::*;

use crate::data::{DataIssue, Dataset, Lang, Policy, Record};
use crate::error::{Result, TrainError};

/// Box slots per sample in the official layout.
pub const BOX_SLOTS: usize = 4;
/// Captions per hard box: the positive and its 10 negatives.
pub const HARD_CAPTIONS: usize = 11;

/// A collated batch. Text tensors hold u32 token ids.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The images, as the model's image processor prepares them (the same type inference uses): FG-CLIP
    /// `[B, 3, S, S]` (the official `image` field); FG-CLIP 2 NaFlex patches `[B, P, 3·p·p]` padded to the
    /// batch's budget, with the `[B, P]` validity mask and each image's grid.
    pub pixels: PreparedImages,
    /// `[B, L_long]` long captions (FG-CLIP 2: lower-cased). `None` when the data has no long captions.
    pub text_long: Option<Tensor>,
    /// `[B, L_short]` short captions ("a photo of " + short caption for EN).
    pub text_short: Tensor,
    /// `[4B, L_short]` region captions per slot (empty slots hold the tokenisation of "").
    pub box_texts: Tensor,
    /// `[4B]` normalised xyxy boxes per slot (zeros for empty slots).
    pub box_infos: Vec<[f32; 4]>,
    /// `[B]` valid box counts (the first `box_nums[i]` slots of sample i are real).
    pub box_nums: Vec<usize>,
    /// `[11·N_h, L_short]` hard captions, N_h = Σ hard_nums.
    pub hard_texts: Tensor,
    /// `[4B]` normalised xyxy hard boxes, packed to the front slots of each sample.
    pub hard_infos: Vec<[f32; 4]>,
    /// `[B]` valid hard-box counts.
    pub hard_nums: Vec<usize>,
    /// FG-CLIP 2 bilingual training: true when the batch is Chinese (no boxes, no prefix).
    pub is_cn: bool,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.box_nums.len()
    }
    pub fn is_empty(&self) -> bool {
        self.box_nums.is_empty()
    }
    /// Indices of the valid box slots, in sample order (the official `box_nums` selection).
    pub fn valid_box_slots(&self) -> Vec<usize> {
        valid_slots(&self.box_nums)
    }
    /// Indices of the valid hard-box slots, in sample order.
    pub fn valid_hard_slots(&self) -> Vec<usize> {
        valid_slots(&self.hard_nums)
    }
}

fn valid_slots(nums: &[usize]) -> Vec<usize> {
    nums.iter().enumerate().flat_map(|(i, &n)| (0..n.min(BOX_SLOTS)).map(move |k| i * BOX_SLOTS + k)).collect()
}

// ================================================================================================ collation

/// The official `"a photo of "` prefix of English short captions.
pub const SHORT_PREFIX: &str = "a photo of ";
/// FG-CLIP 2: images with a side below this are squashed to `box_image_size`² first (docs/preprocessing.md#training-collator).
pub const MIN_IMAGE_SIDE: usize = 128;
/// FG-CLIP 2: the official collator's stand-in for an image that cannot be processed (black, 384×384).
pub const FAILED_IMAGE_SIDE: usize = 384;

/// Sizes and constants of the official data pipeline for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct CollateConfig {
    pub family: Family,
    /// Long-caption length (FG-CLIP `max_seq_length` 248; FG-CLIP 2 196).
    pub long_len: usize,
    /// Short / box / hard caption length (FG-CLIP `base_seq_length` 77; FG-CLIP 2 64).
    pub short_len: usize,
    /// The image processor (the one inference uses), with the collator's budget and small-image rules.
    pub processor: ImageProcessor,
    /// Side of the black stand-in for an image that cannot be loaded.
    pub failed_image_side: usize,
}

/// FG-CLIP 2's stage-2 `box_image_size`: small images are squashed to this square first.
pub const BOX_IMAGE_SIZE: usize = 512;

impl CollateConfig {
    /// The official settings for a model: FG-CLIP squashes to the vision tower's `image_size` and uses 77 / 248
    /// tokens (4·77 − 3·20); FG-CLIP 2 uses the text config's 64 / 196, `box_image_size` 512 and patch 16.
    pub fn for_model(cfg: &ModelConfig) -> Self {
        match cfg {
            ModelConfig::FgClip(c) => CollateConfig {
                family: Family::FgClip,
                long_len: 4 * c.text.max_position_embeddings - 3 * 20,
                short_len: c.text.max_position_embeddings,
                processor: ImageProcessor::square(c.vision.image_size, c.vision.patch_size),
                failed_image_side: c.vision.image_size,
            },
            ModelConfig::FgClip2(c) => CollateConfig {
                family: Family::FgClip2,
                long_len: c.text.longtext_len,
                short_len: c.text.max_position_embeddings,
                // `Siglip2ImageProcessor()` defaults, whatever the checkpoint's processor says.
                processor: ImageProcessor::naflex(c.vision.patch_size)
                    .with_small_image_squash(MIN_IMAGE_SIDE, BOX_IMAGE_SIZE),
                failed_image_side: FAILED_IMAGE_SIDE,
            },
        }
    }

    /// The collator's patch budget: FG-CLIP 2's official collator takes the bucket of the largest image.
    fn budget(&self) -> PatchBudget {
        match self.family {
            Family::FgClip => PatchBudget::Dynamic,
            Family::FgClip2 => PatchBudget::BatchMax,
        }
    }
}

/// One sample to collate: its record and its decoded image (`Image.open(f).convert("RGB")`).
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub record: &'a Record,
    pub image: RgbImage,
}

/// Turns records + images into [`Batch`]es like the official dataset + collator.
#[derive(Debug, Clone)]
pub struct Collator {
    cfg: CollateConfig,
    tokenizer: TextTokenizer,
}

impl Collator {
    /// `tokenizer` must not lower-case by itself for FG-CLIP 2 (build it with `TokenizerOptions::default()`):
    /// the collator applies the official lower-casing rules, which keep the hard positive as written.
    pub fn new(tokenizer: TextTokenizer, cfg: CollateConfig) -> Result<Self> {
        if cfg.family == Family::FgClip2 && tokenizer.lowercase() {
            return Err(TrainError::Config(
                "the FG-CLIP 2 collator needs a tokenizer without caller-side lower-casing (the hard positive is \
                 not lower-cased in training); build it with TokenizerOptions::default()"
                    .into(),
            ));
        }
        let sizes_ok = cfg.processor.patch > 0
            && match cfg.processor.layout {
                fgclip::fgclip_image::PixelLayout::Square { size, processor_size } => {
                    size > 0 && processor_size != Some(0)
                }
                fgclip::fgclip_image::PixelLayout::Naflex { patch } => patch > 0,
            };
        if !sizes_ok || cfg.short_len == 0 || cfg.long_len == 0 || cfg.failed_image_side == 0 {
            return Err(TrainError::Config(format!("collator: zero size in {cfg:?}")));
        }
        Ok(Self { cfg, tokenizer })
    }

    /// From a checkpoint folder's files: its config, its tokenizer, and (FG-CLIP) the processor's mean / std /
    /// size from `preprocessor_config.json`.
    pub fn from_files(files: &ModelFiles) -> Result<Self> {
        let model_cfg = ModelConfig::from_file(&files.config)?;
        let mut cfg = CollateConfig::for_model(&model_cfg);
        // The FG-CLIP trainer builds its processor from the checkpoint; FG-CLIP 2's uses the class defaults.
        if let (Family::FgClip, Some(p)) = (cfg.family, &files.preprocessor_config) {
            cfg.processor =
                cfg.processor.clone().with_config_file(p).map_err(|e| TrainError::File { path: e.path, msg: e.msg })?;
        }
        let tokenizer = TextTokenizer::from_files(files, TokenizerOptions::default())?;
        Self::new(tokenizer, cfg)
    }

    pub fn config(&self) -> &CollateConfig {
        &self.cfg
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The stand-in for an image that cannot be loaded (black; FG-CLIP 2: 384×384 like the official collator).
    pub fn failed_image(&self) -> RgbImage {
        RgbImage::zeros(self.cfg.failed_image_side, self.cfg.failed_image_side)
    }

    /// Collates decoded samples. `rng` makes the per-box choice between `short_expr` and `long_expr`
    /// (the official `random.choice`), drawn sample by sample, box by box.
    pub fn collate(&self, samples: &[Sample<'_>], rng: &mut dyn RngCore, device: &Device) -> Result<Batch> {
        if samples.is_empty() {
            return Err(TrainError::Config("cannot collate an empty batch".into()));
        }
        let v2 = self.cfg.family == Family::FgClip2;
        let b = samples.len();
        let lower = |s: &str| if v2 { s.to_lowercase() } else { s.to_string() };

        let mut long = Vec::with_capacity(b);
        let mut short = Vec::with_capacity(b);
        let mut box_texts = Vec::with_capacity(BOX_SLOTS * b);
        let mut box_infos = vec![[0f32; 4]; BOX_SLOTS * b];
        let mut box_nums = Vec::with_capacity(b);
        let mut hard_texts = Vec::new();
        let mut hard_infos = vec![[0f32; 4]; BOX_SLOTS * b];
        let mut hard_nums = Vec::with_capacity(b);
        let mut all_cn = true;
        for (i, s) in samples.iter().enumerate() {
            let r = s.record;
            // FG-CLIP's trainer knows no Chinese records; FG-CLIP 2 keys on the presence of `is_cn`.
            let cn = v2 && r.lang() == Lang::Cn;
            all_cn &= cn;
            long.push(lower(&r.caption));
            short.push(if cn { lower(&r.short_caption) } else { lower(&format!("{SHORT_PREFIX}{}", r.short_caption)) });
            let boxes = if cn { &[][..] } else { &r.bbox_info[..r.bbox_info.len().min(BOX_SLOTS)] };
            for k in 0..BOX_SLOTS {
                match boxes.get(k) {
                    Some(bx) => {
                        let text = if rng.next_u32() >> 31 == 0 { &bx.short_expr } else { &bx.long_expr };
                        box_texts.push(lower(text));
                        box_infos[i * BOX_SLOTS + k] = coords(bx.bbox.as_slice())?;
                    }
                    None => box_texts.push(String::new()),
                }
            }
            box_nums.push(boxes.len());
            let mut nh = 0;
            for bx in boxes.iter().filter(|bx| bx.flag_short_neg == 1) {
                if bx.short_expr_negs.len() != HARD_CAPTIONS - 1 {
                    return Err(TrainError::Config(format!(
                        "record {:?}: hard box with {} negatives (expected {}); load records through data::load_items",
                        r.f_path,
                        bx.short_expr_negs.len(),
                        HARD_CAPTIONS - 1
                    )));
                }
                // The positive keeps its case (FG-CLIP 2 writes `box_caption` without `.lower()`).
                hard_texts.push(bx.short_expr.clone());
                hard_texts.extend(bx.short_expr_negs.values().map(|v| lower(v)));
                hard_infos[i * BOX_SLOTS + nh] = coords(bx.bbox.as_slice())?;
                nh += 1;
            }
            hard_nums.push(nh);
        }

        let pixels = self.pixels(samples, device)?;
        let text_long = Some(self.ids(&long, self.cfg.long_len, device)?);
        let text_short = self.ids(&short, self.cfg.short_len, device)?;
        let box_texts = self.ids(&box_texts, self.cfg.short_len, device)?;
        let hard_texts = self.ids(&hard_texts, self.cfg.short_len, device)?;
        Ok(Batch {
            pixels,
            text_long,
            text_short,
            box_texts,
            box_infos,
            box_nums,
            hard_texts,
            hard_infos,
            hard_nums,
            is_cn: v2 && all_cn,
        })
    }

    /// Loads the images of `indices` of `data` in parallel and collates them. An image that cannot be loaded is
    /// an error under [`Policy::Reject`]; under [`Policy::Skip`] it becomes [`Collator::failed_image`] and a
    /// [`DataIssue`] naming the file.
    pub fn collate_items(
        &self,
        data: &Dataset,
        indices: &[usize],
        policy: Policy,
        rng: &mut dyn RngCore,
        device: &Device,
    ) -> Result<(Batch, Vec<DataIssue>)> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(TrainError::Config(format!("sample index {bad} out of range ({} records)", data.len())));
        }
        let loaded: Vec<std::result::Result<RgbImage, String>> = indices
            .par_iter()
            .map(|&i| fgclip::fgclip_image::load_rgb(&data.image_path(i)).map_err(|e| e.to_string()))
            .collect();
        let mut issues = Vec::new();
        let mut samples = Vec::with_capacity(indices.len());
        for (&i, img) in indices.iter().zip(loaded) {
            let item = &data.items[i];
            let image = match img {
                Ok(im) => im,
                Err(msg) => {
                    let issue = item.issue(format!("{msg} (replaced by a black image)"));
                    if policy == Policy::Reject {
                        return Err(item.issue(msg).to_error());
                    }
                    issues.push(issue);
                    self.failed_image()
                }
            };
            samples.push(Sample { record: &item.record, image });
        }
        Ok((self.collate(&samples, rng, device)?, issues))
    }

    /// Token ids `[n, len]` (u32) of `texts`; `[0, len]` for none.
    fn ids(&self, texts: &[String], len: usize, device: &Device) -> Result<Tensor> {
        if texts.is_empty() {
            return Ok(Tensor::zeros((0, len), candle_core::DType::U32, device)?);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tb = self.tokenizer.encode(&refs, len)?;
        Ok(Tensor::from_vec(tb.ids, (tb.n, tb.len), device)?)
    }

    fn pixels(&self, samples: &[Sample<'_>], device: &Device) -> Result<PreparedImages> {
        // FG-CLIP: `image.resize((S, S))` (PIL bicubic) then `CLIPImageProcessor`. FG-CLIP 2's `__getitem__`
        // squashes images with a side < 128 px to 512² first; its collator takes the budget of the largest image
        // for every image and pads to it.
        let images: Vec<&RgbImage> = samples.iter().map(|s| &s.image).collect();
        let batch = self.cfg.processor.process(&images, self.cfg.budget()).map_err(TrainError::Config)?;
        Ok(PreparedImages::from_batch(batch, device, candle_core::DType::F32)?)
    }
}

/// The first 4 values of a bbox (validated records always have them).
fn coords(b: &[f32]) -> Result<[f32; 4]> {
    match b {
        [x1, y1, x2, y2, ..] => Ok([*x1, *y1, *x2, *y2]),
        _ => Err(TrainError::Config(format!(
            "bbox {b:?} has fewer than 4 values; load records through data::load_items"
        ))),
    }
}
