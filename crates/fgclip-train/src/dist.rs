//! Data parallelism: the collectives the trainer needs, behind one trait, so the same step code runs on one
//! process, on simulated ranks in threads (tests, and a CPU proof of the gather math), and (later) on NCCL.
//!
//! How the global losses get the official gradients without a differentiable all-gather: the official code
//! gathers features with `torch.distributed.nn.all_gather`, whose backward sums every rank's gradient into the
//! owner's slice, and DDP then averages parameter gradients over ranks. The same gradients come out if each
//! rank gathers *detached* copies, puts its own tracked slice back in place, and back-propagates
//! `L_r + Σ_{q≠r} L_q` where the other ranks' terms see the replicated scalars (logit scale, bias) detached:
//! the features of rank r then receive d(Σ_q L_q)/d f_r, and the scalars dL_r/ds, exactly as in the official run
//! (`objective.rs`; proven by the `dist_gather` tests). Only forward collectives are needed.

use std::sync::{Arc, Condvar, Mutex};

use candle_core::{Device, Tensor};

use crate::error::{Result, TrainError};

/// The collectives of one rank.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Concatenation along dim 0 of every rank's `t` (all ranks pass the same shape), detached.
    fn all_gather(&self, t: &Tensor) -> Result<Tensor>;
    /// Element-wise sum over ranks.
    fn all_reduce_sum(&self, v: &[f32]) -> Result<Vec<f32>>;
}

/// World size 1: gathers and reductions are identities.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.detach())
    }
    fn all_reduce_sum(&self, v: &[f32]) -> Result<Vec<f32>> {
        Ok(v.to_vec())
    }
}

/// Ranks simulated by threads of one process: every call is a rendezvous of all ranks (like NCCL, all ranks must
/// issue the same collectives in the same order). Used by tests and `train.simulate_ranks`. A rank whose handle
/// is dropped (it returned, failed or panicked) releases the others: their pending and later collectives fail
/// with [`TrainError::PeerStopped`] instead of waiting forever.
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    world: usize,
    rendezvous: Mutex<Rendezvous>,
    arrived: Condvar,
    slots: Mutex<Vec<Option<Vec<f32>>>>,
    shapes: Mutex<Vec<Vec<usize>>>,
}

/// Every rank's buffer and shape, in rank order.
type Table = (Vec<Vec<f32>>, Vec<Vec<usize>>);

/// A reusable barrier that can be broken: `generation` counts completed rendezvous.
struct Rendezvous {
    waiting: usize,
    generation: u64,
    stopped: Option<usize>,
}

fn poisoned<T>(_: T) -> TrainError {
    TrainError::Dist("a rank panicked during a collective".into())
}

impl ThreadGroup {
    /// One handle per rank; give handle `r` to the thread that plays rank `r`.
    pub fn new(world: usize) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            world,
            rendezvous: Mutex::new(Rendezvous { waiting: 0, generation: 0, stopped: None }),
            arrived: Condvar::new(),
            slots: Mutex::new(vec![None; world]),
            shapes: Mutex::new(vec![vec![]; world]),
        });
        (0..world).map(|rank| ThreadGroup { rank, shared: shared.clone() }).collect()
    }

    /// Waits until every rank has arrived, or fails once a rank has stopped.
    fn wait_all(&self) -> Result<()> {
        let mut st = self.shared.rendezvous.lock().map_err(poisoned)?;
        if let Some(rank) = st.stopped {
            return Err(TrainError::PeerStopped { rank });
        }
        let generation = st.generation;
        st.waiting += 1;
        if st.waiting == self.shared.world {
            st.waiting = 0;
            st.generation += 1;
            self.shared.arrived.notify_all();
            return Ok(());
        }
        while st.generation == generation {
            if let Some(rank) = st.stopped {
                return Err(TrainError::PeerStopped { rank });
            }
            st = self.shared.arrived.wait(st).map_err(poisoned)?;
        }
        Ok(())
    }

    /// Puts this rank's buffer on the table, waits for everyone, reads every buffer, waits again so the table
    /// can be reused by the next call.
    fn exchange(&self, data: Vec<f32>, shape: Vec<usize>) -> Result<Table> {
        {
            self.shared.slots.lock().map_err(poisoned)?[self.rank] = Some(data);
            self.shared.shapes.lock().map_err(poisoned)?[self.rank] = shape;
        }
        self.wait_all()?;
        let all: Vec<Vec<f32>> =
            self.shared.slots.lock().map_err(poisoned)?.iter().map(|s| s.clone().unwrap_or_default()).collect();
        let shapes = self.shared.shapes.lock().map_err(poisoned)?.clone();
        self.wait_all()?;
        Ok((all, shapes))
    }
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        // Every rendezvous this rank completed has already released the others (the generation moved on before
        // it could leave), so marking the group stopped only affects collectives it will never join.
        let mut st = match self.shared.rendezvous.lock() {
            Ok(st) => st,
            Err(p) => p.into_inner(),
        };
        st.stopped.get_or_insert(self.rank);
        self.shared.arrived.notify_all();
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.shared.world
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let dims = t.dims().to_vec();
        let data: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
        let (all, shapes) = self.exchange(data, dims.clone())?;
        if let Some((r, s)) = shapes.iter().enumerate().find(|(_, s)| **s != dims) {
            return Err(TrainError::Dist(format!(
                "all_gather: rank {r} sent shape {s:?}, rank {} sent {dims:?}",
                self.rank
            )));
        }
        let parts = all
            .into_iter()
            .map(|v| Tensor::from_vec(v, dims.as_slice(), &Device::Cpu)?.to_dtype(t.dtype())?.to_device(t.device()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }
    fn all_reduce_sum(&self, v: &[f32]) -> Result<Vec<f32>> {
        let (all, _) = self.exchange(v.to_vec(), vec![v.len()])?;
        let mut out = vec![0f32; v.len()];
        for part in &all {
            if part.len() != v.len() {
                return Err(TrainError::Dist("all_reduce: ranks sent buffers of different lengths".into()));
            }
            for (o, x) in out.iter_mut().zip(part) {
                *o += x;
            }
        }
        Ok(out)
    }
}

/// Replaces rows `rank·b .. rank·b + b` of the detached gathered tensor by the tracked local tensor, so the
/// gradient reaches this rank's features through every row where they appear.
pub fn with_local_slice(gathered: &Tensor, local: &Tensor, rank: usize) -> Result<Tensor> {
    let b = local.dim(0)?;
    let n = gathered.dim(0)?;
    let mut parts = Vec::with_capacity(3);
    if rank * b > 0 {
        parts.push(gathered.narrow(0, 0, rank * b)?);
    }
    parts.push(local.clone());
    if n > (rank + 1) * b {
        parts.push(gathered.narrow(0, (rank + 1) * b, n - (rank + 1) * b)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}
