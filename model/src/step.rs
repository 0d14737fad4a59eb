//! One micro-batch's loss and parameter gradients, computed in passes so that activation
//! memory stays bounded: decoder layers are grouped into segments that are recomputed in the
//! backward (only each segment's input is kept), and the LM head and cross-entropy are taken
//! a chunk of positions at a time, so `[S, vocab]` logits never exist at once.
//!
//! Pass 1 runs the segments forward. The loss head, chunk by chunk, gives the gradient of the
//! loss with respect to the final hidden state. Pass 2 walks the segments in reverse: each
//! backpropagates the surrogate `Σ y ⊙ g` (whose gradient in `y` is `g`) plus its layers'
//! share of the router losses, which yields its parameter gradients and the gradient of its
//! input. The pooled load-balancing loss is linear in the router probabilities once the
//! token counts of pass 1 are fixed, so it splits exactly across layers.

use std::collections::BTreeMap;
use std::ops::Range;

use burn::tensor::module::linear;
use burn::tensor::{FloatDType, Gradients, Int, Tensor, TensorData};

use crate::flash;
use crate::loss::{log_sum_exp, shifted_targets, token_cross_entropy};
use crate::model::{DecoderLayer, Qwen3};
use crate::moe::RouterStats;
use crate::precision::{compute_copy, frozen, frozen_copy};
use crate::rope::{float_dtype, RopeTables};
use crate::weights::NamedTensor;
use crate::SequenceLayout;

/// How a step is split into passes and how its losses are weighted.
#[derive(Debug, Clone)]
pub struct StepOptions {
    /// Decoder layers per recomputed segment (1: every layer); `None` keeps every activation.
    pub recompute_every: Option<usize>,
    /// Sequence positions per LM-head chunk.
    pub loss_chunk: usize,
    /// The cross-entropy sum is divided by this: the step's number of counted targets, so
    /// that micro-batches add up to a token-level mean.
    pub ce_divisor: f64,
    /// Load-balancing loss weight in the objective (already divided by the micro-batches).
    pub aux_coef: Option<f64>,
    /// Router z-loss weight in the objective (already divided by the micro-batches).
    pub z_coef: Option<f64>,
    /// Forward and backward run on casts of the (f32) parameters to this dtype.
    pub compute_dtype: FloatDType,
    /// Blockwise, memory-linear attention ([`crate::flash`]) with tiles of this many
    /// positions; `None` materialises the scores. Blockwise attention recomputes every
    /// layer's attention in the backward, so it implies layer recomputation (the whole stack
    /// as one segment when `recompute_every` is `None`).
    pub attention_block: Option<usize>,
}

/// What one micro-batch contributed.
#[derive(Debug)]
pub struct StepOutput {
    /// Σ −log p(target) over counted targets.
    pub ce_sum: f64,
    /// −log p(target) per position `[B × (S − 1)]`, row-major, 0 where not counted.
    pub per_token: Vec<f32>,
    /// Load-balancing loss before its coefficient (MoE models).
    pub aux: Option<f64>,
    /// Router z-loss before its coefficient (MoE models).
    pub z: Option<f64>,
    /// Tokens routed to each expert, per MoE layer.
    pub expert_counts: Vec<Vec<i64>>,
    /// Gradients of the objective, one per parameter that has one.
    pub grads: Vec<NamedTensor>,
}

/// A segment's state between the passes: its input, and when it is not recomputed its output
/// and router stats with their graph attached (the input then requires grad).
struct Saved {
    input: Tensor<3>,
    kept: Option<(Tensor<3>, Vec<RouterStats>)>,
}

/// Per MoE layer, what pass 1 learnt about routing.
struct Routing {
    counts: Vec<i64>,
    prob_sums: Vec<f64>,
    z_sum: f64,
    rows: usize,
}

impl Qwen3 {
    /// The objective `ce_sum / ce_divisor + aux_coef · aux + z_coef · z` and its gradient
    /// with respect to every parameter of this model (the f32 master weights).
    ///
    /// # Shapes
    /// - input_ids, labels: `[B, S]` (labels unshifted, -100 ignored)
    pub fn loss_and_grads(
        &self,
        input_ids: Tensor<2, Int>,
        labels: Tensor<2, Int>,
        layout: &SequenceLayout,
        options: &StepOptions,
    ) -> StepOutput {
        let [b, s] = input_ids.dims();
        let dtype = options.compute_dtype;
        let device = input_ids.device();
        let params = self.named_tensors();
        let group = |keep: &dyn Fn(&str) -> bool| -> Vec<NamedTensor> {
            params.iter().filter(|p| keep(p.name())).cloned().collect()
        };
        // Summed by name as they arrive: the loss head's chunks and a tied embedding each
        // contribute to the same parameters many times.
        let mut grads: BTreeMap<String, NamedTensor> = BTreeMap::new();
        let collect =
            |from: &Gradients, group: &[NamedTensor], into: &mut BTreeMap<String, NamedTensor>| {
                for grad in group.iter().filter_map(|p| p.grad(from)) {
                    let summed = match (into.remove(grad.name()), grad) {
                        (Some(NamedTensor::Vector(n, a)), NamedTensor::Vector(_, b)) => {
                            NamedTensor::Vector(n, a.add(b))
                        }
                        (Some(NamedTensor::Matrix(n, a)), NamedTensor::Matrix(_, b)) => {
                            NamedTensor::Matrix(n, a.add(b))
                        }
                        (_, grad) => grad,
                    };
                    into.insert(summed.name().to_string(), summed);
                }
            };

        let ids = input_ids.reshape([b * s]);
        let hidden = self.config.hidden_size;
        let embed = |weight: Tensor<2>| weight.select(0, ids.clone()).reshape([b, s, hidden]);
        // Rows first, then the cast: the vocabulary table itself is never copied.
        let x0 = embed(frozen(self.embed_tokens.val())).cast(dtype);
        let (inv_freq, attention_factor) = self
            .config
            .rope_scaling
            .frequencies(self.config.head_dim, self.config.rope_theta);
        let rope = RopeTables::new(&layout.positions, &inv_freq, attention_factor, x0.dtype());
        // The dense mask is [B, 1, S, S]: only the materialising attention builds it.
        let mask = match options.attention_block {
            None => Some(layout.attention_mask(0)),
            Some(_) => None,
        };
        let layer_forward =
            |layer: &DecoderLayer, x: Tensor<3>| match (&mask, options.attention_block) {
                (Some(mask), _) => layer.forward(x, &rope, mask, None),
                // Pass 1 and the recomputations record nothing, so the feed-forward block can
                // run a chunk of positions at a time there.
                (None, Some(block)) => layer.forward_with(x, options.loss_chunk, |h| {
                    let (q, k, v) = layer.self_attn.qkv(h, &rope);
                    let out = flash::forward(q.detach(), k.detach(), v.detach(), layout, block).out;
                    layer.self_attn.output(out.cast(dtype))
                }),
                (None, None) => unreachable!("a mask exists unless attention is blockwise"),
            };
        let run = |layers: &[DecoderLayer], x: Tensor<3>| {
            let mut stats = Vec::new();
            let mut inputs = Vec::new();
            let x = layers.iter().fold(x, |x, layer| {
                inputs.push(x.clone());
                let (y, s) = layer_forward(layer, x);
                stats.extend(s);
                y
            });
            (x, stats, inputs)
        };

        // Frozen copies record nothing for autodiff; compute copies are differentiated.
        let layer_copies = |range: &Range<usize>, frozen: bool| -> Vec<DecoderLayer> {
            self.layers[range.clone()]
                .iter()
                .map(|l| match frozen {
                    true => frozen_copy(l, dtype),
                    false => compute_copy(l, dtype),
                })
                .collect()
        };

        // Pass 1.
        let n = self.layers.len();
        let recompute = options.recompute_every.is_some() || options.attention_block.is_some();
        let per_segment = options.recompute_every.unwrap_or(n).max(1);
        let segments: Vec<Range<usize>> = (0..n)
            .step_by(per_segment)
            .map(|a| a..(a + per_segment).min(n))
            .collect();
        let mut saved = Vec::with_capacity(segments.len());
        let mut routing = Vec::new();
        let mut x = x0;
        for range in &segments {
            if recompute {
                let (y, stats, _) = run(&layer_copies(range, true), x.clone());
                routing.extend(stats.iter().map(Routing::of));
                saved.push(Saved {
                    input: x,
                    kept: None,
                });
                x = y;
            } else {
                let input = x.detach().require_grad();
                let (output, stats, _) = run(&layer_copies(range, false), input.clone());
                routing.extend(stats.iter().map(Routing::of));
                x = output.clone().detach();
                saved.push(Saved {
                    input,
                    kept: Some((output, stats)),
                });
            }
        }

        // The loss head, a chunk of positions at a time. Position t is scored on label t + 1.
        let targets = shifted_targets(labels);
        let head_group = group(&|name| {
            name == "model.norm.weight"
                || name == "lm_head.weight"
                || (self.lm_head.is_none() && name == "model.embed_tokens.weight")
        });
        let chunk = options.loss_chunk.max(1);
        let (mut per_position, mut g_chunks) = (Vec::new(), Vec::new());
        for start in (0..s).step_by(chunk) {
            let len = chunk.min(s - start);
            let xc = x.clone().narrow(1, start, len).detach().require_grad();
            let norm = compute_copy(&self.norm, dtype);
            let head = compute_copy(self.lm_head.as_ref().unwrap_or(&self.embed_tokens), dtype);
            let logits = linear(norm.forward(xc.clone()), head.val().transpose(), None);
            let v = logits.dims()[2];
            let t = targets.clone().narrow(1, start, len).reshape([b * len]);
            let (per_token, _) = token_cross_entropy(logits.reshape([b * len, v]), t);
            let step_grads = per_token
                .clone()
                .sum()
                .div_scalar(options.ce_divisor)
                .backward();
            g_chunks.push(xc.grad(&step_grads).expect("the chunk input requires grad"));
            collect(&step_grads, &head_group, &mut grads);
            per_position.push(per_token.detach().reshape([b, len]));
        }
        let mut g = Tensor::cat(g_chunks, 1);

        // Pass 2.
        let moe_rows: usize = routing.iter().map(|r| r.rows).sum();
        let pooled_counts = pooled_counts(&routing);
        let experts = pooled_counts.len();
        let pooled = (experts > 0).then(|| {
            Tensor::<1>::from_data(
                TensorData::new(pooled_counts.clone(), [experts]),
                (&device, burn::tensor::DType::F32),
            )
        });
        // This layer's share of the router losses, to add to its surrogate.
        let router_terms = |stats: &[RouterStats]| {
            let mut total: Option<Tensor<1>> = None;
            for st in stats {
                let mut add =
                    |t: Tensor<1>| total = Some(total.take().map_or(t.clone(), |a| a.add(t)));
                if let (Some(coef), Some(pooled)) = (options.aux_coef, &pooled) {
                    // E / rows² · Σ_e C_e · Σ_t p[t, e]: this layer's share of the pooled loss.
                    let share = st.probs.clone().sum_dim(0).reshape([experts]);
                    let scale = coef * experts as f64 / (moe_rows as f64).powi(2);
                    add(share.mul(pooled.clone()).sum().mul_scalar(scale));
                }
                if let Some(coef) = options.z_coef {
                    let z = log_sum_exp(st.logits.clone()).powi_scalar(2).sum();
                    add(z.mul_scalar(coef / moe_rows as f64));
                }
            }
            total
        };
        let backward = |output: Tensor<3>, g: Tensor<3>, stats: &[RouterStats]| {
            let surrogate = output.mul(g).cast(FloatDType::F32).sum();
            match router_terms(stats) {
                Some(terms) => surrogate.add(terms),
                None => surrogate,
            }
            .backward()
        };
        for (range, state) in segments.iter().zip(saved).rev() {
            let layer_params = group(&|name| layer_index(name).is_some_and(|i| range.contains(&i)));
            if let (None, Some(block)) = (&state.kept, options.attention_block) {
                // Layer by layer, in three backward passes: the feed-forward block in
                // chunks of positions (it is token-local, so its activations never exist
                // for the whole sequence), the attention output projection and residual,
                // then q, k and v with the gradient of the blockwise attention core.
                // Each layer's input: the segment's, then those of its later layers.
                let before_last = range.start..range.end - 1;
                let (last, _, mut inputs) =
                    run(&layer_copies(&before_last, true), state.input.clone());
                inputs.push(last);
                for (i, input) in range.clone().zip(inputs).rev() {
                    let layer = attention_copy(&self.layers[i], dtype);
                    let input = input.detach().require_grad();
                    let (q, k, v) = layer
                        .self_attn
                        .qkv(layer.input_layernorm.forward(input.clone()), &rope);
                    let fwd = flash::forward(
                        q.clone().detach(),
                        k.clone().detach(),
                        v.clone().detach(),
                        layout,
                        block,
                    );
                    let out = fwd.out.clone().cast(dtype).detach().require_grad();
                    let attended = input.clone().add(layer.self_attn.output(out.clone()));
                    let mut g_attended = Vec::new();
                    for start in (0..s).step_by(options.loss_chunk.max(1)) {
                        let len = options.loss_chunk.max(1).min(s - start);
                        // A fresh copy per backward pass (each consumes its casts), of the
                        // feed-forward block only.
                        let part = feed_forward_copy(&self.layers[i], dtype);
                        let xc = attended
                            .clone()
                            .narrow(1, start, len)
                            .detach()
                            .require_grad();
                        let (yc, stats) = part.feed_forward(xc.clone());
                        let chunk_grads =
                            backward(yc, g.clone().narrow(1, start, len), stats.as_slice());
                        collect(&chunk_grads, &layer_params, &mut grads);
                        g_attended.push(xc.grad(&chunk_grads).expect("the chunk requires grad"));
                    }
                    let outer = attended
                        .mul(Tensor::cat(g_attended, 1))
                        .cast(FloatDType::F32)
                        .sum()
                        .backward();
                    collect(&outer, &layer_params, &mut grads);
                    let dout = out
                        .grad(&outer)
                        .expect("the attention output requires grad");
                    let (dq, dk, dv) = flash::backward(
                        q.clone().detach(),
                        k.clone().detach(),
                        v.clone().detach(),
                        &fwd,
                        dout,
                        layout,
                        block,
                    );
                    let dot = |x: Tensor<4>, dx: Tensor<4>| {
                        x.clone()
                            .mul(dx.cast(float_dtype(x.dtype())))
                            .cast(FloatDType::F32)
                            .sum()
                    };
                    let inner = dot(q, dq).add(dot(k, dk)).add(dot(v, dv)).backward();
                    collect(&inner, &layer_params, &mut grads);
                    let through = |grads: &Gradients| {
                        input.grad(grads).expect("the layer input requires grad")
                    };
                    g = through(&outer).add(through(&inner));
                }
                continue;
            }
            let (input, (output, stats)) = match state.kept {
                Some(kept) => (state.input, kept),
                None => {
                    let input = state.input.detach().require_grad();
                    let (output, stats, _) = run(&layer_copies(range, false), input.clone());
                    (input, (output, stats))
                }
            };
            let step_grads = backward(output, g, stats.as_slice());
            g = input
                .grad(&step_grads)
                .expect("the segment input requires grad");
            collect(&step_grads, &layer_params, &mut grads);
        }
        let embedding = embed(self.embed_tokens.val());
        let step_grads = embedding.mul(g.cast(FloatDType::F32)).sum().backward();
        collect(
            &step_grads,
            &group(&|name| name == "model.embed_tokens.weight"),
            &mut grads,
        );

        // [B, S] with the last (unscored) position of each row dropped.
        let per_position: Vec<f32> = Tensor::cat(per_position, 1)
            .narrow(1, 0, s - 1)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 losses");
        // Ignored targets are 0, so the host sum is the loss sum (one read, not one per chunk).
        let ce_sum = per_position.iter().map(|&l| l as f64).sum();
        let has_moe = !routing.is_empty();
        StepOutput {
            ce_sum,
            per_token: per_position,
            aux: has_moe.then(|| aux_value(&routing, &pooled_counts, moe_rows)),
            z: has_moe.then(|| routing.iter().map(|r| r.z_sum).sum::<f64>() / moe_rows as f64),
            expert_counts: routing.into_iter().map(|r| r.counts).collect(),
            grads: grads.into_values().collect(),
        }
    }
}

impl Routing {
    /// One layer's routing on the host: the counts the forward already read, and the
    /// probability sums `[E]` and squared log-sum-exp sum read together (one sync).
    fn of(stats: &RouterStats) -> Self {
        let [rows, experts] = stats.probs.dims();
        let z = log_sum_exp(stats.logits.clone().detach())
            .powi_scalar(2)
            .sum();
        let prob_sums = stats.probs.clone().detach().sum_dim(0).reshape([experts]);
        let mut read: Vec<f64> = Tensor::cat(vec![prob_sums, z], 0)
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .expect("f64");
        let z_sum = read.pop().expect("the z sum is last");
        Self {
            counts: stats.host_counts.clone(),
            prob_sums: read,
            z_sum,
            rows,
        }
    }
}

/// Tokens per expert summed over every MoE layer, as f32 for the surrogate.
fn pooled_counts(routing: &[Routing]) -> Vec<f32> {
    let experts = routing.first().map_or(0, |r| r.counts.len());
    (0..experts)
        .map(|e| routing.iter().map(|r| r.counts[e]).sum::<i64>() as f32)
        .collect()
}

/// The pooled load-balancing loss `E / rows² · Σ_e C_e · Σ_layers Σ_t p[t, e]`.
fn aux_value(routing: &[Routing], pooled: &[f32], rows: usize) -> f64 {
    let experts = pooled.len();
    let sum: f64 = (0..experts)
        .map(|e| pooled[e] as f64 * routing.iter().map(|r| r.prob_sums[e]).sum::<f64>())
        .sum();
    experts as f64 * sum / (rows as f64).powi(2)
}

/// `layer` with only its attention half cast to `dtype` (the rest is not used).
fn attention_copy(layer: &DecoderLayer, dtype: FloatDType) -> DecoderLayer {
    DecoderLayer {
        input_layernorm: compute_copy(&layer.input_layernorm, dtype),
        self_attn: compute_copy(&layer.self_attn, dtype),
        ..layer.clone()
    }
}

/// `layer` with only its feed-forward half cast to `dtype` (the rest is not used).
fn feed_forward_copy(layer: &DecoderLayer, dtype: FloatDType) -> DecoderLayer {
    DecoderLayer {
        post_attention_layernorm: compute_copy(&layer.post_attention_layernorm, dtype),
        mlp: compute_copy(&layer.mlp, dtype),
        ..layer.clone()
    }
}

/// `model.layers.{i}.…` → `i`.
fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{
        assert_close as close, seeded, tiny_moe_config, tiny_moe_config_with,
    };
    use burn::module::Module;
    use burn::tensor::Device;

    /// The plain path: one forward, materialised logits, one backward of the whole objective.
    fn reference(
        model: &Qwen3,
        ids: &[Vec<i64>],
        layout: &SequenceLayout,
        device: &Device,
        (aux_coef, z_coef): (f64, f64),
    ) -> (f64, Vec<f32>, f64, f64, Vec<NamedTensor>) {
        let out = model.forward(model.token_tensor(ids, device).unwrap(), layout);
        let loss = model.loss(&out, model.label_tensor(ids, device).unwrap(), None);
        let aux = loss.aux.clone().unwrap();
        let z = crate::moe::router_z_loss(&out.router).unwrap();
        let count = loss.ce.count.clone().into_scalar::<f64>();
        let objective = loss
            .ce
            .sum
            .clone()
            .div_scalar(count)
            .add(aux.clone().mul_scalar(aux_coef))
            .add(z.clone().mul_scalar(z_coef));
        let grads = objective.backward();
        let named = model
            .named_tensors()
            .iter()
            .filter_map(|p| p.grad(&grads))
            .collect();
        let per_token = loss.ce.per_token.into_data().convert::<f32>();
        (
            loss.ce.sum.into_scalar::<f64>(),
            per_token.try_into_vec::<f32>().unwrap(),
            aux.into_scalar::<f64>(),
            z.into_scalar::<f64>(),
            named,
        )
    }

    /// Recomputed segments and a chunked loss head give the plain path's loss, router losses
    /// and gradients, for untied and tied embeddings, on packed documents.
    #[test]
    fn segmented_step_matches_the_plain_backward() {
        let device = Device::flex().autodiff();
        for tied in [false, true] {
            let config = tiny_moe_config_with(serde_json::json!({ "tie_word_embeddings": tied }));
            let model = seeded(&device, 5, || Qwen3::random(config, &device));
            let ids: Vec<Vec<i64>> = (0..2)
                .map(|r| (0..12).map(|i| (i * 5 + r * 11 + 1) % 64).collect())
                .collect();
            let layout =
                SequenceLayout::from_document_lengths(&[vec![5, 7], vec![12]], 12, &device)
                    .unwrap();
            let coefs = (0.01, 0.001);
            let (ce, per_token, aux, z, grads) = reference(&model, &ids, &layout, &device, coefs);
            for (recompute_every, loss_chunk, attention_block) in [
                (None, 12, None),
                (Some(1), 5, None),
                (Some(2), 1, None),
                (Some(1), 12, Some(4)),
                (None, 7, Some(5)),
            ] {
                let options = StepOptions {
                    recompute_every,
                    loss_chunk,
                    ce_divisor: 22.0,
                    aux_coef: Some(coefs.0),
                    z_coef: Some(coefs.1),
                    compute_dtype: FloatDType::F32,
                    attention_block,
                };
                let what = format!(
                    "tied {tied}, recompute {recompute_every:?}, chunk {loss_chunk}, attention block {attention_block:?}"
                );
                let out = model.loss_and_grads(
                    model.token_tensor(&ids, &device).unwrap(),
                    model.label_tensor(&ids, &device).unwrap(),
                    &layout,
                    &options,
                );
                assert!((out.ce_sum - ce).abs() <= 1e-5 * ce, "{what}: ce");
                assert!((out.aux.unwrap() - aux).abs() <= 1e-5 * aux, "{what}: aux");
                assert!((out.z.unwrap() - z).abs() <= 1e-5 * z, "{what}: z");
                close(&what, &out.per_token, &per_token, 1e-6);
                let (valid, inner) = (model.valid(), device.clone().without_autodiff());
                let eval = valid
                    .per_token_loss(
                        valid.token_tensor(&ids, &inner).unwrap(),
                        valid.label_tensor(&ids, &inner).unwrap(),
                        &SequenceLayout::from_document_lengths(&[vec![5, 7], vec![12]], 12, &inner)
                            .unwrap(),
                        loss_chunk,
                        attention_block,
                    )
                    .into_data()
                    .convert::<f32>();
                close(
                    &what,
                    &eval.try_into_vec::<f32>().unwrap(),
                    &per_token,
                    1e-6,
                );
                assert_grads(&what, &out.grads, &grads, 1e-4);
            }
        }
    }

    /// Exactly one gradient per parameter, each within `tolerance` of the reference's.
    fn assert_grads(what: &str, ours: &[NamedTensor], reference: &[NamedTensor], tolerance: f64) {
        assert_eq!(
            ours.len(),
            reference.len(),
            "{what}: one gradient per parameter"
        );
        for expected in reference {
            let g = ours
                .iter()
                .find(|g| g.name() == expected.name())
                .unwrap_or_else(|| panic!("{what}: no gradient for {}", expected.name()));
            close(
                &format!("{what}: {}", expected.name()),
                &g.to_f32_vec(),
                &expected.to_f32_vec(),
                tolerance,
            );
        }
    }

    /// bf16 compute with blockwise attention and recomputation: every f32 master parameter
    /// gets its gradient (each backward pass needs its own casts), close to the f32 one.
    #[test]
    fn bf16_blockwise_step_reaches_every_master_parameter() {
        let device = Device::flex().autodiff();
        let model = seeded(&device, 5, || Qwen3::random(tiny_moe_config(), &device));
        let ids: Vec<Vec<i64>> = vec![(0..12).map(|i| (i * 5 + 1) % 64).collect()];
        let layout = SequenceLayout::from_document_lengths(&[vec![5, 7]], 12, &device).unwrap();
        let (ce, _, _, _, grads) = reference(&model, &ids, &layout, &device, (0.01, 0.001));
        let out = model.loss_and_grads(
            model.token_tensor(&ids, &device).unwrap(),
            model.label_tensor(&ids, &device).unwrap(),
            &layout,
            &StepOptions {
                recompute_every: Some(1),
                loss_chunk: 5,
                ce_divisor: 11.0,
                aux_coef: Some(0.01),
                z_coef: Some(0.001),
                compute_dtype: FloatDType::BF16,
                attention_block: Some(4),
            },
        );
        assert!(
            (out.ce_sum - ce).abs() <= 2e-2 * ce,
            "{} vs {ce}",
            out.ce_sum
        );
        assert!(out.grads.iter().all(|g| match g {
            NamedTensor::Vector(_, t) => t.dtype() == burn::tensor::DType::F32,
            NamedTensor::Matrix(_, t) => t.dtype() == burn::tensor::DType::F32,
        }));
        assert_grads("bf16", &out.grads, &grads, 0.1);
    }
}
