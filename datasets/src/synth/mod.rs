//! Offline data synthesis for Agentic CPT (`agentcpt synth`): First-order Action Synthesis
//! ([`memory`] → [`questions`] → [`plan`], [`reason`]) and High-order Action Synthesis
//! ([`has`]). Nothing is ever executed: tool calls are text.
//!
//! Every command shares one frame: items run on a bounded worker pool ([`runner`]) with a
//! journal that makes re-runs skip finished items; a model call's sampling seed is derived
//! from the run seed, the item id and the call's role, so a run is deterministic for a seed
//! where the model honours seeds; malformed model output rejects the item with a counted
//! reason; outputs are written whole, in input order, once every item is done.

pub mod cache;
pub mod client;
pub mod has;
pub mod llm;
pub mod memory;
pub mod output;
pub mod parse;
pub mod plan;
pub mod prompts;
pub mod questions;
pub mod reason;
pub mod runner;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

pub use llm::{ChatMessage, ChatModel, ChatRequest, Completion, LlmError};
pub use prompts::Prompts;
pub use runner::{Counts, Outcome, Reject};

use crate::rng::{fnv1a, mix_seed};

/// Why a synth command stopped. Rejected items are not errors (they are counted).
#[derive(Debug, Error)]
pub enum SynthError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Bad input or settings; the message names the file and line or the option.
    #[error("{0}")]
    Input(String),
    /// The model could not be reached; finished items are journalled.
    #[error("item `{item}`: {error}\nthe items finished so far are kept in {}; re-run the same command to resume", journal.display())]
    Llm {
        item: String,
        error: LlmError,
        journal: PathBuf,
    },
    #[error(transparent)]
    Data(#[from] crate::error::DataError),
}

impl SynthError {
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        SynthError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// Sampling and scheduling settings shared by every command.
#[derive(Debug, Clone, Serialize)]
pub struct SynthOptions {
    pub seed: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: usize,
    /// Items in flight at once (each makes its model calls one after another).
    #[serde(skip)]
    pub concurrency: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            seed: 0,
            temperature: 0.7,
            top_p: 0.95,
            max_tokens: 2048,
            concurrency: 8,
        }
    }
}

/// What every command needs: the model, the prompts, the settings, a progress callback.
pub struct Synth {
    pub model: Arc<dyn ChatModel>,
    pub prompts: Prompts,
    pub options: SynthOptions,
    pub progress: Box<dyn Fn(&Counts) + Sync>,
}

impl Synth {
    /// Renders prompt `name` with `vars` and asks the model. `role` names the call within the
    /// item (e.g. `plan`, `judge`, `step-3`), so each call has its own reproducible seed.
    /// Prompts are checked before the first call ([`Synth::run`]), so filling cannot fail
    /// here but for a command asking for a prompt it did not declare.
    pub fn ask(
        &self,
        name: &str,
        vars: &[(&str, &str)],
        item: &str,
        role: &str,
    ) -> Result<String, LlmError> {
        let messages = self
            .prompts
            .get(name)
            .render(vars)
            .map_err(LlmError::Local)?;
        let request = ChatRequest {
            messages,
            temperature: self.options.temperature,
            top_p: self.options.top_p,
            max_tokens: self.options.max_tokens,
            seed: self.call_seed(item, role),
        };
        Ok(self.model.complete(&request)?.text)
    }

    /// The seed of one call, from the run seed, the item and the call's role.
    pub fn call_seed(&self, item: &str, role: &str) -> u64 {
        mix_seed(&[
            self.options.seed,
            fnv1a(item.as_bytes()),
            fnv1a(role.as_bytes()),
        ]) & (i64::MAX as u64)
    }

    /// The frame every command runs in. Checks that each of the command's prompts fills with
    /// its placeholder names (an edited prompt with a typo fails here, naming its file);
    /// records the settings — command, model, sampling, `settings`, prompt versions — in
    /// `OUT/run.json`, refusing a resume under other settings; then runs `work` on every
    /// item not yet journalled. Outcomes come back in input order.
    pub fn run<T: Sync>(
        &self,
        command: &str,
        prompts: &[(&str, &[&str])],
        settings: Value,
        out: &Path,
        items: &[(String, T)],
        work: &(dyn Fn(&str, &T) -> Result<Outcome, LlmError> + Sync),
    ) -> Result<Run, SynthError> {
        let mut versions = serde_json::Map::new();
        for (name, vars) in prompts {
            let prompt = self.prompts.get(name);
            let vars: Vec<(&str, &str)> = vars.iter().map(|v| (*v, "")).collect();
            prompt.render(&vars).map_err(SynthError::Input)?;
            versions.insert(name.to_string(), Value::from(prompt.version.clone()));
        }
        let prompts = Value::from(versions);
        let mut recorded = serde_json::json!({
            "command": command,
            "model": self.model.name(),
            "options": self.options,
            "prompts": prompts,
        });
        for (k, v) in settings.as_object().into_iter().flatten() {
            recorded[k] = v.clone();
        }
        let journal = runner::check_settings(out, &recorded)?;
        let (outcomes, counts) = runner::run_items(
            items,
            &journal,
            self.options.concurrency,
            &*self.progress,
            work,
        )?;
        Ok(Run {
            outcomes,
            counts,
            prompts,
        })
    }
}

/// What [`Synth::run`] returns.
pub struct Run {
    pub outcomes: Vec<Outcome>,
    pub counts: Counts,
    /// Name → `NAME@vN+SHA` of the prompts the command used.
    pub prompts: Value,
}

impl Run {
    /// Every kept record, in input order.
    pub fn kept(self) -> (Vec<Value>, Counts) {
        let kept = self.outcomes.into_iter().flat_map(|o| o.kept).collect();
        (kept, self.counts)
    }

    /// Every kept sample record, in input order, its `meta` completed with what all the
    /// run's samples share: generator, model, seed and prompt versions (the journal keeps
    /// only what is particular to each item; `run.json` holds the rest).
    pub fn samples(self, synth: &Synth, command: &str) -> (Vec<Value>, Counts) {
        let shared = serde_json::json!({
            "generator": format!("synth {command}"),
            "model": synth.model.name(),
            "seed": synth.options.seed,
            "prompts": self.prompts,
        });
        let (mut kept, counts) = self.kept();
        for record in &mut kept {
            for (k, v) in shared.as_object().into_iter().flatten() {
                record["meta"][k] = v.clone();
            }
        }
        (kept, counts)
    }
}

/// Each input's path and the SHA-256 of its content (first 16 hex digits), for `run.json`:
/// an input edited in place is a change of settings, not a resume.
pub fn input_fingerprints(paths: &[PathBuf]) -> Result<Value, SynthError> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    for path in paths {
        let mut hasher = Sha256::new();
        let mut file = std::fs::File::open(path).map_err(|e| SynthError::io(path, e))?;
        std::io::copy(&mut file, &mut hasher).map_err(|e| SynthError::io(path, e))?;
        let hex: String = hasher
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push(serde_json::json!({"path": path, "sha256": hex}));
    }
    Ok(out.into())
}

/// What a command reports: counts, the files written, and command-specific figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub counts: Counts,
    pub outputs: Vec<PathBuf>,
    pub details: Value,
}

impl Report {
    /// The report of `command`, written to `OUT/report.json`.
    pub fn save(
        out: &Path,
        command: &str,
        counts: Counts,
        outputs: Vec<PathBuf>,
        details: Value,
    ) -> Result<Report, SynthError> {
        let report = Report {
            command: command.to_string(),
            counts,
            outputs,
            details,
        };
        let text = serde_json::to_string_pretty(&report).expect("reports serialise");
        output::write_atomic(&out.join("report.json"), text.as_bytes())?;
        Ok(report)
    }

    /// Writes the sample records `kept` as `OUT/PREFIX-*.parquet`, then the report, with the
    /// number of samples among the details.
    pub fn save_samples(
        out: &Path,
        command: &str,
        prefix: &str,
        kept: &[Value],
        counts: Counts,
        mut details: Value,
    ) -> Result<Report, SynthError> {
        let outputs = output::write_shards(out, prefix, &output::samples_from(kept))?;
        details["samples"] = kept.len().into();
        Report::save(out, command, counts, outputs, details)
    }
}

/// Raw Qwen3 ChatML for `(role, content)` turns: the training text of synth samples
/// (the chat template is not used, as it would drop earlier turns' thinking).
pub fn chatml(turns: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (role, content) in turns {
        text.push_str("<|im_start|>");
        text.push_str(role);
        text.push('\n');
        text.push_str(content);
        text.push_str("<|im_end|>\n");
    }
    text
}
