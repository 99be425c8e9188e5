//! End to end from the photo files, through decoding, the PIL-exact preprocessing and the towers, against
//! the official outputs — the path `fgclip features --image` takes.

use crate::common;
use candle_core::{IndexOp, Tensor};
use common::*;
use fgclip::{LoadOptions, Model, PatchBudget};

const IMAGES: [&str; 3] = ["cat_dfclor.jpg", "part.jpg", "df_cups.png"];

/// Same budget as the towers' parity tests: the inputs are bit-identical when decoding and resizing are exact.
const TOL: f32 = 2e-5;

fn photos(fx: &std::path::Path) -> Vec<fgclip::fgclip_image::RgbImage> {
    let paths: Vec<_> = IMAGES.iter().map(|n| fx.join("images").join(n)).collect();
    Model::load_images(&paths).unwrap()
}

#[test]
fn fgclip1_from_files_matches_official() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = fx.join("fgclip_v1");
    let model = Model::load(dir.join("model").to_str().unwrap(), &LoadOptions::default()).unwrap();
    let inp = load_tensors(&dir.join("inputs.safetensors"));
    let exp = load_tensors(&dir.join("expected.safetensors"));
    let prepared = model.prepare_images(&photos(&fx), PatchBudget::Dynamic).unwrap();
    assert_close("pixel_values", &prepared.pixel_values, &inp["pixel_values"], 1e-6);
    let (img, dense) = model.encode_images_with_dense(&prepared).unwrap();
    assert_close("image_embeds", &img, &exp["image_embeds"], TOL);
    for (i, d) in dense.iter().enumerate() {
        assert_close(&format!("dense_embeds[{i}]"), &d.features, &exp["dense_embeds"].i(i).unwrap(), TOL);
    }
}

#[test]
fn fgclip2_from_files_matches_official_for_each_budget() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = fx.join("fgclip2");
    let model = Model::load(dir.join("model").to_str().unwrap(), &LoadOptions::default()).unwrap();
    let inp = load_tensors(&dir.join("inputs.safetensors"));
    let exp = load_tensors(&dir.join("expected.safetensors"));
    let all = photos(&fx);
    let px: Vec<Vec<Vec<f64>>> = inp["boxes_pixel_xyxy"].to_vec3().unwrap();
    let px: Vec<Vec<[f32; 4]>> = px
        .iter()
        .map(|img| img.iter().map(|b| [b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32]).collect())
        .collect();
    for (set, budget, n_img) in
        [("p64", PatchBudget::Fixed(64), 3), ("p128", PatchBudget::Fixed(128), 3), ("dyn", PatchBudget::Dynamic, 1)]
    {
        let prepared = model.prepare_images(&all[..n_img], budget).unwrap();
        let shapes: Vec<Vec<i64>> = inp[&format!("{set}.spatial_shapes")].to_vec2().unwrap();
        let want: Vec<(usize, usize)> = shapes.iter().map(|r| (r[0] as usize, r[1] as usize)).collect();
        assert_eq!(prepared.grids, want, "{set} spatial_shapes");
        for (i, &(h, w)) in want.iter().enumerate() {
            let got = prepared.pixel_values.i(i).unwrap().narrow(0, 0, h * w).unwrap();
            let wantp = inp[&format!("{set}.pixel_values")].i(i).unwrap().narrow(0, 0, h * w).unwrap();
            assert_close(&format!("{set}.pixel_values[{i}]"), &got, &wantp, 1e-6);
        }
        let (img, dense) = model.encode_images_with_dense(&prepared).unwrap();
        assert_close(&format!("{set}.image_embeds"), &img, &exp[&format!("{set}.image_embeds")], TOL);
        for (i, d) in dense.iter().enumerate() {
            let (h, w) = want[i];
            let wantd = exp[&format!("{set}.dense_embeds")].i(i).unwrap().narrow(0, 0, h * w).unwrap();
            assert_close(&format!("{set}.dense[{i}]"), &d.features, &wantd, TOL);
        }
        if set != "dyn" {
            let reg = model.regions_from_dense(&dense, &prepared.sizes, &px).unwrap();
            let reg = Tensor::cat(&reg, 0).unwrap();
            assert_close(&format!("{set}.region_embeds"), &reg, &exp[&format!("{set}.region_embeds")], TOL);
        }
    }
}

/// Regression: the official processor picks one dynamic budget for the whole call (the max over its images),
/// so an image's embedding changed with its neighbours. Ours is per image.
#[test]
fn per_image_budget_does_not_depend_on_neighbours() {
    let Some(fx) = fixtures_dir() else { return };
    let model = Model::load(fx.join("fgclip2/model").to_str().unwrap(), &LoadOptions::default()).unwrap();
    let all = photos(&fx);
    let small = fgclip::fgclip_image::RgbImage { width: 100, height: 60, data: all[0].data[..100 * 60 * 3].to_vec() };
    let batch = vec![small.clone(), all[0].clone()];
    let prepared = model.prepare_images(&batch, PatchBudget::Dynamic).unwrap();
    let alone = model.prepare_images(&[small], PatchBudget::Dynamic).unwrap();
    assert_eq!(prepared.grids[0], alone.grids[0], "budget of the small image changed with its neighbour");
    let (b, bd) = model.encode_images_with_dense(&prepared).unwrap();
    let (a, ad) = model.encode_images_with_dense(&alone).unwrap();
    assert_close("small image: batch vs alone", &b.narrow(0, 0, 1).unwrap(), &a, 1e-5);
    assert_close("small image dense: batch vs alone", &bd[0].features, &ad[0].features, 1e-5);
}
