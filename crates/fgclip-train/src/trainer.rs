//! The training loop: micro-batches → objective → gradient accumulation → (data-parallel gradient averaging) →
//! AdamW with warmup + cosine → logs, progress, checkpoints; exact resume from the newest checkpoint.
//!
//! Output folder:
//! * `checkpoint-<step>/`: `model.safetensors` (official keys), `config.json`, tokenizer files (loadable by
//!   `fgclip features` and by the official code), `optimizer.safetensors` (AdamW moments), `trainer_state.json`
//!   (update count, epoch, position in the epoch, FG-CLIP 2's rank threshold). Written to a temporary folder and
//!   renamed, so a kill never leaves a half-written checkpoint behind.
//! * `log.jsonl`: one line per update (step, epoch, lr, every loss term, samples/s).
//! * `final/`: the model at the end.
//!
//! Resume: the newest complete checkpoint restores weights, moments, step, θ and the data position; the data
//! order and every random choice of the collator derive from (seed, epoch, batch), so the continuation sees the
//! same batches and, on the CPU, the same loss curve as an uninterrupted run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{backprop::GradStore, DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::dist::Collective;
use crate::error::{Result, TrainError};
use crate::objective::{self, LossReport, ObjectiveConfig};
use crate::optim::{AdamW, AdamWConfig, Schedule};
use crate::trainable::Trainable;

/// A source of this rank's batches, epoch by epoch, able to restart at any batch of an epoch.
pub trait BatchSource {
    /// Batches per epoch for this rank.
    fn batches_per_epoch(&self) -> usize;
    /// Positions the source at batch `skip` of `epoch`.
    fn start_epoch(&mut self, epoch: usize, skip: usize) -> Result<()>;
    /// The next batch of the epoch, `None` at its end.
    fn next_batch(&mut self) -> Result<Option<Batch>>;
}

/// What a checkpoint records besides weights and moments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser updates done.
    pub step: usize,
    /// Epoch of the next batch.
    pub epoch: usize,
    /// Batches of that epoch already consumed.
    pub batch_in_epoch: usize,
    /// FG-CLIP 2's rank threshold θ for the next step.
    pub threshold: f32,
    pub seed: u64,
}

/// One line of `log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub step: usize,
    pub epoch: usize,
    pub lr: f64,
    pub loss: f32,
    pub samples_per_s: f64,
    pub terms: LossReport,
}

/// Everything the loop needs besides the model and the data.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub objective: ObjectiveConfig,
    pub adamw: AdamWConfig,
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub grad_accum: usize,
    pub warmup_steps: Option<usize>,
    pub warmup_ratio: Option<f64>,
    /// Parameters whose name starts with one of these stay fixed.
    pub frozen_prefixes: Vec<String>,
    pub out_dir: PathBuf,
    pub save_every: usize,
    pub keep_last: usize,
    pub log_every: usize,
    pub seed: u64,
    /// Show a progress bar (rank 0 only).
    pub progress: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: usize,
    pub last: Option<LogLine>,
    pub final_dir: PathBuf,
    pub resumed_from: Option<PathBuf>,
}

/// The parameter prefixes of a tower, for freezing.
pub fn tower_prefixes(family: fgclip::config::Family, tower: &str) -> Vec<String> {
    use fgclip::config::Family;
    let v: &[&str] = match (family, tower) {
        (Family::FgClip, "vision") => &["vision_model.", "visual_projection."],
        (Family::FgClip, "text") => &["text_model.", "text_projection.", "text_filip_projection."],
        (Family::FgClip2, "vision") => &["vision_model.", "dense_feature_head."],
        (Family::FgClip2, "text") => &["text_model.", "longtext_head.", "boxtext_head."],
        _ => &[],
    };
    v.iter().map(|s| s.to_string()).collect()
}

/// The newest complete checkpoint folder in `out_dir` (by step number), if any.
pub fn latest_checkpoint(out_dir: &Path) -> Option<(usize, PathBuf)> {
    let rd = std::fs::read_dir(out_dir).ok()?;
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: usize = name.strip_prefix("checkpoint-")?.parse().ok()?;
            let dir = e.path();
            dir.join("trainer_state.json").is_file().then_some((step, dir))
        })
        .max_by_key(|(s, _)| *s)
}

fn sum_grads(acc: Option<GradStore>, new: GradStore, vars: &[(String, Var)]) -> Result<GradStore> {
    let Some(mut acc) = acc else { return Ok(new) };
    for (_, v) in vars {
        if let Some(g) = new.get(v.as_tensor()) {
            let sum = match acc.get(v.as_tensor()) {
                Some(a) => (a + g)?,
                None => g.clone(),
            };
            acc.insert(v.as_tensor(), sum);
        }
    }
    Ok(acc)
}

/// Averages the gradients over ranks (DDP's all-reduce): one flat buffer in parameter order; a parameter that
/// got no gradient on a rank contributes zeros there.
fn average_grads(grads: &mut GradStore, vars: &[(String, Var)], coll: &dyn Collective) -> Result<()> {
    let world = coll.world();
    if world == 1 {
        return Ok(());
    }
    let mut flat: Vec<f32> = Vec::new();
    for (_, v) in vars {
        match grads.get(v.as_tensor()) {
            Some(g) => flat.extend(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => flat.extend(std::iter::repeat_n(0f32, v.elem_count())),
        }
    }
    let sum = coll.all_reduce_sum(&flat)?;
    let mut off = 0;
    for (_, v) in vars {
        let n = v.elem_count();
        let g = Tensor::from_vec(
            sum[off..off + n].iter().map(|x| x / world as f32).collect::<Vec<_>>(),
            v.dims(),
            v.device(),
        )?;
        grads.insert(v.as_tensor(), g.to_dtype(v.dtype())?);
        off += n;
    }
    Ok(())
}

fn save_checkpoint(dir: &Path, model: &Trainable, opt: &AdamW, state: &TrainerState) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    model.save(&tmp)?;
    opt.save(&tmp.join("optimizer.safetensors"))?;
    let json = serde_json::to_string_pretty(state).map_err(|e| TrainError::Config(e.to_string()))?;
    std::fs::write(tmp.join("trainer_state.json"), json)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&tmp, dir)?;
    Ok(())
}

fn prune_checkpoints(out_dir: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let mut all: Vec<(usize, PathBuf)> = std::fs::read_dir(out_dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let step: usize = e.file_name().into_string().ok()?.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    all.sort();
    let n = all.len();
    for (_, p) in all.into_iter().take(n.saturating_sub(keep)) {
        std::fs::remove_dir_all(p)?;
    }
    Ok(())
}

/// Keeps the log lines of steps ≤ `step` (a resumed run rewrites what came after its checkpoint).
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> =
        text.lines().filter(|l| serde_json::from_str::<LogLine>(l).map(|x| x.step <= step).unwrap_or(false)).collect();
    let mut s = kept.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    std::fs::write(path, s)?;
    Ok(())
}

/// Runs (or resumes) training of `model` on `data` for this rank. Rank 0 writes logs and checkpoints.
pub fn train(
    model: &Trainable,
    data: &mut dyn BatchSource,
    cfg: &LoopConfig,
    coll: &dyn Collective,
) -> Result<RunSummary> {
    let rank0 = coll.rank() == 0;
    let vars = model.named_vars();
    let trainable: Vec<(String, Var)> =
        vars.iter().filter(|(n, _)| !cfg.frozen_prefixes.iter().any(|p| n.starts_with(p.as_str()))).cloned().collect();
    if trainable.is_empty() {
        return Err(TrainError::Config("every parameter is frozen".into()));
    }
    let mut opt = AdamW::new(trainable.clone(), cfg.adamw)?;

    let per_epoch = data.batches_per_epoch() / cfg.grad_accum;
    if per_epoch == 0 {
        return Err(TrainError::Config(format!(
            "not one update per epoch: {} batches per epoch for grad_accum {} (more data or a smaller batch)",
            data.batches_per_epoch(),
            cfg.grad_accum
        )));
    }
    let total = (per_epoch * cfg.epochs).min(cfg.max_steps.unwrap_or(usize::MAX));
    let warmup = cfg.warmup_steps.unwrap_or_else(|| (cfg.warmup_ratio.unwrap_or(0.0) * total as f64).ceil() as usize);
    let schedule = Schedule { base_lr: cfg.adamw.lr, warmup_steps: warmup, total_steps: total };

    std::fs::create_dir_all(&cfg.out_dir)?;
    let log_path = cfg.out_dir.join("log.jsonl");
    let mut state = TrainerState { seed: cfg.seed, ..Default::default() };
    let mut resumed_from = None;
    if let Some((_, dir)) = latest_checkpoint(&cfg.out_dir) {
        let text = std::fs::read_to_string(dir.join("trainer_state.json"))?;
        state = serde_json::from_str(&text)
            .map_err(|e| TrainError::Checkpoint { path: dir.join("trainer_state.json"), msg: e.to_string() })?;
        if state.seed != cfg.seed {
            return Err(TrainError::Checkpoint {
                path: dir.clone(),
                msg: format!(
                    "was trained with seed {}, this run has seed {} (use another output dir)",
                    state.seed, cfg.seed
                ),
            });
        }
        model.load_state(&dir.join("model.safetensors"))?;
        opt.load(&dir.join("optimizer.safetensors"))?;
        if rank0 {
            truncate_log(&log_path, state.step)?;
        }
        tracing::info!("resuming from {} at step {}", dir.display(), state.step);
        resumed_from = Some(dir);
    } else if rank0 {
        let _ = std::fs::remove_file(&log_path);
    }

    let bar = (rank0 && cfg.progress).then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} updates  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_position(state.step as u64);
        b
    });
    let mut log =
        if rank0 { Some(std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?) } else { None };
    let mut last = None;

    'epochs: while state.step < total && state.epoch < cfg.epochs {
        data.start_epoch(state.epoch, state.batch_in_epoch)?;
        loop {
            if state.step >= total {
                break 'epochs;
            }
            let t0 = Instant::now();
            let mut grads: Option<GradStore> = None;
            let mut reports: Vec<LossReport> = Vec::new();
            let mut samples = 0usize;
            for _ in 0..cfg.grad_accum {
                let Some(batch) = data.next_batch()? else { break };
                samples += batch.len();
                let out = objective::forward(model, &batch, &cfg.objective, state.threshold, coll)?;
                if !out.report.total.is_finite() {
                    return Err(TrainError::Objective(format!(
                        "loss is {} at step {} (epoch {}, batch {}): {:?}",
                        out.report.total, state.step, state.epoch, state.batch_in_epoch, out.report
                    )));
                }
                grads = Some(sum_grads(grads, out.backward.backward()?, &trainable)?);
                state.batch_in_epoch += 1;
                // θ moves after every forward, as in the official model (it is updated inside `forward`).
                if let Some(t) = out.report.threshold_next {
                    state.threshold = t;
                }
                reports.push(out.report);
            }
            if reports.len() < cfg.grad_accum {
                // End of the epoch: an incomplete accumulation is dropped, like a dropped last batch.
                state.epoch += 1;
                state.batch_in_epoch = 0;
                continue 'epochs;
            }
            let mut grads = grads.expect("at least one micro-batch");
            average_grads(&mut grads, &trainable, coll)?;
            let lr = schedule.lr(state.step);
            opt.step(&grads, lr, 1.0 / cfg.grad_accum as f64)?;
            state.step += 1;

            let mean_loss = reports.iter().map(|r| r.total).sum::<f32>() / reports.len() as f32;
            let secs = t0.elapsed().as_secs_f64();
            let line = LogLine {
                step: state.step,
                epoch: state.epoch,
                lr,
                loss: mean_loss,
                samples_per_s: (samples * coll.world()) as f64 / secs.max(1e-9),
                terms: reports.pop().unwrap_or_default(),
            };
            if let Some(f) = log.as_mut() {
                if state.step.is_multiple_of(cfg.log_every.max(1)) || state.step == total {
                    let s = serde_json::to_string(&line).map_err(|e| TrainError::Config(e.to_string()))?;
                    writeln!(f, "{s}")?;
                    f.flush()?;
                }
            }
            if let Some(b) = &bar {
                b.set_position(state.step as u64);
                b.set_message(format!("loss {:.4}  lr {:.2e}  {:.1} samples/s", mean_loss, lr, line.samples_per_s));
            }
            last = Some(line);
            if state.batch_in_epoch >= per_epoch * cfg.grad_accum {
                state.epoch += 1;
                state.batch_in_epoch = 0;
            }
            if rank0 && cfg.save_every > 0 && state.step.is_multiple_of(cfg.save_every) {
                save_checkpoint(&cfg.out_dir.join(format!("checkpoint-{}", state.step)), model, &opt, &state)?;
                prune_checkpoints(&cfg.out_dir, cfg.keep_last)?;
            }
            if state.batch_in_epoch == 0 {
                continue 'epochs;
            }
        }
    }
    let final_dir = cfg.out_dir.join("final");
    if rank0 {
        save_checkpoint(&cfg.out_dir.join(format!("checkpoint-{}", state.step)), model, &opt, &state)?;
        prune_checkpoints(&cfg.out_dir, cfg.keep_last)?;
        model.save(&final_dir)?;
    }
    if let Some(b) = bar {
        b.finish();
    }
    Ok(RunSummary { steps: state.step, last, final_dir, resumed_from })
}
