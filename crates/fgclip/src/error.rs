//! Typed errors of the library. The CLI renders them for people (with `anyhow` context); every variant names
//! the thing that was wrong (file, tensor, field) so a user can act on it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    #[error("config {path}: {msg}")]
    Config { path: PathBuf, msg: String },

    #[error("unknown model family in {path}: model_type {model_type:?}, architectures {architectures:?} (expected FG-CLIP `clip`/`FGCLIPModel` or FG-CLIP 2 `fgclip2`)")]
    UnknownFamily { path: PathBuf, model_type: Option<String>, architectures: Vec<String> },

    #[error("checkpoint: tensor `{name}` is missing")]
    MissingTensor { name: String },

    #[error("checkpoint: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape { name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("model {model}: {msg}")]
    Hub { model: String, msg: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("image {path}: {msg}")]
    Image { path: String, msg: String },

    #[error("invalid input: {0}")]
    Input(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
}
