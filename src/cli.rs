//! The command line: `agentcpt model info|forward|init|convert`, `generate`, `recipe`, `data`,
//! `synth`, `serve` and `report`.

use std::path::PathBuf;

use agentcpt_model::generate::GenerationConfig;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::device::{parse_dtype, select, DeviceSpec};

#[derive(Debug, Parser)]
#[command(
    name = "agentcpt",
    version,
    about = "Agentic continual pre-training for Qwen3 dense and MoE models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, run, create and convert Hugging Face Qwen3 checkpoints.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Generate token ids from a checkpoint with a KV cache.
    Generate(GenerateArgs),
    /// Train a recipe (a TOML stage) to the end, resuming from its newest checkpoint.
    Recipe {
        /// Recipe file or name (looked up in the working directory, then recipes/).
        recipe: String,
        /// Validate everything reachable and print the plan without training.
        #[arg(long)]
        dry_run: bool,
        /// Start over, deleting the run directory's checkpoints and metrics.
        #[arg(long)]
        fresh: bool,
        /// Overrides, `key.path=value` (repeatable).
        #[arg(long = "set")]
        overrides: Vec<String>,
    },
    /// Import, inspect, tokenize and preview training data.
    #[command(subcommand)]
    Data(DataCommand),
    /// Synthesize FAS and HAS training data with a language model (nothing is executed).
    #[command(subcommand)]
    Synth(Box<SynthCommand>),
    /// Serve a checkpoint as an OpenAI-compatible chat endpoint (/v1/chat/completions, /v1/models).
    Serve(ServeArgs),
    /// Charts of a run's metrics.jsonl (loss, throughput, optimiser, expert load) as PNG and SVG.
    Report {
        /// The run directory (holding metrics.jsonl).
        run_dir: PathBuf,
        /// Where the charts go (default: RUN_DIR/report).
        #[arg(long)]
        out: Option<PathBuf>,
        /// TrueType font for the labels (default: a system font such as DejaVu Sans).
        #[arg(long)]
        font: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SynthCommand {
    /// Documents (JSONL `text`, trajectories' tool responses, Parquet) → entity memory.
    Memory {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Documents longer than this are read in chunks (at paragraph breaks).
        #[arg(long, default_value_t = 12_000)]
        max_doc_bytes: usize,
        #[command(flatten)]
        llm: SynthLlmArgs,
    },
    /// Entity memory → questions in several styles, linked to their statements.
    Questions {
        /// memory.jsonl written by `synth memory`.
        #[arg(long)]
        memory: PathBuf,
        /// Entities per cluster (the anchor and entities sharing a source with it).
        #[arg(long, default_value_t = 3)]
        cluster_size: usize,
        /// Comma-separated styles.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "factual_retrieval,numerical_computation,multi_hop,synthesis"
        )]
        styles: Vec<String>,
        #[command(flatten)]
        llm: SynthLlmArgs,
    },
    /// Questions → planning actions (analysis + first tool call), judged against the knowledge.
    Plan {
        /// questions.jsonl written by `synth questions`.
        #[arg(long)]
        questions: PathBuf,
        /// `Current date` of the agent system prompt (fixed, so runs repeat).
        #[arg(long, default_value = "2025-01-01")]
        date: String,
        #[command(flatten)]
        llm: SynthLlmArgs,
    },
    /// Questions → reasoning actions (internal attempt, refined with the knowledge).
    Reason {
        #[arg(long)]
        questions: PathBuf,
        #[arg(long, default_value_t = 40)]
        min_reasoning_chars: usize,
        #[arg(long, default_value_t = 12_000)]
        max_reasoning_chars: usize,
        #[command(flatten)]
        llm: SynthLlmArgs,
    },
    /// ReAct trajectories (JSONL) → step-wise decision samples with a final judgement.
    Has {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Fewest alternatives per step (drawn per step between the two bounds).
        #[arg(long, default_value_t = 1)]
        min_alternatives: usize,
        #[arg(long, default_value_t = 3)]
        max_alternatives: usize,
        /// Ask the LLM judge when the normalised answer does not match the reference.
        #[arg(long)]
        llm_judge: bool,
        /// Longer samples go to the stage-2 shards.
        #[arg(long, default_value_t = 32_768)]
        stage1_max_tokens: usize,
        /// tokenizer.json that counts tokens for routing, or `bytes` (default: the Qwen3
        /// tokenizer where scripts/fetch-qwen-tokenizer.sh puts it).
        #[arg(long)]
        count_tokenizer: Option<String>,
        #[command(flatten)]
        llm: SynthLlmArgs,
    },
}

/// The model every synth command talks to, and the run's settings.
#[derive(Debug, Args)]
pub struct SynthLlmArgs {
    /// Output directory (journal, response cache, report and outputs; re-running resumes).
    #[arg(long)]
    pub out: PathBuf,
    /// OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.
    #[arg(long)]
    pub base_url: Option<String>,
    /// Model name at the endpoint (with --local: the name recorded in provenance).
    #[arg(long)]
    pub model: Option<String>,
    /// Environment variable holding the API key (default: OPENAI_API_KEY, where it is set,
    /// for https://api.openai.com only; other endpoints get a key only when named here).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Run agentcpt's own checkpoint in process instead of calling an endpoint.
    #[arg(long)]
    pub local: Option<PathBuf>,
    /// With --local: tokenizer.json, or `bytes` (default: LOCAL/tokenizer.json).
    #[arg(long)]
    pub tokenizer: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Seconds a request may take in all.
    #[arg(long, default_value_t = 300.0)]
    pub timeout_secs: f64,
    /// Retries on timeouts, 429 and 5xx (exponential backoff; Retry-After honoured).
    #[arg(long, default_value_t = 6)]
    pub max_retries: u32,
    /// First backoff in milliseconds (doubles per retry, at most 60 s).
    #[arg(long, default_value_t = 500)]
    pub retry_base_ms: u64,
    /// Items in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Most tokens per model reply.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Directory of prompt files overriding the built-in ones by name (see datasets/prompts/).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Do not keep responses in OUT/responses.jsonl.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Checkpoint directory (config.json + safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// tokenizer.json, or `bytes` (default: MODEL/tokenizer.json).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Name the endpoint serves (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Address to bind; anything but loopback exposes the model to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// JSONL documents (`text`) or ChatML trajectories (`messages`, `tools`) → Parquet shards.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Sample kind: fas_planning, fas_reasoning, has, general, trajectory, …
        #[arg(long)]
        kind: String,
        /// Source name stored with every sample (default: the file's stem).
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = commands::data::DEFAULT_SHARD_ROWS)]
        rows_per_shard: usize,
    },
    /// Schema, row counts, a length histogram and one rendered sample.
    Inspect {
        #[arg(required = true)]
        globs: Vec<String>,
        /// tokenizer.json for token lengths (characters without it).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
    /// Pre-tokenize shards into `input_ids` shards.
    Tokenize {
        #[arg(required = true)]
        globs: Vec<String>,
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = commands::data::DEFAULT_SHARD_ROWS)]
        rows_per_shard: usize,
    },
    /// The next packed micro-batches of a recipe, as JSONL, exactly as the trainer sees them.
    Preview {
        /// Recipe file or name (looked up in the working directory, then recipes/).
        recipe: String,
        #[arg(long, default_value_t = 1)]
        batches: usize,
        /// Start from this saved loader state.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Save the loader state after the last batch.
        #[arg(long)]
        save_state: Option<PathBuf>,
        /// Recipe overrides, `key.path=value` (repeatable).
        #[arg(long = "set")]
        overrides: Vec<String>,
        /// This data-parallel rank's share of the data.
        #[arg(long, default_value_t = 0)]
        rank: u32,
        #[arg(long, default_value_t = 1)]
        world: u32,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// auto, cpu, wgpu, cuda or cuda:N (auto prefers a GPU among the backends compiled in).
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// Compute dtype (f32, bf16, f16); default bf16 on CUDA, f32 elsewhere.
    #[arg(long)]
    pub dtype: Option<String>,
}

impl DeviceArgs {
    pub fn device(&self) -> Result<agentcpt_model::burn::tensor::Device> {
        select(
            &self.device,
            self.dtype.as_deref().map(parse_dtype).transpose()?,
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Architecture, total and active parameters, and a training-memory estimate.
    Info {
        /// config.json or a checkpoint directory.
        config: PathBuf,
        #[arg(long, default_value_t = 4096)]
        seq_len: usize,
        #[arg(long, default_value_t = 1)]
        micro_batch: usize,
        /// Compute dtype of the estimate (bf16 or f32).
        #[arg(long, default_value = "bf16")]
        dtype: String,
        /// Layers per recomputed segment (0: none), as `runtime.recompute_every`.
        #[arg(long, default_value_t = 0)]
        recompute_every: usize,
        /// Positions per LM-head chunk, as `runtime.loss_chunk`.
        #[arg(long, default_value_t = 1024)]
        loss_chunk: usize,
        /// Blockwise attention tile (0: materialised scores), as `runtime.attention_block`.
        #[arg(long, default_value_t = 0)]
        attention_block: usize,
    },
    /// Logits, per-token loss, loss and aux loss of a checkpoint on given token ids.
    Forward {
        #[arg(long)]
        model: PathBuf,
        /// JSON: [[ids…], …] or {"input_ids": …, "position_ids"|"document_lengths": …, "labels": …}.
        #[arg(long)]
        input_ids: PathBuf,
        /// safetensors file to write.
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Write a randomly initialised checkpoint for a config.
    Init {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        save: SaveArgs,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Load a checkpoint and save it again (dtype, sharding).
    Convert {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        save: SaveArgs,
        #[command(flatten)]
        device: DeviceArgs,
    },
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Stored dtype: bf16, f32 or f16.
    #[arg(long, default_value = "bf16")]
    pub save_dtype: String,
    /// Largest shard in bytes.
    #[arg(long, default_value_t = 5_000_000_000)]
    pub max_shard_bytes: usize,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt as a JSON list of token ids.
    #[arg(long)]
    pub prompt_ids: String,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Token ids that end generation (repeatable).
    #[arg(long = "stop")]
    pub stop_tokens: Vec<i64>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Model(ModelCommand::Info {
            config,
            seq_len,
            micro_batch,
            dtype,
            recompute_every,
            loss_chunk,
            attention_block,
        }) => {
            let step = agentcpt_model::info::StepMemoryOptions {
                recompute_every,
                loss_chunk,
                attention_block,
            };
            commands::model::info(&config, seq_len, micro_batch, &dtype, &step)
        }
        Command::Model(ModelCommand::Forward {
            model,
            input_ids,
            output,
            device,
        }) => commands::model::forward(&model, &input_ids, &output, &device.device()?),
        Command::Model(ModelCommand::Init {
            config,
            out,
            seed,
            save,
            device,
        }) => {
            let options = commands::model::save_options(&save.save_dtype, save.max_shard_bytes)?;
            commands::model::init(&config, &out, seed, &options, &device.device()?)
        }
        Command::Model(ModelCommand::Convert {
            model,
            out,
            save,
            device,
        }) => {
            let options = commands::model::save_options(&save.save_dtype, save.max_shard_bytes)?;
            commands::model::convert(&model, &out, &options, &device.device()?)
        }
        Command::Data(command) => run_data(command),
        Command::Synth(command) => run_synth(*command),
        Command::Serve(args) => {
            let tokenizer =
                crate::local_llm::ChatTokenizer::resolve(args.tokenizer.as_deref(), &args.model)?;
            let chat = crate::local_llm::LocalChat::load(
                &args.model,
                tokenizer,
                args.name,
                args.device.device()?,
            )?;
            commands::serve::run(chat, &args.host, args.port)
        }
        Command::Report { run_dir, out, font } => {
            let out = out.unwrap_or_else(|| run_dir.join("report"));
            for path in crate::report::write(&run_dir, &out, font.as_deref())? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Recipe {
            recipe,
            dry_run,
            fresh,
            overrides,
        } => {
            let recipe =
                crate::recipe::LoadedRecipe::load(&crate::recipe::find(&recipe)?, &overrides)?;
            if dry_run {
                commands::recipe::dry_run(&recipe)
            } else {
                commands::recipe::train(recipe, fresh)
            }
        }
        Command::Generate(args) => {
            let config = GenerationConfig {
                max_new_tokens: args.max_new_tokens,
                temperature: args.temperature,
                top_p: args.top_p,
                stop_tokens: args.stop_tokens,
                seed: args.seed,
            };
            commands::generate::run(
                &args.model,
                &args.prompt_ids,
                &config,
                &args.device.device()?,
            )
        }
    }
}

fn run_synth(command: SynthCommand) -> Result<()> {
    use agentcpt_datasets::synth::{has, memory, plan, questions, reason};
    use commands::synth::{check_inputs, print, synth};
    let (report, out) = match command {
        SynthCommand::Memory {
            inputs,
            max_doc_bytes,
            llm,
        } => {
            check_inputs(&inputs)?;
            let s = synth(&llm, &llm.out)?;
            (memory::run(&s, &inputs, &llm.out, max_doc_bytes)?, llm.out)
        }
        SynthCommand::Questions {
            memory,
            cluster_size,
            styles,
            llm,
        } => {
            check_inputs(std::slice::from_ref(&memory))?;
            let s = synth(&llm, &llm.out)?;
            let report = questions::run(&s, &memory, &llm.out, cluster_size, &styles)?;
            (report, llm.out)
        }
        SynthCommand::Plan {
            questions,
            date,
            llm,
        } => {
            check_inputs(std::slice::from_ref(&questions))?;
            let s = synth(&llm, &llm.out)?;
            (plan::run(&s, &questions, &llm.out, &date)?, llm.out)
        }
        SynthCommand::Reason {
            questions,
            min_reasoning_chars,
            max_reasoning_chars,
            llm,
        } => {
            check_inputs(std::slice::from_ref(&questions))?;
            let s = synth(&llm, &llm.out)?;
            let bounds = min_reasoning_chars..=max_reasoning_chars;
            (reason::run(&s, &questions, &llm.out, bounds)?, llm.out)
        }
        SynthCommand::Has {
            inputs,
            min_alternatives,
            max_alternatives,
            llm_judge,
            stage1_max_tokens,
            count_tokenizer,
            llm,
        } => {
            check_inputs(&inputs)?;
            let encoder: Box<dyn agentcpt_datasets::Encoder> = match count_tokenizer.as_deref() {
                Some("bytes") => Box::new(agentcpt_datasets::ByteEncoder),
                Some(path) => Box::new(agentcpt_datasets::HfTokenizer::from_file(path)?),
                None => Box::new(
                    agentcpt_datasets::HfTokenizer::from_file(
                        agentcpt_datasets::default_qwen3_tokenizer_path(),
                    )
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{e}; run scripts/fetch-qwen-tokenizer.sh or pass --count-tokenizer"
                        )
                    })?,
                ),
            };
            let options = has::HasOptions {
                alternatives: min_alternatives..=max_alternatives,
                llm_judge,
                stage1_max_tokens,
            };
            let s = synth(&llm, &llm.out)?;
            (
                has::run(&s, &inputs, &llm.out, &options, &*encoder)?,
                llm.out,
            )
        }
    };
    print(&report, &out)
}

fn run_data(command: DataCommand) -> Result<()> {
    use crate::commands::data;
    match command {
        DataCommand::Import {
            files,
            kind,
            source,
            out,
            rows_per_shard,
        } => data::import(&files, &kind, source.as_deref(), &out, rows_per_shard),
        DataCommand::Inspect { globs, tokenizer } => data::inspect(&globs, tokenizer.as_deref()),
        DataCommand::Tokenize {
            globs,
            tokenizer,
            out,
            rows_per_shard,
        } => data::tokenize(&globs, &tokenizer, &out, rows_per_shard),
        DataCommand::Preview {
            recipe,
            batches,
            state,
            save_state,
            overrides,
            rank,
            world,
            output,
        } => {
            let recipe =
                crate::recipe::LoadedRecipe::load(&crate::recipe::find(&recipe)?, &overrides)?;
            let dp = agentcpt_datasets::DataParallel::new(rank, world)?;
            match output {
                Some(path) => {
                    let mut file = std::fs::File::create(&path)
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                    data::preview(
                        &recipe,
                        batches,
                        state.as_deref(),
                        save_state.as_deref(),
                        dp,
                        &mut file,
                    )
                }
                None => data::preview(
                    &recipe,
                    batches,
                    state.as_deref(),
                    save_state.as_deref(),
                    dp,
                    &mut std::io::stdout(),
                ),
            }
        }
    }
}
