//! Typed errors of the training crate; each names what was wrong (file and line, field, tensor, rank).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] fgclip::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{file}:{line}: {msg}")]
    Data { file: PathBuf, line: usize, msg: String },
    #[error("config: {0}")]
    Config(String),
    #[error("data parallel: {0}")]
    Dist(String),
    /// A collective found that another rank had stopped (its own error says why).
    #[error("data parallel: rank {rank} stopped before this collective")]
    PeerStopped { rank: usize },
    #[error("objective: {0}")]
    Objective(String),
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
