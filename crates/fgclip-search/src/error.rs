//! Errors of collection search. Every message names what it is about: the file, the database, the setting.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store (SQLite file or Postgres server) refused or failed an operation.
    #[error("index {db}: {msg}")]
    Store { db: String, msg: String },
    /// The index was made by another model, a newer schema, or with other settings.
    #[error("index {db}: {msg}")]
    Mismatch { db: String, msg: String },
    /// Another `fgclip index` holds the index.
    #[error("index {db} is being written by another `fgclip index` (lock file {lock}); wait for it to finish")]
    Busy { db: String, lock: String },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Model(#[from] fgclip::Error),
}

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Model(fgclip::Error::from(e))
    }
}

pub type Result<T> = std::result::Result<T, Error>;
