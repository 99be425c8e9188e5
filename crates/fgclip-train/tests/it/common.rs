//! Shared helpers of the training tests: the inference tests' fixture helpers (one file, included from
//! `crates/fgclip/tests/common`) plus the official collated batch that `losses/v*_forward.safetensors` carry.

#![allow(dead_code)]

#[allow(unused_imports)]
pub use fgclip_testkit::{assert_close, fixture_file, fixtures_dir, load_tensors, max_abs_diff};

/// L2-normalise rows (last dim), as the official `x / x.norm(dim=-1, keepdim=True)`.
pub fn l2n(x: &Tensor) -> Tensor {
    fgclip::nn::l2_normalize(x).unwrap()
}

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use fgclip::PreparedImages;
use fgclip_train::batch::Batch;

fn nums(t: &Tensor) -> Vec<usize> {
    t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap().into_iter().map(|x| x as usize).collect()
}

fn boxes(t: &Tensor) -> Vec<[f32; 4]> {
    t.to_vec2::<f32>().unwrap().into_iter().map(|r| [r[0], r[1], r[2], r[3]]).collect()
}

/// The fixture's `batch.*` tensors as our `Batch`: fixed-size pixels (FG-CLIP) or NaFlex patches with their
/// valid mask and grids (FG-CLIP 2, present when the fixture has `batch.pixel_values`).
pub fn fixture_batch(fx: &HashMap<String, Tensor>) -> Batch {
    let ids = |k: &str| fx[k].to_dtype(DType::U32).unwrap();
    let pixels = match fx.get("batch.pixel_values") {
        Some(pixel_values) => {
            let grids: Vec<(usize, usize)> = fx["batch.spatial_shapes"]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
                .into_iter()
                .map(|r| (r[0] as usize, r[1] as usize))
                .collect();
            PreparedImages {
                pixel_values: pixel_values.clone(),
                valid: Some(fx["batch.pixel_attention_mask"].to_dtype(DType::F32).unwrap()),
                sizes: grids.iter().map(|&(h, w)| (16 * h, 16 * w)).collect(),
                grids,
            }
        }
        None => {
            let image = fx["batch.image"].clone();
            let (b, s) = (image.dim(0).unwrap(), image.dim(2).unwrap());
            // FG-CLIP fixtures are ViT-B/16-shaped: a 16-pixel patch grid.
            PreparedImages {
                pixel_values: image,
                valid: None,
                grids: vec![(s / 16, s / 16); b],
                sizes: vec![(s, s); b],
            }
        }
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
