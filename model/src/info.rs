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

/// Estimated peak bytes of one training step with AdamW, by component.
#[derive(Debug, Clone, Copy)]
pub struct MemoryEstimate {
    /// f32 master weights, plus a compute copy when the compute dtype is narrower.
    pub weights: u64,
    pub gradients: u64,
    /// AdamW's two f32 moments.
    pub optimizer: u64,
    /// Layer activations kept for backward.
    pub activations: u64,
    /// f32 attention scores and probabilities of every layer, which the materialising
    /// attention keeps for backward (quadratic in the sequence length).
    pub attention_scores: u64,
    /// Full-vocabulary logits in the compute dtype and in f32, and the loss's exponentials.
    pub logits: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights
            + self.gradients
            + self.optimizer
            + self.activations
            + self.attention_scores
            + self.logits
    }
}

/// `compute_bytes`: 4 for f32, 2 for bf16/f16 compute.
pub fn training_memory(
    c: &Qwen3Config,
    seq_len: usize,
    micro_batch: usize,
    compute_bytes: u64,
) -> MemoryEstimate {
    let p = param_counts(c).total;
    let tokens = (seq_len * micro_batch) as u64;
    let (hd, hq, kv) = (
        c.hidden_size as u64,
        (c.num_attention_heads * c.head_dim) as u64,
        (c.num_key_value_heads * c.head_dim) as u64,
    );
    let mut per_token = 0u64;
    let mut scores = 0u64;
    for layer in 0..c.num_hidden_layers {
        // Norm inputs/outputs, q, k, v (pre- and post-norm/rope), attention output, residuals.
        let attn = 6 * hd + 4 * hq + 6 * kv;
        let ffn = match (&c.moe, c.is_moe_layer(layer)) {
            (Some(m), true) => {
                let k = m.num_experts_per_tok as u64;
                // Router probs in f32 plus, per chosen expert, the gathered input, gate, up,
                // product and output.
                2 * m.num_experts as u64 + k * (2 * hd + 3 * m.moe_intermediate_size as u64)
            }
            _ => 2 * hd + 3 * c.intermediate_size as u64,
        };
        per_token += attn + ffn;
        // f32 scores and probabilities, [H, S, S] per sequence.
        scores +=
            2 * 4 * c.num_attention_heads as u64 * (seq_len as u64).pow(2) * micro_batch as u64;
    }
    // Logits in the compute dtype and in f32, and the f32 exponentials of the loss.
    let logits = tokens * c.vocab_size as u64 * (compute_bytes + 8);
    let narrow_copy = if compute_bytes < 4 {
        p * compute_bytes
    } else {
        0
    };
    MemoryEstimate {
        weights: 4 * p + narrow_copy,
        gradients: 4 * p,
        optimizer: 8 * p,
        activations: per_token * tokens * compute_bytes,
        attention_scores: scores,
        logits,
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
}
