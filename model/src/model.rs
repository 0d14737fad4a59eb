//! `Qwen3`: the causal LM of `Qwen3ForCausalLM` and `Qwen3MoeForCausalLM`.

use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::attention::{Attention, KvCache};
use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};
use crate::layout::SequenceLayout;
use crate::loss::{causal_lm_loss, shifted_targets, token_cross_entropy, LossOutput, IGNORE_INDEX};
use crate::mlp::Mlp;
use crate::moe::{load_balancing_loss, RouterStats, SparseMoe};
use crate::norm::RmsNorm;
use crate::rope::{float_dtype, RopeTables};
use crate::weights::{CheckpointReader, Init, NamedTensor, ParamSource};

/// A parameter handed out by [`Qwen3::for_each_param_mut`].
pub enum ParamSlot<'a> {
    Vector(&'a mut Param<Tensor<1>>),
    Matrix(&'a mut Param<Tensor<2>>),
}

#[derive(Module, Debug)]
pub enum FeedForward {
    Dense(Mlp),
    Sparse(SparseMoe),
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: FeedForward,
}

impl DecoderLayer {
    /// Pre-norm, two residuals.
    ///
    /// # Shapes
    /// - x: `[B, S, hidden]` → `[B, S, hidden]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        mask: &Tensor<4, burn::tensor::Bool>,
        cache: Option<&mut KvCache>,
    ) -> (Tensor<3>, Option<RouterStats>) {
        self.forward_with(x, 0, |h| self.self_attn.forward(h, rope, mask, cache))
    }

    /// [`Self::forward`] with the attention block given: `attention` maps the normed input
    /// to the attention output (how [`crate::step`] swaps in blockwise attention). The
    /// feed-forward block runs `ff_chunk` positions at a time (it is token-local), so that its
    /// intermediates (per chosen expert, each token's input and hidden activations) exist for
    /// one chunk only; 0 runs the whole sequence at once. Chunks only save memory in forwards
    /// that record nothing: under autodiff the graph keeps every chunk's intermediates. The
    /// router stats' rows come chunk by chunk.
    ///
    /// # Shapes
    /// - x: `[B, S, hidden]` → `[B, S, hidden]`
    pub fn forward_with(
        &self,
        x: Tensor<3>,
        ff_chunk: usize,
        attention: impl FnOnce(Tensor<3>) -> Tensor<3>,
    ) -> (Tensor<3>, Option<RouterStats>) {
        let x = x.clone().add(attention(self.input_layernorm.forward(x)));
        let s = x.dims()[1];
        if ff_chunk == 0 || ff_chunk >= s {
            return self.feed_forward(x);
        }
        let (mut ys, mut stats) = (Vec::new(), Vec::new());
        for start in (0..s).step_by(ff_chunk) {
            let len = ff_chunk.min(s - start);
            let (y, st) = self.feed_forward(x.clone().narrow(1, start, len));
            ys.push(y);
            stats.extend(st);
        }
        (Tensor::cat(ys, 1), RouterStats::concat(stats))
    }

    /// The block after attention: norm, MLP or MoE, residual. Token by token, so it can run
    /// on any slice of the sequence.
    ///
    /// # Shapes
    /// - x: `[B, S, hidden]` → `[B, S, hidden]`
    pub fn feed_forward(&self, x: Tensor<3>) -> (Tensor<3>, Option<RouterStats>) {
        let h = self.post_attention_layernorm.forward(x.clone());
        match &self.mlp {
            FeedForward::Dense(mlp) => (x.add(mlp.forward(h)), None),
            FeedForward::Sparse(moe) => {
                let (y, stats) = moe.forward(h);
                (x.add(y), Some(stats))
            }
        }
    }
}

#[derive(Module, Debug)]
pub struct Qwen3 {
    /// `[vocab, hidden]`; also the output projection when embeddings are tied.
    pub embed_tokens: Param<Tensor<2>>,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `[vocab, hidden]`; `None` when `tie_word_embeddings`.
    pub lm_head: Option<Param<Tensor<2>>>,
    #[module(skip)]
    pub config: Qwen3Config,
}

/// Logits and what the routers did.
#[derive(Debug)]
pub struct ForwardOutput {
    /// `[B, S, vocab]`
    pub logits: Tensor<3>,
    /// One entry per MoE layer, in layer order.
    pub router: Vec<RouterStats>,
}

impl Qwen3 {
    /// Fresh weights: `N(0, initializer_range)` matrices and unit norms, seeded by `device.seed`.
    pub fn random(config: Qwen3Config, device: &Device) -> Self {
        let mut source = ParamSource::Random {
            std: config.initializer_range,
        };
        Self::build(config, &mut source, device).expect("random init cannot fail")
    }

    /// Loads the Hugging Face checkpoint in `dir` (config.json + safetensors).
    pub fn load(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = Qwen3Config::from_file(dir.join("config.json"))?;
        Self::load_with_config(dir, config, device)
    }

    /// Loads the weights in `dir` into a model of `config` (e.g. with YaRN switched on).
    pub fn load_with_config(
        dir: &std::path::Path,
        config: Qwen3Config,
        device: &Device,
    ) -> Result<Self> {
        let mut source = ParamSource::checkpoint(CheckpointReader::open(dir)?);
        let model = Self::build(config, &mut source, device)?;
        source.finish()?;
        Ok(model)
    }

    /// Builds every parameter through `source`, in checkpoint order, by Hugging Face name.
    pub fn build(config: Qwen3Config, source: &mut ParamSource, device: &Device) -> Result<Self> {
        let c = &config;
        let (hidden, d) = (c.hidden_size, c.head_dim);
        let norm = |source: &mut ParamSource, name: &str, dim: usize| -> Result<RmsNorm> {
            Ok(RmsNorm::new(
                source.param(name, [dim], Init::Ones, device)?,
                c.rms_norm_eps,
            ))
        };
        let mlp = |source: &mut ParamSource, prefix: &str, inter: usize| -> Result<Mlp> {
            Ok(Mlp {
                gate_proj: source.param(
                    &format!("{prefix}.gate_proj.weight"),
                    [inter, hidden],
                    Init::Normal,
                    device,
                )?,
                up_proj: source.param(
                    &format!("{prefix}.up_proj.weight"),
                    [inter, hidden],
                    Init::Normal,
                    device,
                )?,
                down_proj: source.param(
                    &format!("{prefix}.down_proj.weight"),
                    [hidden, inter],
                    Init::Normal,
                    device,
                )?,
            })
        };
        let embed_tokens = source.param(
            "model.embed_tokens.weight",
            [c.vocab_size, hidden],
            Init::Normal,
            device,
        )?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let (h, kv) = (c.num_attention_heads, c.num_key_value_heads);
            let self_attn = Attention {
                q_proj: source.param(
                    &format!("{p}.self_attn.q_proj.weight"),
                    [h * d, hidden],
                    Init::Normal,
                    device,
                )?,
                k_proj: source.param(
                    &format!("{p}.self_attn.k_proj.weight"),
                    [kv * d, hidden],
                    Init::Normal,
                    device,
                )?,
                v_proj: source.param(
                    &format!("{p}.self_attn.v_proj.weight"),
                    [kv * d, hidden],
                    Init::Normal,
                    device,
                )?,
                o_proj: source.param(
                    &format!("{p}.self_attn.o_proj.weight"),
                    [hidden, h * d],
                    Init::Normal,
                    device,
                )?,
                q_norm: norm(source, &format!("{p}.self_attn.q_norm.weight"), d)?,
                k_norm: norm(source, &format!("{p}.self_attn.k_norm.weight"), d)?,
                num_heads: h,
                num_kv_heads: kv,
                head_dim: d,
            };
            let input_layernorm = norm(source, &format!("{p}.input_layernorm.weight"), hidden)?;
            let post_attention_layernorm = norm(
                source,
                &format!("{p}.post_attention_layernorm.weight"),
                hidden,
            )?;
            let ffn = match (&c.moe, c.is_moe_layer(i)) {
                (Some(m), true) => FeedForward::Sparse(SparseMoe {
                    gate: source.param(
                        &format!("{p}.mlp.gate.weight"),
                        [m.num_experts, hidden],
                        Init::Normal,
                        device,
                    )?,
                    experts: (0..m.num_experts)
                        .map(|e| {
                            mlp(
                                source,
                                &format!("{p}.mlp.experts.{e}"),
                                m.moe_intermediate_size,
                            )
                        })
                        .collect::<Result<_>>()?,
                    top_k: m.num_experts_per_tok,
                    norm_topk_prob: m.norm_topk_prob,
                }),
                _ => FeedForward::Dense(mlp(source, &format!("{p}.mlp"), c.intermediate_size)?),
            };
            layers.push(DecoderLayer {
                input_layernorm,
                self_attn,
                post_attention_layernorm,
                mlp: ffn,
            });
        }
        let norm = norm(source, "model.norm.weight", hidden)?;
        let lm_head = if c.tie_word_embeddings {
            source.skip("lm_head.weight");
            None
        } else {
            Some(source.param(
                "lm_head.weight",
                [c.vocab_size, hidden],
                Init::Normal,
                device,
            )?)
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            config,
        })
    }

    /// Every parameter under its Hugging Face name, in checkpoint order.
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        // Cloning a module clones tensor handles, not data.
        self.clone().for_each_param_mut(&mut |name, slot| {
            out.push(match slot {
                ParamSlot::Vector(p) => NamedTensor::Vector(name.to_string(), p.val()),
                ParamSlot::Matrix(p) => NamedTensor::Matrix(name.to_string(), p.val()),
            })
        });
        out
    }

    /// Visits every parameter, mutably, with its Hugging Face name, in checkpoint order.
    pub fn for_each_param_mut(&mut self, f: &mut dyn FnMut(&str, ParamSlot<'_>)) {
        let mlp = |f: &mut dyn FnMut(&str, ParamSlot<'_>), prefix: &str, mlp: &mut Mlp| {
            f(
                &format!("{prefix}.gate_proj.weight"),
                ParamSlot::Matrix(&mut mlp.gate_proj),
            );
            f(
                &format!("{prefix}.up_proj.weight"),
                ParamSlot::Matrix(&mut mlp.up_proj),
            );
            f(
                &format!("{prefix}.down_proj.weight"),
                ParamSlot::Matrix(&mut mlp.down_proj),
            );
        };
        f(
            "model.embed_tokens.weight",
            ParamSlot::Matrix(&mut self.embed_tokens),
        );
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &mut layer.self_attn;
            f(
                &format!("{p}.self_attn.q_proj.weight"),
                ParamSlot::Matrix(&mut a.q_proj),
            );
            f(
                &format!("{p}.self_attn.k_proj.weight"),
                ParamSlot::Matrix(&mut a.k_proj),
            );
            f(
                &format!("{p}.self_attn.v_proj.weight"),
                ParamSlot::Matrix(&mut a.v_proj),
            );
            f(
                &format!("{p}.self_attn.o_proj.weight"),
                ParamSlot::Matrix(&mut a.o_proj),
            );
            f(
                &format!("{p}.self_attn.q_norm.weight"),
                ParamSlot::Vector(&mut a.q_norm.weight),
            );
            f(
                &format!("{p}.self_attn.k_norm.weight"),
                ParamSlot::Vector(&mut a.k_norm.weight),
            );
            f(
                &format!("{p}.input_layernorm.weight"),
                ParamSlot::Vector(&mut layer.input_layernorm.weight),
            );
            f(
                &format!("{p}.post_attention_layernorm.weight"),
                ParamSlot::Vector(&mut layer.post_attention_layernorm.weight),
            );
            match &mut layer.mlp {
                FeedForward::Dense(d) => mlp(f, &format!("{p}.mlp"), d),
                FeedForward::Sparse(s) => {
                    f(
                        &format!("{p}.mlp.gate.weight"),
                        ParamSlot::Matrix(&mut s.gate),
                    );
                    for (e, expert) in s.experts.iter_mut().enumerate() {
                        mlp(f, &format!("{p}.mlp.experts.{e}"), expert);
                    }
                }
            }
        }
        f(
            "model.norm.weight",
            ParamSlot::Vector(&mut self.norm.weight),
        );
        if let Some(head) = &mut self.lm_head {
            f("lm_head.weight", ParamSlot::Matrix(head));
        }
    }

    /// Token ids `[B][S]` as a device tensor, checked against the vocabulary.
    pub fn token_tensor(&self, rows: &[Vec<i64>], device: &Device) -> Result<Tensor<2, Int>> {
        self.id_tensor("token id", rows, false, device)
    }

    /// Labels `[B][S]` (unshifted) as a device tensor: vocabulary ids or -100 (ignored).
    pub fn label_tensor(&self, rows: &[Vec<i64>], device: &Device) -> Result<Tensor<2, Int>> {
        self.id_tensor("label", rows, true, device)
    }

    fn id_tensor(
        &self,
        what: &str,
        rows: &[Vec<i64>],
        allow_ignore: bool,
        device: &Device,
    ) -> Result<Tensor<2, Int>> {
        let s = rows.first().map_or(0, Vec::len);
        if s == 0 {
            return Err(ModelError::Input(format!("no {what}s")));
        }
        let vocab = self.config.vocab_size;
        let valid =
            |id: i64| (0..vocab as i64).contains(&id) || (allow_ignore && id == IGNORE_INDEX);
        for (r, row) in rows.iter().enumerate() {
            if row.len() != s {
                return Err(ModelError::Input(format!(
                    "{what} row {r} has {} entries, row 0 has {s}",
                    row.len()
                )));
            }
            if let Some((c, id)) = row.iter().enumerate().find(|(_, &id)| !valid(id)) {
                return Err(ModelError::Input(format!(
                    "{what} {id} at row {r}, position {c} is outside the vocabulary (0..{vocab})"
                )));
            }
        }
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        Ok(Tensor::from_data(
            TensorData::new(flat, [rows.len(), s]),
            device,
        ))
    }

    /// Full forward pass over a (possibly packed) batch.
    ///
    /// # Shapes
    /// - input_ids: `[B, S]` → logits `[B, S, vocab]`
    pub fn forward(&self, input_ids: Tensor<2, Int>, layout: &SequenceLayout) -> ForwardOutput {
        let (logits, router) = self.run(input_ids, layout, None);
        ForwardOutput { logits, router }
    }

    /// Forward over new tokens, reading and extending one [`KvCache`] per layer.
    ///
    /// # Shapes
    /// - input_ids: `[B, S_new]` → logits `[B, S_new, vocab]`
    pub fn forward_cached(
        &self,
        input_ids: Tensor<2, Int>,
        layout: &SequenceLayout,
        caches: &mut [KvCache],
    ) -> Tensor<3> {
        self.run(input_ids, layout, Some(caches)).0
    }

    fn run(
        &self,
        input_ids: Tensor<2, Int>,
        layout: &SequenceLayout,
        caches: Option<&mut [KvCache]>,
    ) -> (Tensor<3>, Vec<RouterStats>) {
        let (x, router) = self.hidden(input_ids, layout, caches, None, 0);
        (self.head(x), router)
    }

    /// Final norm and LM head: `[B, S, hidden]` → logits `[B, S, vocab]`.
    fn head(&self, x: Tensor<3>) -> Tensor<3> {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        linear(self.norm.forward(x), head.val().transpose(), None)
    }

    /// −log p(label t + 1) at every position t `[B, S − 1]` (0 where ignored), with the LM
    /// head and the loss taken `chunk` positions at a time so that `[S, vocab]` logits never
    /// exist: evaluation at long context. `attention_block` selects blockwise attention
    /// ([`crate::flash`]) with that tile size.
    pub fn per_token_loss(
        &self,
        input_ids: Tensor<2, Int>,
        labels: Tensor<2, Int>,
        layout: &SequenceLayout,
        chunk: usize,
        attention_block: Option<usize>,
    ) -> Tensor<2> {
        let (x, _) = self.hidden(input_ids, layout, None, attention_block, chunk);
        let [b, s, _] = x.dims();
        let targets = shifted_targets(labels);
        let chunk = chunk.max(1);
        let losses = (0..s)
            .step_by(chunk)
            .map(|start| {
                let len = chunk.min(s - start);
                let logits = self.head(x.clone().narrow(1, start, len));
                let v = logits.dims()[2];
                let t = targets.clone().narrow(1, start, len).reshape([b * len]);
                token_cross_entropy(logits.reshape([b * len, v]), t)
                    .0
                    .reshape([b, len])
            })
            .collect();
        Tensor::cat(losses, 1).narrow(1, 0, s - 1)
    }

    /// The embeddings through every decoder layer, before the final norm; attention is
    /// blockwise with `attention_block` (and without caches), the feed-forward blocks then
    /// run `ff_chunk` positions at a time.
    fn hidden(
        &self,
        input_ids: Tensor<2, Int>,
        layout: &SequenceLayout,
        mut caches: Option<&mut [KvCache]>,
        attention_block: Option<usize>,
        ff_chunk: usize,
    ) -> (Tensor<3>, Vec<RouterStats>) {
        let [b, s] = input_ids.dims();
        let hidden = self.config.hidden_size;
        let past = caches
            .as_ref()
            .and_then(|c| c.first())
            .map_or(0, KvCache::len);
        let mut x = self
            .embed_tokens
            .val()
            .select(0, input_ids.reshape([b * s]))
            .reshape([b, s, hidden]);
        let (inv_freq, attention_factor) = self
            .config
            .rope_scaling
            .frequencies(self.config.head_dim, self.config.rope_theta);
        let rope = RopeTables::new(&layout.positions, &inv_freq, attention_factor, x.dtype());
        let mut router = Vec::new();
        if let (Some(block), None) = (attention_block, &caches) {
            let dtype = float_dtype(x.dtype());
            for layer in &self.layers {
                let (y, stats) = layer.forward_with(x, ff_chunk, |h| {
                    let (q, k, v) = layer.self_attn.qkv(h, &rope);
                    let out = crate::flash::forward(q, k, v, layout, block).out;
                    layer.self_attn.output(out.cast(dtype))
                });
                x = y;
                router.extend(stats);
            }
            return (x, router);
        }
        let mask = layout.attention_mask(past);
        for (i, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            let (y, stats) = layer.forward(x, &rope, &mask, cache);
            x = y;
            router.extend(stats);
        }
        (x, router)
    }

    /// Causal-LM loss of `labels` (unshifted, -100 ignored) plus, for MoE models, the
    /// load-balancing loss scaled by `aux_coef` (transformers adds it only when the config
    /// sets `output_router_logits`; the trainer passes its own coefficient).
    pub fn loss(
        &self,
        output: &ForwardOutput,
        labels: Tensor<2, Int>,
        aux_coef: Option<f64>,
    ) -> LossOutput {
        let ce = causal_lm_loss(output.logits.clone(), labels);
        let aux = load_balancing_loss(&output.router);
        let total = match (&aux, aux_coef) {
            (Some(aux), Some(coef)) => ce.mean().add(aux.clone().mul_scalar(coef)),
            _ => ce.mean(),
        };
        LossOutput { ce, aux, total }
    }

    /// The coefficient transformers would apply to the aux loss with this config.
    pub fn default_aux_coef(&self) -> Option<f64> {
        self.config
            .moe
            .as_ref()
            .filter(|m| m.output_router_logits)
            .map(|m| m.router_aux_loss_coef)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::FloatDType;

    /// Runs `draw` right after seeding `device`, under one lock: flex keeps a single RNG for
    /// the process and tests run on parallel threads, so without the lock another test's
    /// draws would change this test's random values.
    pub(crate) fn seeded<T>(device: &Device, seed: u64, draw: impl FnOnce() -> T) -> T {
        static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        device.seed(seed);
        draw()
    }

    /// Asserts `‖ours − reference‖ / ‖reference‖ ≤ tolerance`.
    pub(crate) fn assert_close(what: &str, ours: &[f32], reference: &[f32], tolerance: f64) {
        assert_eq!(ours.len(), reference.len(), "{what}: lengths");
        let diff: f64 = ours
            .iter()
            .zip(reference)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = reference.iter().map(|b| (*b as f64).powi(2)).sum();
        let rel = (diff / norm.max(1e-30)).sqrt();
        assert!(rel <= tolerance, "{what}: relative error {rel}");
    }

    /// A 2-layer, 4-expert Qwen3-MoE small enough for unit tests.
    pub(crate) fn tiny_moe_config() -> Qwen3Config {
        tiny_moe_config_with(serde_json::json!({}))
    }

    /// [`tiny_moe_config`] with the keys of `extra` set (e.g. `tie_word_embeddings`).
    pub(crate) fn tiny_moe_config_with(extra: serde_json::Value) -> Qwen3Config {
        let mut cfg = serde_json::json!({
            "model_type": "qwen3_moe", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 64,
            "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
            "initializer_range": 0.2
        });
        for (k, v) in extra.as_object().expect("an object") {
            cfg[k] = v.clone();
        }
        Qwen3Config::from_json(cfg, std::path::Path::new("tiny")).unwrap()
    }

    /// Mixed precision: a bf16 compute copy's gradients arrive on the f32 master weights and
    /// agree with the all-f32 gradients to bf16 accuracy.
    #[test]
    fn compute_copy_sends_gradients_to_the_f32_master() {
        let device = Device::flex().autodiff();
        let master = seeded(&device, 3, || Qwen3::random(tiny_moe_config(), &device));
        let ids: Vec<Vec<i64>> = vec![(0..16).map(|i| (i * 7 + 3) % 64).collect()];
        let layout = SequenceLayout::contiguous(1, 16, 0, &device);
        let grads_of = |model: &Qwen3| {
            let out = model.forward(model.token_tensor(&ids, &device).unwrap(), &layout);
            let labels = model.label_tensor(&ids, &device).unwrap();
            let logits_dtype = out.logits.dtype();
            let grads = model.loss(&out, labels, Some(0.01)).total.backward();
            let grad = master.named_tensors()[1]
                .grad(&grads)
                .expect("q_proj has a gradient");
            (logits_dtype, grad)
        };
        let (f32_dtype, reference) = grads_of(&master);
        let (bf16_dtype, mixed) =
            grads_of(&crate::precision::compute_copy(&master, FloatDType::BF16));
        assert_eq!(f32_dtype, burn::tensor::DType::F32);
        assert_eq!(bf16_dtype, burn::tensor::DType::BF16);
        let (r, m) = (reference.to_f32_vec(), mixed.to_f32_vec());
        let NamedTensor::Matrix(_, g) = &mixed else {
            panic!("q_proj is a matrix")
        };
        assert_eq!(g.dtype(), burn::tensor::DType::F32);
        assert!(
            r.iter().any(|&x| x != 0.0),
            "the reference gradient is not zero"
        );
        assert_close("bf16 gradients against f32", &m, &r, 0.05);
    }
}
