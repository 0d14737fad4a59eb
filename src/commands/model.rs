//! `agentcpt model …`: inspect, run, create and convert Hugging Face checkpoints.

use std::path::Path;

use agentcpt_model::burn::tensor::{Device, Int, Tensor, TensorData};
use agentcpt_model::info::{
    billions, human_bytes, human_count, param_counts, training_memory, StepMemoryOptions,
};
use agentcpt_model::weights::{save_pretrained, SaveDType, SaveOptions};
use agentcpt_model::{Qwen3, Qwen3Config, SequenceLayout};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;

/// Prints architecture, parameter counts and a training-memory estimate.
pub fn info(
    config: &Path,
    seq_len: usize,
    micro_batch: usize,
    dtype: &str,
    step: &StepMemoryOptions,
) -> Result<()> {
    let c = Qwen3Config::from_file(config)?;
    let compute_bytes = match dtype {
        "f32" | "float32" => 4,
        "bf16" | "bfloat16" | "f16" | "float16" => 2,
        _ => bail!("unknown dtype `{dtype}`: expected f32, bf16 or f16"),
    };
    let n = param_counts(&c);
    println!(
        "architecture     {} ({} layers, hidden {}, {} heads / {} kv heads × head_dim {})",
        c.architecture.model_type(),
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim
    );
    if let Some(m) = &c.moe {
        println!(
            "experts          {} per MoE layer, top-{}, width {} ({} of {} layers sparse)",
            m.num_experts,
            m.num_experts_per_tok,
            m.moe_intermediate_size,
            c.num_moe_layers(),
            c.num_hidden_layers
        );
    }
    println!(
        "vocabulary       {} (tied embeddings: {})",
        c.vocab_size, c.tie_word_embeddings
    );
    println!(
        "rope             theta {}, {:?}, max positions {}",
        c.rope_theta, c.rope_scaling, c.max_position_embeddings
    );
    println!(
        "parameters       {} total / {} active ({} / {}; {} active without the input embedding)",
        billions(n.total),
        billions(n.active),
        human_count(n.total),
        human_count(n.active),
        human_count(n.active - n.embedding)
    );
    let m = training_memory(&c, seq_len, micro_batch, compute_bytes, step);
    println!(
        "training memory  {} at seq_len {seq_len} × micro-batch {micro_batch}, {dtype} compute, AdamW, recompute every {} layers, loss chunk {}, attention block {}:",
        human_bytes(m.total()),
        step.recompute_every,
        step.loss_chunk,
        step.attention_block
    );
    println!(
        "  weights {}, gradients {}, optimizer {}, saved activations {}, backward working set {}, attention scores {}, logits {}, process {}",
        human_bytes(m.weights),
        human_bytes(m.gradients),
        human_bytes(m.optimizer),
        human_bytes(m.saved),
        human_bytes(m.working),
        human_bytes(m.attention_scores),
        human_bytes(m.logits),
        human_bytes(m.baseline)
    );
    Ok(())
}

/// The `--input-ids` file: a list of token-id rows, or an object with `input_ids` and
/// optionally `position_ids`, `document_lengths` and `labels`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InputFile {
    Rows(Vec<Vec<i64>>),
    Object {
        input_ids: Vec<Vec<i64>>,
        #[serde(default)]
        position_ids: Option<Vec<Vec<i64>>>,
        #[serde(default)]
        document_lengths: Option<Vec<Vec<usize>>>,
        #[serde(default)]
        labels: Option<Vec<Vec<i64>>>,
    },
}

pub struct ForwardInputs {
    pub input_ids: Vec<Vec<i64>>,
    pub position_ids: Option<Vec<Vec<i64>>>,
    pub document_lengths: Option<Vec<Vec<usize>>>,
    pub labels: Option<Vec<Vec<i64>>>,
}

impl ForwardInputs {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let parsed: InputFile = serde_json::from_str(&text).with_context(|| {
            format!("{}: expected a JSON list of token-id lists, or an object with `input_ids` (and optional `position_ids`, `document_lengths`, `labels`)", path.display())
        })?;
        let inputs = match parsed {
            InputFile::Rows(input_ids) => Self {
                input_ids,
                position_ids: None,
                document_lengths: None,
                labels: None,
            },
            InputFile::Object {
                input_ids,
                position_ids,
                document_lengths,
                labels,
            } => {
                if position_ids.is_some() && document_lengths.is_some() {
                    bail!(
                        "{}: give `position_ids` or `document_lengths`, not both",
                        path.display()
                    );
                }
                Self {
                    input_ids,
                    position_ids,
                    document_lengths,
                    labels,
                }
            }
        };
        if inputs.input_ids.is_empty() || inputs.input_ids[0].len() < 2 {
            bail!(
                "{}: `input_ids` needs at least one row of at least 2 tokens",
                path.display()
            );
        }
        Ok(inputs)
    }

    pub fn layout(&self, device: &Device) -> Result<SequenceLayout> {
        let (b, s) = (self.input_ids.len(), self.input_ids[0].len());
        Ok(match (&self.position_ids, &self.document_lengths) {
            (Some(p), _) => {
                if p.len() != b || p.iter().any(|r| r.len() != s) {
                    bail!("`position_ids` must have the shape of `input_ids` ([{b}, {s}])");
                }
                SequenceLayout::from_positions(p, device)?
            }
            (None, Some(lengths)) => SequenceLayout::from_document_lengths(lengths, s, device)?,
            (None, None) => SequenceLayout::contiguous(b, s, 0, device),
        })
    }

    /// The labels (the input ids unless given), checked against the model's vocabulary.
    pub fn labels(&self, model: &Qwen3, device: &Device) -> Result<Tensor<2, Int>> {
        let rows = self.labels.as_ref().unwrap_or(&self.input_ids);
        let (b, s) = (self.input_ids.len(), self.input_ids[0].len());
        if rows.len() != b || rows.iter().any(|r| r.len() != s) {
            bail!("`labels` must have the shape of `input_ids` ([{b}, {s}])");
        }
        Ok(model.label_tensor(rows, device)?)
    }
}

/// Runs the model on `inputs` and writes logits and losses to a safetensors file.
pub fn forward(model_dir: &Path, inputs: &Path, output: &Path, device: &Device) -> Result<()> {
    let inputs = ForwardInputs::read(inputs)?;
    let model = Qwen3::load(model_dir, device)?;
    let ids = model.token_tensor(&inputs.input_ids, device)?;
    let layout = inputs.layout(device)?;
    let labels = inputs.labels(&model, device)?;
    let out = model.forward(ids, &layout);
    let loss = model.loss(&out, labels, model.default_aux_coef());
    let scalar = |t: &Tensor<1>| -> f32 {
        t.to_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32")[0]
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![];
    let mut push = |name: &str, shape: Vec<usize>, data: TensorData| {
        tensors.push((
            name.to_string(),
            shape,
            data.convert::<f32>().try_into_vec::<f32>().expect("f32"),
        ));
    };
    push("logits", out.logits.dims().to_vec(), out.logits.to_data());
    push(
        "per_token_loss",
        loss.ce.per_token.dims().to_vec(),
        loss.ce.per_token.to_data(),
    );
    let mean = loss.ce.mean();
    push("loss", vec![], mean.to_data());
    push("total_loss", vec![], loss.total.to_data());
    let mut summary = json!({"loss": scalar(&mean), "total_loss": scalar(&loss.total), "tokens_counted": scalar(&loss.ce.count)});
    if let Some(aux) = &loss.aux {
        push("aux_loss", vec![], aux.to_data());
        summary["aux_loss"] = json!(scalar(aux));
    }
    write_safetensors(output, &tensors)?;
    println!("{summary}");
    Ok(())
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
            ))
        })
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Writes a randomly initialised model for `config` (`initializer_range`, seeded).
pub fn init(
    config: &Path,
    out: &Path,
    seed: u64,
    options: &SaveOptions,
    device: &Device,
) -> Result<()> {
    let c = Qwen3Config::from_file(config)?;
    device.seed(seed);
    let model = Qwen3::random(c, device);
    save_pretrained(&model.named_tensors(), &model.config, out, options)?;
    println!(
        "wrote a randomly initialised {} model to {}",
        model.config.architecture.model_type(),
        out.display()
    );
    Ok(())
}

/// Loads a checkpoint and saves it again (dtype or sharding change; the export path).
pub fn convert(model_dir: &Path, out: &Path, options: &SaveOptions, device: &Device) -> Result<()> {
    let model = Qwen3::load(model_dir, device)?;
    save_pretrained(&model.named_tensors(), &model.config, out, options)?;
    println!("wrote {}", out.display());
    Ok(())
}

pub fn save_options(dtype: &str, max_shard_bytes: usize) -> Result<SaveOptions> {
    let dtype = SaveDType::parse(dtype)
        .with_context(|| format!("unknown dtype `{dtype}`: expected f32, bf16 or f16"))?;
    if max_shard_bytes == 0 {
        bail!("--max-shard-bytes must be positive");
    }
    Ok(SaveOptions {
        dtype,
        max_shard_bytes,
    })
}
