//! The command line: `agentcpt model info|forward|init|convert`, `generate`, `recipe`, `data`
//! and `report`.

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
    fn device(&self) -> Result<agentcpt_model::burn::tensor::Device> {
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
        }) => commands::model::info(&config, seq_len, micro_batch, &dtype),
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
