//! A response cache in front of any [`ChatModel`], so that an interrupted run resumes without
//! paying twice for the completions it already had.
//!
//! One JSON line per completion, appended and flushed as soon as it arrives
//! ([`super::output::open_log`]). Keys hash the model name and the whole request.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::llm::{ChatModel, ChatRequest, Completion, LlmError};
use super::output::{append_log, open_log};
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
        let (entries, file) = open_log::<Entry>(path).map_err(|error| DataError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let map = entries.into_iter().map(|e| (e.key, e.completion)).collect();
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
        let entry = Entry {
            key: key.clone(),
            completion: completion.clone(),
        };
        let mut guard = self.lock();
        let (map, file) = &mut *guard;
        if let Err(e) = append_log(file, &entry) {
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
