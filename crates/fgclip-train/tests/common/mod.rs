//! Shared helpers of the training tests: the inference tests' fixture helpers (one file, included from
//! `crates/fgclip/tests/common`) plus the official collated batch that `losses/v*_forward.safetensors` carry.

#![allow(dead_code)]

#[path = "../../../fgclip/tests/common/mod.rs"]
mod base;
pub use base::*;

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use fgclip_train::batch::{Batch, Pixels};

fn nums(t: &Tensor) -> Vec<usize> {
    t.to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(|x| x as usize)
        .collect()
}

fn boxes(t: &Tensor) -> Vec<[f32; 4]> {
    t.to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| [r[0], r[1], r[2], r[3]])
        .collect()
}

/// The fixture's `batch.*` tensors as our `Batch`: fixed-size pixels (FG-CLIP) or NaFlex patches with their
/// valid mask and grids (FG-CLIP 2, present when the fixture has `batch.pixel_values`).
pub fn fixture_batch(fx: &HashMap<String, Tensor>) -> Batch {
    let ids = |k: &str| fx[k].to_dtype(DType::U32).unwrap();
    let pixels = match fx.get("batch.pixel_values") {
        Some(pixel_values) => Pixels::Naflex {
            pixel_values: pixel_values.clone(),
            valid: fx["batch.pixel_attention_mask"]
                .to_dtype(DType::F32)
                .unwrap(),
            grids: fx["batch.spatial_shapes"]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
                .into_iter()
                .map(|r| (r[0] as usize, r[1] as usize))
                .collect(),
        },
        None => Pixels::Fixed(fx["batch.image"].clone()),
    };
    Batch {
        pixels,
        text_long: Some(ids("batch.text_long")),
        text_short: ids("batch.text_short"),
        box_texts: ids("batch.box_texts"),
        box_infos: boxes(&fx["batch.box_infos"]),
        box_nums: nums(&fx["batch.box_nums"]),
        hard_texts: ids("batch.hard_texts"),
        hard_infos: boxes(&fx["batch.hard_infos"]),
        hard_nums: nums(&fx["batch.hard_nums"]),
        is_cn: false,
    }
}
