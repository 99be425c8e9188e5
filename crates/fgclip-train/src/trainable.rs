//! A model whose every tensor is a trainable `Var`, in the official checkpoint's key layout, plus the
//! stage-2 parameters the official trainers create (): `logit_scale_finegraind` and
//! `logit_scale_hardneg` (0-d, log scale). Saving writes a folder that our `fgclip features` and the official
//! code both load: `model.safetensors` under the official names, `config.json`, the tokenizer files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use fgclip::checkpoint::{load_into_varmap, Weights};
use fgclip::config::{Family, ModelConfig};
use fgclip::family::Towers;
use fgclip::hub::ModelFiles;
use fgclip::plan::{ExecutionPlan, Kernels};
use fgclip::registry::load_towers;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, TrainError};

/// ln(100): the stage-2 scales FG-CLIP 2 creates (`--log_scale` default, docs/losses.md#stage-2-logit-scales).
pub const FGCLIP2_STAGE2_LOG_SCALE: f32 = 4.6052;

pub struct Trainable {
    pub varmap: VarMap,
    /// The family's towers built on the variables (the same trait inference uses).
    pub towers: Box<dyn Towers>,
    /// How the towers compute (training op set), fixed when they are built.
    pub plan: ExecutionPlan,
    pub config: ModelConfig,
    /// The checkpoint's `config.json` text, written back unchanged on save.
    pub config_json: String,
    /// Tokenizer files to copy next to saved weights (so a checkpoint folder is self-contained).
    pub tokenizer_files: Vec<PathBuf>,
    pub device: Device,
}

impl Trainable {
    pub fn family(&self) -> Family {
        self.config.family()
    }

    /// Loads an official checkpoint folder as trainable variables; creates the stage-2 scales when the
    /// checkpoint lacks them (FG-CLIP: copies of `logit_scale`; FG-CLIP 2: ln 100).
    pub fn from_files(files: &ModelFiles, device: &Device) -> Result<Self> {
        let config = ModelConfig::from_file(&files.config)?;
        let config_json = std::fs::read_to_string(&files.config)?;
        let varmap = VarMap::new();
        load_into_varmap(&files.weights, &varmap, DType::F32, device)?;
        let tokenizer_files = files.side_files();
        Self::build(varmap, config, config_json, tokenizer_files, device)
    }

    /// A freshly initialised model of `config_path`'s configuration (training from scratch), with the HF
    /// initialisation rules of , seeded. `tokenizer_dir` supplies the tokenizer files.
    pub fn from_scratch(config_path: &Path, tokenizer_files: Vec<PathBuf>, seed: u64, device: &Device) -> Result<Self> {
        let config = ModelConfig::from_file(config_path)?;
        let config_json = std::fs::read_to_string(config_path)?;
        // A random pass records every tensor the towers ask for, with its name and shape.
        let probe = Weights::random(0.02, DType::F32, &Device::Cpu);
        drop(load_towers(&config, &probe, &ExecutionPlan::training(&Device::Cpu, Kernels::Reference)?)?);
        let mut shapes: Vec<(String, Vec<usize>)> =
            probe.recorded().into_iter().map(|(k, t)| (k, t.dims().to_vec())).collect();
        shapes.sort();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
            for (name, dims) in shapes {
                let values = init_values(&name, &dims, config.family(), &mut rng);
                let t = Tensor::from_vec(values, dims.as_slice(), device)?;
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        Self::build(varmap, config, config_json, tokenizer_files, device)
    }

    fn build(
        varmap: VarMap,
        config: ModelConfig,
        config_json: String,
        tokenizer_files: Vec<PathBuf>,
        device: &Device,
    ) -> Result<Self> {
        {
            let mut data = varmap.data().lock().map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
            let stage2 = match config.family() {
                Family::FgClip => {
                    let ls = data
                        .get("logit_scale")
                        .ok_or_else(|| TrainError::Config("checkpoint has no logit_scale".into()))?
                        .as_tensor()
                        .flatten_all()?
                        .to_vec1::<f32>()?[0];
                    ls
                }
                Family::FgClip2 => FGCLIP2_STAGE2_LOG_SCALE,
            };
            for name in ["logit_scale_finegraind", "logit_scale_hardneg"] {
                if !data.contains_key(name) {
                    data.insert(name.to_string(), Var::from_tensor(&Tensor::new(stage2, device)?)?);
                }
            }
        }
        let plan = ExecutionPlan::training(device, Kernels::Auto)?;
        let towers = load_towers(&config, &Weights::from_varmap(&varmap, DType::F32, device), &plan)?;
        Ok(Self { varmap, towers, plan, config, config_json, tokenizer_files, device: device.clone() })
    }

    /// The same variables with the towers rebuilt for `kernels` (`Reference`: candle's composed ops instead of
    /// the fused CPU training ops, to measure or cross-check them).
    pub fn with_kernels(mut self, kernels: Kernels) -> Result<Self> {
        self.plan = ExecutionPlan::training(&self.device, kernels)?;
        let w = Weights::from_varmap(&self.varmap, DType::F32, &self.device);
        self.towers = load_towers(&self.config, &w, &self.plan)?;
        Ok(self)
    }

    /// The variable named `name` (official key).
    pub fn var(&self, name: &str) -> Result<Var> {
        let data = self.varmap.data().lock().map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
        data.get(name).cloned().ok_or_else(|| TrainError::Config(format!("no parameter named {name}")))
    }

    /// Every (name, variable), sorted by name (a stable order for optimiser state and checkpoints).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("variable map lock");
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Current values by official key, copied to the CPU (a `detach` would alias the storage that the
    /// optimiser updates in place).
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        self.named_vars()
            .into_iter()
            .map(|(k, v)| Ok((k, v.as_tensor().detach().to_device(&Device::Cpu)?.copy()?)))
            .collect()
    }

    /// Writes a checkpoint folder in the official layout: `model.safetensors`, `config.json`, tokenizer files.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("model.safetensors.tmp");
        candle_core::safetensors::save(&self.state_dict()?, &tmp)?;
        std::fs::rename(&tmp, dir.join("model.safetensors"))?;
        std::fs::write(dir.join("config.json"), &self.config_json)?;
        for f in &self.tokenizer_files {
            if let Some(name) = f.file_name() {
                let dst = dir.join(name);
                if dst != *f {
                    std::fs::copy(f, &dst).map_err(|e| TrainError::File {
                        path: f.clone(),
                        msg: format!("copy to {}: {e}", dst.display()),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Overwrites the variables with the tensors of `path` (resume); every variable must be present.
    pub fn load_state(&self, path: &Path) -> Result<()> {
        let ts = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| TrainError::Checkpoint { path: path.into(), msg: e.to_string() })?;
        for (name, var) in self.named_vars() {
            let t = ts.get(&name).ok_or_else(|| TrainError::Checkpoint {
                path: path.into(),
                msg: format!("tensor `{name}` is missing"),
            })?;
            if t.dims() != var.dims() {
                return Err(TrainError::Checkpoint {
                    path: path.into(),
                    msg: format!("tensor `{name}` has shape {:?}, the model needs {:?}", t.dims(), var.dims()),
                });
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// Initial values of one tensor by the HF rules (), simplified where the rule only matters for
/// released-size stability: norms 1/0, biases 0, position tables N(0, 1/√width) (vision) or N(0, 0.01),
/// token embeddings N(0, 0.02), matrices Xavier-uniform, MAP probe Xavier-uniform, logit scales ln(1/0.07)
/// (FG-CLIP, CLIP's init) or ln 10 with bias −10 (FG-CLIP 2, SigLIP's init).
fn init_values(name: &str, dims: &[usize], family: Family, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n: usize = dims.iter().product();
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let is_norm =
        name.contains("layer_norm") || name.contains("layernorm") || name.contains("norm.") || name.contains("_norm");
    let normal = |rng: &mut ChaCha8Rng, std: f32| -> Vec<f32> { (0..n).map(|_| std * gauss(rng)).collect() };
    match leaf {
        "logit_scale" => return vec![if family == Family::FgClip { (1.0f32 / 0.07).ln() } else { 10f32.ln() }; n],
        "logit_bias" => return vec![-10.0; n],
        _ => {}
    }
    if is_norm {
        return vec![if leaf == "weight" { 1.0 } else { 0.0 }; n];
    }
    if leaf.ends_with("bias") {
        return vec![0.0; n];
    }
    if name.contains("position_embedding") {
        let width = *dims.last().unwrap_or(&1) as f32;
        let std = if name.starts_with("vision_model") { width.powf(-0.5) } else { 0.01 };
        return normal(rng, std);
    }
    if name.contains("embedding") && !name.contains("patch") {
        return normal(rng, 0.02);
    }
    // Matrices (Linear, in_proj, conv patch embedding flattened to fan_in × fan_out) and the probe.
    let fan_out = dims.first().copied().unwrap_or(1) as f32;
    let fan_in = (n as f32 / fan_out).max(1.0);
    let a = (6.0 / (fan_in + fan_out)).sqrt();
    (0..n).map(|_| rng.random_range(-a..a)).collect()
}

/// A standard normal sample (Box–Muller).
fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}
