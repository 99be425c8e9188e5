//! The data-parallel math, proven on the CPU with ranks simulated by threads (`ThreadGroup`): W ranks, each
//! with its own replica and a 1/W shard of the batch, gather features without gradient (`dist.rs`), back-
//! propagate, and average gradients like DDP. The official code (differentiable all_gather + DDP) trains the
//! global objective of the whole global batch, so the averaged gradients must equal the gradients of one process
//! that sees the whole batch at world size 1. Also: θ is averaged over ranks, and the per-rank losses are the
//! official per-rank losses (their mean is the world-1 loss).
//!
//! Tolerance 2e-5 absolute on gradients: the same float32 sums taken in a different order.

use crate::common;
use std::collections::HashMap;

use candle_core::Device;
use common::*;
use fgclip::hub::ModelFiles;
use fgclip_train::batch::{Batch, BOX_SLOTS, HARD_CAPTIONS};
use fgclip_train::dist::{Collective, SingleProcess, ThreadGroup};
use fgclip_train::objective::{forward, ObjectiveConfig};
use fgclip_train::trainable::Trainable;

/// Samples `lo..hi` of a batch (what rank r of a data-parallel run receives).
fn shard(b: &Batch, lo: usize, hi: usize) -> Batch {
    let n = hi - lo;
    let p = &b.pixels;
    let pixels = fgclip::PreparedImages {
        pixel_values: p.pixel_values.narrow(0, lo, n).unwrap(),
        valid: p.valid.as_ref().map(|v| v.narrow(0, lo, n).unwrap()),
        grids: p.grids[lo..hi].to_vec(),
        sizes: p.sizes[lo..hi].to_vec(),
    };
    let hard_before: usize = b.hard_nums[..lo].iter().sum();
    let hard_here: usize = b.hard_nums[lo..hi].iter().sum();
    Batch {
        pixels,
        text_long: b.text_long.as_ref().map(|t| t.narrow(0, lo, n).unwrap()),
        text_short: b.text_short.narrow(0, lo, n).unwrap(),
        box_texts: b.box_texts.narrow(0, lo * BOX_SLOTS, n * BOX_SLOTS).unwrap(),
        box_infos: b.box_infos[lo * BOX_SLOTS..hi * BOX_SLOTS].to_vec(),
        box_nums: b.box_nums[lo..hi].to_vec(),
        hard_texts: b.hard_texts.narrow(0, hard_before * HARD_CAPTIONS, hard_here * HARD_CAPTIONS).unwrap(),
        hard_infos: b.hard_infos[lo * BOX_SLOTS..hi * BOX_SLOTS].to_vec(),
        hard_nums: b.hard_nums[lo..hi].to_vec(),
        is_cn: b.is_cn,
    }
}

/// Gradients of every parameter (by name) for one forward/backward of `batch` on `coll`, DDP-averaged.
fn grads(
    model: &Trainable,
    batch: &Batch,
    cfg: &ObjectiveConfig,
    coll: &dyn Collective,
) -> (HashMap<String, Vec<f32>>, f32, Option<f32>) {
    let out = forward(model, batch, cfg, 1.5, coll).unwrap();
    let g = out.backward.backward().unwrap();
    let mut map = HashMap::new();
    for (name, var) in model.named_vars() {
        let v: Vec<f32> = match g.get(var.as_tensor()) {
            Some(t) => t.flatten_all().unwrap().to_vec1().unwrap(),
            None => vec![0.0; var.elem_count()],
        };
        let v = coll.all_reduce_sum(&v).unwrap().into_iter().map(|x| x / coll.world() as f32).collect();
        map.insert(name, v);
    }
    (map, out.report.total, out.report.threshold_next)
}

/// Runs `f` on one thread per sample of `batch`, each a rank of a `ThreadGroup` with its own model copy and
/// its one-sample shard; returns the ranks' results in rank order.
fn on_ranks<T: Send>(
    files: &ModelFiles,
    batch: &Batch,
    f: impl Fn(Trainable, Batch, ThreadGroup) -> T + Sync,
) -> Vec<T> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(batch.len())
            .into_iter()
            .enumerate()
            .map(|(r, coll)| {
                let part = shard(batch, r, r + 1);
                s.spawn(move || f(Trainable::from_files(files, &Device::Cpu).unwrap(), part, coll))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn check(dir: &str, fixture: &str) {
    let Some(fx_dir) = fixtures_dir() else { return };
    let fx = load_tensors(&fx_dir.join(fixture));
    let files = ModelFiles::from_dir(fx_dir.join(dir)).unwrap();
    let batch = fixture_batch(&fx);
    let world = batch.len();
    let cfg = ObjectiveConfig::global_only();

    let single = Trainable::from_files(&files, &Device::Cpu).unwrap();
    let (want, want_loss, _) = grads(&single, &batch, &cfg, &SingleProcess);

    let results = on_ranks(&files, &batch, |model, part, coll| grads(&model, &part, &cfg, &coll));

    // Each rank's reported loss is its own official term; their mean is the whole-batch loss.
    let mean_loss = results.iter().map(|r| r.1).sum::<f32>() / world as f32;
    assert!(
        (mean_loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
        "mean rank loss {mean_loss} vs world-1 loss {want_loss}"
    );

    let mut worst = 0f32;
    let mut with_grad = 0;
    for (name, w) in &want {
        for (r, res) in results.iter().enumerate() {
            let got = &res.0[name];
            let d = got.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d <= 2e-5, "{dir}: rank {r} gradient of {name} differs from the world-1 gradient by {d}");
            worst = worst.max(d);
        }
        with_grad += w.iter().any(|x| *x != 0.0) as usize;
    }
    assert!(with_grad > want.len() / 2, "too few parameters received a gradient ({with_grad} of {})", want.len());
    eprintln!("{dir}: {world} simulated ranks, {with_grad} parameters with gradient, max |Δgrad| = {worst:.2e}");
}

#[test]
fn simulated_ranks_give_the_whole_batch_gradients_fgclip1() {
    check("fgclip_v1/model", "losses/v1_forward.safetensors");
}

#[test]
fn simulated_ranks_give_the_whole_batch_gradients_fgclip2() {
    check("fgclip2/model", "losses/v2_forward.safetensors");
}

#[test]
fn threshold_is_averaged_over_ranks() {
    let Some(fx_dir) = fixtures_dir() else { return };
    let fx = load_tensors(&fx_dir.join("losses/v2_forward.safetensors"));
    let files = ModelFiles::from_dir(fx_dir.join("fgclip2/model")).unwrap();
    let batch = fixture_batch(&fx);
    // Three ranks of one sample each (ranks must have equal batches); each computes its own θ_new (a rank
    // without hard boxes keeps the incoming θ), the next θ is their clamped mean.
    let cfg = ObjectiveConfig::full();
    let out = on_ranks(&files, &batch, |model, part, coll| {
        let own = forward(&model, &part, &cfg, 0.0, &SingleProcess).unwrap().report.threshold_rank;
        let synced = forward(&model, &part, &cfg, 0.0, &coll).unwrap().report.threshold_next;
        (own, synced)
    });
    let mean = (out.iter().map(|o| o.0.unwrap()).sum::<f32>() / out.len() as f32).clamp(0.0, 10.0);
    assert!(mean > 0.0, "degenerate case: every rank's θ clamps to 0 ({out:?})");
    for (r, o) in out.iter().enumerate() {
        let got = o.1.unwrap();
        assert!((got - mean).abs() <= 1e-5, "rank {r}: synchronised θ {got}, expected the ranks' mean {mean}");
    }
}

/// Regression: a simulated rank that stopped (error or panic) used to leave the others waiting forever in their
/// next collective; now they fail with `PeerStopped` naming it.
#[test]
fn a_stopped_rank_releases_the_others() {
    // Plain threads, not a scope: were a rank still blocked, the test fails at the timeout instead of hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    for (rank, coll) in ThreadGroup::new(3).into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            // One completed collective first: leaving after it must not disturb it.
            assert_eq!(coll.all_reduce_sum(&[1.0]).unwrap(), vec![3.0]);
            if rank == 1 {
                return; // rank 1 "fails" here: its handle is dropped
            }
            tx.send((rank, coll.all_reduce_sum(&[1.0]))).unwrap();
        });
    }
    drop(tx);
    let mut got = Vec::new();
    for _ in 0..2 {
        let (rank, r) = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("a rank is still waiting");
        match r {
            Err(fgclip_train::TrainError::PeerStopped { rank: 1 }) => got.push(rank),
            other => panic!("rank {rank}: expected PeerStopped {{ rank: 1 }}, got {other:?}"),
        }
    }
    got.sort();
    assert_eq!(got, [0, 2]);
}
