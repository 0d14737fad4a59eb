//! Errors of the model crate. Every variant names the file, key or tensor at fault.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A `config.json` that cannot be turned into a [`crate::Qwen3Config`].
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A checkpoint file (safetensors, index) that is missing, corrupt or does not fit the config.
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// Model inputs that the model cannot take (token ids, positions, shapes).
    #[error("invalid input: {0}")]
    Input(String),
    /// `error` is part of the message rather than a `source`, so that it is printed once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl ModelError {
    pub fn config(path: &Path, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn checkpoint(path: &Path, message: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn io(path: &Path, error: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
