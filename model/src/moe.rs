//! The sparse MoE block: an f32 softmax router over all experts, top-k, optional
//! renormalisation, and SwiGLU experts weighted on their outputs.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{FloatDType, IndexingUpdateOp, Int, Tensor};

use crate::loss::log_sum_exp;
use crate::mlp::{project, Mlp};
use crate::rope::float_dtype;

#[derive(Module, Debug)]
pub struct SparseMoe {
    /// Router `[E, hidden]`, no bias.
    pub gate: Param<Tensor<2>>,
    pub experts: Vec<Mlp>,
    pub top_k: usize,
    pub norm_topk_prob: bool,
}

/// What the router did in one layer; the load-balancing loss and expert-load metrics use it.
#[derive(Debug, Clone)]
pub struct RouterStats {
    /// Router logits `[T, E]`, f32, differentiable (the z-loss penalises their log-sum-exp).
    pub logits: Tensor<2>,
    /// Router probabilities `[T, E]`, f32, differentiable.
    pub probs: Tensor<2>,
    /// Tokens sent to each expert `[E]` (each token counts once per chosen expert).
    pub counts: Tensor<1, Int>,
    /// The same counts on the host: the forward reads them anyway to slice the groups.
    pub host_counts: Vec<i64>,
}

impl RouterStats {
    /// The stats of consecutive parts of one layer's tokens as one: rows in the parts'
    /// order, counts summed. `None` for no parts.
    pub fn concat(parts: Vec<RouterStats>) -> Option<RouterStats> {
        let mut host_counts = parts.first()?.host_counts.clone();
        for part in &parts[1..] {
            host_counts
                .iter_mut()
                .zip(&part.host_counts)
                .for_each(|(a, b)| *a += b);
        }
        let counts = parts
            .iter()
            .map(|p| p.counts.clone())
            .reduce(|a, b| a.add(b))?;
        let (logits, probs) = parts.into_iter().map(|p| (p.logits, p.probs)).unzip();
        Some(RouterStats {
            logits: Tensor::cat(logits, 0),
            probs: Tensor::cat(probs, 0),
            counts,
            host_counts,
        })
    }
}

impl SparseMoe {
    /// Tokens are grouped by expert on the device (one-hot, cumsum, scatter), so the host never
    /// loops over tokens; its only sync is reading the `[E]` expert counts to slice the groups.
    ///
    /// # Shapes
    /// - x: `[B, S, hidden]` → `[B, S, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> (Tensor<3>, RouterStats) {
        let [b, s, hidden] = x.dims();
        let (t, k, e) = (b * s, self.top_k, self.experts.len());
        let a = t * k;
        let device = x.device();
        let dtype = float_dtype(x.dtype());
        let x = x.reshape([t, hidden]);

        let logits = project(x.clone(), &self.gate).cast(FloatDType::F32);
        let probs = softmax(logits.clone(), 1);
        let (weights, chosen) = probs.clone().topk_with_indices(k, 1);
        let weights = if self.norm_topk_prob {
            weights.clone().div(weights.sum_dim(1))
        } else {
            weights
        };
        let weights = weights.cast(dtype).reshape([a, 1]);

        // Assignment i = token i / k, slot i % k. Its place in expert-sorted order is the
        // expert's offset plus the number of earlier assignments to the same expert.
        let expert_of = chosen.reshape([a]);
        let one_hot: Tensor<2, Int> = expert_of.clone().one_hot(e);
        let counts = one_hot.clone().sum_dim(0).reshape([e]);
        let rank = one_hot
            .cumsum(0)
            .gather(1, expert_of.clone().reshape([a, 1]))
            .reshape([a])
            .sub_scalar(1);
        let offsets = counts.clone().cumsum(0).sub(counts.clone());
        let sorted_slot = offsets.select(0, expert_of).add(rank);
        let assignment_at = Tensor::<1, Int>::zeros([a], &device).scatter(
            0,
            sorted_slot.clone(),
            Tensor::arange(0..a as i64, &device),
            IndexingUpdateOp::Assign,
        );
        let sorted_x = x.select(0, assignment_at.div_scalar(k as i64));

        let host_counts: Vec<i64> = counts
            .to_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("expert counts are integers");
        let mut outputs = Vec::with_capacity(e);
        let mut start = 0;
        for (expert, &n) in self.experts.iter().zip(&host_counts) {
            let n = n as usize;
            if n > 0 {
                outputs.push(expert.forward(sorted_x.clone().narrow(0, start, n)));
                start += n;
            }
        }
        let sorted_y = Tensor::cat(outputs, 0);
        let y = sorted_y
            .select(0, sorted_slot)
            .mul(weights)
            .reshape([t, k, hidden])
            .sum_dim(1)
            .reshape([b, s, hidden]);
        (
            y,
            RouterStats {
                logits,
                probs,
                counts,
                host_counts,
            },
        )
    }
}

/// The load-balancing loss transformers adds with `output_router_logits`: rows pooled over
/// every MoE layer, `E · Σ_e f_e · P_e`, where `f_e` is the fraction of rows routing to `e`
/// (summed over the k slots) and `P_e` the mean router probability. Gradient flows through P.
pub fn load_balancing_loss(stats: &[RouterStats]) -> Option<Tensor<1>> {
    let first = stats.first()?;
    let [t, e] = first.probs.dims();
    let rows = (t * stats.len()) as f64;
    let counts = stats
        .iter()
        .map(|s| s.counts.clone())
        .reduce(|a, b| a.add(b))?
        .cast(FloatDType::F32);
    let prob_sums = stats
        .iter()
        .map(|s| s.probs.clone().sum_dim(0).reshape([e]))
        .reduce(|a, b| a.add(b))?;
    Some(
        counts
            .div_scalar(rows)
            .mul(prob_sums.div_scalar(rows))
            .sum()
            .mul_scalar(e as f64),
    )
}

/// The router z-loss of ST-MoE (Zoph et al., 2022): the mean over every routed row of every
/// MoE layer of `(log Σ_e exp(logit_e))²`. It keeps router logits small, which keeps the
/// softmax well conditioned in low precision. Not part of transformers' Qwen3-MoE loss.
pub fn router_z_loss(stats: &[RouterStats]) -> Option<Tensor<1>> {
    let rows: usize = stats.iter().map(|s| s.logits.dims()[0]).sum();
    let total = stats
        .iter()
        .map(|s| log_sum_exp(s.logits.clone()).powi_scalar(2).sum())
        .reduce(|a, b| a.add(b))?;
    Some(total.div_scalar(rows as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn z_loss_is_the_mean_squared_log_sum_exp_over_all_layers() {
        let device = Device::flex();
        let rows = [[1.0f32, 2.0, -0.5], [0.0, 0.0, 3.0], [-2.0, 4.0, 1.0]];
        let layer = |r: &[[f32; 3]]| {
            let logits = Tensor::<2>::from_data(TensorData::new(r.concat(), [r.len(), 3]), &device);
            RouterStats {
                probs: softmax(logits.clone(), 1),
                counts: Tensor::zeros([3], &device),
                host_counts: vec![0; 3],
                logits,
            }
        };
        let stats = [layer(&rows[..2]), layer(&rows[2..])];
        let expected: f64 = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|&v| (v as f64).exp())
                    .sum::<f64>()
                    .ln()
                    .powi(2)
            })
            .sum::<f64>()
            / 3.0;
        let got: f64 = router_z_loss(&stats).unwrap().into_scalar::<f64>();
        assert!(
            (got - expected).abs() < 1e-5 * expected,
            "{got} vs {expected}"
        );
        assert!(router_z_loss(&[]).is_none());
    }
}
