//! Epochs of batches for one rank: the sampling order, rank sharding, parallel image work and prefetching.
//!
//! Mirrors the official samplers: FG-CLIP 2's `BilingualSampler` (`fgclip2/train/local_trainer.py`,
//! `get_bilingual_grouped_indices`: EN and CN indices in dataset order, cut into monolingual mega-batches of W·B,
//! mega-batches shuffled; accelerate then gives rank r the r-th B-slice of each) and, for FG-CLIP, HF Trainer's
//! shuffled sampler with `drop_last` (an all-gather needs equal batches on every rank). Differences, on purpose:
//! * the order of epoch e comes from (seed, e), not from torch's global generator, and the box-caption choice of
//!   step s from (seed, e, s, rank), so a run resumed at (e, s) collates exactly the batches it would have;
//! * only an *incomplete* last mega-batch of each language is dropped (the official `[:-1]` also drops a
//!   complete one), and a dataset with one language only is accepted.
//!
//! Images are decoded and preprocessed with rayon inside [`Collator::collate_items`]; a background thread keeps
//! `prefetch` batches ready in a bounded channel so the trainer does not wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::Device;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, Collator};
use crate::data::{DataIssue, Dataset, Lang, Policy};
use crate::error::{Result, TrainError};

/// How an epoch's global batches are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// A seeded shuffle of all records, cut into global batches of W·B (incomplete last one dropped).
    #[default]
    Random,
    /// FG-CLIP 2 `BilingualSampler`: monolingual mega-batches of W·B consecutive records of each language
    /// (dataset order, not shuffled within), incomplete ones dropped, the mega-batch order shuffled.
    Bilingual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Per-rank batch size B.
    pub batch_size: usize,
    /// Number of ranks W.
    pub world_size: usize,
    /// This rank r (takes the r-th B-slice of every global batch).
    pub rank: usize,
    pub seed: u64,
    pub sampler: Sampler,
    /// Batches prepared ahead on a background thread; 0 = collate in the caller's thread on demand.
    pub prefetch: usize,
    /// Unreadable images: black stand-in + [`DataIssue`] (Skip) or an error (Reject).
    pub policy: Policy,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 1,
            world_size: 1,
            rank: 0,
            seed: 0,
            sampler: Sampler::Random,
            prefetch: 2,
            policy: Policy::Skip,
        }
    }
}

/// splitmix64: a strong 64-bit mixer, to derive independent seeds from (seed, purpose, epoch, step).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn derive_rng(parts: &[u64]) -> ChaCha8Rng {
    let mut h = 0x6A09_E667_F3BC_C908u64;
    for &p in parts {
        h = splitmix(h ^ splitmix(p));
    }
    let mut seed = [0u8; 32];
    for (k, chunk) in seed.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&splitmix(h.wrapping_add(k as u64)).to_le_bytes());
    }
    ChaCha8Rng::from_seed(seed)
}

const TAG_ORDER: u64 = 0x006F_7264_6572; // "order"
const TAG_BOXES: u64 = 0x0062_6F78_6573; // "boxes"

/// The RNG of the box-caption choices of batch `step` of `epoch` on `rank` (ChaCha8, a portable stream).
pub fn batch_rng(seed: u64, epoch: usize, step: usize, rank: usize) -> ChaCha8Rng {
    let mut r = derive_rng(&[seed, TAG_BOXES, epoch as u64, step as u64]);
    r.set_stream(rank as u64);
    r
}

/// Uniform in `0..n` by multiply-shift (bias < n / 2^64; fixed here so orders never change with rand versions).
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i + 1);
        v.swap(i, j);
    }
}

/// Global batches per epoch for `langs` (one entry per record) at global batch size `global`.
pub fn global_batches_per_epoch(langs: &[Lang], sampler: Sampler, global: usize) -> usize {
    if global == 0 {
        return 0;
    }
    match sampler {
        Sampler::Random => langs.len() / global,
        Sampler::Bilingual => {
            let en = langs.iter().filter(|&&l| l == Lang::En).count();
            (en / global) + ((langs.len() - en) / global)
        }
    }
}

/// The record indices of epoch `epoch`, global batch after global batch (`global` indices each, complete
/// batches only). A pure function of its arguments.
pub fn epoch_order(langs: &[Lang], sampler: Sampler, global: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = derive_rng(&[seed, TAG_ORDER, epoch as u64]);
    if global == 0 {
        return Vec::new();
    }
    match sampler {
        Sampler::Random => {
            let mut idx: Vec<usize> = (0..langs.len()).collect();
            shuffle(&mut idx, &mut rng);
            idx.truncate(langs.len() / global * global);
            idx
        }
        Sampler::Bilingual => {
            let of = |want: Lang| -> Vec<usize> { (0..langs.len()).filter(|&i| langs[i] == want).collect() };
            let (cn, en) = (of(Lang::Cn), of(Lang::En));
            // Official concatenation order: CN mega-batches, then EN, then one permutation of the whole list.
            let mut mega: Vec<&[usize]> = cn.chunks_exact(global).chain(en.chunks_exact(global)).collect();
            shuffle(&mut mega, &mut rng);
            mega.concat()
        }
    }
}

type Produced = Result<(Batch, Vec<DataIssue>)>;

struct Worker {
    rx: Option<Receiver<Produced>>,
    cancel: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    fn stop(&mut self) -> Option<String> {
        self.cancel.store(true, Ordering::Relaxed);
        self.rx = None; // a send blocked on a full channel now fails and the thread ends
        let h = self.handle.take()?;
        match h.join() {
            Ok(()) => None,
            Err(p) => Some(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        }
    }
}

/// Everything a batch needs, shareable with the prefetch thread.
#[derive(Clone)]
struct Shared {
    dataset: Arc<Dataset>,
    collator: Arc<Collator>,
    cfg: LoaderConfig,
    device: Device,
}

impl Shared {
    fn produce(&self, order: &[usize], epoch: usize, step: usize) -> Produced {
        let (b, r) = (self.cfg.batch_size, self.cfg.rank);
        let g = b * self.cfg.world_size;
        let idx = &order[step * g + r * b..step * g + (r + 1) * b];
        let mut rng = batch_rng(self.cfg.seed, epoch, step, r);
        self.collator.collate_items(&self.dataset, idx, self.cfg.policy, &mut rng, &self.device)
    }
}

/// Yields this rank's batches epoch by epoch; resumable at any (epoch, step).
pub struct Loader {
    shared: Shared,
    langs: Vec<Lang>,
    per_epoch: usize,
    /// The epoch whose order is cached, and the order.
    order: Option<(usize, Arc<Vec<usize>>)>,
    epoch: usize,
    /// Step of the next batch [`Loader::next_batch`] returns.
    step: usize,
    started: bool,
    worker: Option<Worker>,
    issues: Vec<DataIssue>,
}

impl Loader {
    pub fn new(dataset: Arc<Dataset>, collator: Arc<Collator>, cfg: LoaderConfig, device: Device) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.world_size == 0 || cfg.rank >= cfg.world_size {
            return Err(TrainError::Config(format!(
                "loader: batch_size {} / world_size {} / rank {} (need B ≥ 1, W ≥ 1, r < W)",
                cfg.batch_size, cfg.world_size, cfg.rank
            )));
        }
        let langs = dataset.langs();
        let per_epoch = global_batches_per_epoch(&langs, cfg.sampler, cfg.batch_size * cfg.world_size);
        Ok(Self {
            shared: Shared { dataset, collator, cfg, device },
            langs,
            per_epoch,
            order: None,
            epoch: 0,
            step: 0,
            started: false,
            worker: None,
            issues: Vec::new(),
        })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.shared.cfg
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.shared.dataset
    }

    /// Batches per epoch on each rank (= global batches per epoch).
    pub fn batches_per_epoch(&self) -> usize {
        self.per_epoch
    }

    /// (epoch, step) of the batch the next [`Loader::next_batch`] returns.
    pub fn position(&self) -> (usize, usize) {
        (self.epoch, self.step)
    }

    fn order_of(&mut self, epoch: usize) -> Arc<Vec<usize>> {
        match &self.order {
            Some((e, o)) if *e == epoch => o.clone(),
            _ => {
                let c = &self.shared.cfg;
                let o = Arc::new(epoch_order(&self.langs, c.sampler, c.batch_size * c.world_size, c.seed, epoch));
                self.order = Some((epoch, o.clone()));
                o
            }
        }
    }

    /// The global batch (W·B record indices) of (`epoch`, `step`).
    pub fn global_indices(&mut self, epoch: usize, step: usize) -> Vec<usize> {
        let g = self.shared.cfg.batch_size * self.shared.cfg.world_size;
        let o = self.order_of(epoch);
        o.get(step * g..(step + 1) * g).map(<[usize]>::to_vec).unwrap_or_default()
    }

    /// This rank's record indices at (`epoch`, `step`).
    pub fn rank_indices(&mut self, epoch: usize, step: usize) -> Vec<usize> {
        let (b, r) = (self.shared.cfg.batch_size, self.shared.cfg.rank);
        let g = self.global_indices(epoch, step);
        g.get(r * b..(r + 1) * b).map(<[usize]>::to_vec).unwrap_or_default()
    }

    /// Collates the batch of (`epoch`, `step`) in this thread, independently of the iteration state.
    pub fn collate_step(&mut self, epoch: usize, step: usize) -> Result<(Batch, Vec<DataIssue>)> {
        if step >= self.per_epoch {
            return Err(TrainError::Config(format!("step {step} is past the epoch's {} batches", self.per_epoch)));
        }
        let o = self.order_of(epoch);
        self.shared.produce(&o, epoch, step)
    }

    /// Positions the loader at batch `skip` of `epoch` (0 = the start) and starts prefetching from there.
    pub fn start_epoch(&mut self, epoch: usize, skip: usize) -> Result<()> {
        self.stop_worker()?;
        if skip > self.per_epoch {
            return Err(TrainError::Config(format!(
                "cannot resume at batch {skip} of epoch {epoch}: an epoch has {} batches",
                self.per_epoch
            )));
        }
        self.epoch = epoch;
        self.step = skip;
        self.started = true;
        let prefetch = self.shared.cfg.prefetch;
        if prefetch == 0 || skip >= self.per_epoch {
            return Ok(());
        }
        let order = self.order_of(epoch);
        let (tx, rx) = sync_channel::<Produced>(prefetch - 1);
        let cancel = Arc::new(AtomicBool::new(false));
        let shared = self.shared.clone();
        let stop = cancel.clone();
        let end = self.per_epoch;
        let handle = std::thread::Builder::new()
            .name(format!("fgclip-loader-r{}", shared.cfg.rank))
            .spawn(move || {
                for step in skip..end {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = shared.produce(&order, epoch, step);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(TrainError::Io)?;
        self.worker = Some(Worker { rx: Some(rx), cancel, handle: Some(handle) });
        Ok(())
    }

    /// The next batch of the current epoch; `None` at its end. Starts epoch 0 if no epoch was started.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        if !self.started {
            self.start_epoch(0, 0)?;
        }
        if self.step >= self.per_epoch {
            return Ok(None);
        }
        let produced = match self.worker.as_mut().and_then(|w| w.rx.as_ref()) {
            None => {
                let o = self.order_of(self.epoch);
                self.shared.produce(&o, self.epoch, self.step)
            }
            Some(rx) => match rx.recv() {
                Ok(p) => p,
                Err(_) => {
                    // The thread ended without sending this step: it panicked.
                    let why = self.worker.as_mut().and_then(Worker::stop).unwrap_or_default();
                    self.worker = None;
                    return Err(TrainError::Config(format!(
                        "data loader thread died at epoch {} batch {}: {why}",
                        self.epoch, self.step
                    )));
                }
            },
        };
        let (batch, issues) = produced?;
        for i in &issues {
            tracing::warn!("{i}");
        }
        self.issues.extend(issues);
        self.step += 1;
        Ok(Some(batch))
    }

    /// Problems met while collating (unreadable images under [`Policy::Skip`]) since the last call.
    pub fn take_issues(&mut self) -> Vec<DataIssue> {
        std::mem::take(&mut self.issues)
    }

    fn stop_worker(&mut self) -> Result<()> {
        if let Some(mut w) = self.worker.take() {
            if let Some(why) = w.stop() {
                return Err(TrainError::Config(format!("data loader thread panicked: {why}")));
            }
        }
        Ok(())
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        let _ = self.stop_worker();
    }
}

impl crate::trainer::BatchSource for Loader {
    fn batches_per_epoch(&self) -> usize {
        Loader::batches_per_epoch(self)
    }
    fn start_epoch(&mut self, epoch: usize, skip: usize) -> Result<()> {
        Loader::start_epoch(self, epoch, skip)
    }
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        Loader::next_batch(self)
    }
}
