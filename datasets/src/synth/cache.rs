//! A response cache in front of any [`ChatModel`], so that an interrupted run resumes without
//! paying twice for the completions it already had.
//!
//! One JSON line per completion, appended and flushed as soon as it arrives; a torn last line
//! (a crash mid-write) is ignored on load. Keys hash the model name and the whole request.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::llm::{ChatModel, ChatRequest, Completion, LlmError};
use crate::error::DataError;

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    completion: Completion,
}

/// A [`ChatModel`] that answers from the cache file when it can.
pub struct CachedModel {
    inner: Arc<dyn ChatModel>,
    path: PathBuf,
    entries: Mutex<(HashMap<String, Completion>, File)>,
    hits: AtomicU64,
}

/// The cache key of `request` sent to a model called `model`.
pub fn cache_key(model: &str, request: &ChatRequest) -> String {
    let canonical = serde_json::json!({ "model": model, "request": request }).to_string();
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl CachedModel {
    /// Opens (or creates) the cache at `path`.
    pub fn open(inner: Arc<dyn ChatModel>, path: &Path) -> Result<Self, DataError> {
        let io = |error| DataError::Io {
            path: path.to_path_buf(),
            error,
        };
        let mut map = HashMap::new();
        if path.exists() {
            // A line that does not parse (even as UTF-8) can only be the torn tail of a crash.
            for line in std::fs::read(path).map_err(io)?.split(|&b| b == b'\n') {
                if let Ok(entry) = serde_json::from_slice::<Entry>(line) {
                    map.insert(entry.key, entry.completion);
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // Start on a fresh line whatever a crash left behind.
        if file.metadata().map_err(io)?.len() > 0 {
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(CachedModel {
            inner,
            path: path.to_path_buf(),
            entries: Mutex::new((map, file)),
            hits: AtomicU64::new(0),
        })
    }

    /// Completions served from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl ChatModel for CachedModel {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn complete(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let key = cache_key(&self.inner.name(), request);
        if let Some(c) = self.lock().0.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        let completion = self.inner.complete(request)?;
        let line = serde_json::to_string(&Entry {
            key: key.clone(),
            completion: completion.clone(),
        })
        .expect("a completion serialises");
        let mut guard = self.lock();
        let (map, file) = &mut *guard;
        if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
            // Losing the cache costs money on a re-run, not correctness: say so and go on.
            eprintln!(
                "warning: {}: cannot append to the response cache: {e}",
                self.path.display()
            );
        }
        map.insert(key, completion.clone());
        Ok(completion)
    }
}

impl CachedModel {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Completion>, File)> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
