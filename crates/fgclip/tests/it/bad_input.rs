//! Bad input gives a typed error that names the problem — never a panic, never NaN.

use crate::common;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::*;
use fgclip::{Error, LoadOptions, Model, TextWalk};

/// A scratch copy of a fixture checkpoint folder that a test may modify.
fn scratch_copy(src: &Path, tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("fgclip-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

/// Rewrites `model.safetensors` in `dir` through `edit`.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>)) {
    let p = dir.join("model.safetensors");
    let mut ts = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    edit(&mut ts);
    candle_core::safetensors::save(&ts, &p).unwrap();
}

fn load(dir: &Path) -> fgclip::Result<Model> {
    Model::load(dir.to_str().unwrap(), &LoadOptions::default())
}

#[test]
fn missing_tensor_is_named() {
    let Some(fx) = fixtures_dir() else { return };
    for (family, key) in [
        ("fgclip_v1", "text_model.embeddings.position_embedding_res.weight"),
        ("fgclip2", "dense_feature_head.attention.in_proj_weight"),
    ] {
        let dir = scratch_copy(&fx.join(family).join("model"), &format!("missing-{family}"));
        edit_weights(&dir, |ts| {
            ts.remove(key);
        });
        match load(&dir) {
            Err(Error::MissingTensor { name }) => assert_eq!(name, key),
            Err(e) => panic!("{family}: wrong error {e}"),
            Ok(_) => panic!("{family}: loaded without {key}"),
        }
        let msg = load(&dir).err().unwrap().to_string();
        assert!(msg.contains(key), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn mis_shaped_tensor_names_expected_and_found_shape() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = scratch_copy(&fx.join("fgclip2/model"), "shape");
    let key = "vision_model.encoder.layers.1.mlp.fc1.weight";
    edit_weights(&dir, |ts| {
        ts.insert(key.into(), Tensor::zeros((5, 64), candle_core::DType::F32, &Device::Cpu).unwrap());
    });
    match load(&dir) {
        Err(Error::TensorShape { name, expected, found }) => {
            assert_eq!(name, key);
            assert_eq!(expected, vec![128, 64]);
            assert_eq!(found, vec![5, 64]);
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("loaded a mis-shaped tensor"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_family_is_reported() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = scratch_copy(&fx.join("fgclip2/model"), "family");
    std::fs::write(dir.join("config.json"), r#"{"model_type": "bert", "architectures": ["BertModel"]}"#).unwrap();
    let e = load(&dir).err().expect("must fail");
    assert!(matches!(e, Error::UnknownFamily { .. }), "{e}");
    assert!(e.to_string().contains("bert"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_weights_file_is_reported_with_its_path() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = scratch_copy(&fx.join("fgclip2/model"), "trunc");
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load(&dir).err().expect("must fail");
    let msg = e.to_string();
    assert!(msg.contains("model.safetensors") && msg.contains("truncated"), "{msg}");
    std::fs::write(&p, b"not a checkpoint").unwrap();
    let msg = load(&dir).err().expect("must fail").to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_config_field_is_named() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = scratch_copy(&fx.join("fgclip2/model"), "cfg");
    std::fs::write(dir.join("config.json"), r#"{"model_type": "fgclip2", "vision_config": {"hidden_size": "big"}}"#)
        .unwrap();
    let msg = load(&dir).err().expect("must fail").to_string();
    assert!(msg.contains("vision_config") && msg.contains("config.json"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn degenerate_and_outside_boxes_give_defined_results() {
    let Some(fx) = fixtures_dir() else { return };
    for family in ["fgclip_v1", "fgclip2"] {
        let model = load(&fx.join(family).join("model")).unwrap();
        let img = fgclip::fgclip_image::RgbImage { width: 64, height: 48, data: vec![128; 64 * 48 * 3] };
        let prepared = model.prepare_images(&[img], fgclip::PatchBudget::Fixed(64)).unwrap();
        let boxes = vec![vec![
            [10.0, 10.0, 10.0, 30.0],     // zero width
            [30.0, 30.0, 10.0, 10.0],     // inverted
            [100.0, 100.0, 120.0, 120.0], // outside, but near
            [-5.0, -5.0, 70.0, 60.0],     // overlaps the border
        ]];
        let r = model.region_features(&prepared, &boxes).unwrap();
        let v: Vec<Vec<f32>> = r[0].to_vec2().unwrap();
        assert!(v.iter().flatten().all(|x| x.is_finite()), "{family}: NaN/inf in region features");
        assert!(
            v[0].iter().all(|x| *x == 0.0) && v[1].iter().all(|x| *x == 0.0),
            "{family}: degenerate boxes must be 0"
        );
        assert!(v[2].iter().all(|x| *x == 0.0), "{family}: a box outside the map samples nothing");
        let n = fgclip::nn::l2_normalize(&r[0]).unwrap().to_vec2::<f32>().unwrap();
        assert!(n.iter().flatten().all(|x| x.is_finite()), "{family}: normalising zero rows must not give NaN");
        // Far outside or non-finite: a clear error naming the box.
        for bad in [[1e9f32, 0.0, 1e9 + 10.0, 10.0], [f32::NAN, 0.0, 10.0, 10.0]] {
            let e = model.region_features(&prepared, &[vec![bad]]).expect_err("must fail");
            assert!(e.to_string().contains("box 0"), "{e}");
        }
        // Wrong number of box lists.
        assert!(model.region_features(&prepared, &[vec![], vec![]]).is_err());
    }
}

#[test]
fn text_input_errors() {
    let Some(fx) = fixtures_dir() else { return };
    let model = load(&fx.join("fgclip2/model")).unwrap();
    assert!(model.encode_texts(&[], TextWalk::Short).is_err());
    // Out-of-vocabulary id, wrong long length.
    let ids = Tensor::from_vec(vec![5000u32; 64], (1, 64), &Device::Cpu).unwrap();
    let e = model.encode_tokens(&ids, None, TextWalk::Short).err().unwrap();
    assert!(e.to_string().contains("vocabulary"), "{e}");
    let ids = Tensor::from_vec(vec![5u32; 64], (1, 64), &Device::Cpu).unwrap();
    let e = model.encode_tokens(&ids, None, TextWalk::Long).err().unwrap();
    assert!(e.to_string().contains("196"), "{e}");
    // Empty string is valid text.
    let t = model.encode_texts(&[""], TextWalk::Short).unwrap();
    assert!(t.to_vec2::<f32>().unwrap()[0].iter().all(|x| x.is_finite()));
}

#[test]
fn missing_and_corrupt_images_name_the_file() {
    let e = Model::load_images(&["/nonexistent/cat.jpg"]).err().unwrap();
    assert!(e.to_string().contains("/nonexistent/cat.jpg"), "{e}");
    let p = std::env::temp_dir().join(format!("fgclip-test-{}-bad.jpg", std::process::id()));
    std::fs::write(&p, b"this is not a jpeg").unwrap();
    let e = Model::load_images(&[&p]).err().unwrap();
    assert!(e.to_string().contains("bad.jpg"), "{e}");
    let _ = std::fs::remove_file(&p);
}

#[test]
fn zero_layer_config_is_rejected_not_a_panic() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = scratch_copy(&fx.join("fgclip_v1/model"), "zero-layers");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["vision_config"]["num_hidden_layers"] = serde_json::json!(0);
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    let msg = load(&dir).err().expect("must fail").to_string();
    assert!(msg.contains("num_hidden_layers"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}
