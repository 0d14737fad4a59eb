//! Streaming reads of single-file or sharded (`model.safetensors.index.json`) checkpoints.
//! Shards are memory-mapped when first needed and unmapped once every tensor in them has
//! been read, so the process never holds the checkpoint and the model at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use serde_json::Value;

use crate::error::{ModelError, Result};

pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const SINGLE_FILE: &str = "model.safetensors";

struct OpenShard {
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

pub struct CheckpointReader {
    dir: PathBuf,
    /// Tensor name → shard file name.
    weight_map: BTreeMap<String, String>,
    open: HashMap<String, OpenShard>,
    /// Tensors not yet read, per shard; a shard is unmapped when this reaches zero.
    unread: HashMap<String, usize>,
    read: BTreeSet<String>,
}

impl CheckpointReader {
    /// Opens `dir`, reading `model.safetensors.index.json` if present, else `model.safetensors`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let index = dir.join(INDEX_FILE);
        let weight_map = if index.exists() {
            read_index(&index)?
        } else {
            let single = dir.join(SINGLE_FILE);
            if !single.exists() {
                return Err(ModelError::checkpoint(
                    &dir,
                    format!("no {SINGLE_FILE} or {INDEX_FILE} in this directory"),
                ));
            }
            let (_, metadata) = map_shard(&single)?;
            metadata
                .tensors()
                .into_keys()
                .map(|name| (name, SINGLE_FILE.to_string()))
                .collect()
        };
        let mut unread = HashMap::new();
        for file in weight_map.values() {
            *unread.entry(file.clone()).or_insert(0) += 1;
        }
        for file in unread.keys() {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(ModelError::checkpoint(
                    &index,
                    format!(
                        "shard `{file}` is named in the index but {} does not exist",
                        path.display()
                    ),
                ));
            }
        }
        Ok(Self {
            dir,
            weight_map,
            open: HashMap::new(),
            unread,
            read: BTreeSet::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weight_map.contains_key(name)
    }

    /// Reads tensor `name` as f32, checking its shape against `expected`.
    pub fn read_f32(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let file = self
            .weight_map
            .get(name)
            .ok_or_else(|| {
                ModelError::checkpoint(
                    &self.dir,
                    format!("missing tensor `{name}` (expected shape {expected:?})"),
                )
            })?
            .clone();
        let path = self.dir.join(&file);
        if !self.open.contains_key(&file) {
            let (mmap, header_len, metadata) = map_shard_full(&path)?;
            self.open.insert(
                file.clone(),
                OpenShard {
                    mmap,
                    header_len,
                    metadata,
                },
            );
        }
        let shard = &self.open[&file];
        let info = shard.metadata.info(name).ok_or_else(|| {
            ModelError::checkpoint(
                &path,
                format!("tensor `{name}` is listed in the index but not stored in this shard"),
            )
        })?;
        if info.shape != expected {
            return Err(ModelError::checkpoint(
                &path,
                format!(
                    "tensor `{name}` has shape {:?}, the config requires {expected:?}",
                    info.shape
                ),
            ));
        }
        let start = 8 + shard.header_len + info.data_offsets.0;
        let bytes = &shard.mmap[start..8 + shard.header_len + info.data_offsets.1];
        let values = to_f32(bytes, info.dtype).ok_or_else(|| {
            ModelError::checkpoint(
                &path,
                format!(
                    "tensor `{name}` has dtype {:?}; supported: F32, BF16, F16, F64",
                    info.dtype
                ),
            )
        })?;
        self.read.insert(name.to_string());
        let left = self.unread.get_mut(&file).expect("every shard is counted");
        *left -= 1;
        if *left == 0 {
            self.open.remove(&file);
        }
        Ok(values)
    }

    /// Marks a tensor the model does not need as read (transformers ignores `lm_head.weight`
    /// of a tied model the same way).
    pub fn skip(&mut self, name: &str) {
        if self.weight_map.contains_key(name) && self.read.insert(name.to_string()) {
            let file = &self.weight_map[name];
            let left = self.unread.get_mut(file).expect("every shard is counted");
            *left -= 1;
            if *left == 0 {
                self.open.remove(file);
            }
        }
    }

    /// Errors on tensors in the checkpoint that the model never read.
    pub fn finish(self) -> Result<()> {
        let extra: Vec<&String> = self
            .weight_map
            .keys()
            .filter(|n| !self.read.contains(*n))
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = extra.iter().take(5).map(|n| format!("`{n}`")).collect();
        Err(ModelError::checkpoint(
            &self.dir,
            format!(
                "{} tensor(s) in the checkpoint do not belong to this config: {}{}",
                extra.len(),
                shown.join(", "),
                if extra.len() > 5 { ", …" } else { "" }
            ),
        ))
    }
}

/// Tensors by name: (shape, f32 values).
pub type TensorMap = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Every tensor of one safetensors file as f32.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let (mmap, header_len, metadata) = map_shard_full(path)?;
    metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let bytes =
                &mmap[8 + header_len + info.data_offsets.0..8 + header_len + info.data_offsets.1];
            let values = to_f32(bytes, info.dtype).ok_or_else(|| {
                ModelError::checkpoint(
                    path,
                    format!("tensor `{name}` has unsupported dtype {:?}", info.dtype),
                )
            })?;
            Ok((name, (info.shape.clone(), values)))
        })
        .collect()
}

fn read_index(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::checkpoint(path, format!("not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| ModelError::checkpoint(path, "missing object `weight_map`"))?;
    map.iter()
        .map(|(name, file)| {
            file.as_str()
                .map(|f| (name.clone(), f.to_string()))
                .ok_or_else(|| {
                    ModelError::checkpoint(
                        path,
                        format!("weight_map entry `{name}` is not a file name"),
                    )
                })
        })
        .collect()
}

fn map_shard(path: &Path) -> Result<(Mmap, Metadata)> {
    let (mmap, _, metadata) = map_shard_full(path)?;
    Ok((mmap, metadata))
}

fn map_shard_full(path: &Path) -> Result<(Mmap, usize, Metadata)> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    // Safety: the checkpoint is read-only input; a concurrent writer is a user error that
    // at worst yields wrong values, which the header checks below cannot prevent either.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
        ModelError::checkpoint(
            path,
            format!("not a valid safetensors file (truncated or corrupt): {e}"),
        )
    })?;
    Ok((mmap, header_len, metadata))
}

fn to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    let pairs = || {
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    };
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => pairs().map(|b| half::bf16::from_bits(b).to_f32()).collect(),
        Dtype::F16 => pairs().map(|b| half::f16::from_bits(b).to_f32()).collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}
