//! Stage-2 initialisation from the public backbones, as the official trainers do it (docs/models.md#fg-clip-text-tower, docs/models.md#fg-clip-2-text-tower).
//!
//! * FG-CLIP from an HF `CLIPModel` (`openai/clip-vit-base-patch16` layout) mirrors `train_fgclip.py` with
//!   `--from_openai True`: `FGCLIPModel.resize_postion_embeding()` (v1.0 `fgclip/model/clip_strc/fgclip.py`),
//!   `copy_weight()` (`text_filip_projection ← text_projection`) and
//!   `logit_scale_finegraind = logit_scale_hardneg = torch.ones([]) * model.logit_scale`.
//! * FG-CLIP 2 from a SigLIP 2 NaFlex `Siglip2Model` mirrors `train_fgclip2.py` with `--from_siglip2 True`:
//!   `FG_CLIP2_Model.resize_postion_embeding()` (main `fgclip2/model/strcs/fgclip2.py`), `copy_weight()`
//!   (`longtext_head`, `boxtext_head ← text_model.head`), `copy_dense_feature_head()`
//!   (`dense_feature_head ← vision_model.head` state dict) and both stage-2 scales `= torch.ones([]) * 4.6052`.
//!
//! The position stretch is not `F.interpolate`: it is a hand-written loop (identical in both branches) with
//! `keep_len = 20` hard-coded, whatever the config says. For a table P of L rows it builds 4·L − 60 rows:
//!
//! ```text
//! new[i]          = P[i]                                         i < 20
//! new[4i+20]      = P[i+20]
//! new[4i+21]      = 3*P[i+20]/4 + 1*P[i+21]/4                    i = 0 .. L-22
//! new[4i+22]      = 2*P[i+20]/4 + 2*P[i+21]/4
//! new[4i+23]      = 1*P[i+20]/4 + 3*P[i+21]/4
//! new[4L-64+k]    = P[L-1] + k*(P[L-1] - P[L-2])/4               k = 0 .. 3 (extrapolated)
//! ```
//!
//! i.e. linear interpolation at stride 4 between consecutive rows (each original row lands on a grid point,
//! like `align_corners=True`), then the last slope extended by three quarter-steps. We evaluate each
//! expression in f32 in Python's operator order (`(3*a)/4 + (1*b)/4`), which is what torch computes on the
//! float32 tensors `from_pretrained` produces (no `torch_dtype` → f32), so the tables are bit-identical to the
//! official ones. `ori` and `res` start as identical copies. For the same reason every float tensor of the
//! result is f32; the trainers cast to bf16 only afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fgclip::checkpoint::Weights;
use fgclip::config::{Family, ModelConfig};
use fgclip::hub::ModelFiles;
use serde_json::{json, Value};

use crate::error::{Result, TrainError};
use crate::trainable::{Trainable, FGCLIP2_STAGE2_LOG_SCALE};

/// Rows copied unchanged by the stretch (`keep_len = 20`, hard-coded in `resize_postion_embeding`).
pub const STRETCH_KEEP_LEN: usize = 20;

pub const TEXT_POSITION: &str = "text_model.embeddings.position_embedding.weight";
pub const TEXT_POSITION_ORI: &str = "text_model.embeddings.position_embedding_ori.weight";
pub const TEXT_POSITION_RES: &str = "text_model.embeddings.position_embedding_res.weight";
const STAGE2_SCALES: [&str; 2] = ["logit_scale_finegraind", "logit_scale_hardneg"];

/// Rows of the stretched table for an `rows`-row table: 4·rows − 3·20 (77 → 248, 64 → 196).
pub fn stretched_len(rows: usize) -> usize {
    4 * rows - 3 * STRETCH_KEEP_LEN
}

fn missing(name: &str) -> TrainError {
    TrainError::Model(fgclip::Error::MissingTensor { name: name.to_string() })
}

fn get<'a>(ts: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    ts.get(name).ok_or_else(|| missing(name))
}

/// `resize_postion_embeding` on one table: `p` is `[L, D]` with L > 20; returns `[4L − 60, D]` f32,
/// bit-identical to the official loop run on the f32 table (see the module header for the formula).
pub fn stretch_position_table(p: &Tensor) -> Result<Tensor> {
    let bad = |msg: String| TrainError::Config(format!("position table to stretch: {msg}"));
    let &[l, d] = p.dims() else {
        return Err(bad(format!("must be 2-D [rows, width], got shape {:?}", p.dims())));
    };
    // With ≤ 20 rows the official loop writes its extrapolated rows over the kept ones (or indexes row −1).
    if l <= STRETCH_KEEP_LEN {
        return Err(bad(format!("has {l} rows; the stretch keeps the first {STRETCH_KEEP_LEN} and needs more")));
    }
    let rows: Vec<Vec<f32>> = p.to_dtype(DType::F32)?.to_vec2()?;
    let keep = STRETCH_KEEP_LEN;
    let n = stretched_len(l);
    let mut out = vec![0f32; n * d];
    for (i, r) in rows.iter().take(keep).enumerate() {
        out[i * d..(i + 1) * d].copy_from_slice(r);
    }
    // Each expression in Python's evaluation order on f32 values: `3*a/4` is `(3*a)/4`. Rust neither
    // reassociates nor contracts float arithmetic, so every intermediate rounds as torch's does.
    for i in 0..(l - 1 - keep) {
        let (a, b) = (&rows[i + keep], &rows[i + 1 + keep]);
        let base = 4 * i + keep;
        for j in 0..d {
            out[base * d + j] = a[j];
            out[(base + 1) * d + j] = 3.0 * a[j] / 4.0 + 1.0 * b[j] / 4.0;
            out[(base + 2) * d + j] = 2.0 * a[j] / 4.0 + 2.0 * b[j] / 4.0;
            out[(base + 3) * d + j] = 1.0 * a[j] / 4.0 + 3.0 * b[j] / 4.0;
        }
    }
    let (last, prev) = (&rows[l - 1], &rows[l - 2]);
    for k in 0..4 {
        let row = n - 4 + k;
        let kf = k as f32;
        for j in 0..d {
            out[row * d + j] = last[j] + kf * (last[j] - prev[j]) / 4.0;
        }
    }
    Ok(Tensor::from_vec(out, (n, d), &Device::Cpu)?)
}

/// What `from_pretrained` (no `torch_dtype`) holds: float tensors as f32; the non-persistent `position_ids`
/// buffers that older CLIP checkpoints still store are not part of the FG-CLIP state dict.
fn as_loaded(tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(tensors.len());
    for (k, t) in tensors {
        if k.ends_with(".position_ids") {
            continue;
        }
        let t = if t.dtype().is_float() && t.dtype() != DType::F32 { t.to_dtype(DType::F32)? } else { t };
        out.insert(k, t);
    }
    Ok(out)
}

/// The stretched long tables `position_embedding_ori` / `_res` from the short table.
fn insert_long_tables(ts: &mut HashMap<String, Tensor>) -> Result<usize> {
    let long = stretch_position_table(get(ts, TEXT_POSITION)?)
        .map_err(|e| TrainError::Config(format!("`{TEXT_POSITION}`: {e}")))?;
    let rows = long.dim(0)?;
    ts.insert(TEXT_POSITION_RES.to_string(), long.copy()?);
    ts.insert(TEXT_POSITION_ORI.to_string(), long);
    Ok(rows)
}

/// One value as a 0-d f32 tensor (the stage-2 scales are `torch.ones([]) * x`).
fn scalar_of(ts: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    let t = get(ts, name)?;
    if t.elem_count() != 1 {
        return Err(TrainError::Model(fgclip::Error::TensorShape {
            name: name.to_string(),
            expected: vec![],
            found: t.dims().to_vec(),
        }));
    }
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.get(0)?)
}

/// FG-CLIP stage-2 initialisation of an HF `CLIPModel` state dict (): adds the stretched
/// `position_embedding_ori/res` ([4L − 60, Dt], 248 for CLIP's 77), `text_filip_projection.weight` (a copy of
/// `text_projection.weight`) and, when `logit_scale_copy`, `logit_scale_finegraind` = `logit_scale_hardneg` =
/// the loaded `logit_scale` (0-d), as `train_fgclip.py` does. With `logit_scale_copy == false` the two scales
/// are left as the input has them (absent for a CLIP backbone; [`Trainable`] creates the same copies on load).
/// Every other tensor is kept (as f32); FG-CLIP tensors already present are overwritten, as the official
/// `--from_openai` path overwrites them.
pub fn fgclip_from_clip(tensors: HashMap<String, Tensor>, logit_scale_copy: bool) -> Result<HashMap<String, Tensor>> {
    let mut ts = as_loaded(tensors)?;
    insert_long_tables(&mut ts)?;
    let proj = get(&ts, "text_projection.weight")?.copy()?;
    ts.insert("text_filip_projection.weight".to_string(), proj);
    if logit_scale_copy {
        let s = scalar_of(&ts, "logit_scale")?;
        for name in STAGE2_SCALES {
            ts.insert(name.to_string(), s.copy()?);
        }
    }
    Ok(ts)
}

/// FG-CLIP 2 stage-2 initialisation of a SigLIP 2 (`Siglip2Model`, NaFlex) state dict (docs/models.md#fg-clip-2-text-tower): adds
/// the stretched `position_embedding_ori/res` (64 → 196 rows), `longtext_head.{weight,bias}` and
/// `boxtext_head.{weight,bias}` (copies of `text_model.head`, which must be square: projection_size = Dt, as
/// the official `copy_` requires), `dense_feature_head.*` (a copy of every `vision_model.head.*` tensor), and,
/// when `stage2_log_scale` is given, `logit_scale_finegraind` = `logit_scale_hardneg` = that value (0-d; the
/// official `--log_scale` is [`FGCLIP2_STAGE2_LOG_SCALE`] = 4.6052). `logit_scale` / `logit_bias` are kept.
pub fn fgclip2_from_siglip2(
    tensors: HashMap<String, Tensor>,
    stage2_log_scale: Option<f32>,
) -> Result<HashMap<String, Tensor>> {
    let mut ts = as_loaded(tensors)?;
    for name in ["logit_scale", "logit_bias"] {
        get(&ts, name)?;
    }
    insert_long_tables(&mut ts)?;

    let (hw, hb) = (get(&ts, "text_model.head.weight")?.clone(), get(&ts, "text_model.head.bias")?.clone());
    let &[p, dt] = hw.dims() else {
        return Err(TrainError::Config(format!("`text_model.head.weight` must be 2-D, got shape {:?}", hw.dims())));
    };
    if p != dt {
        return Err(TrainError::Config(format!(
            "`text_model.head.weight` has shape [{p}, {dt}]; longtext_head/boxtext_head are [Dt, Dt] copies of it, \
             so projection_size must equal the text hidden size {dt}"
        )));
    }
    for head in ["longtext_head", "boxtext_head"] {
        ts.insert(format!("{head}.weight"), hw.copy()?);
        ts.insert(format!("{head}.bias"), hb.copy()?);
    }

    // `dense_feature_head.load_state_dict(vision_model.head.state_dict())`: the full head, probe included.
    ts.retain(|k, _| !k.starts_with("dense_feature_head."));
    let head: Vec<(String, Tensor)> = ts
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix("vision_model.head.").map(|s| (format!("dense_feature_head.{s}"), t.clone()))
        })
        .collect();
    if head.is_empty() {
        return Err(missing("vision_model.head.attention.in_proj_weight"));
    }
    for (k, t) in head {
        ts.insert(k, t.copy()?);
    }

    if let Some(s) = stage2_log_scale {
        for name in STAGE2_SCALES {
            ts.insert(name.to_string(), Tensor::new(s, &Device::Cpu)?);
        }
    }
    Ok(ts)
}

/// The official FG-CLIP `config.json` for a CLIP one: `architectures = ["FGCLIPModel"]` and the text ids that
/// `FGCLIPModel.__init__` forces (eos = pad = 49407, bos = 49406; `save_pretrained` writes them back).
pub fn fgclip_config_from_clip(config: &Value) -> Result<Value> {
    let mut c = config.clone();
    let obj = c.as_object_mut().ok_or_else(|| TrainError::Config("CLIP config.json is not a JSON object".into()))?;
    obj.insert("architectures".into(), json!(["FGCLIPModel"]));
    obj.insert("model_type".into(), json!("clip"));
    let mut any = false;
    for key in ["text_config", "text_config_dict"] {
        if let Some(t) = obj.get_mut(key).and_then(Value::as_object_mut) {
            t.insert("eos_token_id".into(), json!(49407));
            t.insert("pad_token_id".into(), json!(49407));
            t.insert("bos_token_id".into(), json!(49406));
            any = true;
        }
    }
    if !any {
        obj.insert("text_config".into(), json!({"eos_token_id": 49407, "pad_token_id": 49407, "bos_token_id": 49406}));
    }
    Ok(c)
}

/// The FG-CLIP 2 `config.json` for a SigLIP 2 one: `model_type = "fgclip2"`, `architectures =
/// ["FG_CLIP2_Model"]`, the sub-config types renamed, and the long-text fields `Fgclip2TextConfig` adds
/// (`keep_len` = 20, `longtext_len` = the stretched rows). Every other field is kept.
pub fn fgclip2_config_from_siglip2(config: &Value, longtext_len: usize) -> Result<Value> {
    let mut c = config.clone();
    let obj =
        c.as_object_mut().ok_or_else(|| TrainError::Config("SigLIP 2 config.json is not a JSON object".into()))?;
    obj.insert("architectures".into(), json!(["FG_CLIP2_Model"]));
    obj.insert("model_type".into(), json!("fgclip2"));
    let text = obj.entry("text_config").or_insert_with(|| json!({}));
    let text = text.as_object_mut().ok_or_else(|| TrainError::Config("`text_config` is not a JSON object".into()))?;
    text.insert("model_type".into(), json!("fgclip2_text_model"));
    text.insert("keep_len".into(), json!(STRETCH_KEEP_LEN));
    text.insert("longtext_len".into(), json!(longtext_len));
    let vision = obj.entry("vision_config").or_insert_with(|| json!({}));
    let vision =
        vision.as_object_mut().ok_or_else(|| TrainError::Config("`vision_config` is not a JSON object".into()))?;
    vision.insert("model_type".into(), json!("fgclip2_vision_model"));
    Ok(c)
}

/// The backbone family a `config.json` describes: `model_type` "clip" → FG-CLIP, "siglip2" → FG-CLIP 2.
/// FG-CLIP checkpoints (already initialised) and other models are refused with the reason.
pub fn backbone_family(config: &Value, path: &Path) -> Result<Family> {
    let err = |msg: String| TrainError::File { path: path.to_path_buf(), msg };
    let mt = config.get("model_type").and_then(Value::as_str).unwrap_or("");
    let archs: Vec<&str> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match mt {
        "clip" if archs.contains(&"FGCLIPModel") => Err(err(
            "is already an FG-CLIP checkpoint (architectures FGCLIPModel): resume from it instead; the stage-2 \
             initialisation would overwrite its trained long position tables"
                .into(),
        )),
        "clip" => Ok(Family::FgClip),
        "siglip2" => Ok(Family::FgClip2),
        "fgclip2" => Err(err("is already an FG-CLIP 2 checkpoint (model_type fgclip2): resume from it instead".into())),
        "siglip" => Err(err("is SigLIP (v1); FG-CLIP 2 starts from SigLIP 2 NaFlex (model_type `siglip2`)".into())),
        other => Err(err(format!(
            "model_type {other:?} is not a backbone FG-CLIP starts from (expected `clip` for FG-CLIP or `siglip2` for FG-CLIP 2)"
        ))),
    }
}

/// Tokenizer / preprocessor files copied next to the converted weights (those present in the source).
const EXTRA_FILES: [&str; 3] = ["tokenizer.model", "added_tokens.json", "spiece.model"];

/// Reads a backbone folder (`config.json`, `model.safetensors` or an index + shards, tokenizer files),
/// applies the stage-2 initialisation of its family ([`fgclip_from_clip`] with the scale copies, or
/// [`fgclip2_from_siglip2`] with 4.6052) and writes an official-layout FG-CLIP / FG-CLIP 2 folder to `dst`:
/// `model.safetensors` (f32), `config.json` ([`fgclip_config_from_clip`] / [`fgclip2_config_from_siglip2`])
/// and the tokenizer and preprocessor files. Returns the family written.
pub fn convert_backbone(src: &Path, dst: &Path) -> Result<Family> {
    let files = ModelFiles::from_dir(src)?;
    let config_text = std::fs::read_to_string(&files.config)?;
    let config: Value = serde_json::from_str(&config_text)
        .map_err(|e| TrainError::File { path: files.config.clone(), msg: format!("invalid JSON: {e}") })?;
    let family = backbone_family(&config, &files.config)?;
    if let (Ok(a), Ok(b)) = (src.canonicalize(), dst.canonicalize()) {
        if a == b {
            return Err(TrainError::File { path: dst.into(), msg: "destination is the source folder".into() });
        }
    }

    let weights = Weights::from_safetensors(&files.weights, DType::F32, &Device::Cpu)?;
    let mut tensors = HashMap::new();
    for name in weights.names() {
        if !name.ends_with(".position_ids") {
            let t = weights.get_unchecked(&name)?;
            tensors.insert(name, t);
        }
    }
    drop(weights);
    let weights_label = files.weights.first().cloned().unwrap_or_else(|| src.to_path_buf());
    let in_source = |e: TrainError| TrainError::File { path: weights_label.clone(), msg: e.to_string() };
    let (tensors, config) = match family {
        Family::FgClip => (fgclip_from_clip(tensors, true).map_err(in_source)?, fgclip_config_from_clip(&config)?),
        Family::FgClip2 => {
            let ts = fgclip2_from_siglip2(tensors, Some(FGCLIP2_STAGE2_LOG_SCALE)).map_err(in_source)?;
            let long = get(&ts, TEXT_POSITION_ORI)?.dim(0)?;
            (ts, fgclip2_config_from_siglip2(&config, long)?)
        }
    };

    std::fs::create_dir_all(dst)?;
    let tmp = dst.join("model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, dst.join(fgclip::hub::WEIGHTS_FILE))?;
    let cfg_path = dst.join(fgclip::hub::CONFIG_FILE);
    let pretty = serde_json::to_string_pretty(&config)
        .map_err(|e| TrainError::File { path: cfg_path.clone(), msg: format!("cannot serialise: {e}") })?;
    std::fs::write(&cfg_path, pretty + "\n")?;

    let mut copies: Vec<PathBuf> = files.side_files();
    copies.extend(EXTRA_FILES.iter().map(|f| src.join(f)).filter(|p| p.is_file()));
    for f in copies {
        if let Some(name) = f.file_name() {
            let to = dst.join(name);
            std::fs::copy(&f, &to)
                .map_err(|e| TrainError::File { path: f.clone(), msg: format!("copy to {}: {e}", to.display()) })?;
        }
    }

    // The written config must be one our loader reads as the family we converted to.
    let written = ModelConfig::from_file(&cfg_path)?;
    if written.family() != family {
        return Err(TrainError::File { path: cfg_path, msg: format!("reads back as {}", written.family().name()) });
    }
    Ok(family)
}

/// A [`Trainable`] initialised from a backbone folder: converts `src` into `dst` ([`convert_backbone`]) and
/// loads that folder, so the run starts from exactly what a saved initial checkpoint holds.
pub fn trainable_from_backbone(src: &Path, dst: &Path, device: &Device) -> Result<Trainable> {
    convert_backbone(src, dst)?;
    Trainable::from_files(&ModelFiles::from_dir(dst)?, device)
}
