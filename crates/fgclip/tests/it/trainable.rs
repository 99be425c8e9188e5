//! The model code is trainable: loaded as `Var`s, a loss through both towers and every feature head sends a
//! non-zero gradient to every parameter the official forward uses (candle's fused LayerNorm would silently
//! give none — docs/candle-notes.md#gradients).

use crate::common;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::*;
use fgclip::checkpoint::{load_into_varmap, Weights};
use fgclip::config::ModelConfig;
use fgclip::fgclip1::FgClip;
use fgclip::fgclip2::{FgClip2, NaflexInput};
use fgclip::TextWalk;

fn grads_missing(varmap: &VarMap, loss: &Tensor, unused: &[&str]) -> Vec<String> {
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let mut missing = vec![];
    for (name, var) in data.iter() {
        if unused.iter().any(|u| name == u) {
            continue;
        }
        let nonzero = grads
            .get(var.as_tensor())
            .map(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0)
            .unwrap_or(false);
        if !nonzero {
            missing.push(name.clone());
        }
    }
    missing.sort();
    missing
}

#[test]
fn every_fgclip1_parameter_gets_a_gradient() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = fx.join("fgclip_v1");
    let cfg = match ModelConfig::from_file(&dir.join("model/config.json")).unwrap() {
        ModelConfig::FgClip(c) => c,
        _ => unreachable!(),
    };
    let varmap = VarMap::new();
    load_into_varmap(&[dir.join("model/model.safetensors")], &varmap, DType::F32, &Device::Cpu).unwrap();
    let m = FgClip::load(&Weights::from_varmap(&varmap, DType::F32, &Device::Cpu), &cfg, &train_plan()).unwrap();
    let inp = load_tensors(&dir.join("inputs.safetensors"));
    let pv = inp["pixel_values"].narrow(0, 0, 2).unwrap();
    let (img, dense) = m.image_and_dense_features(&pv).unwrap();
    let short =
        m.text_features(&inp["input_ids_short"].narrow(0, 0, 2).unwrap().to_dtype(DType::U32).unwrap(), false).unwrap();
    let long =
        m.text_features(&inp["input_ids_long"].narrow(0, 0, 2).unwrap().to_dtype(DType::U32).unwrap(), true).unwrap();
    let roi = m.roi_features(&dense.get(0).unwrap(), &[[0.5, 1.0, 5.5, 6.0]]).unwrap();
    let scale = m.logit_scale.exp().unwrap();
    let loss = ((img.matmul(&short.t().unwrap()).unwrap().sum_all().unwrap()
        + img.matmul(&long.t().unwrap()).unwrap().sum_all().unwrap())
    .unwrap()
    .broadcast_mul(&scale)
    .unwrap()
        + roi.matmul(&short.t().unwrap()).unwrap().sum_all().unwrap())
    .unwrap();
    let missing = grads_missing(&varmap, &loss, &["logit_scale_finegraind", "logit_scale_hardneg"]);
    assert!(missing.is_empty(), "no gradient for: {missing:?}");
}

#[test]
fn every_fgclip2_parameter_gets_a_gradient() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = fx.join("fgclip2");
    let cfg = match ModelConfig::from_file(&dir.join("model/config.json")).unwrap() {
        ModelConfig::FgClip2(c) => c,
        _ => unreachable!(),
    };
    let varmap = VarMap::new();
    load_into_varmap(&[dir.join("model/model.safetensors")], &varmap, DType::F32, &Device::Cpu).unwrap();
    let m = FgClip2::load(&Weights::from_varmap(&varmap, DType::F32, &Device::Cpu), &cfg, &train_plan()).unwrap();
    let inp = load_tensors(&dir.join("inputs.safetensors"));
    let pv = inp["p64.pixel_values"].narrow(0, 0, 2).unwrap();
    let valid = inp["p64.pixel_attention_mask"].narrow(0, 0, 2).unwrap().to_dtype(DType::F32).unwrap();
    let grids = [(7, 9), (7, 9)];
    let (img, dense) =
        m.image_and_dense_features(&NaflexInput { pixel_values: &pv, valid: &valid, grids: &grids }).unwrap();
    let ids = |k: &str| inp[k].narrow(0, 0, 2).unwrap().to_dtype(DType::U32).unwrap();
    let mask = |k: &str| inp[k].narrow(0, 0, 2).unwrap().to_dtype(DType::F32).unwrap();
    let short = m.text_features(&ids("input_ids_short"), Some(&mask("attention_mask_short")), TextWalk::Short).unwrap();
    let boxt = m.text_features(&ids("input_ids_box"), Some(&mask("attention_mask_box")), TextWalk::Box).unwrap();
    let long = m.text_features(&ids("input_ids_long"), Some(&mask("attention_mask_long")), TextWalk::Long).unwrap();
    let d0 = dense.get(0).unwrap().narrow(0, 0, 63).unwrap();
    let roi = m.roi_features(&d0, (7, 9), &[[0.5, 1.0, 5.5, 6.0]]).unwrap();
    let cos = (img.matmul(&short.t().unwrap()).unwrap().sum_all().unwrap()
        + img.matmul(&long.t().unwrap()).unwrap().sum_all().unwrap())
    .unwrap();
    let loss = ((cos.broadcast_mul(&m.logit_scale.exp().unwrap().squeeze(0).unwrap()).unwrap()
        + m.logit_bias.squeeze(0).unwrap())
    .unwrap()
        + roi.matmul(&boxt.t().unwrap()).unwrap().sum_all().unwrap())
    .unwrap();
    // The dense head's probe is unused by the official dense path (docs/models.md#fg-clip-2-dense-head).
    let missing =
        grads_missing(&varmap, &loss, &["dense_feature_head.probe", "logit_scale_finegraind", "logit_scale_hardneg"]);
    assert!(missing.is_empty(), "no gradient for: {missing:?}");
}

/// The plan a trainable model is built with on the CPU (fused training ops with backward).
fn train_plan() -> fgclip::ExecutionPlan {
    fgclip::ExecutionPlan::training(&Device::Cpu, fgclip::Kernels::Auto).unwrap()
}
