//! The papers' ablation in miniature (TRAINING.md, `experiments/synthetic_ablation.sh`), cut to CI size: a tiny
//! FG-CLIP trained from scratch on the synthetic fine-grained set with the global objective alone (stage1) and
//! with the full fine-grained objective (stage2), same seed, data and schedule; the held-out FG-OVD-style top-1
//! of the full objective must beat the global one by a clear margin. Sizes can be raised with
//! `FGCLIP_ABLATION_TRAIN` / `_EPOCHS` / `_SEED` to reproduce the script's numbers from the test.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fgclip::{LoadOptions, Model};
use fgclip_train::config::TrainConfig;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The CI-size synthetic set and its tiny model config, made once per test run and shared by the ablation and
/// the search-quality test (`search_quality.rs`), which also shares the stage-2 model trained here.
pub struct CiSet {
    pub data: PathBuf,
    pub tiny: PathBuf,
    pub epochs: usize,
    pub seed: usize,
    pub work: PathBuf,
}

pub fn ci_set() -> &'static CiSet {
    static SET: OnceLock<CiSet> = OnceLock::new();
    SET.get_or_init(|| {
        let (n_train, epochs, seed) = (
            env_or("FGCLIP_ABLATION_TRAIN", 400),
            env_or("FGCLIP_ABLATION_EPOCHS", 6),
            env_or("FGCLIP_ABLATION_SEED", 1),
        );
        let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ci_set_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        let data = work.join("data");
        let synth =
            fgclip_train::synth::SynthConfig { train: n_train, test: 100, size: 128, seed: 0, ..Default::default() };
        fgclip_train::synth::generate(&synth, &data, &|_| {}).unwrap();
        let tiny = fgclip_train::tiny::write_for_synth(&data, synth.size).unwrap();
        CiSet { data, tiny, epochs, seed, work }
    })
}

/// Trains `preset` on the CI set and returns the final checkpoint folder.
pub fn train(preset: &str) -> PathBuf {
    let set = ci_set();
    let out = set.work.join(preset);
    let q = |p: &Path| format!("\"{}\"", p.display());
    let sets = [
        format!("model.config={}", q(&set.tiny.join("config.json"))),
        format!("model.tokenizer={}", q(&set.tiny)),
        format!("data.train=[{}]", q(&set.data.join("train.json"))),
        format!("data.image_root={}", q(&set.data.join("images"))),
        format!("train.preset=\"{preset}\""),
        format!("train.seed={}", set.seed),
        "train.batch_size=32".into(),
        format!("train.epochs={}", set.epochs),
        "train.lr=1e-3".into(),
        "train.weight_decay=0.01".into(),
        "train.warmup_steps=10".into(),
        format!("output.dir={}", q(&out)),
        "output.save_every=0".into(),
    ];
    let cfg = TrainConfig::load(None, &sets).unwrap();
    let summary = fgclip_train::run::run(&cfg, false).unwrap();
    eprintln!("{preset}: {} updates", summary.steps);
    summary.final_dir
}

/// The stage-2 (full fine-grained objective) model of the CI set, trained once.
pub fn stage2() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| train("stage2"))
}

/// Held-out FG-OVD-style top-1 accuracy of a checkpoint.
fn score(model_dir: &Path, what: &str) -> f64 {
    let data = &ci_set().data;
    let model = Model::load(model_dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let file = fgclip_train::eval::read_fgovd(&data.join("test_fgovd.jsonl")).unwrap();
    let report = fgclip_train::eval::fgovd(&model, &file.lines, &data.join("images"), 64, &|_| {}).unwrap();
    eprintln!("{what}: {:.1}% of {} held-out boxes", 100.0 * report.accuracy, report.total);
    report.accuracy
}

#[test]
fn fine_grained_objective_beats_global_only_on_held_out_boxes() {
    let global = score(&train("stage1"), "stage1");
    let full = score(stage2(), "stage2");
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
