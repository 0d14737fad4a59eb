//! Step checkpoints: `RUN/checkpoints/step-NNNNNNNN/` holding the model in Hugging Face
//! layout (f32, loadable by transformers as is), the AdamW moments, and `trainer_state.json`
//! (step, tokens, skip counters, loader state, resolved recipe). Written into a temporary
//! directory and renamed into place, so a crash never leaves a half-written checkpoint; the
//! newest `keep` are kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agentcpt_datasets::LoaderState;
use agentcpt_model::weights::{save_pretrained, write_safetensors, SaveDType, SaveOptions};
use agentcpt_model::Qwen3;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::optimizer::AdamW;

pub const MODEL_DIR: &str = "model";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "trainer_state.json";

/// Everything but tensors that resuming needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps completed (skipped steps included).
    pub step: u64,
    pub tokens_seen: u64,
    pub skipped_steps: u64,
    pub consecutive_skips: u64,
    /// AdamW's own step count (skipped steps do not advance it).
    pub optimizer_step: u64,
    pub loader: LoaderState,
    /// The recipe as resolved when the run started, for the record.
    pub recipe: serde_json::Value,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The newest complete checkpoint of a run, if any.
pub fn newest(run_dir: &Path) -> Result<Option<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut steps: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    steps.sort();
    Ok(steps.pop().map(|(_, p)| p))
}

/// Writes a checkpoint for `state.step` and prunes all but the newest `keep`.
pub fn save(
    run_dir: &Path,
    model: &Qwen3,
    optimizer: &AdamW,
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    let name = format!("step-{:08}", state.step);
    let final_dir = dir.join(&name);
    let tmp = dir.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot clear {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let f32_options = SaveOptions {
        dtype: SaveDType::F32,
        ..SaveOptions::default()
    };
    save_pretrained(
        &model.named_tensors(),
        &model.config,
        &tmp.join(MODEL_DIR),
        &f32_options,
    )?;
    write_safetensors(
        &tmp.join(OPTIMIZER_FILE),
        &optimizer.state_tensors(),
        SaveDType::F32,
    )?;
    std::fs::write(tmp.join(STATE_FILE), serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("cannot write {}", tmp.join(STATE_FILE).display()))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .with_context(|| format!("cannot replace {}", final_dir.display()))?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("cannot move {} into place", tmp.display()))?;
    prune(&dir, keep)?;
    Ok(final_dir)
}

fn prune(dir: &Path, keep: usize) -> Result<()> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep.max(1));
    for old in &steps[..excess] {
        std::fs::remove_dir_all(old)
            .with_context(|| format!("cannot remove old checkpoint {}", old.display()))?;
    }
    Ok(())
}

pub fn read_state(checkpoint: &Path) -> Result<TrainerState> {
    let path = checkpoint.join(STATE_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a trainer state", path.display()))
}

/// The AdamW moments saved with a checkpoint, by tensor name (`exp_avg.NAME`, …).
pub fn read_optimizer(checkpoint: &Path) -> Result<HashMap<String, Vec<f32>>> {
    let path = checkpoint.join(OPTIMIZER_FILE);
    Ok(agentcpt_model::weights::read_safetensors(&path)?
        .into_iter()
        .map(|(name, (_, values))| (name, values))
        .collect())
}
