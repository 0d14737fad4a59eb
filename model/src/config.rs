//! `Qwen3Config`: the fields of a Hugging Face `config.json` that change the maths of
//! `qwen3` and `qwen3_moe`, read strictly (a missing or mistyped field is an error naming it).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ModelError, Result};
use crate::rope::RopeScaling;

/// Which Hugging Face architecture a config describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `model_type: "qwen3"`, `Qwen3ForCausalLM`.
    Dense,
    /// `model_type: "qwen3_moe"`, `Qwen3MoeForCausalLM`.
    Moe,
}

impl Architecture {
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Dense => "qwen3",
            Architecture::Moe => "qwen3_moe",
        }
    }
}

/// Mixture-of-experts settings (`qwen3_moe` only).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub norm_topk_prob: bool,
    pub decoder_sparse_step: usize,
    pub mlp_only_layers: Vec<usize>,
    pub router_aux_loss_coef: f64,
    pub output_router_logits: bool,
}

/// The model hyper-parameters, plus the original JSON so that saving keeps every other field.
#[derive(Debug, Clone)]
pub struct Qwen3Config {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Read from the config, never derived from `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub initializer_range: f64,
    pub moe: Option<MoeConfig>,
    /// The config as read, re-emitted on save with the fields above written back.
    pub raw: Map<String, Value>,
}

impl Qwen3Config {
    /// Reads `config.json`, or `DIR/config.json` when given a directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("config.json");
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::config(&path, format!("not valid JSON: {e}")))?;
        Self::from_json(value, &path)
    }

    /// Parses a config from JSON; `path` is only used in error messages.
    pub fn from_json(value: Value, path: &Path) -> Result<Self> {
        let Value::Object(raw) = value else {
            return Err(ModelError::config(path, "expected a JSON object"));
        };
        let f = Fields { raw: &raw, path };
        let architecture = match f.str("model_type")? {
            "qwen3" => Architecture::Dense,
            "qwen3_moe" => Architecture::Moe,
            other => {
                return Err(ModelError::config(
                    path,
                    format!(
                        "unknown model_type `{other}`: agentcpt supports `qwen3` and `qwen3_moe`"
                    ),
                ))
            }
        };
        if f.opt_bool("attention_bias")?.unwrap_or(false) {
            return Err(f.err("`attention_bias: true` is not supported by Qwen3"));
        }
        if f.opt_bool("use_sliding_window")?.unwrap_or(false) {
            return Err(f.err("`use_sliding_window: true` is not supported"));
        }
        if let Some(act) = f.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(f.err(format!("`hidden_act` is `{act}`, only `silu` is supported")));
            }
        }
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err(format!(
                "`num_attention_heads` ({num_attention_heads}) must be a multiple of `num_key_value_heads` ({num_key_value_heads})"
            )));
        }
        let head_dim = f.opt_usize("head_dim")?.ok_or_else(|| {
            f.err("missing field `head_dim` (it is never derived from hidden_size / num_attention_heads; Qwen3 checkpoints set it explicitly)")
        })?;
        if head_dim % 2 != 0 {
            return Err(f.err(format!("`head_dim` must be even for RoPE, got {head_dim}")));
        }
        let max_position_embeddings = f.usize("max_position_embeddings")?;
        // transformers v5 merges rope_theta and rope_scaling into `rope_parameters`.
        let rope_parameters = f.opt_object("rope_parameters")?;
        let rope_theta = match (f.opt_f64("rope_theta")?, rope_parameters) {
            (Some(theta), _) => theta,
            (None, Some(params)) => Fields { raw: params, path }
                .opt_f64("rope_theta")?
                .ok_or_else(|| {
                    f.err("missing field `rope_theta` (neither top level nor in `rope_parameters`)")
                })?,
            (None, None) => return Err(f.err("missing field `rope_theta`")),
        };
        let scaling_json = match f.opt_object("rope_scaling")? {
            Some(s) => Some(s),
            None => rope_parameters,
        };
        let rope_scaling = match scaling_json {
            None => RopeScaling::Default,
            Some(s) => RopeScaling::from_json(s, max_position_embeddings)
                .map_err(|m| f.err(format!("rope scaling: {m}")))?,
        };
        let num_hidden_layers = f.usize("num_hidden_layers")?;
        let moe = match architecture {
            Architecture::Dense => None,
            Architecture::Moe => {
                let num_experts = f.usize("num_experts")?;
                let num_experts_per_tok = f.usize("num_experts_per_tok")?;
                if num_experts_per_tok == 0 || num_experts_per_tok > num_experts {
                    return Err(f.err(format!(
                        "`num_experts_per_tok` ({num_experts_per_tok}) must be between 1 and `num_experts` ({num_experts})"
                    )));
                }
                let decoder_sparse_step = f.opt_usize("decoder_sparse_step")?.unwrap_or(1);
                if decoder_sparse_step == 0 {
                    return Err(f.err("`decoder_sparse_step` must be at least 1"));
                }
                let mlp_only_layers = f.opt_usize_list("mlp_only_layers")?.unwrap_or_default();
                if let Some(bad) = mlp_only_layers.iter().find(|&&l| l >= num_hidden_layers) {
                    return Err(f.err(format!("`mlp_only_layers` names layer {bad}, but the model has {num_hidden_layers} layers")));
                }
                Some(MoeConfig {
                    num_experts,
                    num_experts_per_tok,
                    moe_intermediate_size: f.usize("moe_intermediate_size")?,
                    // transformers' class default; released checkpoints set it to true.
                    norm_topk_prob: f.opt_bool("norm_topk_prob")?.unwrap_or(false),
                    decoder_sparse_step,
                    mlp_only_layers,
                    router_aux_loss_coef: f.opt_f64("router_aux_loss_coef")?.unwrap_or(0.001),
                    output_router_logits: f.opt_bool("output_router_logits")?.unwrap_or(false),
                })
            }
        };
        let config = Self {
            architecture,
            vocab_size: f.usize("vocab_size")?,
            hidden_size: f.usize("hidden_size")?,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.f64("rms_norm_eps")?,
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            initializer_range: f.opt_f64("initializer_range")?.unwrap_or(0.02),
            moe,
            raw: raw.clone(),
        };
        Ok(config)
    }

    /// Whether decoder layer `layer` uses the sparse MoE block (transformers' rule).
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        match &self.moe {
            None => false,
            Some(m) => {
                !m.mlp_only_layers.contains(&layer)
                    && m.num_experts > 0
                    && (layer + 1).is_multiple_of(m.decoder_sparse_step)
            }
        }
    }

    /// Number of layers with an MoE block.
    pub fn num_moe_layers(&self) -> usize {
        (0..self.num_hidden_layers)
            .filter(|&l| self.is_moe_layer(l))
            .count()
    }

    /// The config as JSON, with the hyper-parameters written back and the rope fields in the
    /// form every transformers version reads alike (see [`RopeScaling::to_json`]).
    pub fn to_json(&self) -> Value {
        let mut raw = self.raw.clone();
        raw.insert("model_type".into(), self.architecture.model_type().into());
        let arch = match self.architecture {
            Architecture::Dense => "Qwen3ForCausalLM",
            Architecture::Moe => "Qwen3MoeForCausalLM",
        };
        raw.insert("architectures".into(), Value::Array(vec![arch.into()]));
        raw.insert("head_dim".into(), self.head_dim.into());
        raw.insert(
            "tie_word_embeddings".into(),
            self.tie_word_embeddings.into(),
        );
        raw.insert("rope_theta".into(), self.rope_theta.into());
        raw.remove("rope_parameters");
        match self.rope_scaling.to_json() {
            None => {
                raw.insert("rope_scaling".into(), Value::Null);
            }
            Some(s) => {
                // Every transformers version reproduces the scaling when max positions = factor × original.
                if let Some(max_pos) = self.rope_scaling.scaled_max_positions() {
                    raw.insert("max_position_embeddings".into(), max_pos.into());
                }
                raw.insert("rope_scaling".into(), s);
            }
        }
        Value::Object(raw)
    }

    /// Replaces the rope scaling (stage 2 of the curriculum switches YaRN on).
    pub fn with_rope_scaling(mut self, scaling: RopeScaling) -> Self {
        if let Some(max_pos) = scaling.scaled_max_positions() {
            self.max_position_embeddings = max_pos;
        }
        self.rope_scaling = scaling;
        self
    }

    /// Longest sequence the config supports (`max_position_embeddings`).
    pub fn max_sequence_length(&self) -> usize {
        self.max_position_embeddings
    }
}

/// Typed access to a JSON object that names the key and file in every error.
struct Fields<'a> {
    raw: &'a Map<String, Value>,
    path: &'a Path,
}

impl<'a> Fields<'a> {
    fn err(&self, message: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: PathBuf::from(self.path),
            message: message.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.raw.get(key).filter(|v| !v.is_null())
    }

    fn typed<T>(
        &self,
        key: &str,
        what: &str,
        conv: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => conv(v)
                .map(Some)
                .ok_or_else(|| self.err(format!("field `{key}` must be {what}, got {v}"))),
        }
    }

    fn required<T>(&self, key: &str, value: Option<T>) -> Result<T> {
        value.ok_or_else(|| self.err(format!("missing field `{key}`")))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.typed(key, "a non-negative integer", |v| {
            v.as_u64().map(|n| n as usize)
        })
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.opt_usize(key)?;
        let n = self.required(key, v)?;
        if n == 0 {
            return Err(self.err(format!("field `{key}` must be positive")));
        }
        Ok(n)
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a number", Value::as_f64)
    }

    fn f64(&self, key: &str) -> Result<f64> {
        let v = self.opt_f64(key)?;
        self.required(key, v)
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "true or false", Value::as_bool)
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.typed(key, "a string", Value::as_str)
    }

    fn str(&self, key: &str) -> Result<&'a str> {
        let v = self.opt_str(key)?;
        self.required(key, v)
    }

    fn opt_object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        self.typed(key, "an object", Value::as_object)
    }

    fn opt_usize_list(&self, key: &str) -> Result<Option<Vec<usize>>> {
        self.typed(key, "a list of non-negative integers", |v| {
            v.as_array()?
                .iter()
                .map(|x| x.as_u64().map(|n| n as usize))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dense() -> Value {
        json!({
            "model_type": "qwen3", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 32, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "max_position_embeddings": 128
        })
    }

    #[test]
    fn missing_head_dim_is_an_error_naming_the_field() {
        let mut cfg = dense();
        cfg.as_object_mut().unwrap().remove("head_dim");
        let err = Qwen3Config::from_json(cfg, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.json") && err.contains("head_dim"), "{err}");
    }

    #[test]
    fn unknown_model_type_is_rejected() {
        let mut cfg = dense();
        cfg["model_type"] = json!("llama");
        let err = Qwen3Config::from_json(cfg, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown model_type `llama`"), "{err}");
    }

    #[test]
    fn mistyped_field_names_key_and_value() {
        let mut cfg = dense();
        cfg["hidden_size"] = json!("64");
        let err = Qwen3Config::from_json(cfg, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`hidden_size`") && err.contains("\"64\""),
            "{err}"
        );
    }

    #[test]
    fn moe_layer_rule_follows_transformers() {
        let mut cfg = dense();
        let o = cfg.as_object_mut().unwrap();
        o.insert("model_type".into(), json!("qwen3_moe"));
        o.insert("num_hidden_layers".into(), json!(6));
        o.insert("num_experts".into(), json!(8));
        o.insert("num_experts_per_tok".into(), json!(2));
        o.insert("moe_intermediate_size".into(), json!(32));
        o.insert("decoder_sparse_step".into(), json!(2));
        o.insert("mlp_only_layers".into(), json!([3]));
        let c = Qwen3Config::from_json(cfg, Path::new("c.json")).unwrap();
        let moe: Vec<bool> = (0..6).map(|l| c.is_moe_layer(l)).collect();
        assert_eq!(moe, [false, true, false, false, false, true]);
    }

    #[test]
    fn v5_rope_parameters_are_read() {
        let mut cfg = dense();
        let o = cfg.as_object_mut().unwrap();
        o.remove("rope_theta");
        o.insert(
            "rope_parameters".into(),
            json!({"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 32}),
        );
        let c = Qwen3Config::from_json(cfg, Path::new("c.json")).unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert!(
            matches!(c.rope_scaling, RopeScaling::Yarn(ref y) if y.factor == 4.0 && y.original_max_position_embeddings == 32)
        );
    }
}
