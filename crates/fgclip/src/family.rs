//! What a model family is, as one trait: image preparation, the two encoders, the text length of each walk, the
//! walk region captions use, and the score head as data. FG-CLIP ([`crate::fgclip1`]) and FG-CLIP 2
//! ([`crate::fgclip2`]) implement it; inference ([`crate::Model`]) and training (`fgclip-train`) use it, and
//! [`crate::registry::load_towers`] is the one place that maps a `config.json` to its family. Adding a family
//! (plain CLIP or SigLIP 2 as a baseline, say) is one more impl and one more arm there; see
//! `docs/architecture.md`.

use std::any::Any;

use candle_core::{DType, Tensor};
use fgclip_image::ImageProcessor;

use crate::config::Family;
use crate::pixels::PreparedImages;
use crate::{Result, TextWalk};

/// How logits become probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalizer {
    /// Over the texts of each image (CLIP, FG-CLIP): they sum to 1.
    Softmax,
    /// Independently per pair (SigLIP, FG-CLIP 2).
    Sigmoid,
}

/// The score head: `logits = exp(logit_scale)·cos + logit_bias`, then softmax or sigmoid.
#[derive(Clone, Debug)]
pub struct ScoreHead {
    /// log of the scale (a scalar tensor).
    pub logit_scale: Tensor,
    /// FG-CLIP 2's learned bias; none for FG-CLIP.
    pub logit_bias: Option<Tensor>,
    pub normalizer: Normalizer,
}

impl ScoreHead {
    /// Image-to-text logits `[B_img, B_txt]` from unnormalised embeddings.
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let i = crate::nn::l2_normalize(&image_embeds.to_dtype(DType::F32)?)?;
        let t = crate::nn::l2_normalize(&text_embeds.to_dtype(DType::F32)?)?;
        let scale = self.logit_scale.to_dtype(DType::F32)?.flatten_all()?.exp()?;
        let logits = i.matmul(&t.t()?)?.broadcast_mul(&scale)?;
        Ok(match &self.logit_bias {
            Some(b) => logits.broadcast_add(&b.to_dtype(DType::F32)?.flatten_all()?)?,
            None => logits,
        })
    }

    /// Probabilities from logits.
    pub fn probabilities(&self, logits: &Tensor) -> Result<Tensor> {
        Ok(match self.normalizer {
            Normalizer::Softmax => candle_nn::ops::softmax_last_dim(logits)?,
            Normalizer::Sigmoid => candle_nn::ops::sigmoid(logits)?,
        })
    }

    /// `"softmax(exp(s)·cos)"`-style formula, for reports.
    pub fn formula(&self) -> &'static str {
        match (self.normalizer, self.logit_bias.is_some()) {
            (Normalizer::Softmax, false) => "softmax(exp(logit_scale)·cos)",
            (Normalizer::Softmax, true) => "softmax(exp(logit_scale)·cos + logit_bias)",
            (Normalizer::Sigmoid, true) => "sigmoid(exp(logit_scale)·cos + logit_bias)",
            (Normalizer::Sigmoid, false) => "sigmoid(exp(logit_scale)·cos)",
        }
    }
}

/// How a family's texts are tokenised and masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextRules {
    /// The official callers lower-case texts before tokenising (FG-CLIP 2; CLIP's tokenizer does it itself).
    pub lowercase: bool,
    /// Whether the text tower may take a padding mask at all (FG-CLIP's never does).
    pub accepts_mask: bool,
}

/// A model family's towers. Features are returned as the official feature functions return them
/// (unnormalised).
pub trait Towers: Send + Sync + 'static {
    fn family(&self) -> Family;
    /// Size of the joint embedding space.
    fn embed_dim(&self) -> usize;
    /// Token length of a walk (FG-CLIP: 77 / 248; FG-CLIP 2: 64 / 196 / 64).
    fn text_len(&self, walk: TextWalk) -> usize;
    /// The walk region (box) captions are encoded with: FG-CLIP 2's `box` walk; FG-CLIP uses `short`.
    fn region_walk(&self) -> TextWalk;
    fn text_rules(&self) -> TextRules;
    /// The family's image processor with its default constants (a checkpoint's `preprocessor_config.json`
    /// is applied on top by the caller).
    fn image_processor(&self) -> ImageProcessor;
    /// Global image embeddings `[B, D]`.
    fn encode_images(&self, images: &PreparedImages) -> Result<Tensor>;
    /// Global embeddings and dense maps `[B, N, D]` from one pass of the vision tower (only the first
    /// rows·cols rows of each image are meaningful).
    fn encode_images_with_dense(&self, images: &PreparedImages) -> Result<(Tensor, Tensor)>;
    /// Dense maps `[B, N, D]`.
    fn encode_dense(&self, images: &PreparedImages) -> Result<Tensor>;
    /// Text embeddings `[M, D]` from token ids `[M, L]` (u32) and an optional padding mask.
    fn encode_tokens(&self, ids: &Tensor, attention_mask: Option<&Tensor>, walk: TextWalk) -> Result<Tensor>;
    fn score_head(&self) -> ScoreHead;
    /// How each part runs, `(part, description)`, for `fgclip info`.
    fn describe_blocks(&self) -> Vec<(String, String)>;
    fn as_any(&self) -> &dyn Any;
}
