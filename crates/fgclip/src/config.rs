//! Typed configurations, deserialised straight from a checkpoint's `config.json`.
//!
//! FG-CLIP (v1) checkpoints serialise HF's `CLIPConfig` (`model_type: "clip"`, architectures `FGCLIPModel`);
//! FG-CLIP 2 checkpoints serialise `Fgclip2Config` (`model_type: "fgclip2"`). Missing fields take the defaults of
//! the official configuration classes (docs/models.md#configuration), so a sparse config still loads.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// Activation functions used by the released checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// `x·σ(1.702x)` (OpenAI CLIP, FG-CLIP).
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// tanh approximation of GELU (SigLIP 2, FG-CLIP 2).
    #[serde(rename = "gelu_pytorch_tanh", alias = "gelu_new", alias = "gelu_fast")]
    GeluTanh,
    /// exact erf GELU.
    #[serde(rename = "gelu")]
    Gelu,
}

/// The sizes of a tower's transformer blocks, read from its config (`hidden_size`, `num_hidden_layers`, ...).
#[derive(Clone, Copy, Debug)]
pub struct BlockDims {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub act: Activation,
    pub eps: f64,
}

// ---------------------------------------------------------------- FG-CLIP (v1)

fn d_v1_text_vocab() -> usize {
    49408
}
fn d_v1_text_hidden() -> usize {
    512
}
fn d_v1_text_inter() -> usize {
    2048
}
fn d_12() -> usize {
    12
}
fn d_8() -> usize {
    8
}
fn d_77() -> usize {
    77
}
fn d_quick_gelu() -> Activation {
    Activation::QuickGelu
}
fn d_eps5() -> f64 {
    1e-5
}
fn d_eos_v1() -> u32 {
    49407
}
fn d_768() -> usize {
    768
}
fn d_3072() -> usize {
    3072
}
fn d_224() -> usize {
    224
}
fn d_32() -> usize {
    32
}
fn d_3() -> usize {
    3
}
fn d_512() -> usize {
    512
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "d_v1_text_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_v1_text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_v1_text_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_8")]
    pub num_attention_heads: usize,
    /// Rows of the short position table (77).
    #[serde(default = "d_77")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps5")]
    pub layer_norm_eps: f64,
    /// `FGCLIPModel.__init__` forces 49407 whatever the config says (docs/models.md#fg-clip-text-tower); kept for `info`.
    #[serde(default = "d_eos_v1")]
    pub eos_token_id: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    #[serde(default = "d_224")]
    pub image_size: usize,
    #[serde(default = "d_32")]
    pub patch_size: usize,
    #[serde(default = "d_3")]
    pub num_channels: usize,
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps5")]
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    /// Patches per side of the square grid (14 for B/16-224, 24 for L/14-336).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[derive(Debug, Clone)]
pub struct FgClipConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
}

// ---------------------------------------------------------------- FG-CLIP 2

fn d_v2_vocab() -> usize {
    32000
}
fn d_64() -> usize {
    64
}
fn d_gelu_tanh() -> Activation {
    Activation::GeluTanh
}
fn d_eps6() -> f64 {
    1e-6
}
fn d_keep() -> usize {
    20
}
fn d_196() -> usize {
    196
}
fn d_256() -> usize {
    256
}
fn d_16() -> usize {
    16
}

#[derive(Debug, Clone, Deserialize)]
pub struct Fgclip2TextConfig {
    #[serde(default = "d_v2_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    /// Rows of the short position table (64); short and box texts are padded to exactly this length.
    #[serde(default = "d_64")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_gelu_tanh")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps6")]
    pub layer_norm_eps: f64,
    /// Output size of `text_model.head`; equals `hidden_size` when absent.
    #[serde(default)]
    pub projection_size: Option<usize>,
    /// Rows taken from `position_embedding_ori` before switching to `position_embedding_res` (long walk).
    #[serde(default = "d_keep")]
    pub keep_len: usize,
    /// Length of the long position tables; long texts are padded to exactly this length.
    #[serde(default = "d_196")]
    pub longtext_len: usize,
}

impl Fgclip2TextConfig {
    pub fn projection_size(&self) -> usize {
        self.projection_size.unwrap_or(self.hidden_size)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Fgclip2VisionConfig {
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    #[serde(default = "d_3")]
    pub num_channels: usize,
    /// Size of the learned position table; must be a square (16×16 = 256 for the released models).
    #[serde(default = "d_256")]
    pub num_patches: usize,
    #[serde(default = "d_16")]
    pub patch_size: usize,
    #[serde(default = "d_gelu_tanh")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps6")]
    pub layer_norm_eps: f64,
}

impl Fgclip2VisionConfig {
    /// Side of the square learned position grid.
    pub fn position_grid(&self) -> usize {
        (self.num_patches as f64).sqrt().round() as usize
    }
}

#[derive(Debug, Clone)]
pub struct Fgclip2Config {
    pub text: Fgclip2TextConfig,
    pub vision: Fgclip2VisionConfig,
}

/// Every tower config names its block sizes the same way (HF convention).
macro_rules! impl_block_dims {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn block_dims(&self) -> BlockDims {
                BlockDims {
                    hidden: self.hidden_size,
                    layers: self.num_hidden_layers,
                    heads: self.num_attention_heads,
                    intermediate: self.intermediate_size,
                    act: self.hidden_act,
                    eps: self.layer_norm_eps,
                }
            }
        }
    )*};
}
impl_block_dims!(ClipTextConfig, ClipVisionConfig, Fgclip2TextConfig, Fgclip2VisionConfig);

// ---------------------------------------------------------------- family detection

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// FG-CLIP (ICML 2025): CLIP towers, softmax logits, short/long text.
    FgClip,
    /// FG-CLIP 2: SigLIP 2 NaFlex towers, sigmoid logits, short/long/box text.
    FgClip2,
}

impl Family {
    pub fn name(&self) -> &'static str {
        match self {
            Family::FgClip => "FG-CLIP",
            Family::FgClip2 => "FG-CLIP 2",
        }
    }
}

#[derive(Debug, Clone)]
pub enum ModelConfig {
    FgClip(FgClipConfig),
    FgClip2(Fgclip2Config),
}

#[derive(Deserialize)]
struct RawTop {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    text_config: Option<serde_json::Value>,
    vision_config: Option<serde_json::Value>,
    // transformers < 4.2x wrote these instead of text_config / vision_config.
    text_config_dict: Option<serde_json::Value>,
    vision_config_dict: Option<serde_json::Value>,
    projection_dim: Option<usize>,
}

impl ModelConfig {
    pub fn family(&self) -> Family {
        match self {
            ModelConfig::FgClip(_) => Family::FgClip,
            ModelConfig::FgClip2(_) => Family::FgClip2,
        }
    }

    /// Reads and validates `config.json`; the family comes from `model_type` / `architectures`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config { path: path.into(), msg: format!("cannot read: {e}") })?;
        Self::from_json_str(&text, path)
    }

    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let cfg_err = |msg: String| Error::Config { path: path.into(), msg };
        let raw: RawTop = serde_json::from_str(text).map_err(|e| cfg_err(format!("invalid JSON: {e}")))?;
        let archs = raw.architectures.clone().unwrap_or_default();
        let mt = raw.model_type.as_deref().unwrap_or("");
        let is_v2 = mt == "fgclip2" || archs.iter().any(|a| a == "FG_CLIP2_Model" || a == "Fgclip2Model");
        let is_v1 = mt == "clip" || mt == "fgclip" || archs.iter().any(|a| a == "FGCLIPModel");
        let sub = |v: Option<serde_json::Value>, alt: Option<serde_json::Value>| {
            v.or(alt).unwrap_or_else(|| serde_json::Value::Object(Default::default()))
        };
        fn parse<T: serde::de::DeserializeOwned>(field: &str, v: serde_json::Value, path: &Path) -> Result<T> {
            serde_json::from_value(v)
                .map_err(|e| Error::Config { path: path.into(), msg: format!("field `{field}`: {e}") })
        }
        if is_v2 {
            let text: Fgclip2TextConfig = parse("text_config", sub(raw.text_config, raw.text_config_dict), path)?;
            let vision: Fgclip2VisionConfig =
                parse("vision_config", sub(raw.vision_config, raw.vision_config_dict), path)?;
            let cfg = Fgclip2Config { text, vision };
            cfg.validate().map_err(cfg_err)?;
            Ok(ModelConfig::FgClip2(cfg))
        } else if is_v1 {
            let text: ClipTextConfig = parse("text_config", sub(raw.text_config, raw.text_config_dict), path)?;
            let vision: ClipVisionConfig =
                parse("vision_config", sub(raw.vision_config, raw.vision_config_dict), path)?;
            let cfg = FgClipConfig { text, vision, projection_dim: raw.projection_dim.unwrap_or_else(d_512) };
            cfg.validate().map_err(cfg_err)?;
            Ok(ModelConfig::FgClip(cfg))
        } else {
            Err(Error::UnknownFamily { path: path.into(), model_type: raw.model_type, architectures: archs })
        }
    }
}

fn check_heads(tower: &str, hidden: usize, heads: usize) -> std::result::Result<(), String> {
    if hidden == 0 {
        return Err(format!("{tower}: hidden_size is 0"));
    }
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(format!("{tower}: hidden_size {hidden} is not divisible by num_attention_heads {heads}"));
    }
    Ok(())
}

fn check_layers(tower: &str, layers: usize) -> std::result::Result<(), String> {
    if layers == 0 {
        return Err(format!("{tower}: num_hidden_layers is 0"));
    }
    Ok(())
}

impl FgClipConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        check_layers("text_config", self.text.num_hidden_layers)?;
        check_layers("vision_config", self.vision.num_hidden_layers)?;
        check_heads("text_config", self.text.hidden_size, self.text.num_attention_heads)?;
        check_heads("vision_config", self.vision.hidden_size, self.vision.num_attention_heads)?;
        if self.vision.patch_size == 0 || !self.vision.image_size.is_multiple_of(self.vision.patch_size) {
            return Err(format!(
                "vision_config: image_size {} is not a multiple of patch_size {}",
                self.vision.image_size, self.vision.patch_size
            ));
        }
        Ok(())
    }
}

impl Fgclip2Config {
    fn validate(&self) -> std::result::Result<(), String> {
        check_layers("text_config", self.text.num_hidden_layers)?;
        check_layers("vision_config", self.vision.num_hidden_layers)?;
        check_heads("text_config", self.text.hidden_size, self.text.num_attention_heads)?;
        check_heads("vision_config", self.vision.hidden_size, self.vision.num_attention_heads)?;
        let g = self.vision.position_grid();
        if g * g != self.vision.num_patches {
            return Err(format!("vision_config.num_patches {} is not a square", self.vision.num_patches));
        }
        if self.vision.patch_size == 0 {
            return Err("vision_config.patch_size is 0".into());
        }
        if self.text.keep_len > self.text.longtext_len {
            return Err(format!(
                "text_config.keep_len {} exceeds longtext_len {}",
                self.text.keep_len, self.text.longtext_len
            ));
        }
        Ok(())
    }

    /// Joint embedding size: the MAP head output (vision hidden size) is the image embedding.
    pub fn embed_dim(&self) -> usize {
        self.vision.hidden_size
    }
}
