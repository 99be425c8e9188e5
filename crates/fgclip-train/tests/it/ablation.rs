//! The papers' ablation in miniature (TRAINING.md, `experiments/synthetic_ablation.sh`), cut to CI size: a tiny
//! FG-CLIP trained from scratch on the synthetic fine-grained set with the global objective alone (stage1) and
//! with the full fine-grained objective (stage2), same seed, data and schedule; the held-out FG-OVD-style top-1
//! of the full objective must beat the global one by a clear margin. Sizes can be raised with
//! `FGCLIP_ABLATION_TRAIN` / `_EPOCHS` / `_SEED` to reproduce the script's numbers from the test.

use std::path::Path;

use fgclip::{LoadOptions, Model};
use fgclip_train::config::TrainConfig;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Trains one preset and returns its held-out FG-OVD-style top-1 accuracy.
fn train_and_score(data: &Path, tiny: &Path, preset: &str, seed: usize, epochs: usize, out: &Path) -> f64 {
    let q = |p: &Path| format!("\"{}\"", p.display());
    let sets = [
        format!("model.config={}", q(&tiny.join("config.json"))),
        format!("model.tokenizer={}", q(tiny)),
        format!("data.train=[{}]", q(&data.join("train.json"))),
        format!("data.image_root={}", q(&data.join("images"))),
        format!("train.preset=\"{preset}\""),
        format!("train.seed={seed}"),
        "train.batch_size=32".into(),
        format!("train.epochs={epochs}"),
        "train.lr=1e-3".into(),
        "train.weight_decay=0.01".into(),
        "train.warmup_steps=10".into(),
        format!("output.dir={}", q(out)),
        "output.save_every=0".into(),
    ];
    let cfg = TrainConfig::load(None, &sets).unwrap();
    let summary = fgclip_train::run::run(&cfg, false).unwrap();
    let model = Model::load(summary.final_dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let file = fgclip_train::eval::read_fgovd(&data.join("test_fgovd.jsonl")).unwrap();
    let report = fgclip_train::eval::fgovd(&model, &file.lines, &data.join("images"), 64, &|_| {}).unwrap();
    eprintln!(
        "{preset}: {:.1}% of {} held-out boxes after {} updates",
        100.0 * report.accuracy,
        report.total,
        summary.steps
    );
    report.accuracy
}

#[test]
fn fine_grained_objective_beats_global_only_on_held_out_boxes() {
    let (n_train, epochs, seed) =
        (env_or("FGCLIP_ABLATION_TRAIN", 400), env_or("FGCLIP_ABLATION_EPOCHS", 6), env_or("FGCLIP_ABLATION_SEED", 1));
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let synth =
        fgclip_train::synth::SynthConfig { train: n_train, test: 100, size: 128, seed: 0, ..Default::default() };
    fgclip_train::synth::generate(&synth, &data, &|_| {}).unwrap();
    let tiny = fgclip_train::tiny::write_for_synth(&data, synth.size).unwrap();

    let global = train_and_score(&data, &tiny, "stage1", seed, epochs, &tmp.path().join("stage1"));
    let full = train_and_score(&data, &tiny, "stage2", seed, epochs, &tmp.path().join("stage2"));
    // At this size (400 images, 72 updates) four seeds gave global 1.5 % ± 0.6 and full 11.5 % ± 2.1, the
    // smallest gap 8.6 points (TRAINING.md); 5 points leaves room for the spread while a broken regional or
    // hard-negative term (gap ≈ 0) still fails. (An uninformed model that reads captions scores ≈ 0 %, not
    // 1/11: the true caption must beat ten one-attribute swaps at once; TRAINING.md.)
    const MARGIN: f64 = 0.05;
    assert!(
        full - global >= MARGIN,
        "full objective {:.1}% vs global only {:.1}%: the fine-grained terms should win by ≥ {:.0} points",
        100.0 * full,
        100.0 * global,
        100.0 * MARGIN
    );
}
