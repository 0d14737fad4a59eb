//! The sample schema: one Parquet schema for every kind of training document, and a writer
//! of shards in that schema.
//!
//! Why one schema: FAS, HAS, general text, function-calling data and raw trajectories all
//! flow through the same reader, mixer and packer; the only thing that differs is how a row
//! becomes tokens, so the content lives in exactly one of three columns:
//!
//! | column      | Arrow type            | null? | meaning |
//! |-------------|-----------------------|-------|---------|
//! | `id`        | Utf8                  | no    | unique sample id |
//! | `kind`      | Utf8                  | no    | `fas_planning`, `fas_reasoning`, `has`, `general`, `trajectory`, … |
//! | `source`    | Utf8                  | no    | provenance (generator, upstream dataset) |
//! | `text`      | Utf8                  | yes   | raw text, tokenized as is |
//! | `messages`  | Utf8 (JSON)           | yes   | ChatML conversation, rendered with the Qwen3 template |
//! | `input_ids` | List<Int32>           | yes   | pre-tokenized ids, used as is |
//! | `meta`      | Utf8 (JSON)           | yes   | free-form metadata (e.g. HAS option positions) |
//!
//! Exactly one of `text`, `messages`, `input_ids` is non-null in every row.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::chat;
use crate::error::{DataError, Result};

/// Column names of the sample schema.
pub mod columns {
    pub const ID: &str = "id";
    pub const KIND: &str = "kind";
    pub const SOURCE: &str = "source";
    pub const TEXT: &str = "text";
    pub const MESSAGES: &str = "messages";
    pub const INPUT_IDS: &str = "input_ids";
    pub const META: &str = "meta";
    /// The three content columns, exactly one of which is set per row.
    pub const CONTENT: [&str; 3] = [TEXT, MESSAGES, INPUT_IDS];
}

/// Well-known values of the `kind` column (the column accepts any string).
pub mod kinds {
    pub const FAS_PLANNING: &str = "fas_planning";
    pub const FAS_REASONING: &str = "fas_reasoning";
    pub const HAS: &str = "has";
    pub const GENERAL: &str = "general";
    pub const TRAJECTORY: &str = "trajectory";
    pub const FUNCTION_CALLING: &str = "function_calling";
}

/// The content of a sample: exactly one of the three content columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Raw text, tokenized as is (special-token strings such as `<|im_start|>` match atomically).
    Text(String),
    /// A ChatML conversation as JSON (see [`crate::chat::parse_conversation`]).
    Messages(String),
    /// Pre-tokenized ids (without the document separator, which the packer appends).
    InputIds(Vec<u32>),
}

impl Content {
    /// The column this content is stored in.
    pub fn column(&self) -> &'static str {
        match self {
            Content::Text(_) => columns::TEXT,
            Content::Messages(_) => columns::MESSAGES,
            Content::InputIds(_) => columns::INPUT_IDS,
        }
    }
}

/// One training document, as stored in a shard row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub id: String,
    pub kind: String,
    pub source: String,
    pub content: Content,
    /// Free-form JSON metadata.
    pub meta: Option<String>,
}

impl Sample {
    /// A text sample without metadata.
    pub fn text(id: impl Into<String>, kind: &str, source: &str, text: impl Into<String>) -> Self {
        Sample {
            id: id.into(),
            kind: kind.into(),
            source: source.into(),
            content: Content::Text(text.into()),
            meta: None,
        }
    }

    /// Checks what the reader would reject, so generators fail at write time.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.id.is_empty() {
            return Err("empty `id`".into());
        }
        if self.kind.is_empty() {
            return Err(format!("sample `{}`: empty `kind`", self.id));
        }
        match &self.content {
            Content::Messages(m) => {
                chat::parse_conversation(m).map_err(|e| format!("sample `{}`: {e}", self.id))?;
            }
            Content::InputIds(ids) => {
                if ids.iter().any(|&t| t > i32::MAX as u32) {
                    return Err(format!("sample `{}`: input id above i32::MAX", self.id));
                }
            }
            Content::Text(_) => {}
        }
        if let Some(meta) = &self.meta {
            serde_json::from_str::<serde::de::IgnoredAny>(meta)
                .map_err(|e| format!("sample `{}`: `meta` is not JSON: {e}", self.id))?;
        }
        Ok(())
    }
}

/// The Arrow schema of a shard.
///
/// # Shapes
/// One row per sample; `input_ids` is a variable-length list of Int32 per row.
pub fn sample_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(columns::ID, DataType::Utf8, false),
        Field::new(columns::KIND, DataType::Utf8, false),
        Field::new(columns::SOURCE, DataType::Utf8, false),
        Field::new(columns::TEXT, DataType::Utf8, true),
        Field::new(columns::MESSAGES, DataType::Utf8, true),
        Field::new(
            columns::INPUT_IDS,
            DataType::List(Arc::new(Field::new_list_field(DataType::Int32, false))),
            true,
        ),
        Field::new(columns::META, DataType::Utf8, true),
    ]))
}

/// Page compression of written shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Snappy,
    /// zstd at the given level (1–22).
    Zstd(i32),
}

/// How shards are cut into row groups and compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// A row group is closed after this many rows…
    pub row_group_rows: usize,
    /// …or once its buffered content exceeds this many bytes (long HAS documents), so that
    /// readers, which decode a row group at a time, stay bounded.
    pub row_group_bytes: usize,
    pub compression: Compression,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            row_group_rows: 1024,
            row_group_bytes: 64 << 20,
            compression: Compression::Zstd(3),
        }
    }
}

/// Writes samples into one Parquet shard, a row group at a time.
pub struct ShardWriter {
    path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    opts: WriterOptions,
    pending: Vec<Sample>,
    pending_bytes: usize,
    ids: HashSet<String>,
    rows: u64,
}

impl ShardWriter {
    /// Creates (truncates) the shard at `path`.
    pub fn create(path: impl AsRef<Path>, opts: WriterOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if opts.row_group_rows == 0 {
            return Err(DataError::Config("row_group_rows must be > 0".into()));
        }
        let compression = match opts.compression {
            Compression::None => PqCompression::UNCOMPRESSED,
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Zstd(level) => PqCompression::ZSTD(
                ZstdLevel::try_new(level)
                    .map_err(|e| DataError::Config(format!("zstd level {level}: {e}")))?,
            ),
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(opts.row_group_rows))
            .build();
        let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
        let writer = ArrowWriter::try_new(file, sample_schema(), Some(props)).map_err(|e| {
            DataError::Write {
                path: path.clone(),
                msg: e.to_string(),
            }
        })?;
        Ok(ShardWriter {
            path,
            writer: Some(writer),
            opts,
            pending: Vec::new(),
            pending_bytes: 0,
            ids: HashSet::new(),
            rows: 0,
        })
    }

    /// Validates and appends one sample; ids must be unique within the shard.
    pub fn write(&mut self, sample: Sample) -> Result<()> {
        let bad = |msg: String| DataError::Write {
            path: self.path.clone(),
            msg,
        };
        sample.validate().map_err(bad)?;
        if !self.ids.insert(sample.id.clone()) {
            return Err(bad(format!("duplicate id `{}`", sample.id)));
        }
        self.pending_bytes += match &sample.content {
            Content::Text(s) | Content::Messages(s) => s.len(),
            Content::InputIds(ids) => ids.len() * 4,
        };
        self.pending.push(sample);
        if self.pending.len() >= self.opts.row_group_rows
            || self.pending_bytes >= self.opts.row_group_bytes
        {
            self.flush_row_group()?;
        }
        Ok(())
    }

    /// Writes the buffered samples as one row group.
    fn flush_row_group(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = samples_to_batch(&self.pending);
        let path = self.path.clone();
        let writer = self.writer.as_mut().expect("writer present until finish");
        writer
            .write(&batch)
            .and_then(|_| writer.flush())
            .map_err(|e| DataError::Write {
                path,
                msg: e.to_string(),
            })?;
        self.rows += self.pending.len() as u64;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Flushes and closes the shard; returns the number of rows written.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_row_group()?;
        let writer = self.writer.take().expect("writer present until finish");
        writer.close().map_err(|e| DataError::Write {
            path: self.path.clone(),
            msg: e.to_string(),
        })?;
        Ok(self.rows)
    }
}

/// Writes `samples` into one shard at `path`; returns the number of rows.
pub fn write_shard(
    path: impl AsRef<Path>,
    samples: impl IntoIterator<Item = Sample>,
    opts: WriterOptions,
) -> Result<u64> {
    let mut w = ShardWriter::create(path, opts)?;
    for s in samples {
        w.write(s)?;
    }
    w.finish()
}

/// Builds a record batch in [`sample_schema`] from samples.
pub fn samples_to_batch(samples: &[Sample]) -> RecordBatch {
    let mut id = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut text = StringBuilder::new();
    let mut messages = StringBuilder::new();
    let mut input_ids = ListBuilder::new(Int32Builder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::Int32, false)));
    let mut meta = StringBuilder::new();
    for s in samples {
        id.append_value(&s.id);
        kind.append_value(&s.kind);
        source.append_value(&s.source);
        text.append_option(match &s.content {
            Content::Text(t) => Some(t.as_str()),
            _ => None,
        });
        messages.append_option(match &s.content {
            Content::Messages(m) => Some(m.as_str()),
            _ => None,
        });
        match &s.content {
            Content::InputIds(ids) => {
                input_ids
                    .values()
                    .append_slice(&ids.iter().map(|&t| t as i32).collect::<Vec<_>>());
                input_ids.append(true);
            }
            _ => input_ids.append(false),
        }
        meta.append_option(s.meta.as_deref());
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(kind.finish()),
        Arc::new(source.finish()),
        Arc::new(text.finish()),
        Arc::new(messages.finish()),
        Arc::new(input_ids.finish()),
        Arc::new(meta.finish()),
    ];
    RecordBatch::try_new(sample_schema(), cols).expect("columns match sample_schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_rejects_invalid_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let mut w = ShardWriter::create(&path, WriterOptions::default()).unwrap();
        w.write(Sample::text("a", "general", "s", "hello")).unwrap();
        let dup = w
            .write(Sample::text("a", "general", "s", "again"))
            .unwrap_err();
        assert!(dup.to_string().contains("duplicate id `a`"), "{dup}");
        let mut bad = Sample::text("b", "has", "s", "");
        bad.content = Content::Messages("[{\"role\":\"bot\",\"content\":\"x\"}]".into());
        let e = w.write(bad).unwrap_err().to_string();
        assert!(e.contains("x.parquet") && e.contains("unknown role"), "{e}");
        let mut bad_meta = Sample::text("c", "has", "s", "t");
        bad_meta.meta = Some("{nope".into());
        assert!(w.write(bad_meta).is_err());
        assert_eq!(w.finish().unwrap(), 1);
    }
}
