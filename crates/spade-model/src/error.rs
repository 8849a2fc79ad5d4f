//! The crate's error type: every failure names what it was about (file, tensor, field).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that is unknown, missing or inconsistent.
    #[error("config field `{field}`: {reason}")]
    Config { field: String, reason: String },

    /// A checkpoint file that cannot be read or does not fit the network.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },

    /// An input (label map, instance map, photo, tensor) that the networks cannot take.
    #[error("{what}: {reason}")]
    Input { what: String, reason: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Self::Checkpoint {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub fn input(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::Input {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
