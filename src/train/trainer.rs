//! The training loop: gradient accumulation with a token-weighted loss, global-norm
//! clipping, AdamW on f32 master weights (forward and backward in the compute dtype), the LR
//! schedule, the MoE aux and router z-losses, step checkpoints with exact resume, a
//! non-finite policy and per-step metrics.
//!
//! burn-train's `Learner` checkpoints per epoch and has no place for the data loader's
//! state, so the loop is written here on burn's autodiff directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use agentcpt_datasets::{DataParallel, Encoder, Loader, PackedSequence, SourceConfig};
use agentcpt_model::burn::module::Module;
use agentcpt_model::burn::tensor::{Device, FloatDType, Int, Tensor};
use agentcpt_model::info::{training_flops_per_token, FLOPS_CONVENTION};
use agentcpt_model::step::StepOptions;
use agentcpt_model::{Qwen3, Qwen3Config, RopeScaling, SequenceLayout};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::checkpoint::{self, TrainerState, MODEL_DIR};
use super::metrics::{peak_rss_bytes, MetricsLog};
use super::optimizer::{add_gradients, apply, clip_factor, global_norm, AdamW};
use super::tensorboard::{scalar_tags, EventWriter};
use crate::recipe::{LoadedRecipe, ModelInit};

/// Steps listed here get a NaN in their gradient (`AGENTCPT_INJECT_NAN_STEPS=3,7`): the
/// hook the non-finite policy is tested with.
const INJECT_NAN_ENV: &str = "AGENTCPT_INJECT_NAN_STEPS";

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    /// Stopped by Ctrl-C after writing a checkpoint.
    Interrupted,
}

pub struct Trainer {
    recipe: LoadedRecipe,
    device: Device,
    model: Qwen3,
    optimizer: AdamW,
    loader: Loader,
    state: TrainerState,
    run_dir: PathBuf,
    metrics: MetricsLog,
    tensorboard: Option<EventWriter>,
    /// The data's tokenizer, shared by the training and evaluation loaders.
    encoder: Arc<dyn Encoder>,
    /// Training FLOPs per token of this model at the recipe's sequence length.
    flops_per_token: f64,
    /// The dtype forward and backward run in; `self.model` holds the f32 master weights.
    compute_dtype: FloatDType,
    /// Dense peak TFLOP/s for MFU, when known.
    peak_tflops: Option<f64>,
    aux_coef: Option<f64>,
    inject_nan: Vec<u64>,
}

/// The model config a recipe trains, with its rope override applied.
pub fn model_config(recipe: &LoadedRecipe) -> Result<Qwen3Config> {
    let m = &recipe.recipe.model;
    let path = match m.init {
        ModelInit::Random => m.config.clone().expect("validated"),
        ModelInit::Pretrained => m.path.clone().expect("validated").join("config.json"),
        ModelInit::Checkpoint => stage_checkpoint(m.path.as_ref().expect("validated"))?
            .join(MODEL_DIR)
            .join("config.json"),
    };
    let mut config = Qwen3Config::from_file(&path)?;
    if let Some(scaling) = &m.rope_scaling {
        let scaling = RopeScaling::from_json(scaling, config.max_position_embeddings)
            .map_err(|e| anyhow::anyhow!("{}: `model.rope_scaling`: {e}", recipe.path.display()))?;
        config = config.with_rope_scaling(scaling);
    }
    Ok(config)
}

/// The newest checkpoint of an earlier run, for `init = "checkpoint"`.
fn stage_checkpoint(run_dir: &Path) -> Result<PathBuf> {
    checkpoint::newest(run_dir)?.with_context(|| {
        format!(
            "`model.path`: {} has no checkpoint (run the earlier stage first)",
            run_dir.display()
        )
    })
}

/// A loader over the recipe's held-out sources, packed exactly as the training data is
/// (`None` without an `[eval]` section). Opening it checks every glob, file and schema.
pub fn eval_loader(recipe: &LoadedRecipe, encoder: &Arc<dyn Encoder>) -> Result<Option<Loader>> {
    let Some(eval) = &recipe.recipe.eval else {
        return Ok(None);
    };
    let config = agentcpt_datasets::LoaderConfig {
        sources: eval.sources.clone(),
        ..recipe.recipe.data.clone()
    };
    let loader = Loader::open(config, encoder.clone(), DataParallel::SINGLE)
        .with_context(|| format!("{}: `eval.sources`", recipe.path.display()))?;
    Ok(Some(loader))
}

/// Checks what can only be checked against the model and the data: sequence length, token
/// ids against the vocabulary, the data files.
pub fn check_compatibility(recipe: &LoadedRecipe, config: &Qwen3Config) -> Result<()> {
    let r = &recipe.recipe;
    let file = recipe.path.display();
    if r.data.seq_len > config.max_position_embeddings {
        bail!(
            "{file}: `data.seq_len` = {} is longer than the model supports (max_position_embeddings {}); add `model.rope_scaling` (YaRN) to extend it",
            r.data.seq_len,
            config.max_position_embeddings
        );
    }
    let vocab = match &r.tokenizer {
        crate::recipe::TokenizerSection::Hf { path } => {
            agentcpt_datasets::HfTokenizer::from_file(path)
                .with_context(|| format!("{file}: `tokenizer.path`"))?
                .vocab_size()
        }
        crate::recipe::TokenizerSection::Bytes => 256,
    };
    let largest = [
        vocab.saturating_sub(1),
        r.data.eot_id as usize,
        r.data.pad_id.unwrap_or(0) as usize,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    if largest >= config.vocab_size {
        bail!(
            "{file}: `tokenizer`: the tokenizer's vocabulary (and eot/pad ids) reach id {largest}, but the model's vocab_size is {}",
            config.vocab_size
        );
    }
    Ok(())
}

impl Trainer {
    /// Builds the run: resumes from the newest checkpoint in the run directory unless `fresh`.
    /// `device` holds the master weights (f32); `compute_dtype` is what steps run in.
    pub fn new(
        recipe: LoadedRecipe,
        device: Device,
        compute_dtype: FloatDType,
        peak_tflops: Option<f64>,
        fresh: bool,
    ) -> Result<Self> {
        let run_dir = recipe.output_dir();
        // Everything that can reject the recipe runs before `--fresh` deletes anything.
        let config = model_config(&recipe)?;
        check_compatibility(&recipe, &config)?;
        let encoder = recipe.encoder()?;
        // A bad held-out glob or shard fails now, not at the first evaluation.
        eval_loader(&recipe, &encoder)?;
        let resume_from = if fresh {
            None
        } else {
            checkpoint::newest(&run_dir)?
        };
        if fresh && run_dir.exists() {
            std::fs::remove_dir_all(&run_dir)
                .with_context(|| format!("--fresh: cannot clear {}", run_dir.display()))?;
        }
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let data = recipe.recipe.data.clone();
        let inner = device.clone().without_autodiff();
        let mut optimizer = AdamW::new(recipe.recipe.optimizer.clone());
        let (model, loader, state) = match &resume_from {
            Some(ckpt) => {
                let state = checkpoint::read_state(ckpt)?;
                let model = Qwen3::load_with_config(&ckpt.join(MODEL_DIR), config, &device)?;
                optimizer.load_state(
                    state.optimizer_step,
                    checkpoint::read_optimizer(ckpt)?,
                    &inner,
                )?;
                let loader =
                    Loader::resume(data, encoder.clone(), DataParallel::SINGLE, &state.loader)?;
                eprintln!(
                    "resuming {} from {} (step {})",
                    recipe.recipe.run.name,
                    ckpt.display(),
                    state.step
                );
                (model, loader, state)
            }
            None => {
                let model = match recipe.recipe.model.init {
                    ModelInit::Random => {
                        device.seed(recipe.recipe.run.seed);
                        Qwen3::random(config, &device)
                    }
                    ModelInit::Pretrained => Qwen3::load_with_config(
                        recipe.recipe.model.path.as_ref().expect("validated"),
                        config,
                        &device,
                    )?,
                    ModelInit::Checkpoint => {
                        let ckpt = stage_checkpoint(
                            recipe.recipe.model.path.as_ref().expect("validated"),
                        )?;
                        eprintln!("starting from {}", ckpt.display());
                        Qwen3::load_with_config(&ckpt.join(MODEL_DIR), config, &device)?
                    }
                };
                let loader = Loader::open(data, encoder.clone(), DataParallel::SINGLE)?;
                let state = TrainerState {
                    step: 0,
                    tokens_seen: 0,
                    skipped_steps: 0,
                    consecutive_skips: 0,
                    optimizer_step: 0,
                    loader: loader.state(),
                    recipe: serde_json::to_value(&recipe.recipe)?,
                };
                (model, loader, state)
            }
        };
        let metrics = MetricsLog::open(&run_dir.join("metrics.jsonl"), state.step)?;
        let tensorboard = match recipe.recipe.metrics.tensorboard {
            true => Some(EventWriter::create(
                &run_dir.join("tensorboard"),
                state.step,
            )?),
            false => None,
        };
        let aux_coef = recipe
            .recipe
            .loss
            .aux_loss_coef
            .or_else(|| model.config.moe.as_ref().map(|m| m.router_aux_loss_coef));
        let inject_nan = std::env::var(INJECT_NAN_ENV)
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
            .unwrap_or_default();
        let flops_per_token = training_flops_per_token(&model.config, recipe.recipe.data.seq_len);
        Ok(Self {
            recipe,
            device,
            model,
            optimizer,
            loader,
            state,
            run_dir,
            flops_per_token,
            metrics,
            tensorboard,
            encoder,
            compute_dtype,
            peak_tflops,
            aux_coef,
            inject_nan,
        })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// Trains to the end of the recipe, checkpointing as configured; on `stop` (Ctrl-C)
    /// writes a checkpoint and returns.
    pub fn run(&mut self, stop: &AtomicBool, mut on_step: impl FnMut(&Value)) -> Result<Outcome> {
        let total = self.recipe.total_steps();
        let every = self.recipe.recipe.checkpoint.every;
        while self.state.step < total {
            if stop.load(Ordering::SeqCst) {
                self.save()?;
                return Ok(Outcome::Interrupted);
            }
            let mut record = self.train_step(total)?;
            if let Some(eval) = &self.recipe.recipe.eval {
                if self.state.step.is_multiple_of(eval.every) || self.state.step == total {
                    record["val_loss"] = self.evaluate()?;
                }
            }
            self.metrics.write(&record)?;
            if let Some(tb) = &mut self.tensorboard {
                tb.scalars(self.state.step, &scalar_tags(&record))?;
            }
            on_step(&record);
            let max_skips = self.recipe.recipe.train.max_consecutive_skips;
            if self.state.consecutive_skips >= max_skips {
                bail!(
                    "{max_skips} consecutive steps had a non-finite loss or gradient (step {}); stopping with the last good checkpoint intact",
                    self.state.step
                );
            }
            if every > 0 && self.state.step.is_multiple_of(every) && self.state.step < total {
                self.save()?;
            }
        }
        self.save()?;
        Ok(Outcome::Finished)
    }

    fn save(&mut self) -> Result<PathBuf> {
        self.state.loader = self.loader.state();
        self.state.optimizer_step = self.optimizer.step;
        checkpoint::save(
            &self.run_dir,
            &self.model,
            &self.optimizer,
            &self.state,
            self.recipe.recipe.checkpoint.keep,
        )
    }

    /// One optimiser step over `accumulation_steps` micro-batches.
    fn train_step(&mut self, total: u64) -> Result<Value> {
        let started = Instant::now();
        let accumulation = self.recipe.accumulation_steps();
        let micro_batch = self.recipe.recipe.train.micro_batch;
        let mut batches = Vec::with_capacity(accumulation as usize);
        for _ in 0..accumulation {
            let batch = self.loader.next_batch(micro_batch)?;
            if batch.len() < micro_batch {
                bail!("the data ran out at step {} (set the sources' `on_exhausted = \"repeat\"` or train fewer steps)", self.state.step);
            }
            batches.push(batch);
        }
        // The loss is a mean over every counted target of the whole step, as one big batch.
        let counted: usize = batches.iter().flatten().map(counted_targets).sum();
        let mut grads: BTreeMap<String, (Tensor<1>, usize)> = BTreeMap::new();
        let (mut ce_sum, mut aux_sum, mut z_sum) = (0f64, 0f64, 0f64);
        let z_coef = self.recipe.recipe.loss.router_z_loss_coef;
        let sources = &self.recipe.recipe.data.sources;
        let mut source_loss = vec![(0f64, 0usize); sources.len()];
        let mut expert_tokens: Vec<Vec<i64>> = Vec::new();
        let runtime = &self.recipe.recipe.runtime;
        let options = StepOptions {
            recompute_every: (runtime.recompute_every > 0).then_some(runtime.recompute_every),
            loss_chunk: runtime.loss_chunk,
            ce_divisor: counted.max(1) as f64,
            aux_coef: self.aux_coef.map(|c| c / accumulation as f64),
            z_coef: z_coef.map(|c| c / accumulation as f64),
            compute_dtype: self.compute_dtype,
            attention_block: (runtime.attention_block > 0).then_some(runtime.attention_block),
        };
        for batch in &batches {
            let (ids, labels, layout) = self.tensors(batch, &self.device)?;
            let out = self.model.loss_and_grads(ids, labels, &layout, &options);
            ce_sum += out.ce_sum;
            aux_sum += out.aux.unwrap_or(0.0);
            z_sum += out.z.unwrap_or(0.0);
            attribute_loss(batch, &out.per_token, &mut source_loss);
            for (layer, counts) in out.expert_counts.into_iter().enumerate() {
                match expert_tokens.get_mut(layer) {
                    Some(acc) => acc.iter_mut().zip(counts).for_each(|(a, c)| *a += c),
                    None => expert_tokens.push(counts),
                }
            }
            add_gradients(&mut grads, out.grads);
        }
        let step = self.state.step;
        if self.inject_nan.contains(&step) {
            if let Some((g, _)) = grads.values_mut().next() {
                *g = g.clone().mul_scalar(f64::NAN);
            }
        }
        let grad_norm = global_norm(&grads.values().map(|(g, _)| g.clone()).collect::<Vec<_>>());
        let lr = self
            .recipe
            .recipe
            .schedule
            .lr(self.recipe.recipe.optimizer.lr, step, total);
        let loss = ce_sum / counted.max(1) as f64;
        let skipped = !(grad_norm.is_finite() && loss.is_finite());
        if skipped {
            self.state.skipped_steps += 1;
            self.state.consecutive_skips += 1;
            eprintln!("step {step}: non-finite loss ({loss}) or gradient norm ({grad_norm}); step skipped");
        } else {
            self.state.consecutive_skips = 0;
            apply(
                &mut self.model,
                &mut self.optimizer,
                &mut grads,
                clip_factor(grad_norm, self.recipe.recipe.optimizer.max_grad_norm),
                lr,
            );
        }
        let tokens = (accumulation as usize * micro_batch * self.recipe.recipe.data.seq_len) as u64;
        self.state.step += 1;
        self.state.tokens_seen += tokens;
        let seconds = started.elapsed().as_secs_f64();
        let tflops = tokens as f64 * self.flops_per_token / seconds / 1e12;
        Ok(json!({
            "step": step + 1,
            "loss": loss,
            "loss_per_source": mean_per_source(sources, &source_loss),
            "aux_loss": self.aux_coef.map(|_| aux_sum / accumulation as f64),
            "z_loss": z_coef.map(|_| z_sum / accumulation as f64),
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens": self.state.tokens_seen,
            "tokens_per_s": tokens as f64 / seconds,
            "tflops": tflops,
            "flops_convention": FLOPS_CONVENTION,
            "mfu": self.peak_tflops.map(|peak| tflops / peak),
            "peak_rss_bytes": peak_rss_bytes(),
            "skipped": skipped,
            "skipped_steps": self.state.skipped_steps,
            "tokens_per_expert": expert_tokens,
            "expert_imbalance": expert_tokens.iter().map(|l| imbalance(l)).collect::<Vec<_>>(),
        }))
    }

    /// Mean loss per held-out source on the first `eval.batches` micro-batches of the eval
    /// sources (the same ones every time), without autodiff.
    fn evaluate(&self) -> Result<Value> {
        let eval = self
            .recipe
            .recipe
            .eval
            .as_ref()
            .expect("called with an eval section");
        let mut loader = eval_loader(&self.recipe, &self.encoder)?.expect("an eval section");
        let model = self.model.valid();
        let mut per_source = vec![(0f64, 0usize); eval.sources.len()];
        let runtime = &self.recipe.recipe.runtime;
        for _ in 0..eval.batches {
            let batch = loader.next_batch(self.recipe.recipe.train.micro_batch)?;
            if batch.is_empty() {
                break;
            }
            let (ids, labels, layout) = self.tensors(&batch, &model.embed_tokens.device())?;
            let per_token: Vec<f32> = model
                .per_token_loss(
                    ids,
                    labels,
                    &layout,
                    runtime.loss_chunk,
                    (runtime.attention_block > 0).then_some(runtime.attention_block),
                )
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32");
            attribute_loss(&batch, &per_token, &mut per_source);
        }
        Ok(mean_per_source(&eval.sources, &per_source))
    }

    /// The device tensors of one micro-batch.
    fn tensors(
        &self,
        batch: &[PackedSequence],
        device: &Device,
    ) -> Result<(Tensor<2, Int>, Tensor<2, Int>, SequenceLayout)> {
        let seq_len = self.recipe.recipe.data.seq_len;
        let ids: Vec<Vec<i64>> = batch
            .iter()
            .map(|s| s.input_ids.iter().map(|&t| t as i64).collect())
            .collect();
        let labels: Vec<Vec<i64>> = batch.iter().map(PackedSequence::labels).collect();
        let lengths: Vec<Vec<usize>> = batch
            .iter()
            .map(|s| s.doc_lens().into_iter().map(|l| l as usize).collect())
            .collect();
        let ids = self.model.token_tensor(&ids, device)?;
        let labels = self.model.label_tensor(&labels, device)?;
        let layout = SequenceLayout::from_document_lengths(&lengths, seq_len, device)?;
        Ok((ids, labels, layout))
    }
}

/// Targets a sequence contributes to the loss (labels are scored from position 1 on).
fn counted_targets(seq: &PackedSequence) -> usize {
    seq.loss_mask.iter().skip(1).filter(|&&m| m != 0).count()
}

/// Adds each scored position's loss to the source of the token it predicts: `acc[source]`
/// holds the sum and the count.
fn attribute_loss(batch: &[PackedSequence], per_token: &[f32], acc: &mut [(f64, usize)]) {
    let targets_per_row = per_token.len() / batch.len().max(1);
    for (row, seq) in batch.iter().enumerate() {
        let losses = &per_token[row * targets_per_row..(row + 1) * targets_per_row];
        let mut t = 0usize;
        for segment in &seq.segments {
            let range = t..t + segment.len as usize;
            t = range.end;
            let Some(source) = segment.source else {
                continue;
            };
            let entry = &mut acc[source as usize];
            // Position t − 1 predicts token t.
            for t in range.filter(|&t| t >= 1 && seq.loss_mask[t] != 0) {
                entry.0 += losses[t - 1] as f64;
                entry.1 += 1;
            }
        }
    }
}

/// `{source name: mean loss}` for the sources that had scored tokens.
fn mean_per_source(sources: &[SourceConfig], acc: &[(f64, usize)]) -> Value {
    sources
        .iter()
        .zip(acc)
        .filter(|(_, (_, n))| *n > 0)
        .map(|(s, (sum, n))| (s.name.clone(), json!(sum / *n as f64)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// max / mean tokens per expert (1 is perfectly balanced).
fn imbalance(counts: &[i64]) -> f64 {
    let total: i64 = counts.iter().sum();
    if total == 0 {
        return 1.0;
    }
    let mean = total as f64 / counts.len() as f64;
    *counts.iter().max().unwrap_or(&0) as f64 / mean
}
