//! Writing a synth command's results: files appear whole (written aside, then renamed) so a
//! crash never leaves a shard that looks complete.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::SynthError;
use crate::schema::{Sample, ShardWriter, WriterOptions};

/// Rows per Parquet shard.
const ROWS_PER_SHARD: usize = 50_000;

/// Opens an append-only JSON-lines log (the journal, the response cache): the records it
/// holds, and the file, positioned on a fresh line. A line that does not parse, even as
/// UTF-8, can only be the torn tail of a crash and is skipped.
pub fn open_log<T: DeserializeOwned>(path: &Path) -> std::io::Result<(Vec<T>, File)> {
    let records = match std::fs::read(path) {
        Ok(bytes) => bytes
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    if file.metadata()?.len() > 0 {
        file.write_all(b"\n")?;
    }
    Ok((records, file))
}

/// Appends one record to a log opened by [`open_log`] and flushes it.
pub fn append_log(file: &mut File, record: &impl Serialize) -> std::io::Result<()> {
    let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
    writeln!(file, "{line}")?;
    file.flush()
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    let tmp = tmp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| SynthError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| SynthError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SynthError::io(path, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `records` as JSON lines.
pub fn write_jsonl(path: &Path, records: &[Value]) -> Result<(), SynthError> {
    let mut text = String::new();
    for r in records {
        text.push_str(&r.to_string());
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Writes `samples` as `DIR/PREFIX-NNNNN.parquet` shards in the pipeline's schema, replacing
/// shards of an earlier run with the same prefix. Returns the paths written.
pub fn write_shards(
    dir: &Path,
    prefix: &str,
    samples: &[Sample],
) -> Result<Vec<PathBuf>, SynthError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SynthError::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{prefix}-")) && name.ends_with(".parquet") {
            std::fs::remove_file(entry.path()).map_err(|e| SynthError::io(&entry.path(), e))?;
        }
    }
    let mut paths = Vec::new();
    for (i, chunk) in samples.chunks(ROWS_PER_SHARD).enumerate() {
        let path = dir.join(format!("{prefix}-{i:05}.parquet"));
        let tmp = tmp_path(&path);
        let mut writer = ShardWriter::create(&tmp, WriterOptions::default())?;
        for s in chunk {
            writer.write(s.clone())?;
        }
        writer.finish()?;
        std::fs::rename(&tmp, &path).map_err(|e| SynthError::io(&path, e))?;
        paths.push(path);
    }
    Ok(paths)
}

/// Reads a JSON-lines file; a line that is not a JSON object is an error naming `path:line`.
/// Blank lines are skipped. Returns `(line number, value)`.
pub fn read_jsonl(path: &Path) -> Result<Vec<(usize, Value)>, SynthError> {
    let text = std::fs::read_to_string(path).map_err(|e| SynthError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| {
            SynthError::Input(format!("{}:{}: not JSON: {e}", path.display(), i + 1))
        })?;
        if !v.is_object() {
            return Err(SynthError::Input(format!(
                "{}:{}: expected a JSON object",
                path.display(),
                i + 1
            )));
        }
        out.push((i + 1, v));
    }
    Ok(out)
}

/// A training sample as a journal record (`id`, `kind`, `source`, `text`, `meta`).
pub fn sample_record(id: &str, kind: &str, source: &str, text: &str, meta: Value) -> Value {
    serde_json::json!({"id": id, "kind": kind, "source": source, "text": text, "meta": meta})
}

/// Turns records made by [`sample_record`] back into samples.
pub fn samples_from(records: &[Value]) -> Vec<Sample> {
    records
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            Sample {
                id: field("id"),
                kind: field("kind"),
                source: field("source"),
                content: crate::schema::Content::Text(field("text")),
                meta: Some(r["meta"].to_string()),
            }
        })
        .collect()
}
