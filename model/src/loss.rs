//! Causal-LM cross-entropy as transformers computes it: shift inside, f32 log-sum-exp over
//! the whole vocabulary, -100 ignored, token-level mean over the batch.

use burn::tensor::{FloatDType, Int, Tensor};

/// Label value that contributes nothing to the loss.
pub const IGNORE_INDEX: i64 = -100;

/// The cross-entropy as a sum and a count, so that micro-batches can be weighted by tokens.
#[derive(Debug, Clone)]
pub struct CrossEntropy {
    /// −log p(target) per position `[B, S − 1]`, 0 where the target is ignored.
    pub per_token: Tensor<2>,
    /// Σ −log p(target) over counted targets, `[1]`.
    pub sum: Tensor<1>,
    /// Number of counted targets, `[1]` (f32).
    pub count: Tensor<1>,
}

impl CrossEntropy {
    /// Token-level mean; NaN when nothing is counted, as in transformers.
    pub fn mean(&self) -> Tensor<1> {
        self.sum.clone().div(self.count.clone())
    }
}

#[derive(Debug, Clone)]
pub struct LossOutput {
    pub ce: CrossEntropy,
    /// Load-balancing loss before its coefficient (MoE models only).
    pub aux: Option<Tensor<1>>,
    /// What backward is called on.
    pub total: Tensor<1>,
}

/// `log Σ_j exp(x[i, j])` per row, shifted by the row maximum for stability.
///
/// # Shapes
/// - x: `[N, V]` → `[N, 1]`
pub fn log_sum_exp(x: Tensor<2>) -> Tensor<2> {
    let max = x.clone().max_dim(1).detach();
    x.sub(max.clone()).exp().sum_dim(1).log().add(max)
}

/// # Shapes
/// - logits: `[B, S, V]`, labels: `[B, S]` (unshifted; position t is scored on labels[t+1])
pub fn causal_lm_loss(logits: Tensor<3>, labels: Tensor<2, Int>) -> CrossEntropy {
    let [b, s, v] = logits.dims();
    let n = b * (s - 1);
    let logits = logits.narrow(1, 0, s - 1).reshape([n, v]);
    let targets = labels.narrow(1, 1, s - 1).reshape([n]);
    let (per_token, count) = token_cross_entropy(logits, targets);
    let per_token = per_token.reshape([b, s - 1]);
    CrossEntropy {
        sum: per_token.clone().sum(),
        count,
        per_token,
    }
}

/// Labels moved one place left, so that position t holds the label it is scored on (t + 1);
/// the last position gets [`IGNORE_INDEX`].
///
/// # Shapes
/// - labels: `[B, S]` → `[B, S]`
pub fn shifted_targets(labels: Tensor<2, Int>) -> Tensor<2, Int> {
    let [b, s] = labels.dims();
    let device = labels.device();
    Tensor::cat(
        vec![
            labels.narrow(1, 1, s - 1),
            Tensor::full([b, 1], IGNORE_INDEX, &device),
        ],
        1,
    )
}

/// −log p(target) per row in f32, 0 where the target is [`IGNORE_INDEX`], and the number of
/// counted rows `[1]` (f32).
///
/// # Shapes
/// - logits: `[N, V]`, targets: `[N]` → `[N]`
pub fn token_cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> (Tensor<1>, Tensor<1>) {
    let [n, _] = logits.dims();
    let logits = logits.cast(FloatDType::F32);
    let targets = targets.reshape([n, 1]);
    let counted = targets.clone().not_equal_elem(IGNORE_INDEX);
    let safe_targets = targets.mask_fill(counted.clone().bool_not(), 0);
    let lse = log_sum_exp(logits.clone());
    let target_logit = logits.gather(1, safe_targets);
    let weight = counted.float().cast(FloatDType::F32);
    let per_token = lse.sub(target_logit).mul(weight.clone()).reshape([n]);
    (per_token, weight.sum())
}
