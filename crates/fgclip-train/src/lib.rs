//! fgclip-train: training and evaluation for FG-CLIP and FG-CLIP 2.
//!
//! Data flows one way: FineHARD records ([`data`], JSON or [`parquet`]) → batches in the official collator's layout ([`batch`]) →
//! the papers' objectives on the towers ([`objective`], on the loss functions of `fgclip::loss`) → the
//! optimiser ([`optim`]) and the loop with checkpoints and resume ([`trainer`]). [`synth`] renders a
//! fine-grained dataset anywhere; [`eval`] scores FG-OVD-style files.

pub mod batch;
pub mod config;
pub mod data;
pub mod dist;
pub mod error;
pub mod eval;
pub mod init;
pub mod loader;
pub mod objective;
pub mod optim;
pub mod parquet;
pub mod record;
pub mod run;
pub mod synth;
pub mod tiny;
pub mod trainable;
pub mod trainer;

pub use error::{Result, TrainError};
