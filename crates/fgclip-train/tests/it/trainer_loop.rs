//! The training loop's mechanics on the fixture FG-CLIP model and the official collator's batch: checkpoints in
//! the official layout that `fgclip::Model` loads with the same features as the in-memory model, exact resume
//! after a crash (same loss curve, bit for bit on the CPU), gradient accumulation, frozen towers, NaN guard.

use crate::common;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::*;
use fgclip::hub::ModelFiles;
use fgclip::{LoadOptions, Model};
use fgclip_train::batch::Batch;
use fgclip_train::dist::SingleProcess;
use fgclip_train::error::{Result, TrainError};
use fgclip_train::objective::ObjectiveConfig;
use fgclip_train::optim::AdamWConfig;
use fgclip_train::trainable::Trainable;
use fgclip_train::trainer::{train, BatchSource, LogLine, LoopConfig};

/// Yields the fixture batch, with its samples rotated by the batch index so steps differ; `fail_at` simulates a
/// crash (an error) when that batch of the run is requested.
struct FixtureSource {
    batch: Batch,
    per_epoch: usize,
    pos: usize,
    end: usize,
    fail_at: Option<usize>,
    served: usize,
}

impl BatchSource for FixtureSource {
    fn batches_per_epoch(&self) -> usize {
        self.per_epoch
    }
    fn start_epoch(&mut self, epoch: usize, skip: usize) -> Result<()> {
        self.pos = epoch * self.per_epoch + skip;
        self.end = (epoch + 1) * self.per_epoch;
        Ok(())
    }
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        if self.fail_at == Some(self.served) {
            return Err(TrainError::Config("simulated crash".into()));
        }
        if self.pos >= self.end {
            return Ok(None);
        }
        self.served += 1;
        let k = self.pos;
        self.pos += 1;
        // Rotate the samples' images and captions by the batch's position: every batch differs, reproducibly.
        let img = &self.batch.pixels.pixel_values;
        let n = img.dim(0)?;
        let order: Vec<u32> = (0..n).map(|i| ((i + k) % n) as u32).collect();
        let idx = Tensor::new(order.as_slice(), &Device::Cpu)?;
        let mut b = self.batch.clone();
        b.pixels.pixel_values = img.index_select(&idx, 0)?;
        b.text_short = b.text_short.index_select(&idx, 0)?;
        b.text_long = b.text_long.as_ref().map(|t| t.index_select(&idx, 0)).transpose()?;
        Ok(Some(b))
    }
}

fn loop_cfg(out: &Path, epochs: usize, save_every: usize) -> LoopConfig {
    LoopConfig {
        objective: ObjectiveConfig::full(),
        adamw: AdamWConfig { lr: 1e-3, ..AdamWConfig::fgclip() },
        epochs,
        max_steps: None,
        grad_accum: 1,
        warmup_steps: Some(1),
        warmup_ratio: None,
        frozen_prefixes: vec![],
        out_dir: out.to_path_buf(),
        save_every,
        keep_last: 0,
        log_every: 1,
        seed: 7,
        progress: false,
    }
}

fn setup() -> Option<(ModelFiles, Batch)> {
    let fx_dir = fixtures_dir()?;
    let fx = load_tensors(&fx_dir.join("losses/v1_forward.safetensors"));
    Some((ModelFiles::from_dir(fx_dir.join("fgclip_v1/model")).unwrap(), fixture_batch(&fx)))
}

fn source(batch: &Batch, per_epoch: usize, fail_at: Option<usize>) -> FixtureSource {
    FixtureSource { batch: batch.clone(), per_epoch, pos: 0, end: 0, fail_at, served: 0 }
}

fn log_lines(out: &Path) -> Vec<LogLine> {
    std::fs::read_to_string(out.join("log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn resume_after_a_crash_continues_the_same_loss_curve() {
    let Some((files, batch)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();

    // Uninterrupted: 2 epochs × 3 batches = 6 updates.
    let a = tmp.path().join("a");
    let model = Trainable::from_files(&files, &Device::Cpu).unwrap();
    let sum = train(&model, &mut source(&batch, 3, None), &loop_cfg(&a, 2, 2), &SingleProcess).unwrap();
    assert_eq!(sum.steps, 6);
    let full = log_lines(&a);
    assert_eq!(full.iter().map(|l| l.step).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert!(
        full[5].loss < full[0].loss,
        "6 steps at lr 1e-3 should lower the loss: {} → {}",
        full[0].loss,
        full[5].loss
    );

    // Crash while fetching the 6th batch (after checkpoint-4 was written), then resume from scratch.
    let b = tmp.path().join("b");
    let model = Trainable::from_files(&files, &Device::Cpu).unwrap();
    let err = train(&model, &mut source(&batch, 3, Some(5)), &loop_cfg(&b, 2, 2), &SingleProcess).unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    assert!(b.join("checkpoint-4/model.safetensors").is_file());
    let model = Trainable::from_files(&files, &Device::Cpu).unwrap(); // fresh process: initial weights again
    let sum = train(&model, &mut source(&batch, 3, None), &loop_cfg(&b, 2, 2), &SingleProcess).unwrap();
    assert_eq!(sum.resumed_from.as_deref(), Some(b.join("checkpoint-4").as_path()));
    let resumed = log_lines(&b);
    assert_eq!(resumed.len(), 6, "the log keeps steps 1-4 and gets 5-6 again");
    for (x, y) in full.iter().zip(&resumed) {
        assert_eq!((x.step, x.epoch, x.lr), (y.step, y.epoch, y.lr));
        assert_eq!(x.loss.to_bits(), y.loss.to_bits(), "step {}: loss {} vs resumed {}", x.step, x.loss, y.loss);
    }
    // The final weights agree bit for bit.
    let wa = candle_core::safetensors::load(a.join("final/model.safetensors"), &Device::Cpu).unwrap();
    let wb = candle_core::safetensors::load(b.join("final/model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(wa.len(), wb.len());
    for (k, t) in &wa {
        assert_eq!(max_abs_diff(t, &wb[k]), 0.0, "{k}");
    }
}

#[test]
fn saved_checkpoint_loads_in_the_inference_api_with_the_same_features() {
    let Some((files, batch)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let model = Trainable::from_files(&files, &Device::Cpu).unwrap();
    let sum = train(&model, &mut source(&batch, 2, None), &loop_cfg(&out, 1, 0), &SingleProcess).unwrap();
    assert_eq!(sum.steps, 2);

    let loaded = Model::load(sum.final_dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let m = model.towers.as_any().downcast_ref::<fgclip::fgclip1::FgClip>().expect("an FG-CLIP model");
    let px = &batch.pixels.pixel_values;
    let g = m.cfg.vision.grid();
    let prepared = fgclip::PreparedImages {
        pixel_values: px.clone(),
        valid: None,
        grids: vec![(g, g); 3],
        sizes: vec![(112, 112); 3],
    };
    let got = loaded.encode_images(&prepared).unwrap();
    let want = m.image_features(px).unwrap();
    let d = max_abs_diff(&got, &want);
    assert!(d <= 1e-5, "image features of the saved checkpoint differ by {d}");
    let got_t = loaded.encode_tokens(&batch.text_short, None, fgclip::TextWalk::Short).unwrap();
    let want_t = m.text_features(&batch.text_short, false).unwrap();
    assert!(max_abs_diff(&got_t, &want_t) <= 1e-5);
    // The weights changed from the initial checkpoint, and the official extra scales are saved.
    let init = candle_core::safetensors::load(&files.weights[0], &Device::Cpu).unwrap();
    let saved = candle_core::safetensors::load(sum.final_dir.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(max_abs_diff(&init["visual_projection.weight"], &saved["visual_projection.weight"]) > 0.0);
    // What the official `from_pretrained` reads: exactly the official checkpoint's tensors (names, shapes,
    // dtypes: nothing missing, nothing unexpected) and the same config.json.
    let mut names: Vec<&String> = saved.keys().collect();
    names.sort();
    let mut want_names: Vec<&String> = init.keys().collect();
    want_names.sort();
    assert_eq!(names, want_names, "saved tensor names differ from the official checkpoint's");
    for (k, t) in &init {
        assert_eq!((saved[k].dims(), saved[k].dtype()), (t.dims(), t.dtype()), "{k}");
    }
    let json = |p: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    assert_eq!(json(&sum.final_dir.join("config.json")), json(&files.config), "config.json changed");
    assert!(sum.final_dir.join("tokenizer.json").is_file());
}

#[test]
fn frozen_tower_does_not_move_and_accumulation_counts_micro_batches() {
    let Some((files, batch)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("frozen");
    let model = Trainable::from_files(&files, &Device::Cpu).unwrap();
    let before = model.state_dict().unwrap();
    let mut cfg = loop_cfg(&out, 1, 0);
    cfg.frozen_prefixes = fgclip_train::trainer::tower_prefixes(model.family(), "vision");
    cfg.grad_accum = 2;
    let sum = train(&model, &mut source(&batch, 4, None), &cfg, &SingleProcess).unwrap();
    assert_eq!(sum.steps, 2, "4 batches with accumulation 2 = 2 updates");
    let after = model.state_dict().unwrap();
    let mut moved_text = 0;
    for (k, t) in &before {
        let d = max_abs_diff(t, &after[k]);
        if k.starts_with("vision_model.") || k.starts_with("visual_projection.") {
            assert_eq!(d, 0.0, "frozen {k} moved by {d}");
        } else if k.starts_with("text_model.") && d > 0.0 {
            moved_text += 1;
        }
    }
    assert!(moved_text > 10, "the text tower should train ({moved_text} tensors moved)");
}

#[test]
fn a_nan_loss_stops_with_a_named_error() {
    let Some((files, batch)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = Trainable::from_files(&files, &Device::Cpu).unwrap();
    // A NaN pixel poisons the image features and so the loss.
    let mut bad = batch.clone();
    bad.pixels.pixel_values = Tensor::full(f32::NAN, batch.pixels.pixel_values.dims(), &Device::Cpu).unwrap();
    let err = train(&model, &mut source(&bad, 2, None), &loop_cfg(&tmp.path().join("nan"), 1, 0), &SingleProcess)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("loss is NaN") && msg.contains("step 0"), "{msg}");
}

/// FG-CLIP 2's saved model holds the official checkpoint's tensors (names, shapes, dtypes, values) and config.
#[test]
fn fgclip2_saves_the_official_tensor_set() {
    let Some(fx_dir) = fixtures_dir() else { return };
    let files = ModelFiles::from_dir(fx_dir.join("fgclip2/model")).unwrap();
    let model = Trainable::from_files(&files, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save(tmp.path()).unwrap();
    let init = candle_core::safetensors::load(&files.weights[0], &Device::Cpu).unwrap();
    let saved = candle_core::safetensors::load(tmp.path().join("model.safetensors"), &Device::Cpu).unwrap();
    // Plus the two stage-2 scales, which the official trainer attaches as parameters (docs/models.md#fg-clip-2-checkpoint-layout) and so saves;
    // the released checkpoint has none.
    let stage2 = ["logit_scale_finegraind", "logit_scale_hardneg"];
    let mut names: Vec<&str> = saved.keys().map(String::as_str).collect();
    names.sort();
    let mut want: Vec<&str> = init.keys().map(String::as_str).chain(stage2).collect();
    want.sort();
    assert_eq!(names, want);
    for (k, t) in &init {
        assert_eq!((saved[k].dims(), saved[k].dtype()), (t.dims(), t.dtype()), "{k}");
        assert_eq!(max_abs_diff(&saved[k], t), 0.0, "{k} changed by a load/save round trip");
    }
    let json = |p: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    assert_eq!(json(&tmp.path().join("config.json")), json(&files.config));
    let loaded = Model::load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(loaded.family(), fgclip::config::Family::FgClip2);
}
