//! Parameter counts and a training-memory estimate, from the config alone.

use crate::config::Qwen3Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    pub total: u64,
    /// Parameters a token passes through (k of E experts), input embedding included.
    pub active: u64,
    /// The input embedding, which costs no FLOPs (subtract it from `active` for MFU).
    pub embedding: u64,
}

/// How [`training_flops_per_token`] counts, as logged beside TFLOP/s and MFU.
pub const FLOPS_CONVENTION: &str = "6·N_active + 6·L·H·D·S (causal)";

/// Training FLOPs per token, forward and backward: `6·N + 6·L·H·D·S`, where N counts the
/// parameters a token goes through in matmuls (the active ones, without the input
/// embedding's lookup but with the LM head, tied or not) and the second term is causal
/// attention at half the cost of full attention.
pub fn training_flops_per_token(c: &Qwen3Config, seq_len: usize) -> f64 {
    let counts = param_counts(c);
    let lm_head = if c.tie_word_embeddings {
        counts.embedding
    } else {
        0
    };
    let matmul = counts.active - counts.embedding + lm_head;
    6.0 * matmul as f64
        + 6.0 * (c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq_len) as f64
}

pub fn param_counts(c: &Qwen3Config) -> ParamCounts {
    let (hd, d) = (c.hidden_size as u64, c.head_dim as u64);
    let (h, kv) = (c.num_attention_heads as u64, c.num_key_value_heads as u64);
    let embedding = c.vocab_size as u64 * hd;
    let head = if c.tie_word_embeddings { 0 } else { embedding };
    let attention = hd * (h * d + 2 * kv * d) + h * d * hd + 2 * d;
    let norms = 2 * hd;
    let (mut total, mut active) = (embedding + head + hd, embedding + head + hd);
    for layer in 0..c.num_hidden_layers {
        let common = attention + norms;
        match (&c.moe, c.is_moe_layer(layer)) {
            (Some(m), true) => {
                let expert = 3 * hd * m.moe_intermediate_size as u64;
                let router = m.num_experts as u64 * hd;
                total += common + router + m.num_experts as u64 * expert;
                active += common + router + m.num_experts_per_tok as u64 * expert;
            }
            _ => {
                let mlp = 3 * hd * c.intermediate_size as u64;
                total += common + mlp;
                active += common + mlp;
            }
        }
    }
    ParamCounts {
        total,
        active,
        embedding,
    }
}

/// How the step is run, as far as memory goes (the recipe's `runtime` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepMemoryOptions {
    /// Layers per recomputed segment; 0 keeps every layer's activations.
    pub recompute_every: usize,
    /// Positions per LM-head chunk; 0 scores the whole sequence at once.
    pub loss_chunk: usize,
    /// Blockwise attention tile; 0 materialises the scores.
    pub attention_block: usize,
}

/// The backward of a layer holds, per token, this many times the attention-side
/// activations counted below (autodiff's saved intermediates and their gradients, the
/// attention kernel's host copies of q, k, v, the output and their gradients). Calibrated on
/// flex in f32 with `benches/long_context.rs` (small MoE, heap peak of the forward and
/// backward passes): from 32K to 128K tokens the peak grows by 44.8 KB per token, of which
/// 8.2 KB are the saved layer inputs and 23.5 KB the activations counted here (× 1.49,
/// rounded up). Shorter sequences come out over-predicted (by 13% at 16K); the bench prints
/// prediction and measurement side by side.
pub const BACKWARD_WORKING_FACTOR: f64 = 1.5;

/// Bytes per logit of one loss-head chunk in f32: the logits, scored in place, with their
/// gradient (measured with the same bench: about 295 MB for 1024 × 32,000 logits). Narrower
/// compute dtypes are cast to f32 first, which adds copies: `compute_bytes + 12` is assumed.
pub const F32_BYTES_PER_LOGIT: u64 = 9;

/// What a process holds besides its tensors: code, thread pools, allocator arenas. Measured:
/// `agentcpt generate` on a 640 KB model with flex peaked at 19.6 MB.
pub const PROCESS_BASELINE_BYTES: u64 = 20 << 20;

/// Estimated peak bytes of one training step with AdamW, by component.
#[derive(Debug, Clone, Copy)]
pub struct MemoryEstimate {
    /// f32 master weights, plus a compute copy when the compute dtype is narrower.
    pub weights: u64,
    pub gradients: u64,
    /// AdamW's two f32 moments.
    pub optimizer: u64,
    /// Activations kept between the forward and the backward: every layer's, or with
    /// recomputation each segment's input.
    pub saved: u64,
    /// What the backward of the live layers (one segment, or the whole stack) holds at once.
    pub working: u64,
    /// f32 attention scores and probabilities of the live layers when the attention is
    /// materialised (quadratic in the sequence length); one tile per head when blockwise.
    pub attention_scores: u64,
    /// Logits of one loss chunk (or the whole sequence) with their gradient, and in a narrow
    /// compute dtype their f32 copies ([`F32_BYTES_PER_LOGIT`]).
    pub logits: u64,
    /// [`PROCESS_BASELINE_BYTES`].
    pub baseline: u64,
    /// Materialised scores without recomputation are kept from the forward to the backward,
    /// so they live through the loss head too.
    pub scores_kept: bool,
}

impl MemoryEstimate {
    /// The forward and backward passes' peak, in tensors: what lives throughout (weights,
    /// AdamW's moments from the second step on, gradients as they accumulate, saved inputs),
    /// plus the larger of the two phases (the loss head's chunks, then the layers' backward),
    /// which never overlap.
    pub fn passes(&self) -> u64 {
        let (kept, layer_phase) = if self.scores_kept {
            (self.attention_scores, self.working)
        } else {
            (0, self.working + self.attention_scores)
        };
        self.weights
            + self.gradients
            + self.optimizer
            + self.saved
            + kept
            + self.logits.max(layer_phase)
    }

    /// The optimizer update's peak, in tensors: weights, gradients and moments.
    pub fn update(&self) -> u64 {
        self.weights + self.gradients + self.optimizer
    }

    /// The step's peak: the passes (which hold everything the update does, and more) plus
    /// the process's own memory.
    pub fn total(&self) -> u64 {
        self.passes() + self.baseline
    }
}

/// Peak memory of one training step (forward, backward, AdamW) on `micro_batch` rows of
/// `seq_len` tokens. `compute_bytes`: 4 for f32, 2 for bf16/f16 compute.
pub fn training_memory(
    c: &Qwen3Config,
    seq_len: usize,
    micro_batch: usize,
    compute_bytes: u64,
    step: &StepMemoryOptions,
) -> MemoryEstimate {
    let p = param_counts(c).total;
    let tokens = (seq_len * micro_batch) as u64;
    let layers = c.num_hidden_layers as u64;
    let (hd, hq, kv) = (
        c.hidden_size as u64,
        (c.num_attention_heads * c.head_dim) as u64,
        (c.num_key_value_heads * c.head_dim) as u64,
    );
    // Per token, per layer, in elements: norm inputs/outputs, q, k, v (pre- and
    // post-norm/rope), attention output, residuals; then the feed-forward block.
    let attn = 6 * hd + 4 * hq + 6 * kv;
    let ffn = (0..c.num_hidden_layers)
        .map(|layer| match (&c.moe, c.is_moe_layer(layer)) {
            (Some(m), true) => {
                // Router probs in f32 plus, per chosen expert, the gathered input, gate, up,
                // product and output.
                2 * m.num_experts as u64
                    + m.num_experts_per_tok as u64 * (2 * hd + 3 * m.moe_intermediate_size as u64)
            }
            _ => 2 * hd + 3 * c.intermediate_size as u64,
        })
        .max()
        .unwrap_or(0);
    let blockwise = step.attention_block > 0;
    // Blockwise attention recomputes in the backward, so it implies recomputation (the
    // whole stack as one segment when none is asked for).
    let live_layers = match step.recompute_every {
        0 => layers,
        r => (r as u64).min(layers),
    };
    let recomputed = step.recompute_every > 0 || blockwise;
    let saved = if recomputed {
        layers.div_ceil(live_layers) * hd * tokens * compute_bytes
    } else {
        layers * (attn + ffn) * tokens * compute_bytes
    };
    // The blockwise path runs the feed-forward backward a loss chunk at a time.
    let ffn_tokens = if blockwise && step.loss_chunk > 0 {
        tokens.min(step.loss_chunk as u64)
    } else {
        tokens
    };
    // A recomputed segment re-runs its layers under autodiff; without recomputation the
    // activations are already in `saved` and the backward adds about one layer's worth.
    let working_layers = if recomputed { live_layers } else { 1 };
    let attention_side = (BACKWARD_WORKING_FACTOR * (attn * tokens) as f64).ceil() as u64;
    let working = working_layers * (attention_side + ffn * ffn_tokens) * compute_bytes;
    let heads = c.num_attention_heads as u64;
    let attention_scores = if blockwise {
        let b = (step.attention_block as u64).min(seq_len as u64);
        // Scores, probabilities and their gradients, one tile per head.
        4 * 4 * heads * b * b * micro_batch as u64
    } else {
        2 * 4 * heads * (seq_len as u64).pow(2) * micro_batch as u64 * live_layers
    };
    let logit_tokens = match step.loss_chunk {
        0 => tokens,
        chunk => tokens.min(chunk as u64),
    };
    let per_logit = match compute_bytes {
        4.. => F32_BYTES_PER_LOGIT,
        narrow => narrow + 12,
    };
    let logits = logit_tokens * c.vocab_size as u64 * per_logit;
    let narrow_copy = if compute_bytes < 4 {
        p * compute_bytes
    } else {
        0
    };
    MemoryEstimate {
        weights: 4 * p + narrow_copy,
        gradients: 4 * p,
        optimizer: 8 * p,
        saved,
        working,
        attention_scores,
        logits,
        baseline: PROCESS_BASELINE_BYTES,
        scores_kept: !recomputed,
    }
}

/// Billions truncated to one decimal, as model cards write them (3.35B → "3.3B").
pub fn billions(n: u64) -> String {
    format!("{:.1}B", (n / 100_000_000) as f64 / 10.0)
}

/// `1234567` → `"1.23M"`.
pub fn human_count(n: u64) -> String {
    let n = n as f64;
    for (unit, scale) in [("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)] {
        if n >= scale {
            return format!("{:.2}{unit}", n / scale);
        }
    }
    format!("{n}")
}

/// Bytes as GiB/MiB.
pub fn human_bytes(n: u64) -> String {
    let gib = n as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.2} GiB")
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Qwen3-30B-A3B's published config (qwen3.md §1.1).
    #[test]
    fn qwen3_30b_a3b_counts() {
        let cfg = json!({
            "model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048,
            "intermediate_size": 6144, "num_hidden_layers": 48, "num_attention_heads": 32,
            "num_key_value_heads": 4, "head_dim": 128, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
            "max_position_embeddings": 40960, "num_experts": 128, "num_experts_per_tok": 8,
            "moe_intermediate_size": 768, "norm_topk_prob": true, "decoder_sparse_step": 1,
            "mlp_only_layers": [], "tie_word_embeddings": false
        });
        let c = Qwen3Config::from_json(cfg, std::path::Path::new("30b.json")).unwrap();
        let n = param_counts(&c);
        assert_eq!(format!("{:.1}", n.total as f64 / 1e9), "30.5");
        assert_eq!(
            format!("{:.1}", (n.active - n.embedding) as f64 / 1e9),
            "3.0"
        );
        assert!((3.3e9..3.4e9).contains(&(n.active as f64)), "{}", n.active);
        // The published causal-accounting envelope: 23.1 / 56.9 / 172.9 GFLOP per token.
        for (seq, gflop) in [(4096, "23.1"), (32768, "56.9"), (131072, "172.9")] {
            let f = training_flops_per_token(&c, seq) / 1e9;
            assert_eq!(format!("{f:.1}"), gflop, "at {seq}");
        }
    }

    /// The bench model of issue 5 (hidden 512, 4 layers, 16 experts top-4, vocab 32000).
    fn small_moe() -> Qwen3Config {
        let cfg = json!({
            "model_type": "qwen3_moe", "vocab_size": 32000, "hidden_size": 512,
            "intermediate_size": 1536, "num_hidden_layers": 4, "num_attention_heads": 8,
            "num_key_value_heads": 2, "head_dim": 64, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
            "max_position_embeddings": 131072, "num_experts": 16, "num_experts_per_tok": 4,
            "moe_intermediate_size": 256
        });
        Qwen3Config::from_json(cfg, std::path::Path::new("small.json")).unwrap()
    }

    /// With recomputation, blockwise attention and a chunked loss the estimate grows
    /// linearly in the sequence length; materialised attention grows quadratically, and
    /// whole-sequence logits cost what chunking saves.
    #[test]
    fn memory_follows_the_runtime_options() {
        let c = small_moe();
        let linear = StepMemoryOptions {
            recompute_every: 1,
            loss_chunk: 1024,
            attention_block: 512,
        };
        let at = |seq, step: &StepMemoryOptions| training_memory(&c, seq, 1, 4, step);
        let (m8, m32) = (at(8192, &linear), at(32768, &linear));
        let ratio = m32.total() as f64 / m8.total() as f64;
        // The static part (weights, gradients, moments) weighs at 8K, so less than 4×.
        assert!(ratio > 1.2 && ratio < 4.0, "32K/8K = {ratio}");
        assert_eq!(m8.logits, m32.logits, "one loss chunk whatever the length");
        assert_eq!(
            m8.attention_scores, m32.attention_scores,
            "one tile per head"
        );
        let materialised = StepMemoryOptions {
            attention_block: 0,
            ..linear
        };
        let (q8, q32) = (at(8192, &materialised), at(32768, &materialised));
        assert_eq!(q32.attention_scores, 16 * q8.attention_scores);
        let kept = StepMemoryOptions {
            recompute_every: 0,
            loss_chunk: 0,
            attention_block: 0,
        };
        let all = at(8192, &kept);
        assert!(
            all.saved > 4 * m8.saved,
            "recomputation keeps only layer inputs"
        );
        assert_eq!(
            all.logits,
            8 * m8.logits,
            "8K positions of logits instead of 1K"
        );
        assert_eq!(
            all.attention_scores,
            4 * q8.attention_scores,
            "all 4 layers live"
        );
        // bf16 compute adds a compute copy of the weights and halves activations.
        let bf16 = training_memory(&c, 8192, 1, 2, &linear);
        assert!(bf16.weights > m8.weights && bf16.working * 2 == m8.working);
    }
}
