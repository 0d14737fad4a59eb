//! `agentcpt generate`: KV-cache decoding from a checkpoint.

use std::path::Path;

use agentcpt_model::burn::tensor::Device;
use agentcpt_model::generate::{generate, GenerationConfig};
use agentcpt_model::Qwen3;
use anyhow::{Context, Result};
use serde_json::json;

/// Generates from `prompt_ids` (a JSON list of token ids) and prints the new ids as JSON.
pub fn run(
    model_dir: &Path,
    prompt_ids: &str,
    config: &GenerationConfig,
    device: &Device,
) -> Result<()> {
    let prompt: Vec<i64> = serde_json::from_str(prompt_ids).with_context(|| {
        format!("--prompt-ids must be a JSON list of token ids, got `{prompt_ids}`")
    })?;
    anyhow::ensure!(!prompt.is_empty(), "--prompt-ids is empty");
    let model = Qwen3::load(model_dir, device)?;
    let new = generate(&model, &prompt, config, device)?;
    println!("{}", json!({"prompt_ids": prompt, "generated_ids": new}));
    Ok(())
}
