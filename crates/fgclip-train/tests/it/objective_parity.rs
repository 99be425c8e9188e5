//! The whole training forward against the official `FGCLIPModel.forward` / `FG_CLIP2_Model.forward` on one
//! collated batch (fixtures/losses: `v1_forward`, `v2_forward`): every loss term, the total, the rank
//! threshold after one and two steps, the toggled-objective runs, and the gradients of the logit scales.
//!
//! Tolerances: loss values 2e-5 relative + 1e-6 absolute (float32 through two towers, RoIAlign and the losses;
//! the fixtures' f64 re-evaluations differ from their f32 values by ~1e-6 relative), scale gradients 1e-4
//! (the loss-function tests' gradient budget).

use crate::common;
use candle_core::{DType, Device, Tensor};
use common::*;
use fgclip::hub::ModelFiles;
use fgclip_train::batch::Batch;
use fgclip_train::dist::SingleProcess;
use fgclip_train::objective::{forward, LossReport, LossWeights, ObjectiveConfig};
use fgclip_train::trainable::Trainable;

fn scalar(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

/// Loss weights set in the training TOML change the total term by term, around the official values.
#[test]
fn loss_weights_from_the_config_scale_each_term() {
    let Some(fx_dir) = fixtures_dir() else { return };
    for (family, file) in [("fgclip_v1", "v1_forward"), ("fgclip2", "v2_forward")] {
        let fx = load_tensors(&fx_dir.join(format!("losses/{file}.safetensors")));
        let model =
            Trainable::from_files(&ModelFiles::from_dir(fx_dir.join(format!("{family}/model"))).unwrap(), &Device::Cpu)
                .unwrap();
        let batch = fixture_batch(&fx);
        let base = run(&model, &batch, ObjectiveConfig::full(), 0.0);
        // The papers' values, written out, give the default run bit for bit.
        let (v1, v2) = (fgclip::loss::V1Weights::OFFICIAL, fgclip::loss::V2Weights::OFFICIAL);
        let explicit = if family == "fgclip_v1" {
            LossWeights {
                long: Some(v1.long),
                short: Some(v1.short),
                region: Some(v1.region),
                hard: Some(v1.hard),
                ..Default::default()
            }
        } else {
            LossWeights {
                long: Some(v2.long),
                region: Some(v2.region),
                tic: Some(v2.tic),
                hard: Some(v2.hard),
                ..Default::default()
            }
        };
        let same = run(&model, &batch, ObjectiveConfig { weights: explicit, ..ObjectiveConfig::full() }, 0.0);
        assert_eq!(same.total, base.total, "{family}: explicit paper weights");
        // Doubling the long-caption weight adds the long loss once more; a zero hard weight removes the hard term.
        let w = LossWeights { long: Some(2.0), hard: Some(0.0), ..Default::default() };
        let r = run(&model, &batch, ObjectiveConfig { weights: w, ..ObjectiveConfig::full() }, 0.0);
        let hard_w = if family == "fgclip_v1" { v1.hard } else { v2.hard };
        let want = base.total + base.global_long.unwrap() - (hard_w as f32) * base.hard.unwrap();
        assert!((r.total - want).abs() <= 1e-5 * want.abs().max(1.0), "{family}: total {} vs {want}", r.total);
        assert_eq!((r.global_long, r.hard), (base.global_long, base.hard), "{family}: reported terms stay unweighted");
    }
}

fn close(what: &str, got: f32, want: f32) {
    let tol = 2e-5 * want.abs() + 1e-6;
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, official {want} (|Δ| = {:.3e} > {tol:.3e})",
        (got - want).abs()
    );
    eprintln!("{what}: |Δ| = {:.2e}", (got - want).abs());
}

fn run(model: &Trainable, batch: &Batch, cfg: ObjectiveConfig, threshold: f32) -> LossReport {
    forward(model, batch, &cfg, threshold, &SingleProcess).unwrap().report
}

fn grad_of(model: &Trainable, batch: &Batch, name: &str) -> f32 {
    let out = forward(model, batch, &ObjectiveConfig::full(), 0.0, &SingleProcess).unwrap();
    let grads = out.backward.backward().unwrap();
    scalar(grads.get(model.var(name).unwrap().as_tensor()).expect("gradient"))
}

#[test]
fn fgclip1_training_forward_matches_official() {
    let Some(fx_dir) = fixtures_dir() else { return };
    let fx = load_tensors(&fx_dir.join("losses/v1_forward.safetensors"));
    let files = ModelFiles::from_dir(fx_dir.join("fgclip_v1/model")).unwrap();
    let model = Trainable::from_files(&files, &Device::Cpu).unwrap();
    for p in ["logit_scale", "logit_scale_finegraind", "logit_scale_hardneg"] {
        close(&format!("param {p}"), scalar(model.var(p).unwrap().as_tensor()), scalar(&fx[&format!("fwd.param.{p}")]));
    }
    let batch = fixture_batch(&fx);

    let r = run(&model, &batch, ObjectiveConfig::full(), 0.0);
    close("total", r.total, scalar(&fx["fwd.loss"]));
    close("long", r.global_long.unwrap(), scalar(&fx["fwd.loss_long"]));
    close("short", r.global_short, scalar(&fx["fwd.loss_short"]));
    close("region", r.region.unwrap(), scalar(&fx["fwd.loss_region"]));
    close("hard", r.hard.unwrap(), scalar(&fx["fwd.loss_hard"]));
    assert_eq!((r.boxes, r.hard_boxes, r.dropped_boxes), (11, 6, 0), "valid boxes (manifest notes: M=11, Nh=6)");

    let g = run(&model, &batch, ObjectiveConfig::global_only(), 0.0);
    close("toggle global", g.total, scalar(&fx["fwd.toggle.global"]));
    let b = run(&model, &batch, ObjectiveConfig { hard: false, ..ObjectiveConfig::full() }, 0.0);
    close("toggle box only", b.total, scalar(&fx["fwd.toggle.box_only"]));
    let h = run(&model, &batch, ObjectiveConfig { region: false, ..ObjectiveConfig::full() }, 0.0);
    close("toggle hard only", h.total, scalar(&fx["fwd.toggle.hard_only"]));

    for p in ["logit_scale", "logit_scale_finegraind", "logit_scale_hardneg"] {
        let got = grad_of(&model, &batch, p);
        let want = scalar(&fx[&format!("fwd.grad.{p}")]);
        assert!((got - want).abs() <= 1e-4, "d loss / d {p}: got {got}, official {want}");
    }
}

#[test]
fn fgclip2_training_forward_matches_official() {
    let Some(fx_dir) = fixtures_dir() else { return };
    let fx = load_tensors(&fx_dir.join("losses/v2_forward.safetensors"));
    let files = ModelFiles::from_dir(fx_dir.join("fgclip2/model")).unwrap();
    let model = Trainable::from_files(&files, &Device::Cpu).unwrap();
    for p in ["logit_scale", "logit_bias", "logit_scale_finegraind", "logit_scale_hardneg"] {
        close(&format!("param {p}"), scalar(model.var(p).unwrap().as_tensor()), scalar(&fx[&format!("fwd.param.{p}")]));
    }
    let batch = fixture_batch(&fx);

    let r = run(&model, &batch, ObjectiveConfig::full(), 0.0);
    close("total", r.total, scalar(&fx["fwd.loss"]));
    close("sig long", r.global_long.unwrap(), scalar(&fx["fwd.loss_sig_long"]));
    close("sig short", r.global_short, scalar(&fx["fwd.loss_sig_short"]));
    close("region", r.region.unwrap(), scalar(&fx["fwd.loss_region"]));
    close("tic", r.tic.unwrap(), scalar(&fx["fwd.loss_tic"]));
    close("hard total", r.hard.unwrap(), scalar(&fx["fwd.loss_hard_total"]));
    close("hard pair", r.hard_pair.unwrap(), scalar(&fx["fwd.loss_hard_pair"]));
    close("hard cmr", r.hard_cmr.unwrap(), scalar(&fx["fwd.loss_hard_cmr"]));
    close("hard contrastive", r.hard_contrastive.unwrap(), scalar(&fx["fwd.loss_hard_contrastive"]));
    close("threshold after", r.threshold_next.unwrap(), scalar(&fx["fwd.thresholds_after"]));

    // Second step with the synchronised threshold.
    let s2 = run(&model, &batch, ObjectiveConfig::full(), r.threshold_next.unwrap());
    close("step 2 total", s2.total, scalar(&fx["fwd.step2.loss"]));
    close("step 2 cmr", s2.hard_cmr.unwrap(), scalar(&fx["fwd.step2.loss_hard_cmr"]));
    close("step 2 threshold", s2.threshold_next.unwrap(), scalar(&fx["fwd.step2.thresholds_after"]));

    let g = run(&model, &batch, ObjectiveConfig::global_only(), 0.0);
    close("toggle global", g.total, scalar(&fx["fwd.toggle.global"]));
    let b = run(&model, &batch, ObjectiveConfig { hard: false, ..ObjectiveConfig::full() }, 0.0);
    close("toggle box only", b.total, scalar(&fx["fwd.toggle.box_only"]));
    let h = run(&model, &batch, ObjectiveConfig { region: false, tic: false, ..ObjectiveConfig::full() }, 0.0);
    close("toggle hard only", h.total, scalar(&fx["fwd.toggle.hard_only"]));
    let no_long = Batch { text_long: None, ..batch.clone() };
    close(
        "no long captions",
        run(&model, &no_long, ObjectiveConfig::full(), 0.0).total,
        scalar(&fx["fwd.no_text_long.loss"]),
    );

    for p in ["logit_scale", "logit_bias", "logit_scale_finegraind", "logit_scale_hardneg"] {
        let got = grad_of(&model, &batch, p);
        let want = scalar(&fx[&format!("fwd.grad.{p}")]);
        assert!((got - want).abs() <= 1e-4, "d loss / d {p}: got {got}, official {want}");
    }
}
