//! Helpers for tests: small shards written into temp dirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;

use crate::schema::{write_shard, Compression, Content, Sample, WriterOptions};

/// Writer options with small row groups.
pub fn small_groups(rows: usize) -> WriterOptions {
    WriterOptions {
        row_group_rows: rows,
        row_group_bytes: usize::MAX,
        compression: Compression::Snappy,
    }
}

/// Deterministic text of a given length (ASCII, so the byte encoder gives `len` tokens).
pub fn text_of(id: &str, len: usize) -> String {
    let mut s = format!("{id}:");
    let mut k = 0u32;
    while s.len() < len {
        s.push((b'a' + (k % 26) as u8) as char);
        k += 1;
    }
    s.truncate(len.max(1));
    s
}

/// Writes `n` text samples `"{prefix}{i}"` with lengths from `len(i)` into `dir/name`.
pub fn write_text_shard(
    dir: &Path,
    name: &str,
    prefix: &str,
    n: usize,
    len: impl Fn(usize) -> usize,
    rows_per_group: usize,
) -> PathBuf {
    let path = dir.join(name);
    let samples = (0..n).map(|i| {
        let id = format!("{prefix}{i}");
        Sample::text(id.clone(), "general", prefix, text_of(&id, len(i)))
    });
    write_shard(&path, samples, small_groups(rows_per_group)).unwrap();
    path
}

/// Writes a record batch with an arbitrary schema (for bad-input tests).
pub fn write_batch(path: &Path, cols: Vec<(&str, ArrayRef, bool)>) {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a, nullable)| Field::new(*n, a.data_type().clone(), *nullable))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), cols.into_iter().map(|c| c.1).collect()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A messages sample.
pub fn messages_sample(id: &str, json: &str) -> Sample {
    Sample {
        id: id.into(),
        kind: "trajectory".into(),
        source: "test".into(),
        content: Content::Messages(json.into()),
        meta: None,
    }
}
