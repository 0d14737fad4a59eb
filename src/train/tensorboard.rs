//! TensorBoard event files, written directly: TFRecord framing (length, masked CRC-32C,
//! payload, masked CRC-32C) around hand-encoded `Event` protobufs carrying scalar summaries.
//! Only the few protobuf fields TensorBoard reads for scalars are encoded.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::Value;

pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir`, starting with a `SessionLog START` at the next step: it
    /// tells TensorBoard to drop whatever an interrupted run logged after `resume_step` (its
    /// checkpoint, or 0 when it crashed before its first).
    pub fn create(dir: &Path, resume_step: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let now = wall_time();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now as u64,
            std::process::id()
        ));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = Self {
            path,
            file: BufWriter::new(file),
        };
        let mut event = event_header(now, 0);
        bytes_field(&mut event, 3, b"brain.Event:2");
        writer.record(&event)?;
        let mut event = event_header(now, resume_step + 1);
        let mut session_log = Vec::new();
        varint_field(&mut session_log, 1, 1); // status = START
        bytes_field(&mut event, 7, &session_log);
        writer.record(&event)?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event holding a scalar per `(tag, value)`.
    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            key(&mut v, 2, 5);
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        let mut event = event_header(wall_time(), step);
        bytes_field(&mut event, 5, &summary);
        self.record(&event)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let f = &mut self.file;
        f.write_all(&len)
            .and_then(|()| f.write_all(&masked_crc32c(&len).to_le_bytes()))
            .and_then(|()| f.write_all(data))
            .and_then(|()| f.write_all(&masked_crc32c(data).to_le_bytes()))
            .and_then(|()| f.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// The numeric entries of a metrics record as TensorBoard tags: nested objects and lists of
/// numbers become `parent/child` and `parent/index` (`loss_per_source/has`,
/// `expert_imbalance/2`); `step`, flags and nested lists are left out.
pub fn scalar_tags(record: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Some(object) = record.as_object() else {
        return out;
    };
    for (key, value) in object {
        match value {
            Value::Number(n) if key != "step" => out.extend(n.as_f64().map(|v| (key.clone(), v))),
            Value::Object(inner) => out.extend(
                inner
                    .iter()
                    .filter_map(|(k, v)| Some((format!("{key}/{k}"), v.as_f64()?))),
            ),
            Value::Array(items) => out.extend(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| Some((format!("{key}/{i}"), v.as_f64()?))),
            ),
            _ => {}
        }
    }
    out
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `Event.wall_time` (field 1, double) and `Event.step` (field 2, int64).
fn event_header(wall_time: f64, step: u64) -> Vec<u8> {
    let mut event = Vec::new();
    key(&mut event, 1, 1);
    event.extend_from_slice(&wall_time.to_le_bytes());
    varint_field(&mut event, 2, step);
    event
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    key(out, field, 0);
    varint(out, value);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: records are small.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TFRecord's masking, so that CRCs of data containing CRCs stay well distributed.
fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// Reads records back, checking both CRCs of each.
    fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len_bytes = &bytes[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(len_bytes));
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data));
            out.push(data.to_vec());
            at += 16 + len;
        }
        out
    }

    #[test]
    fn events_frame_and_encode_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path(), 7).unwrap();
        writer
            .scalars(8, &[("loss".into(), 2.5), ("lr/x".into(), 1e-3)])
            .unwrap();
        let records = records(&std::fs::read(writer.path()).unwrap());
        assert_eq!(records.len(), 3);
        assert!(records[0].ends_with(b"brain.Event:2"));
        // SessionLog START at step 8: field 2 = 8, then field 7 { status = 1 }.
        assert!(records[1].ends_with(&[0x10, 8, 0x3a, 2, 0x08, 1]));
        let scalars = &records[2];
        assert_eq!(&scalars[9..11], &[0x10, 8]);
        let mut loss = vec![0x0a, 4];
        loss.extend_from_slice(b"loss");
        loss.push(0x15);
        loss.extend_from_slice(&2.5f32.to_le_bytes());
        assert!(scalars.windows(loss.len()).any(|w| w == loss.as_slice()));
    }

    #[test]
    fn nested_metrics_become_slash_tags() {
        let record = serde_json::json!({
            "step": 3, "loss": 1.5, "skipped": false,
            "loss_per_source": {"has": 2.0}, "expert_imbalance": [1.25, 1.5],
            "tokens_per_expert": [[1, 2]], "mfu": null
        });
        let mut tags = scalar_tags(&record);
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        let expected: Vec<(String, f64)> = [
            ("expert_imbalance/0", 1.25),
            ("expert_imbalance/1", 1.5),
            ("loss", 1.5),
            ("loss_per_source/has", 2.0),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        assert_eq!(tags, expected);
    }
}
