//! Training objectives of FG-CLIP and FG-CLIP 2 (docs/losses.md#fg-clip-objective, docs/losses.md#fg-clip-2-objective, docs/losses.md#skipped-fine-grained-terms) as differentiable candle functions.
//!
//! Mirrors, from the official repository 360CVGroup/FG-CLIP:
//! * branch `v1.0`, `fgclip/model/clip_strc/fgclip.py`: `FGCLIPModel.clip_loss` → [`clip_infonce`],
//!   `pairwise_contrastive_loss` → [`pairwise_contrastive`], `hard_contrastive_loss` → [`hard_pair`];
//! * branch `main`, `fgclip2/model/strcs/fgclip2.py`: `all_reduce_siglip_loss` / `all_gather_siglip_loss_` / `_loss`
//!   → [`siglip`], `pairwise_contrastive_loss` → [`pairwise_contrastive`], `hard_category_contrastive_loss` +
//!   `PNTextLoss` → [`tic`], `hard_contrastive_total_loss` + `hard_contrastive_loss` + `get_cmr_loss` →
//!   [`hard_composite`], the threshold all-reduce + clamp of `forward` → [`next_threshold`].
//!
//! Conventions shared by every function here:
//! * Embeddings come in L2-normalised (the caller normalises, after selecting the valid rows: docs/losses.md#degenerate-boxes).
//! * Scales come in already exponentiated, as one-element tensors (shape `[]` or `[1]`), so the caller keeps the raw
//!   log-scale parameter and its gradient flows through the caller's `exp()`. The SigLIP bias is passed as is.
//! * Arithmetic runs in f32 (f64 when any input is f64): bf16/f16 inputs are upcast first. The official code runs
//!   cross-entropies in the model dtype (bf16 in training) and only the sigmoid loss in f32; computing everything in
//!   f32 is the more accurate choice and agrees with the official float32 runs (tests/loss_parity.rs).
//! * Only ops with candle autograd are used (log-softmax and log-sigmoid are composed, not fused), max-subtraction
//!   keeps `exp` from overflowing, so finite inputs give finite losses and gradients.
//! * Every loss is a 0-dim tensor (mean or normalised sum, as the official function).
//! * Empty inputs (no rows) are an [`Error::Input`]: the official code would return NaN (a mean over nothing) or
//!   raise; deciding to skip a term is the caller's job (see [`tic`] for the one term that is skipped by design).

use candle_core::{DType, Device, Tensor, D};

use crate::{Error, Result};

/// Texts per hard box: 1 positive + 10 negatives (rows `11b..11b+10` of the hard texts pair with box `b`).
pub const HARD_TEXTS_PER_BOX: usize = 11;
/// Number of most similar other captions each region caption is pushed away from by TIC (`topk(10)`).
pub const TIC_TOP_K: usize = 10;
/// TIC treats caption pairs with cosine similarity above this as near-duplicates, not negatives (`S > 0.95 → 0`).
pub const TIC_DUPLICATE_SIMILARITY: f64 = 0.95;
/// Upper clamp of the synchronised cross-modal-rank threshold θ (logit units).
pub const THRESHOLD_MAX: f32 = 10.0;

/// Loss weights of FG-CLIP's stage-2 objective (docs/losses.md#fg-clip-objective): `L = long + short + 0.1·region + 0.5·hard`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V1Weights {
    pub long: f64,
    pub short: f64,
    pub region: f64,
    pub hard: f64,
}

impl V1Weights {
    /// The official values (`box_loss_weight = 0.1`, `hard_box_loss_weight = 0.5`).
    pub const OFFICIAL: Self = Self { long: 1.0, short: 1.0, region: 0.1, hard: 0.5 };
}

impl Default for V1Weights {
    fn default() -> Self {
        Self::OFFICIAL
    }
}

/// Weights inside FG-CLIP 2's hard-negative composite `0.6·L_c + 3·L_pair + 0.4·L_cmr` (docs/losses.md#fg-clip-2-objective).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HardCompositeWeights {
    pub contrastive: f64,
    pub pair: f64,
    pub cmr: f64,
}

impl HardCompositeWeights {
    /// The official values (`contrastive_loss_weight`, `pair_loss_weight`, `cmr_loss_weight`).
    pub const OFFICIAL: Self = Self { contrastive: 0.6, pair: 3.0, cmr: 0.4 };
}

impl Default for HardCompositeWeights {
    fn default() -> Self {
        Self::OFFICIAL
    }
}

/// Loss weights of FG-CLIP 2's stage-2 objective (docs/losses.md#fg-clip-2-objective):
/// `L = sig_long + sig_short + 0.2·region + 0.1·TIC + 0.5·(0.6·L_c + 3·L_pair + 0.4·L_cmr)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V2Weights {
    pub long: f64,
    pub short: f64,
    pub region: f64,
    pub tic: f64,
    pub hard: f64,
    pub hard_parts: HardCompositeWeights,
}

impl V2Weights {
    /// The official values (`box_loss_weight = 0.2`, `region_cc_loss_weight = 0.1`, `hard_box_loss_weight = 0.5`;
    /// the also defined `distill_loss_weight` / `imc_loss_weight` are unused by the official code).
    pub const OFFICIAL: Self =
        Self { long: 1.0, short: 1.0, region: 0.2, tic: 0.1, hard: 0.5, hard_parts: HardCompositeWeights::OFFICIAL };
}

impl Default for V2Weights {
    fn default() -> Self {
        Self::OFFICIAL
    }
}

/// The parts of FG-CLIP 2's hard-negative loss (`hard_contrastive_total_loss`).
#[derive(Debug, Clone)]
pub struct HardComposite {
    /// `0.6·contrastive + 3·pair + 0.4·cmr` (what the official function returns as its loss).
    pub total: Tensor,
    /// L_c: symmetric CE of each box against all positives and negatives of the batch.
    pub contrastive: Tensor,
    /// L_pair: CE over each box's own 11 texts, target 0 (= [`hard_pair`]).
    pub pair: Tensor,
    /// L_cmr: `mean relu(θ + d_bk − g_b)`.
    pub cmr: Tensor,
    /// θ_new = mean_b g_b − mean of the non-zero d_bk (logit units), before the all-reduce and clamp
    /// (feed the sum over ranks to [`next_threshold`]).
    pub threshold_new: f32,
}

// ---------------------------------------------------------------------------------------------------------------
// Input checks and dtype handling

/// f64 when any input is f64, else f32 (bf16/f16 are upcast: see the module header).
fn work_dtype(ts: &[&Tensor]) -> DType {
    if ts.iter().any(|t| t.dtype() == DType::F64) {
        DType::F64
    } else {
        DType::F32
    }
}

/// `[rows, dim]` of a rank-2 embedding matrix, or an error naming the argument.
fn dims2(what: &str, name: &str, t: &Tensor) -> Result<(usize, usize)> {
    match t.dims() {
        &[r, d] => Ok((r, d)),
        other => Err(Error::input(format!("{what}: `{name}` must be a [rows, dim] matrix, got shape {other:?}"))),
    }
}

fn non_empty(what: &str, name: &str, rows: usize) -> Result<()> {
    if rows == 0 {
        Err(Error::input(format!(
            "{what}: `{name}` has no rows (the loss of an empty set is undefined; skip the term)"
        )))
    } else {
        Ok(())
    }
}

fn same_dim(what: &str, a: (&str, usize), b: (&str, usize)) -> Result<()> {
    if a.1 != b.1 {
        return Err(Error::input(format!(
            "{what}: embedding widths differ: `{}` has {} columns, `{}` has {}",
            a.0, a.1, b.0, b.1
        )));
    }
    Ok(())
}

/// A one-element tensor (shape `[]` or `[1]`) as a 0-dim tensor of `dtype` on `device`, keeping its gradient path.
fn scalar_like(what: &str, name: &str, t: &Tensor, dtype: DType, device: &Device) -> Result<Tensor> {
    if t.elem_count() != 1 {
        return Err(Error::input(format!(
            "{what}: `{name}` must have exactly one element (shape [] or [1]), got shape {:?}",
            t.dims()
        )));
    }
    let mut s = t.reshape(())?.to_dtype(dtype)?;
    if !s.device().same_device(device) {
        s = s.to_device(device)?;
    }
    Ok(s)
}

/// `0..n` offset by `start`, as u32 class indices.
fn class_range(start: usize, n: usize, device: &Device) -> Result<Tensor> {
    let end = start + n;
    if end > u32::MAX as usize {
        return Err(Error::input(format!("class index {end} does not fit in u32")));
    }
    Ok(Tensor::arange(start as u32, end as u32, device)?)
}

// ---------------------------------------------------------------------------------------------------------------
// Composed primitives (all differentiable)

/// Row-wise log-sum-exp of `[N, C]` logits, `[N, 1]`. The row maximum is subtracted first and added back; it is
/// detached, which leaves value and gradient exact (logsumexp is invariant to the shift) and avoids overflow.
pub fn logsumexp_rows(logits: &Tensor) -> Result<Tensor> {
    let m = logits.detach().max_keepdim(D::Minus1)?;
    let s = logits.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(s.broadcast_add(&m)?)
}

/// Mean over rows of `−log softmax(row)[target]` (torch `F.cross_entropy` with class indices, mean reduction).
/// `logits` `[N, C]`, `targets` `[N]` of u32 class indices (< C). Composed from exp/log/gather, so it has a gradient.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, c) = dims2("cross_entropy", "logits", logits)?;
    non_empty("cross_entropy", "logits", n)?;
    if targets.dims() != [n] {
        return Err(Error::input(format!("cross_entropy: targets must have shape [{n}], got {:?}", targets.dims())));
    }
    if c == 0 {
        return Err(Error::input("cross_entropy: logits have no classes".to_string()));
    }
    let targets = targets.to_dtype(DType::U32)?;
    let lse = logsumexp_rows(logits)?;
    let picked = logits.contiguous()?.gather(&targets.unsqueeze(1)?.contiguous()?, 1)?;
    Ok((lse - picked)?.mean_all()?)
}

/// `log(1 + exp(−|y|))` with an accurate value for large `|y|` and the plain gradient.
///
/// The naive `log(1 + u)` loses `u` below ~6e-8 (f32), so it is corrected by Kahan's `log1p(u) = u·log(w)/(w−1)`,
/// `w = 1 + u`; the correction is detached, so the gradient is that of the naive formula (`−sign(y)·u/(1+u)`),
/// which is accurate for every `y`.
fn log1p_exp_neg_abs(absy: &Tensor) -> Result<Tensor> {
    let u = absy.neg()?.exp()?;
    let naive = (&u + 1.0)?.log()?;
    let ud = u.detach();
    let w = (&ud + 1.0)?;
    let den = (&w - 1.0)?;
    let tiny = den.eq(0.0)?;
    // den == 0 means u is below half an ulp of 1: log1p(u) = u to working precision. The safe denominator keeps
    // the unselected branch finite.
    let den_safe = tiny.where_cond(&den.ones_like()?, &den)?;
    let kahan = tiny.where_cond(&ud, &((&ud * w.log()?)? / den_safe)?)?;
    let correction = (kahan - naive.detach())?;
    Ok((naive + correction)?)
}

/// Numerically stable `softplus(y) = log(1 + exp(y)) = max(y, 0) + log(1 + exp(−|y|))`, composed from
/// differentiable ops (no overflow for any finite `y`; gradient `sigmoid(y)`, also at `y = 0`).
pub fn softplus(y: &Tensor) -> Result<Tensor> {
    // One predicate builds both the relu mask and the sign used for |y|, so the subgradients at 0 are consistent
    // (1 from the relu part, −½ from the log part → ½ = sigmoid(0)).
    let pos = y.detach().ge(0.0)?.to_dtype(y.dtype())?;
    let sign = pos.affine(2.0, -1.0)?;
    let relu = (y * &pos)?;
    let absy = (y * &sign)?;
    Ok((relu + log1p_exp_neg_abs(&absy)?)?)
}

/// Stable `log σ(x) = −softplus(−x)` (torch `F.logsigmoid`).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(softplus(&x.neg()?)?.neg()?)
}

/// `max(x, 0)` with gradient 0 at 0, as torch's relu (candle's relu has gradient 1 there).
fn relu_torch(x: &Tensor) -> Result<Tensor> {
    let mask = x.detach().gt(0.0)?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// The gathered `[W·B, D]` layout check shared by the global losses; returns W.
fn check_gathered(what: &str, image_all: &Tensor, text_all: &Tensor, rank: usize, local_batch: usize) -> Result<usize> {
    let (ni, di) = dims2(what, "image_all", image_all)?;
    let (nt, dt) = dims2(what, "text_all", text_all)?;
    same_dim(what, ("image_all", di), ("text_all", dt))?;
    if ni != nt {
        return Err(Error::input(format!("{what}: image_all has {ni} rows but text_all has {nt} (both are W·B)")));
    }
    if local_batch == 0 {
        return Err(Error::input(format!("{what}: local_batch is 0 (the loss of an empty batch is undefined)")));
    }
    if ni % local_batch != 0 {
        return Err(Error::input(format!(
            "{what}: {ni} gathered rows are not a multiple of local_batch {local_batch} (expected W·B rows)"
        )));
    }
    let world = ni / local_batch;
    if rank >= world {
        return Err(Error::input(format!(
            "{what}: rank {rank} out of range for {ni} gathered rows = world {world} × local_batch {local_batch}"
        )));
    }
    Ok(world)
}

// ---------------------------------------------------------------------------------------------------------------
// Global losses

/// FG-CLIP global softmax InfoNCE for the rows of `rank` (docs/losses.md#fg-clip-objective; official `FGCLIPModel.clip_loss`, one
/// caption kind): `½[CE(s·I_R·T_allᵀ, t) + CE(s·T_R·I_allᵀ, t)]`, `t = rank·B + arange(B)`, where
/// `I_R`, `T_R` are rows `rank·B .. rank·B+B` of the gathered `[W·B, D]` `image_all`, `text_all`.
///
/// `scale` = exp(logit_scale). With W = 1 this is `clip_loss` for one caption kind (long or short).
/// Summed over the W ranks it equals W times the W = 1 loss of the whole W·B batch (tests/loss_parity.rs); with
/// an autograd all-gather each rank's local rows receive the gradient of that sum, and DDP's gradient average
/// divides it by W again.
pub fn clip_infonce(
    image_all: &Tensor,
    text_all: &Tensor,
    rank: usize,
    local_batch: usize,
    scale: &Tensor,
) -> Result<Tensor> {
    const WHAT: &str = "clip_infonce";
    check_gathered(WHAT, image_all, text_all, rank, local_batch)?;
    let dt = work_dtype(&[image_all, text_all, scale]);
    let dev = image_all.device();
    let s = scale_arg(WHAT, scale, dt, dev)?;
    let image_all = image_all.to_dtype(dt)?;
    let text_all = text_all.to_dtype(dt)?;
    let b = local_batch;
    let img_local = image_all.narrow(0, rank * b, b)?;
    let txt_local = text_all.narrow(0, rank * b, b)?;
    let i2t = img_local.matmul(&text_all.t()?)?.broadcast_mul(&s)?;
    let t2i = txt_local.matmul(&image_all.t()?)?.broadcast_mul(&s)?;
    let targets = class_range(rank * b, b, dev)?;
    let loss = (cross_entropy(&i2t, &targets)? + cross_entropy(&t2i, &targets)?)?;
    Ok((loss * 0.5)?)
}

fn scale_arg(what: &str, scale: &Tensor, dt: DType, dev: &Device) -> Result<Tensor> {
    scalar_like(what, "scale", scale, dt, dev)
}

/// FG-CLIP 2 sigmoid (SigLIP) loss of rank `rank` (docs/losses.md#fg-clip-2-objective, docs/losses.md#global-sigmoid-loss; official `all_reduce_siglip_loss`,
/// equal to `all_gather_siglip_loss_`): with `z_ij = s·⟨I_i, T_j⟩ + bias` for the B local images `i` (rows
/// `rank·B .. rank·B+B` of `image_all`) against all W·B texts `j` of `text_all`, label `+1` on the rank's own
/// diagonal (`j = rank·B + i`) and `−1` elsewhere,
/// `L_R = (1/B) Σ_ij −log σ(label_ij · z_ij)` — normalised by the local batch B, summed over all W·B texts.
///
/// `scale` = exp(logit_scale), `bias` = logit_bias (both one-element). Summed over the W ranks this is W times the
/// W = 1 loss of the whole batch (the same W·B × W·B terms, divided by B instead of W·B).
pub fn siglip(
    image_all: &Tensor,
    text_all: &Tensor,
    rank: usize,
    local_batch: usize,
    scale: &Tensor,
    bias: &Tensor,
) -> Result<Tensor> {
    const WHAT: &str = "siglip";
    let world = check_gathered(WHAT, image_all, text_all, rank, local_batch)?;
    let dt = work_dtype(&[image_all, text_all, scale, bias]);
    let dev = image_all.device();
    let s = scale_arg(WHAT, scale, dt, dev)?;
    let bias = scalar_like(WHAT, "bias", bias, dt, dev)?;
    let b = local_batch;
    let n = world * b;
    let img_local = image_all.to_dtype(dt)?.narrow(0, rank * b, b)?;
    let text_all = text_all.to_dtype(dt)?;
    let logits = img_local.matmul(&text_all.t()?)?.broadcast_mul(&s)?.broadcast_add(&bias)?;
    // labels = 2·[j == rank·B + i] − 1, built on the device (no host [B, W·B] upload).
    let cols = class_range(0, n, dev)?.reshape((1, n))?;
    let rows = class_range(rank * b, b, dev)?.reshape((b, 1))?;
    let labels = cols.broadcast_eq(&rows)?.to_dtype(dt)?.affine(2.0, -1.0)?;
    // −log σ(ℓ·z) = softplus(−ℓ·z)
    let terms = softplus(&(logits * labels)?.neg()?)?;
    Ok((terms.sum_all()? / b as f64)?)
}

// ---------------------------------------------------------------------------------------------------------------
// Regional losses

/// Regional symmetric contrastive loss (docs/losses.md#fg-clip-objective, docs/losses.md#fg-clip-2-objective; official `pairwise_contrastive_loss` of
/// both branches): `½[CE(s·T·Rᵀ, I) + CE(s·R·Tᵀ, I)]` over the M valid boxes of this rank (identity targets,
/// local only). `region`, `text`: `[M, D]`, row i of each pairs; `scale` = exp(logit_scale_finegraind).
///
/// M = 0 is an error (the official mean over nothing is NaN). Note the official forwards select valid rows with a
/// `.squeeze()`, so M = 1 makes them raise (v1: the training step crashes; v2: the exception is swallowed and the
/// region, TIC and hard terms of the step are dropped, docs/losses.md#skipped-fine-grained-terms); this function computes the M = 1 value (0),
/// leaving that choice to the caller.
pub fn pairwise_contrastive(region: &Tensor, text: &Tensor, scale: &Tensor) -> Result<Tensor> {
    const WHAT: &str = "pairwise_contrastive";
    let (m, dr) = dims2(WHAT, "region", region)?;
    let (mt, dtx) = dims2(WHAT, "text", text)?;
    same_dim(WHAT, ("region", dr), ("text", dtx))?;
    if m != mt {
        return Err(Error::input(format!("{WHAT}: region has {m} rows but text has {mt} (row i pairs with row i)")));
    }
    non_empty(WHAT, "region", m)?;
    let dt = work_dtype(&[region, text, scale]);
    let dev = region.device();
    let s = scale_arg(WHAT, scale, dt, dev)?;
    let r = region.to_dtype(dt)?;
    let t = text.to_dtype(dt)?;
    let per_image = r.matmul(&t.t()?)?.broadcast_mul(&s)?;
    let per_text = t.matmul(&r.t()?)?.broadcast_mul(&s)?;
    let targets = class_range(0, m, dev)?;
    let loss = (cross_entropy(&per_text, &targets)? + cross_entropy(&per_image, &targets)?)?;
    Ok((loss * 0.5)?)
}

/// Checks `[N, D]` regions against `[11·N, D]` hard texts; returns (N, D).
fn check_hard(what: &str, region: &Tensor, texts: &Tensor) -> Result<(usize, usize)> {
    let (n, d) = dims2(what, "region", region)?;
    let (nt, dt) = dims2(what, "texts", texts)?;
    same_dim(what, ("region", d), ("texts", dt))?;
    non_empty(what, "region", n)?;
    if nt != HARD_TEXTS_PER_BOX * n {
        return Err(Error::input(format!(
            "{what}: {n} hard boxes need {} texts (1 positive + 10 negatives each), got {nt}",
            HARD_TEXTS_PER_BOX * n
        )));
    }
    Ok((n, d))
}

/// `s·⟨r_b, t_bk⟩` for k = 0..10: `[N, 11]` (the official `einsum('bp,bdp->bd')`).
fn per_box_logits(r: &Tensor, t: &Tensor, s: &Tensor, n: usize, d: usize) -> Result<Tensor> {
    let t3 = t.reshape((n, HARD_TEXTS_PER_BOX, d))?;
    let dots = t3.matmul(&r.unsqueeze(2)?)?.squeeze(2)?;
    Ok(dots.broadcast_mul(s)?)
}

/// Hard fine-grained negatives, per box (docs/losses.md#fg-clip-objective = FG-CLIP 2's L_pair; official `hard_contrastive_loss`):
/// `mean_b CE(s·[⟨r_b,t_b0⟩, …, ⟨r_b,t_b10⟩], target 0)`. `region` `[N, D]`; `texts` `[11·N, D]` with rows
/// `11b..11b+10` = [positive, 10 negatives] of box b; `scale` = exp(logit_scale_hardneg). N = 0 is an error.
pub fn hard_pair(region: &Tensor, texts: &Tensor, scale: &Tensor) -> Result<Tensor> {
    const WHAT: &str = "hard_pair";
    let (n, d) = check_hard(WHAT, region, texts)?;
    let dt = work_dtype(&[region, texts, scale]);
    let dev = region.device();
    let s = scale_arg(WHAT, scale, dt, dev)?;
    let logits = per_box_logits(&region.to_dtype(dt)?, &texts.to_dtype(dt)?, &s, n, d)?;
    let targets = Tensor::zeros(n, DType::U32, dev)?;
    cross_entropy(&logits, &targets)
}

/// FG-CLIP 2's hard-negative composite (docs/losses.md#fg-clip-2-objective; official `hard_contrastive_total_loss` with its inner
/// `hard_contrastive_loss` and `get_cmr_loss`), for `region` `[N, D]`, `texts` `[11·N, D]` (as [`hard_pair`]),
/// `scale` = exp(logit_scale_hardneg) and the current threshold θ (logit units; starts at 0.0):
/// * contrastive `L_c = ½[CE(s·R·[T_0; T_neg]ᵀ, arange N) + CE(s·T_0·Rᵀ, arange N)]` (T_neg = all 10·N negatives);
/// * pair `L_pair` = [`hard_pair`];
/// * cmr `L_cmr = mean_{b,k} relu(θ + d_bk − g_b)`, `g_b = s⟨r_b,t_b0⟩`, `d_bk = s⟨r_b,t_bk⟩` (k ≥ 1);
/// * total `0.6·L_c + 3·L_pair + 0.4·L_cmr`;
/// * `threshold_new = mean_b g_b − mean of the non-zero d_bk` (not differentiated; all-reduce it and pass the sum to
///   [`next_threshold`]). If every d_bk is exactly 0 the official value is NaN (0/0); here the mean of the
///   non-zero d_bk is taken as 0 instead, so θ stays finite.
///
/// N = 0 and a non-finite θ are errors. The official forward raises for N = 1 (a `.squeeze()` turns the single
/// row into a vector; docs/losses.md#skipped-fine-grained-terms) and, in FG-CLIP 2, silently drops the hard term and the threshold update of that
/// step; this function computes the well-defined N = 1 value and leaves the choice to the caller.
pub fn hard_composite(region: &Tensor, texts: &Tensor, scale: &Tensor, threshold: f32) -> Result<HardComposite> {
    hard_composite_weighted(region, texts, scale, threshold, HardCompositeWeights::OFFICIAL)
}

/// [`hard_composite`] with its three inner weights given (the training TOML's `train.weights.hard_*`).
pub fn hard_composite_weighted(
    region: &Tensor,
    texts: &Tensor,
    scale: &Tensor,
    threshold: f32,
    w: HardCompositeWeights,
) -> Result<HardComposite> {
    const WHAT: &str = "hard_composite";
    let (n, d) = check_hard(WHAT, region, texts)?;
    if !threshold.is_finite() {
        return Err(Error::input(format!("{WHAT}: threshold θ must be finite, got {threshold}")));
    }
    let dt = work_dtype(&[region, texts, scale]);
    let dev = region.device();
    let s = scale_arg(WHAT, scale, dt, dev)?;
    let r = region.to_dtype(dt)?;
    let t = texts.to_dtype(dt)?;
    let t3 = t.reshape((n, HARD_TEXTS_PER_BOX, d))?;
    let gt_text = t3.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?; // [N, D]
    let neg3 = t3.narrow(1, 1, HARD_TEXTS_PER_BOX - 1)?.contiguous()?; // [N, 10, D]
    let neg = neg3.reshape((n * (HARD_TEXTS_PER_BOX - 1), d))?;
    let all_text = Tensor::cat(&[&gt_text, &neg], 0)?; // [11N, D]: positives first, then negatives box-major

    let per_image = r.matmul(&all_text.t()?)?.broadcast_mul(&s)?; // [N, 11N]
    let per_text = gt_text.matmul(&r.t()?)?.broadcast_mul(&s)?; // [N, N]
    let targets = class_range(0, n, dev)?;
    let contrastive = ((cross_entropy(&per_image, &targets)? + cross_entropy(&per_text, &targets)?)? * 0.5)?;

    let pair = hard_pair(&r, &t, &s)?;

    // g_b = diag of the positive block of per_image; d_bk = s·⟨t_bk, r_b⟩ for the box's own negatives.
    let g = per_image.gather(&targets.unsqueeze(1)?.contiguous()?, 1)?; // [N, 1]
    let da = neg3.matmul(&r.unsqueeze(2)?)?.squeeze(2)?.broadcast_mul(&s)?; // [N, 10]
                                                                            // Same association as the official `relu((thresholds + da) - gt)`.
    let cmr = relu_torch(&(da.affine(1.0, threshold as f64)?.broadcast_sub(&g)?))?.mean_all()?;

    let threshold_new = {
        let dad = da.detach();
        let nonzero = dad.ne(0.0)?.to_dtype(dt)?;
        let count = nonzero.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let g_mean = g.detach().mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let d_mean = if count > 0.0 {
            (dad * nonzero)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? / count
        } else {
            0.0
        };
        (g_mean - d_mean) as f32
    };

    let total = ((contrastive.affine(w.contrastive, 0.0)? + pair.affine(w.pair, 0.0)?)? + cmr.affine(w.cmr, 0.0)?)?;
    Ok(HardComposite { total, contrastive, pair, cmr, threshold_new })
}

/// The threshold FG-CLIP 2 keeps for the next step: `clamp(Σ_ranks θ_new / world, 0, 10)` (official `forward`:
/// `all_reduce_threshold` then `torch.clamp(…/world_size, 0, 10).item()`). `world = 0` is treated as 1, and a NaN
/// sum gives 0.0 (the initial θ) where the official code would store NaN and poison every later step.
pub fn next_threshold(sum_over_ranks: f32, world: usize) -> f32 {
    let mean = sum_over_ranks / world.max(1) as f32;
    if mean.is_nan() {
        0.0
    } else {
        mean.clamp(0.0, THRESHOLD_MAX)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// TIC

/// The `[M, 10]` values TIC feeds to its PNTextLoss, in descending order per row: `S = t·tᵀ`, `S_ii = 0`, every
/// entry `> 0.95` set to 0, then the 10 largest entries of each row (zeros included when they rank in the top 10).
/// Differentiable with respect to `texts` (zeroed entries get no gradient). `None` when M < 10 (see [`tic`]).
///
/// Ties: selection is by index (10 rounds of row-argmax, each removing the chosen column), so equal values are
/// each taken once, as torch's `topk`; which of several tied columns is taken can differ from torch, which changes
/// nothing in the values and, because tied entries at the cut are in practice the zeroed ones (no gradient), nothing
/// in the gradient either.
pub fn tic_top_k(texts: &Tensor) -> Result<Option<Tensor>> {
    const WHAT: &str = "tic";
    let (m, _) = dims2(WHAT, "texts", texts)?;
    if m < TIC_TOP_K {
        return Ok(None);
    }
    let dt = work_dtype(&[texts]);
    let dev = texts.device();
    let t = texts.to_dtype(dt)?;
    let sim = t.matmul(&t.t()?)?; // [M, M]
    let off_diag = Tensor::eye(m, dt, dev)?.affine(-1.0, 1.0)?;
    let zeroed = (sim * off_diag)?;
    let keep = zeroed.detach().le(TIC_DUPLICATE_SIMILARITY)?.to_dtype(dt)?;
    let masked = (zeroed * keep)?.contiguous()?;

    // Top-k indices by repeated argmax on a detached copy; chosen columns are set to −inf before the next round.
    let mut work = masked.detach();
    let cols = class_range(0, m, dev)?.reshape((1, m))?;
    let neg_inf = Tensor::full(f32::NEG_INFINITY, (m, m), dev)?.to_dtype(dt)?;
    let mut picks = Vec::with_capacity(TIC_TOP_K);
    for _ in 0..TIC_TOP_K {
        let idx = work.argmax_keepdim(D::Minus1)?; // [M, 1] u32
        let hit = cols.broadcast_eq(&idx)?;
        work = hit.where_cond(&neg_inf, &work)?;
        picks.push(idx);
    }
    let idx = Tensor::cat(&picks, 1)?.contiguous()?; // [M, 10]
    Ok(Some(masked.gather(&idx, 1)?))
}

/// Textual intra-modal contrastive loss, TIC (docs/losses.md#fg-clip-2-objective; official `hard_category_contrastive_loss` +
/// `PNTextLoss`): `mean_i log Σ_{k=1..10} exp(v_ik)` over the [`tic_top_k`] values of the M valid region-text
/// embeddings `texts` `[M, D]` (no temperature).
///
/// Returns `None` when M < 10: the official `topk(10)` raises there, and FG-CLIP 2's `forward` swallows the exception
/// in its bare `try/except: pass` (docs/losses.md#skipped-fine-grained-terms), so the TIC term **and every later fine-grained term of that step**
/// (the region loss is added in the same statement, then the hard-negative loss and the threshold update) are
/// dropped. A faithful caller skips those terms on `None`; a caller that prefers to keep training the region and
/// hard terms simply leaves TIC out.
pub fn tic(texts: &Tensor) -> Result<Option<Tensor>> {
    let Some(values) = tic_top_k(texts)? else { return Ok(None) };
    Ok(Some(logsumexp_rows(&values)?.mean_all()?))
}
