//! One training batch in the layout of the official collators (`DataCollatorForSupervisedDataset`, spec §5.4):
//! fixed 4 box slots per sample, valid counts, hard boxes packed to the front slots, hard texts as
//! `[11·N_h, L]` (positive first, then 10 negatives).

use candle_core::Tensor;

/// Box slots per sample in the official layout.
pub const BOX_SLOTS: usize = 4;
/// Captions per hard box: the positive and its 10 negatives.
pub const HARD_CAPTIONS: usize = 11;

/// The images of a batch.
#[derive(Debug, Clone)]
pub enum Pixels {
    /// FG-CLIP: `[B, 3, S, S]` squashed and normalised (the `image` field).
    Fixed(Tensor),
    /// FG-CLIP 2 NaFlex: patches `[B, P, 3·p·p]`, validity `[B, P]` as f32 (1 = real patch), grids (rows, cols).
    Naflex { pixel_values: Tensor, valid: Tensor, grids: Vec<(usize, usize)> },
}

/// A collated batch. Text tensors hold u32 token ids.
#[derive(Debug, Clone)]
pub struct Batch {
    pub pixels: Pixels,
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
