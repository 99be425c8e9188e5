//! The fused CPU path (`nn::fused`, chosen by the execution plan) computes the same features as candle's
//! reference ops, on every CPU kernel level this machine has, and the bf16 precision stays within its stated
//! error of f32.
//!
//! The parity tests run with the default plan (fused kernels); this file ties it to the reference path and
//! measures bf16.

use crate::common;
use common::*;
use fgclip::{Isa, Kernels, LoadOptions, Model, PatchBudget, Precision, TextWalk};

fn load_with(dir: &std::path::Path, kernels: Kernels, precision: Precision, isa: Option<Isa>) -> Model {
    Model::load(dir.to_str().unwrap(), &LoadOptions { kernels, precision, isa, ..Default::default() }).unwrap()
}

fn load(dir: &std::path::Path, fused: bool, precision: Precision) -> Model {
    load_with(dir, if fused { Kernels::Auto } else { Kernels::Reference }, precision, None)
}

struct Feats {
    image: candle_core::Tensor,
    dense: Vec<candle_core::Tensor>,
    short: candle_core::Tensor,
    long: candle_core::Tensor,
}

fn features(m: &Model, fx: &std::path::Path) -> Feats {
    let paths: Vec<_> =
        ["cat_dfclor.jpg", "part.jpg", "df_cups.png"].iter().map(|n| fx.join("images").join(n)).collect();
    let imgs = Model::load_images(&paths).unwrap();
    let prep = m.prepare_images(&imgs, PatchBudget::Fixed(128)).unwrap();
    let (image, dense) = m.encode_images_with_dense(&prep).unwrap();
    let texts = ["a black cat on a desk", "两只红色的杯子", "a wooden chair next to a glass table"];
    Feats {
        image,
        dense: dense.into_iter().map(|d| d.features).collect(),
        short: m.encode_texts(&texts, TextWalk::Short).unwrap(),
        long: m.encode_texts(&texts, TextWalk::Long).unwrap(),
    }
}

fn compare(what: &str, a: &Feats, b: &Feats, tol: f32, normalised: bool) {
    let f = |t: &candle_core::Tensor| if normalised { l2n(t) } else { t.clone() };
    assert_close(&format!("{what} image"), &f(&a.image), &f(&b.image), tol);
    assert_close(&format!("{what} short"), &f(&a.short), &f(&b.short), tol);
    assert_close(&format!("{what} long"), &f(&a.long), &f(&b.long), tol);
    for (i, (x, y)) in a.dense.iter().zip(&b.dense).enumerate() {
        assert_close(&format!("{what} dense[{i}]"), &f(x), &f(y), tol);
    }
}

#[test]
fn fast_path_equals_reference_path_in_f32() {
    let Some(fx) = fixtures_dir() else { return };
    for family in ["fgclip_v1", "fgclip2"] {
        let dir = fx.join(family).join("model");
        let fast = features(&load(&dir, true, Precision::F32), &fx);
        let slow = features(&load(&dir, false, Precision::F32), &fx);
        compare(&format!("{family} fast vs reference"), &fast, &slow, 1e-5, false);
    }
}

/// bf16 GEMM inputs carry 8 mantissa bits: unit-normalised embeddings move by ~1e-3 on these random tiny models.
#[test]
fn bf16_gemm_mode_stays_close_to_f32() {
    let Some(fx) = fixtures_dir() else { return };
    for family in ["fgclip_v1", "fgclip2"] {
        let dir = fx.join(family).join("model");
        let f32m = features(&load(&dir, true, Precision::F32), &fx);
        let bf16 = features(&load(&dir, true, Precision::Bf16), &fx);
        compare(&format!("{family} bf16 vs f32 (normalised)"), &bf16, &f32m, 2e-2, true);
    }
}

/// Every CPU kernel level this machine supports (forced as `FGCLIP_CPU` would) gives the reference features; on
/// an AVX-512 machine this covers the portable, AVX2 and AVX-512 paths in one run.
#[test]
fn every_cpu_kernel_level_equals_reference_path() {
    let Some(fx) = fixtures_dir() else { return };
    for family in ["fgclip_v1", "fgclip2"] {
        let dir = fx.join(family).join("model");
        let reference = features(&load(&dir, false, Precision::F32), &fx);
        for isa in Isa::all_supported() {
            let m = load_with(&dir, Kernels::Auto, Precision::F32, Some(isa));
            assert_eq!(m.plan().isa, isa);
            compare(&format!("{family} fused ({isa}) vs reference"), &features(&m, &fx), &reference, 1e-5, false);
            let bf16 = load_with(&dir, Kernels::Auto, Precision::Bf16, Some(isa));
            compare(
                &format!("{family} bf16 ({isa}) vs f32 (normalised)"),
                &features(&bf16, &fx),
                &reference,
                2e-2,
                true,
            );
        }
    }
}

/// The plan is made once, at load, and says what runs.
#[test]
fn plan_names_what_runs() {
    let Some(fx) = fixtures_dir() else { return };
    let dir = fx.join("fgclip2").join("model");
    let fused = load(&dir, true, Precision::F32);
    let plan: std::collections::HashMap<_, _> = fused.plan().describe().into_iter().collect();
    assert!(plan["blocks"].starts_with("fused CPU block, f32 GEMM"), "{plan:?}");
    assert_eq!(plan["precision"], "f32");
    let blocks = fused.towers().describe_blocks();
    assert!(blocks.iter().all(|(_, how)| how.starts_with("fused block")), "{blocks:?}");
    let reference = load(&dir, false, Precision::F32);
    assert!(reference.towers().describe_blocks().iter().all(|(_, how)| how == "layers"));
    // bf16 with the reference kernels has no meaning on the CPU: a clear error, not a silent f32 run.
    let opts = LoadOptions { kernels: Kernels::Reference, precision: Precision::Bf16, ..Default::default() };
    let err = Model::load(dir.to_str().unwrap(), &opts).err().expect("bf16 + reference must fail");
    assert!(err.to_string().contains("reference kernels are f32 only"), "{err}");
}
