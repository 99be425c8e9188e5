//! `fgclip train` end to end: configuration → model (official checkpoint, backbone, or from scratch) → data
//! (FineHARD files, the official collator, the resumable loader) → the loop, on one process or on ranks
//! simulated by threads. The CLI only parses arguments and prints the summary.

use candle_core::Device;
use fgclip::hub::{self, ModelFiles};

use crate::config::TrainConfig;
use crate::data::{DataSpec, Dataset, ImageRoots, Policy};
use crate::dist::{Collective, SingleProcess, ThreadGroup};
use crate::error::{Result, TrainError};
use crate::optim::AdamWConfig;
use crate::trainable::Trainable;
use crate::trainer::{self, LoopConfig, RunSummary};

/// The device named in the config ("cpu", "cuda", "cuda:N").
pub fn device(name: &str) -> Result<Device> {
    fgclip::parse_device(name).map_err(|e| TrainError::Config(format!("train.device {e}")))
}

/// The files the model and its tokenizer come from.
fn model_files(cfg: &TrainConfig) -> Result<(Option<ModelFiles>, ModelFiles)> {
    match (&cfg.model.init, &cfg.model.config) {
        (Some(init), _) => {
            let f = hub::resolve(init)?;
            Ok((Some(f.clone()), f))
        }
        (None, Some(_)) => {
            let tok = cfg
                .model
                .tokenizer
                .as_deref()
                .ok_or_else(|| TrainError::Config("model.tokenizer is not set".into()))?;
            Ok((None, tokenizer_files(tok)?))
        }
        (None, None) => Err(TrainError::Config("model: set `init` or `config`".into())),
    }
}

/// A folder holding only tokenizer files (e.g. `fgclip synth`'s `tiny-model/`) or any checkpoint (local or hub).
fn tokenizer_files(tok: &str) -> Result<ModelFiles> {
    let dir = std::path::Path::new(tok);
    if dir.is_dir() {
        let f = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let files = ModelFiles {
            root: dir.to_path_buf(),
            config: dir.join(hub::CONFIG_FILE),
            weights: vec![],
            tokenizer_json: f(hub::TOKENIZER_JSON),
            tokenizer_config: f(hub::TOKENIZER_CONFIG),
            vocab_json: f(hub::VOCAB_JSON),
            merges_txt: f(hub::MERGES_TXT),
            preprocessor_config: f(hub::PREPROCESSOR_CONFIG),
            special_tokens_map: f(hub::SPECIAL_TOKENS_MAP),
        };
        if files.tokenizer_json.is_none() && files.vocab_json.is_none() {
            return Err(TrainError::File {
                path: dir.into(),
                msg: "no tokenizer.json or vocab.json + merges.txt here".into(),
            });
        }
        return Ok(files);
    }
    Ok(hub::resolve(tok)?)
}

/// Builds this rank's model: the official checkpoint, or a fresh one seeded by `train.seed` (every rank gets
/// the same initial weights, as DDP's broadcast ensures).
pub fn build_model(cfg: &TrainConfig, dev: &Device) -> Result<Trainable> {
    let (init, tok) = model_files(cfg)?;
    match (init, &cfg.model.config) {
        (Some(files), _) => Trainable::from_files(&files, dev),
        (None, Some(config)) => {
            let tok_files = tok.side_files();
            Trainable::from_scratch(config, tok_files, cfg.train.seed, dev)
        }
        _ => Err(TrainError::Config("model: set `init` or `config`".into())),
    }
}

/// The files the collator reads (config + tokenizer + processor): the checkpoint, or for a model trained from
/// scratch its config.json beside the tokenizer's folder.
fn collator_files(cfg: &TrainConfig) -> Result<ModelFiles> {
    let (init, mut tok) = model_files(cfg)?;
    if let Some(f) = init {
        return Ok(f);
    }
    if let Some(c) = &cfg.model.config {
        tok.config = c.clone();
    }
    Ok(tok)
}

/// Loads the training data named by the config and reports how many records were skipped.
pub fn load_dataset(cfg: &TrainConfig) -> Result<Dataset> {
    let policy = if cfg.data.on_bad == "reject" { Policy::Reject } else { Policy::Skip };
    let mut roots = ImageRoots::new(cfg.data.image_root.clone());
    roots.cn = cfg.data.cn_image_root.clone();
    let spec =
        DataSpec { en: cfg.data.train.clone(), cn: cfg.data.cn_train.clone(), roots, policy, check_images: true };
    let ds = Dataset::load(&spec)?;
    for issue in &ds.issues {
        tracing::warn!("skipped: {issue}");
    }
    if ds.is_empty() {
        return Err(TrainError::Config("no usable training records".into()));
    }
    Ok(ds)
}

fn loop_config(cfg: &TrainConfig, family: fgclip::config::Family, progress: bool) -> LoopConfig {
    let base = match family {
        fgclip::config::Family::FgClip => AdamWConfig::fgclip(),
        fgclip::config::Family::FgClip2 => AdamWConfig::fgclip2(),
    };
    let t = &cfg.train;
    let adamw = AdamWConfig {
        lr: t.lr,
        beta1: t.beta1.unwrap_or(base.beta1),
        beta2: t.beta2.unwrap_or(base.beta2),
        eps: t.eps.unwrap_or(base.eps),
        weight_decay: t.weight_decay.unwrap_or(base.weight_decay),
    };
    let frozen = if t.freeze == "none" { vec![] } else { trainer::tower_prefixes(family, &t.freeze) };
    LoopConfig {
        objective: cfg.objective(),
        adamw,
        epochs: t.epochs,
        max_steps: t.max_steps,
        grad_accum: t.grad_accum,
        warmup_steps: t.warmup_steps,
        warmup_ratio: t.warmup_ratio,
        frozen_prefixes: frozen,
        out_dir: cfg.output.dir.clone(),
        save_every: cfg.output.save_every,
        keep_last: cfg.output.keep_last,
        log_every: cfg.output.log_every,
        seed: t.seed,
        progress,
    }
}

/// Runs `cfg` to the end (or resumes it); rank 0's summary is returned.
pub fn run(cfg: &TrainConfig, progress: bool) -> Result<RunSummary> {
    let dev = device(&cfg.train.device)?;
    let dataset = std::sync::Arc::new(load_dataset(cfg)?);
    std::fs::create_dir_all(&cfg.output.dir)?;
    std::fs::write(cfg.output.dir.join("train_config.toml"), cfg.to_toml()?)?;
    let from_backbone = with_backbone_converted(cfg)?;
    let cfg = from_backbone.as_ref().unwrap_or(cfg);
    let files = collator_files(cfg)?;
    let world = cfg.train.simulate_ranks;
    let one = |coll: &dyn Collective| -> Result<RunSummary> {
        let model = build_model(cfg, &dev)?;
        let lc = loop_config(cfg, model.family(), progress && coll.rank() == 0);
        let mut source = source_for(cfg, &files, dataset.clone(), coll.rank(), coll.world(), &dev)?;
        trainer::train(&model, &mut source, &lc, coll)
    };
    if world == 1 {
        return one(&SingleProcess);
    }
    let results: Vec<Result<RunSummary>> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(world).into_iter().map(|g| s.spawn(move || one(&g))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(TrainError::Dist("a rank panicked".into()))))
            .collect()
    });
    // A failing rank stops the others with PeerStopped: report the failure itself.
    let mut errors: Vec<TrainError> = Vec::new();
    let mut first = None;
    for r in results {
        match r {
            Ok(s) => {
                first.get_or_insert(s);
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(i) = errors.iter().position(|e| !matches!(e, TrainError::PeerStopped { .. })) {
        return Err(errors.swap_remove(i));
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    first.ok_or_else(|| TrainError::Dist("no ranks ran".into()))
}

/// Name of the folder under `output.dir` that holds the converted `model.backbone`.
pub const BACKBONE_INIT_DIR: &str = "backbone-init";

/// With `model.backbone` set: converts the CLIP / SigLIP 2 backbone into `<output.dir>/backbone-init/`
/// ([`crate::init::convert_backbone`]; once — a later start or resume reuses the folder, the conversion being
/// deterministic) and returns the configuration with `init` pointing there. `None` without a backbone.
pub fn with_backbone_converted(cfg: &TrainConfig) -> Result<Option<TrainConfig>> {
    let Some(backbone) = &cfg.model.backbone else { return Ok(None) };
    let dst = cfg.output.dir.join(BACKBONE_INIT_DIR);
    if !(dst.join(hub::CONFIG_FILE).is_file() && dst.join(hub::WEIGHTS_FILE).is_file()) {
        let src = hub::resolve(backbone)?.root;
        // Written beside and renamed, so a killed conversion never looks finished.
        let tmp = cfg.output.dir.join(format!("{BACKBONE_INIT_DIR}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        let family = crate::init::convert_backbone(&src, &tmp)?;
        if dst.exists() {
            std::fs::remove_dir_all(&dst)?;
        }
        std::fs::rename(&tmp, &dst)?;
        tracing::info!("converted {backbone} into {} ({})", dst.display(), family.name());
    }
    let mut out = cfg.clone();
    out.model.init = Some(dst.to_string_lossy().into_owned());
    out.model.backbone = None;
    Ok(Some(out))
}

/// This rank's loader: the seeded, resumable, prefetching loader over the dataset with the official collator
/// (FG-CLIP 2 with Chinese data: the bilingual sampler's monolingual global batches).
pub fn source_for(
    cfg: &TrainConfig,
    files: &ModelFiles,
    data: std::sync::Arc<Dataset>,
    rank: usize,
    world: usize,
    dev: &Device,
) -> Result<crate::loader::Loader> {
    let collator = std::sync::Arc::new(crate::batch::Collator::from_files(files)?);
    let policy = if cfg.data.on_bad == "reject" { Policy::Reject } else { Policy::Skip };
    let sampler =
        if cfg.data.cn_train.is_empty() { crate::loader::Sampler::Random } else { crate::loader::Sampler::Bilingual };
    let lc = crate::loader::LoaderConfig {
        batch_size: cfg.train.batch_size,
        world_size: world,
        rank,
        seed: cfg.train.seed,
        sampler,
        prefetch: cfg.data.prefetch,
        policy,
    };
    crate::loader::Loader::new(data, collator, lc, dev.clone())
}
