//! `agentcpt synth memory|questions|plan|reason|has`: the model behind every command (a
//! remote OpenAI-compatible endpoint with a response cache, or the local model in process),
//! a progress bar, and the run's report printed at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentcpt_datasets::synth::cache::CachedModel;
use agentcpt_datasets::synth::client::{ClientConfig, OpenAiClient};
use agentcpt_datasets::synth::{ChatModel, Counts, Prompts, Report, Synth, SynthOptions};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::SynthLlmArgs;
use crate::local_llm::{ChatTokenizer, LocalChat};

/// The model the flags describe, behind the response cache at `OUT/responses.jsonl`.
pub fn model(args: &SynthLlmArgs, out: &Path) -> Result<Arc<dyn ChatModel>> {
    let inner: Arc<dyn ChatModel> = match (&args.local, &args.base_url) {
        (Some(dir), None) => {
            let tokenizer = ChatTokenizer::resolve(args.tokenizer.as_deref(), dir)?;
            Arc::new(LocalChat::load(
                dir,
                tokenizer,
                args.model.clone(),
                args.device.device()?,
            )?)
        }
        (None, Some(url)) => {
            let Some(model) = &args.model else {
                bail!("--base-url needs --model (the model name the endpoint serves)");
            };
            let mut config = ClientConfig::new(url, model);
            config.api_key_env = match &args.api_key_env {
                Some(var) => Some(var.clone()),
                // The conventional variable, where it is set, and only for OpenAI itself: a
                // key must not travel to another host unless the user names it.
                None if is_openai(url) => {
                    std::env::var_os("OPENAI_API_KEY").map(|_| "OPENAI_API_KEY".to_string())
                }
                None => None,
            };
            if !(args.timeout_secs.is_finite() && args.timeout_secs > 0.0) {
                bail!(
                    "--timeout-secs must be a positive number of seconds, got {}",
                    args.timeout_secs
                );
            }
            config.timeout = Duration::from_secs_f64(args.timeout_secs);
            config.max_retries = args.max_retries;
            config.backoff = Duration::from_millis(args.retry_base_ms);
            Arc::new(OpenAiClient::new(config).map_err(anyhow::Error::msg)?)
        }
        (Some(_), Some(_)) => bail!("give either --local DIR or --base-url URL, not both"),
        (None, None) => bail!("no model: give --base-url URL --model NAME, or --local DIR"),
    };
    if args.no_cache {
        return Ok(inner);
    }
    std::fs::create_dir_all(out)?;
    Ok(Arc::new(CachedModel::open(
        inner,
        &out.join("responses.jsonl"),
    )?))
}

/// Whether `url` is OpenAI's own API (https, host api.openai.com).
fn is_openai(url: &str) -> bool {
    url.strip_prefix("https://api.openai.com")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with(':'))
}

/// The shared frame of every command, with a progress bar on stderr.
pub fn synth(args: &SynthLlmArgs, out: &Path) -> Result<Synth> {
    let prompts = Prompts::load(args.prompts.as_deref()).map_err(anyhow::Error::msg)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} items, {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    Ok(Synth {
        model: model(args, out)?,
        prompts,
        options: SynthOptions {
            seed: args.seed,
            temperature: args.temperature,
            top_p: args.top_p,
            max_tokens: args.max_tokens,
            concurrency: args.concurrency.max(1),
        },
        progress: Box::new(move |c: &Counts| {
            bar.set_length(c.items as u64);
            bar.set_position(c.done as u64);
            bar.set_message(format!(
                "{} kept, {} rejected",
                c.kept_items, c.rejected_items
            ));
            if c.done == c.items {
                bar.finish();
            }
        }),
    })
}

/// Prints the report (it is also in `OUT/report.json`).
pub fn print(report: &Report, out: &Path) -> Result<()> {
    let c = &report.counts;
    println!(
        "synth {}: {} items ({} resumed), {} kept ({} records), {} rejected",
        report.command, c.items, c.resumed, c.kept_items, c.kept_records, c.rejected_items
    );
    for (reason, n) in &c.reject_reasons {
        println!("  rejected {reason}: {n}");
    }
    for path in &report.outputs {
        println!("wrote {}", path.display());
    }
    println!("report: {}", out.join("report.json").display());
    Ok(())
}

/// `inputs` must exist (clear errors before any model call).
pub fn check_inputs(inputs: &[PathBuf]) -> Result<()> {
    for p in inputs {
        if !p.is_file() {
            bail!("{}: no such file", p.display());
        }
    }
    Ok(())
}
