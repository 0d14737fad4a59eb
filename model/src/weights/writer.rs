//! Saving in the layout `save_pretrained` writes: `config.json`, `model.safetensors` or
//! `model-0000i-of-0000n.safetensors` shards plus `model.safetensors.index.json`. Shards are
//! streamed a tensor at a time and renamed into place only when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

use super::reader::{INDEX_FILE, SINGLE_FILE};
use super::NamedTensor;
use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};

/// The dtype tensors are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDType {
    F32,
    BF16,
    F16,
}

impl SaveDType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" | "float32" => Some(Self::F32),
            "bf16" | "bfloat16" => Some(Self::BF16),
            "f16" | "float16" => Some(Self::F16),
            _ => None,
        }
    }

    fn bytes(self) -> usize {
        match self {
            SaveDType::F32 => 4,
            SaveDType::BF16 | SaveDType::F16 => 2,
        }
    }

    fn safetensors_name(self) -> &'static str {
        match self {
            SaveDType::F32 => "F32",
            SaveDType::BF16 => "BF16",
            SaveDType::F16 => "F16",
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            SaveDType::F32 => "float32",
            SaveDType::BF16 => "bfloat16",
            SaveDType::F16 => "float16",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SaveOptions {
    pub dtype: SaveDType,
    /// Largest shard in bytes (transformers' default is 5 GB).
    pub max_shard_bytes: usize,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            dtype: SaveDType::BF16,
            max_shard_bytes: 5_000_000_000,
        }
    }
}

/// Writes `tensors` and `config` into `dir` (created if needed).
pub fn save_pretrained(
    tensors: &[NamedTensor],
    config: &Qwen3Config,
    dir: &Path,
    options: &SaveOptions,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let shards = plan_shards(tensors, options);
    let n = shards.len();
    let mut weight_map = Map::new();
    let mut total = 0usize;
    for (i, shard) in shards.iter().enumerate() {
        let file = if n == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
        };
        total += write_shard(&dir.join(&file), shard, options.dtype)?;
        for t in shard {
            weight_map.insert(t.name().to_string(), file.clone().into());
        }
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_atomically(&dir.join(INDEX_FILE), |w| {
            serde_json::to_writer_pretty(&mut *w, &index).map_err(std::io::Error::other)
        })?;
    } else {
        // A stale index from an earlier sharded save would shadow the single file.
        let _ = std::fs::remove_file(dir.join(INDEX_FILE));
    }
    let mut cfg = config.to_json();
    if let Value::Object(map) = &mut cfg {
        // transformers 4.x reads `torch_dtype`, 5.x `dtype`.
        map.insert("torch_dtype".into(), options.dtype.torch_name().into());
        map.insert("dtype".into(), options.dtype.torch_name().into());
    }
    write_atomically(&dir.join("config.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &cfg).map_err(std::io::Error::other)
    })
}

fn plan_shards<'a>(tensors: &'a [NamedTensor], options: &SaveOptions) -> Vec<Vec<&'a NamedTensor>> {
    let mut shards: Vec<Vec<&NamedTensor>> = vec![vec![]];
    let mut size = 0;
    for t in tensors {
        let bytes = t.shape().iter().product::<usize>() * options.dtype.bytes();
        if size > 0 && size + bytes > options.max_shard_bytes {
            shards.push(vec![]);
            size = 0;
        }
        shards.last_mut().expect("never empty").push(t);
        size += bytes;
    }
    shards
}

/// Writes `tensors` into one safetensors file (streamed, renamed into place when complete).
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor], dtype: SaveDType) -> Result<()> {
    write_shard(path, &tensors.iter().collect::<Vec<_>>(), dtype).map(|_| ())
}

/// Streams one safetensors file; returns the bytes of tensor data written.
fn write_shard(path: &Path, tensors: &[&NamedTensor], dtype: SaveDType) -> Result<usize> {
    let mut header = Map::new();
    let mut offset = 0usize;
    for t in tensors {
        let shape = t.shape();
        let len = shape.iter().product::<usize>() * dtype.bytes();
        header.insert(
            t.name().to_string(),
            json!({"dtype": dtype.safetensors_name(), "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut header =
        serde_json::to_vec(&Value::Object(header)).expect("JSON of strings and numbers");
    // The data section starts 8-byte aligned, padded with spaces as the reference writer does.
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    write_atomically(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for t in tensors {
            let values = t.to_f32_vec();
            let mut bytes = Vec::with_capacity(values.len() * dtype.bytes());
            for v in values {
                match dtype {
                    SaveDType::F32 => bytes.extend_from_slice(&v.to_le_bytes()),
                    SaveDType::BF16 => {
                        bytes.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes())
                    }
                    SaveDType::F16 => {
                        bytes.extend_from_slice(&half::f16::from_f32(v).to_le_bytes())
                    }
                }
            }
            w.write_all(&bytes)?;
        }
        Ok(())
    })?;
    Ok(offset)
}

/// Writes through a temporary file in the same directory, then renames it into place.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::io(path, e)
    })
}
