//! Checkpoints stored in bf16 or f16 load (converted to the compute dtype) and give the f32 results up to the
//! storage rounding.

use crate::common;
use candle_core::{DType, Device, Tensor};
use common::*;
use fgclip::{LoadOptions, Model, TextWalk};

#[test]
fn bf16_and_f16_checkpoints_load_and_agree_with_f32() {
    let Some(fx) = fixtures_dir() else { return };
    let src = fx.join("fgclip2/model");
    let reference = Model::load(src.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let img = fgclip::fgclip_image::RgbImage {
        width: 80,
        height: 64,
        data: (0..80 * 64 * 3).map(|i| (i * 7 % 251) as u8).collect(),
    };
    let prep = reference.prepare_images(std::slice::from_ref(&img), fgclip::PatchBudget::Fixed(64)).unwrap();
    let want_i = l2n(&reference.encode_images(&prep).unwrap());
    let want_t = l2n(&reference.encode_texts(&["a red cup"], TextWalk::Short).unwrap());
    for dt in [DType::BF16, DType::F16] {
        let dir = std::env::temp_dir().join(format!("fgclip-test-{}-{dt:?}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        let ts = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
        let conv: std::collections::HashMap<String, Tensor> =
            ts.into_iter().map(|(k, v)| (k, v.to_dtype(dt).unwrap())).collect();
        candle_core::safetensors::save(&conv, dir.join("model.safetensors")).unwrap();
        let m = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
        assert_eq!(m.weights.storage_dtypes(), vec![format!("{dt:?}").to_uppercase()]);
        let got_i = l2n(&m
            .encode_images(&m.prepare_images(std::slice::from_ref(&img), fgclip::PatchBudget::Fixed(64)).unwrap())
            .unwrap());
        let got_t = l2n(&m.encode_texts(&["a red cup"], TextWalk::Short).unwrap());
        // Weight rounding of bf16 (8 bits of mantissa) moves unit vectors by a few 1e-3 on this tiny model.
        let tol = if dt == DType::BF16 { 1e-2 } else { 1e-3 };
        assert_close(&format!("{dt:?} image"), &got_i, &want_i, tol);
        assert_close(&format!("{dt:?} text"), &got_t, &want_t, tol);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
