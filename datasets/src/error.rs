//! Error types of the data pipeline.
//!
//! Why one enum with locations: a CPT run reads thousands of shards written by several
//! generators, and the only useful error is one that says *which file, which row group,
//! which row* is wrong. Every variant that comes from data carries the path and, where it
//! is known, the row group and row. Nothing in this crate panics on bad input.

use std::path::PathBuf;

use thiserror::Error;

/// Result alias used across the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Every way the pipeline can fail.
#[derive(Debug, Error)]
pub enum DataError {
    /// A glob pattern is syntactically invalid.
    #[error("invalid glob pattern `{pattern}`: {msg}")]
    BadGlob { pattern: String, msg: String },

    /// A source's globs matched no file at all.
    #[error("source `{source_name}`: pattern(s) {patterns:?} matched no files")]
    EmptyGlob {
        source_name: String,
        patterns: Vec<String>,
    },

    /// The file system refused (open, stat, create, write). `error` is part of the message
    /// rather than a `source`, so that it is printed once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The footer cannot be read: truncated, empty, or not Parquet at all.
    #[error("{}: not a readable Parquet file (truncated or not Parquet): {msg}", path.display())]
    NotParquet { path: PathBuf, msg: String },

    /// A column is missing, renamed, or has the wrong type.
    #[error("{}: schema: {msg}", path.display())]
    Schema { path: PathBuf, msg: String },

    /// A row group could not be decoded (corrupt pages, invalid UTF-8 in a string column, …).
    #[error("{}: row group {row_group}: {msg}", path.display())]
    RowGroup {
        path: PathBuf,
        row_group: usize,
        msg: String,
    },

    /// One row is invalid (null id, no or several contents, messages that are not ChatML, …).
    #[error("{}: row group {row_group}, row {row}: {msg}", path.display())]
    Row {
        path: PathBuf,
        row_group: usize,
        row: u64,
        msg: String,
    },

    /// Writing a shard failed.
    #[error("{}: writing Parquet: {msg}", path.display())]
    Write { path: PathBuf, msg: String },

    /// The tokenizer could not be loaded or failed to encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A loader or packing configuration is inconsistent.
    #[error("config: {0}")]
    Config(String),

    /// A saved loader state does not fit this loader (other data, config, rank or world).
    #[error("resume: {0}")]
    Resume(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn schema(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        DataError::Schema {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// A conversation that is not valid ChatML for the Qwen3 template.
///
/// Carries no location: the reader wraps it into [`DataError::Row`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("messages are not ChatML: {0}")]
pub struct ChatError(pub String);
