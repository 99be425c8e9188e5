//! fgclip: FG-CLIP (ICML 2025) and FG-CLIP 2 in Rust.
//!
//! Data flows one way: files → [`hub`] (find or download) → [`config`], [`checkpoint`] (mmap safetensors, named
//! shape checks) → [`plan`] (how to compute, decided once) → the family's towers ([`family`]: [`fgclip1`],
//! [`fgclip2`], built from [`nn`], picked by [`registry`]) with the image processor (`fgclip_image`) and [`tokenize`] → features
//! ([`Model`]) → [`tasks`] (zero-shot labels, box labelling, heatmaps). `docs/architecture.md` has the map.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod family;
pub mod fgclip1;
pub mod fgclip2;
pub mod flops;
pub mod hub;
pub mod loss;
pub mod model;
pub mod nn;
pub mod pixels;
pub mod plan;
pub mod registry;
pub mod tasks;
pub mod tokenize;

pub use error::{Error, Result};
pub use family::{Normalizer, ScoreHead, Towers};
pub use fgclip_image;
pub use fgclip_image::PatchBudget;
pub use fgclip_kernels::cpu::Isa;
pub use model::{DenseMap, LoadOptions, Model, TextMask};
pub use pixels::PreparedImages;
pub use plan::{ExecutionPlan, Kernels, Precision};

/// A device by name: `cpu`, `cuda` (GPU 0) or `cuda:N`. The error says what was wrong (callers prefix the
/// option's name); `cuda` fails on a build without the `cuda` feature.
pub fn parse_device(name: &str) -> std::result::Result<candle_core::Device, String> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n: usize = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| format!("{s:?}: expected cuda:N with N a GPU number"))?,
                None => 0,
            };
            candle_core::Device::new_cuda(n).map_err(|e| format!("{s}: {e} (is this a CUDA build?)"))
        }
        s => Err(format!("{s:?}: expected cpu, cuda or cuda:N")),
    }
}

/// Which text regime to encode with (see `docs/models.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextWalk {
    /// Short captions, class names (FG-CLIP: 77 tokens, FG-CLIP 2: 64).
    Short,
    /// Long captions (FG-CLIP: 248 tokens, FG-CLIP 2: 196).
    Long,
    /// Region / box captions (FG-CLIP 2's `boxtext_head`; FG-CLIP uses the short walk for boxes).
    Box,
}

impl std::str::FromStr for TextWalk {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "short" => Ok(TextWalk::Short),
            "long" => Ok(TextWalk::Long),
            "box" => Ok(TextWalk::Box),
            _ => Err(Error::input(format!("unknown walk {s:?} (expected short, long or box)"))),
        }
    }
}
