//! Training recipes: one TOML file per stage, typed sections, unknown keys rejected, errors
//! naming the file, line and key. Relative input paths (model config, pretrained model,
//! tokenizer, data globs) are resolved against the recipe's directory; run directories
//! (`run.output_dir`, and `model.path` of `init = "checkpoint"`) against the working directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentcpt_datasets::{ByteEncoder, Encoder, HfTokenizer, LoaderConfig};
use agentcpt_model::RopeScaling;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::train::optimizer::AdamWConfig;
use crate::train::schedule::Schedule;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub run: RunSection,
    pub model: ModelSection,
    pub tokenizer: TokenizerSection,
    pub data: LoaderConfig,
    pub optimizer: AdamWConfig,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    pub train: TrainSection,
    #[serde(default)]
    pub loss: LossSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub eval: Option<EvalSection>,
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// Where metrics go besides `metrics.jsonl`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Also write TensorBoard event files to `<run dir>/tensorboard/`.
    #[serde(default)]
    pub tensorboard: bool,
}

/// Held-out sources scored every `every` steps on the same `batches` micro-batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub every: u64,
    #[serde(default = "one")]
    pub batches: usize,
    pub sources: Vec<agentcpt_datasets::SourceConfig>,
}

fn default_schedule() -> Schedule {
    Schedule::Constant { warmup_steps: 0 }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    pub name: String,
    /// Where checkpoints and metrics go; `runs/<name>` when absent.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    #[serde(default)]
    pub seed: u64,
}

/// Where the weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelInit {
    /// Fresh weights for `config` (`initializer_range`, seeded by `run.seed`).
    Random,
    /// A Hugging Face checkpoint directory at `path`.
    Pretrained,
    /// The newest checkpoint of an earlier run at `path` (a run directory), e.g. stage 1.
    Checkpoint,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub init: ModelInit,
    /// `config.json` (for `random`).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Checkpoint or run directory (for `pretrained` and `checkpoint`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Compute dtype (f32, bf16, f16): forward and backward run on a copy of the weights in
    /// this dtype, while the master weights and AdamW moments stay f32. Default bf16 on CUDA,
    /// f32 elsewhere.
    #[serde(default)]
    pub dtype: Option<String>,
    /// Replaces the config's rope scaling (stage 2 switches YaRN on), in the form of
    /// `config.json`'s `rope_scaling`.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerSection {
    /// A Hugging Face `tokenizer.json`.
    Hf { path: PathBuf },
    /// One token per byte (ids 0–255): tiny models and tests, nothing to download.
    Bytes,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Optimiser steps; give this or `tokens`.
    #[serde(default)]
    pub steps: Option<u64>,
    /// Training tokens; the number of steps is `tokens / global_batch_tokens`, rounded up.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Tokens per optimiser step, a multiple of `data.seq_len × micro_batch`.
    pub global_batch_tokens: u64,
    /// Sequences per forward pass; gradient accumulation makes up the rest.
    #[serde(default = "one")]
    pub micro_batch: usize,
    /// Consecutive skipped (non-finite) steps after which the run stops.
    #[serde(default = "five")]
    pub max_consecutive_skips: u64,
}

fn one() -> usize {
    1
}
fn five() -> u64 {
    5
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    /// Load-balancing loss coefficient; the model config's `router_aux_loss_coef` when absent.
    #[serde(default)]
    pub aux_loss_coef: Option<f64>,
    /// Router z-loss coefficient (ST-MoE; 1e-3 is the usual value); off when absent.
    #[serde(default)]
    pub router_z_loss_coef: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Save every N steps (0: only at the end).
    #[serde(default)]
    pub every: u64,
    /// Checkpoints kept (the newest ones).
    #[serde(default = "three")]
    pub keep: usize,
}

fn three() -> usize {
    3
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self {
            every: 0,
            keep: three(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// auto, cpu, wgpu, cuda or cuda:N.
    #[serde(default = "auto")]
    pub device: String,
    /// CPU threads for the compute and tokenizer pools; all cores when absent.
    #[serde(default)]
    pub threads: Option<usize>,
    /// The device's dense peak in TFLOP/s at the compute dtype, for MFU. Known NVIDIA GPUs
    /// are recognised with bf16; elsewhere MFU is logged only when this is given.
    #[serde(default)]
    pub peak_tflops: Option<f64>,
    /// Activation checkpointing: decoder layers per recomputed segment (1 recomputes every
    /// layer and keeps only each layer's input; N keeps every Nth); 0 keeps all activations.
    #[serde(default)]
    pub recompute_every: usize,
    /// Sequence positions per LM-head + cross-entropy chunk: logits exist for this many
    /// positions at a time.
    #[serde(default = "default_loss_chunk")]
    pub loss_chunk: usize,
    /// Blockwise, memory-linear attention with tiles of this many positions (it recomputes
    /// each layer's attention in the backward, so it implies layer recomputation); 0
    /// materialises the `[S, S]` scores.
    #[serde(default)]
    pub attention_block: usize,
}

fn default_loss_chunk() -> usize {
    1024
}

fn auto() -> String {
    "auto".into()
}

impl Default for RuntimeSection {
    fn default() -> Self {
        Self {
            device: auto(),
            threads: None,
            peak_tflops: None,
            recompute_every: 0,
            loss_chunk: default_loss_chunk(),
            attention_block: 0,
        }
    }
}

/// A recipe as loaded: the parsed sections plus where it came from.
#[derive(Debug, Clone)]
pub struct LoadedRecipe {
    pub path: PathBuf,
    pub recipe: Recipe,
}

/// Finds `name` in the working directory, then in `recipes/` (`.toml` may be left off).
pub fn find(name: &str) -> Result<PathBuf> {
    let candidates = [
        PathBuf::from(name),
        PathBuf::from(format!("{name}.toml")),
        Path::new("recipes").join(name),
        Path::new("recipes").join(format!("{name}.toml")),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| format!("no recipe `{name}` in the working directory or in recipes/"))
}

impl LoadedRecipe {
    /// Parses `path`, applies `--set key.path=value` overrides, resolves paths and validates
    /// what can be checked without opening files.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read recipe {}", path.display()))?;
        // Parsing the text first gives errors with line numbers and key names.
        let mut recipe: Recipe =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if !overrides.is_empty() {
            let mut table: toml::Table =
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for assignment in overrides {
                apply_override(&mut table, assignment)?;
            }
            recipe = table.try_into().map_err(|e| {
                anyhow::anyhow!(
                    "{} with --set {}: {e}",
                    path.display(),
                    overrides.join(" --set ")
                )
            })?;
        }
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = recipe.model.config.as_mut() {
            resolve(p);
        }
        if recipe.model.init == ModelInit::Pretrained {
            if let Some(p) = recipe.model.path.as_mut() {
                resolve(p);
            }
        }
        if let TokenizerSection::Hf { path } = &mut recipe.tokenizer {
            resolve(path);
        }
        let eval_sources = recipe.eval.iter_mut().flat_map(|e| e.sources.iter_mut());
        for source in recipe.data.sources.iter_mut().chain(eval_sources) {
            for pattern in &mut source.paths {
                if Path::new(pattern.as_str()).is_relative() {
                    *pattern = base.join(pattern.as_str()).to_string_lossy().into_owned();
                }
            }
        }
        let loaded = Self {
            path: path.to_path_buf(),
            recipe,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    fn err(&self, key: &str, message: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: `{key}`: {message}", self.path.display())
    }

    fn validate(&self) -> Result<()> {
        let r = &self.recipe;
        match (r.model.init, &r.model.config, &r.model.path) {
            (ModelInit::Random, None, _) => {
                return Err(self.err(
                    "model.config",
                    "`init = \"random\"` needs the config.json to build",
                ))
            }
            (ModelInit::Pretrained | ModelInit::Checkpoint, _, None) => {
                return Err(self.err(
                    "model.path",
                    "`init = \"pretrained\"` and `\"checkpoint\"` need a directory",
                ))
            }
            _ => {}
        }
        if r.data.sources.is_empty() {
            return Err(self.err("data.sources", "no data sources"));
        }
        let total: f64 = r.data.sources.iter().map(|s| s.weight).sum();
        if let Some(bad) = r
            .data
            .sources
            .iter()
            .find(|s| !(s.weight >= 0.0 && s.weight.is_finite()))
        {
            return Err(self.err(
                "data.sources.weight",
                format!("source `{}` has weight {}", bad.name, bad.weight),
            ));
        }
        if total <= 0.0 {
            return Err(self.err("data.sources.weight", "the weights sum to zero"));
        }
        if let Some(eval) = &r.eval {
            if eval.every == 0 || eval.batches == 0 || eval.sources.is_empty() {
                return Err(self.err(
                    "eval",
                    "needs `every` > 0, `batches` > 0 and at least one source",
                ));
            }
        }
        if r.data.seq_len < 2 {
            return Err(self.err("data.seq_len", "must be at least 2"));
        }
        let t = &r.train;
        match (t.steps, t.tokens) {
            (None, None) => {
                return Err(self.err("train.steps", "give `train.steps` or `train.tokens`"))
            }
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "train.steps",
                    "give `train.steps` or `train.tokens`, not both",
                ))
            }
            _ => {}
        }
        let per_forward = (r.data.seq_len * t.micro_batch) as u64;
        if t.micro_batch == 0
            || t.global_batch_tokens == 0
            || !t.global_batch_tokens.is_multiple_of(per_forward)
        {
            return Err(self.err(
                "train.global_batch_tokens",
                format!("{} is not a positive multiple of data.seq_len × train.micro_batch = {per_forward}", t.global_batch_tokens),
            ));
        }
        if !(r.optimizer.lr > 0.0 && r.optimizer.lr <= 1.0) {
            return Err(self.err(
                "optimizer.lr",
                format!("must be in (0, 1], got {}", r.optimizer.lr),
            ));
        }
        r.schedule.validate().map_err(|m| self.err("schedule", m))?;
        for (key, value) in [
            ("loss.aux_loss_coef", r.loss.aux_loss_coef),
            ("loss.router_z_loss_coef", r.loss.router_z_loss_coef),
        ] {
            if value.is_some_and(|v| !(v >= 0.0 && v.is_finite())) {
                return Err(self.err(key, "must be a finite number ≥ 0"));
            }
        }
        if r.runtime
            .peak_tflops
            .is_some_and(|v| !(v > 0.0 && v.is_finite()))
        {
            return Err(self.err("runtime.peak_tflops", "must be a positive number"));
        }
        if r.runtime.loss_chunk == 0 {
            return Err(self.err("runtime.loss_chunk", "must be at least 1"));
        }
        if r.runtime.threads == Some(0) {
            return Err(self.err("runtime.threads", "must be at least 1"));
        }
        if let Some(dtype) = &r.model.dtype {
            crate::device::parse_dtype(dtype).map_err(|m| self.err("model.dtype", m))?;
        }
        if let Some(scaling) = &r.model.rope_scaling {
            RopeScaling::from_json(scaling, r.data.seq_len)
                .map_err(|m| self.err("model.rope_scaling", m))?;
        }
        Ok(())
    }

    /// Forward passes (micro-batches) per optimiser step.
    pub fn accumulation_steps(&self) -> u64 {
        let r = &self.recipe;
        r.train.global_batch_tokens / (r.data.seq_len * r.train.micro_batch) as u64
    }

    /// Optimiser steps of the run.
    pub fn total_steps(&self) -> u64 {
        let t = &self.recipe.train;
        t.steps
            .unwrap_or_else(|| t.tokens.unwrap_or(0).div_ceil(t.global_batch_tokens))
    }

    pub fn output_dir(&self) -> PathBuf {
        let run = &self.recipe.run;
        run.output_dir
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(&run.name))
    }

    /// The tokenizer the data is encoded with.
    pub fn encoder(&self) -> Result<Arc<dyn Encoder>> {
        Ok(match &self.recipe.tokenizer {
            TokenizerSection::Hf { path } => Arc::new(
                HfTokenizer::from_file(path)
                    .with_context(|| format!("{}: `tokenizer.path`", self.path.display()))?,
            ),
            TokenizerSection::Bytes => Arc::new(ByteEncoder),
        })
    }
}

/// Applies `key.path=value`; the value is read as TOML (`3`, `1e-4`, `true`, `"x"`, `[1, 2]`)
/// and as a string when it is not valid TOML.
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("--set `{assignment}`: expected key.path=value");
    };
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut node = table;
    for part in &parts[..parts.len() - 1] {
        node = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("--set `{assignment}`: `{part}` is not a table"))?;
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
