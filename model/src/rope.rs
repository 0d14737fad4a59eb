//! Rotary position embeddings in the rotate-half (NeoX) layout Qwen3 checkpoints use, with
//! the default, linear and YaRN frequency schedules computed as transformers computes them
//! (f32 throughout), and YaRN's `factor` always taken as given.

use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};
use serde_json::{json, Map, Value};

/// YaRN parameters (`rope_type: "yarn"`), static: the same at every sequence length.
#[derive(Debug, Clone, PartialEq)]
pub struct YarnScaling {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    /// Overrides the default `0.1·ln(factor) + 1` when set.
    pub attention_factor: Option<f64>,
    pub beta_fast: f64,
    pub beta_slow: f64,
    pub mscale: Option<f64>,
    pub mscale_all_dim: Option<f64>,
    pub truncate: bool,
}

impl YarnScaling {
    /// YaRN with the defaults transformers uses for everything but `factor` and `L₀`.
    pub fn new(factor: f64, original_max_position_embeddings: usize) -> Self {
        Self {
            factor,
            original_max_position_embeddings,
            attention_factor: None,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: None,
            mscale_all_dim: None,
            truncate: true,
        }
    }
}

/// The RoPE frequency schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    Yarn(YarnScaling),
}

impl RopeScaling {
    /// Parses a `rope_scaling` (v4) or `rope_parameters` (v5) object.
    /// `max_position_embeddings` is YaRN's fallback for `original_max_position_embeddings`.
    pub fn from_json(
        s: &Map<String, Value>,
        max_position_embeddings: usize,
    ) -> Result<Self, String> {
        let rope_type = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let num = |key: &str| -> Result<Option<f64>, String> {
            match s.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| format!("`{key}` must be a number, got {v}")),
            }
        };
        let factor = || -> Result<f64, String> {
            let f = num("factor")?.ok_or("missing `factor`")?;
            if f < 1.0 {
                return Err(format!("`factor` must be at least 1, got {f}"));
            }
            Ok(f)
        };
        match rope_type {
            "default" => Ok(RopeScaling::Default),
            "linear" => Ok(RopeScaling::Linear { factor: factor()? }),
            "yarn" => {
                let original = match num("original_max_position_embeddings")? {
                    Some(v) if v >= 1.0 && v.fract() == 0.0 => v as usize,
                    Some(v) => {
                        return Err(format!(
                        "`original_max_position_embeddings` must be a positive integer, got {v}"
                    ))
                    }
                    None => max_position_embeddings,
                };
                let mut y = YarnScaling::new(factor()?, original);
                y.attention_factor = num("attention_factor")?;
                y.beta_fast = num("beta_fast")?.unwrap_or(32.0);
                y.beta_slow = num("beta_slow")?.unwrap_or(1.0);
                y.mscale = num("mscale")?;
                y.mscale_all_dim = num("mscale_all_dim")?;
                y.truncate = s.get("truncate").and_then(Value::as_bool).unwrap_or(true);
                Ok(RopeScaling::Yarn(y))
            }
            other => Err(format!(
                "unsupported rope_type `{other}` (supported: default, linear, yarn)"
            )),
        }
    }

    /// The `rope_scaling` object to write into `config.json` (`None` for the default schedule).
    pub fn to_json(&self) -> Option<Value> {
        match self {
            RopeScaling::Default => None,
            RopeScaling::Linear { factor } => {
                Some(json!({"rope_type": "linear", "factor": factor}))
            }
            RopeScaling::Yarn(y) => {
                let mut o = json!({
                    "rope_type": "yarn",
                    "factor": y.factor,
                    "original_max_position_embeddings": y.original_max_position_embeddings,
                });
                let map = o.as_object_mut().expect("object literal");
                for (key, value) in [
                    ("attention_factor", y.attention_factor),
                    ("mscale", y.mscale),
                    ("mscale_all_dim", y.mscale_all_dim),
                ] {
                    if let Some(v) = value {
                        map.insert(key.into(), v.into());
                    }
                }
                if y.beta_fast != 32.0 || y.beta_slow != 1.0 {
                    map.insert("beta_fast".into(), y.beta_fast.into());
                    map.insert("beta_slow".into(), y.beta_slow.into());
                }
                if !y.truncate {
                    map.insert("truncate".into(), false.into());
                }
                Some(o)
            }
        }
    }

    /// `factor × original_max_position_embeddings` for YaRN: the `max_position_embeddings`
    /// under which every transformers version applies the factor as written.
    pub fn scaled_max_positions(&self) -> Option<usize> {
        match self {
            RopeScaling::Yarn(y) => {
                Some((y.factor * y.original_max_position_embeddings as f64).round() as usize)
            }
            _ => None,
        }
    }

    /// Inverse frequencies `[head_dim / 2]` and the factor `a` that multiplies cos and sin.
    pub fn frequencies(&self, head_dim: usize, theta: f64) -> (Vec<f32>, f32) {
        let half = head_dim / 2;
        // base^(2j/D) in f32, as torch computes `base ** (arange(0, D, 2).float() / D)`.
        let pos_freqs: Vec<f32> = (0..half)
            .map(|j| (theta as f32).powf((2 * j) as f32 / head_dim as f32))
            .collect();
        let default: Vec<f32> = pos_freqs.iter().map(|p| 1.0 / p).collect();
        match self {
            RopeScaling::Default => (default, 1.0),
            RopeScaling::Linear { factor } => {
                (default.iter().map(|f| f / *factor as f32).collect(), 1.0)
            }
            RopeScaling::Yarn(y) => {
                let (low, high) = y.correction_range(head_dim, theta);
                let high = if low == high { high + 0.001 } else { high };
                let factor = y.factor as f32;
                let inv: Vec<f32> = (0..half)
                    .map(|j| {
                        let ramp = ((j as f32 - low as f32) / (high - low) as f32).clamp(0.0, 1.0);
                        let extrapolation_weight = 1.0 - ramp;
                        let interpolation = 1.0 / (factor * pos_freqs[j]);
                        interpolation * (1.0 - extrapolation_weight)
                            + default[j] * extrapolation_weight
                    })
                    .collect();
                (inv, y.attention_factor() as f32)
            }
        }
    }
}

impl YarnScaling {
    /// `a`: the factor on cos and sin, so attention logits scale by `a²`.
    pub fn attention_factor(&self) -> f64 {
        fn mscale(scale: f64, m: f64) -> f64 {
            if scale <= 1.0 {
                1.0
            } else {
                0.1 * m * scale.ln() + 1.0
            }
        }
        if let Some(a) = self.attention_factor {
            return a;
        }
        match (self.mscale, self.mscale_all_dim) {
            (Some(m), Some(m_all)) if m != 0.0 && m_all != 0.0 => {
                mscale(self.factor, m) / mscale(self.factor, m_all)
            }
            _ => mscale(self.factor, 1.0),
        }
    }

    /// The `(low, high)` frequency indices between which YaRN ramps from extrapolation to
    /// interpolation.
    fn correction_range(&self, head_dim: usize, theta: f64) -> (f64, f64) {
        let dim = head_dim as f64;
        let corr = |rotations: f64| {
            dim * (self.original_max_position_embeddings as f64
                / (rotations * 2.0 * std::f64::consts::PI))
                .ln()
                / (2.0 * theta.ln())
        };
        let (mut low, mut high) = (corr(self.beta_fast), corr(self.beta_slow));
        if self.truncate {
            low = low.floor();
            high = high.ceil();
        }
        (low.max(0.0), high.min(dim - 1.0))
    }
}

/// cos and sin tables for one batch, `[B, 1, S, D]`, in the activation dtype.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
}

impl RopeTables {
    /// Builds the tables for per-token `positions` `[B, S]`; angles are computed in f32.
    pub fn new(
        positions: &Tensor<2, Int>,
        inv_freq: &[f32],
        attention_factor: f32,
        dtype: DType,
    ) -> Self {
        let device = positions.device();
        let half = inv_freq.len();
        let inv = Tensor::<1>::from_data(
            TensorData::new(inv_freq.to_vec(), [half]),
            (&device, DType::F32),
        )
        .reshape([1, 1, half]);
        let pos: Tensor<3> = positions.clone().cast(FloatDType::F32).unsqueeze_dim(2);
        let angles = pos.mul(inv);
        let angles = Tensor::cat(vec![angles.clone(), angles], 2).unsqueeze_dim::<4>(1);
        let cos = angles.clone().cos().mul_scalar(attention_factor);
        let sin = angles.sin().mul_scalar(attention_factor);
        let float = float_dtype(dtype);
        Self {
            cos: cos.cast(float),
            sin: sin.cast(float),
        }
    }

    /// Rotates `x` `[B, H, S, D]` by the tables: `x·cos + rotate_half(x)·sin`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, _, d] = x.dims();
        let halves = x.clone().split(d / 2, 3);
        let rotated = Tensor::cat(vec![halves[1].clone().neg(), halves[0].clone()], 3);
        x.mul(self.cos.clone()).add(rotated.mul(self.sin.clone()))
    }
}

/// The float dtype of a tensor dtype (activations are always float here).
pub fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked numbers of qwen3.md §4.2: D=128, θ=1e6, s=4, L₀=32768.
    #[test]
    fn yarn_matches_reference_numbers() {
        let y = YarnScaling::new(4.0, 32768);
        assert_eq!(y.correction_range(128, 1e6), (23.0, 40.0));
        let (inv, a) = RopeScaling::Yarn(y).frequencies(128, 1e6);
        let (default, one) = RopeScaling::Default.frequencies(128, 1e6);
        assert_eq!(one, 1.0);
        assert!((a - 1.138_629_4).abs() < 1e-6, "{a}");
        for j in 0..=23 {
            assert_eq!(inv[j], default[j], "j={j} must be unchanged");
        }
        let rel = |x: f32, y: f32| ((x - y) / y).abs();
        assert!(rel(inv[24], 5.375321e-3) < 1e-5, "{}", inv[24]);
        assert!(rel(inv[30], 1.064361e-3) < 1e-5, "{}", inv[30]);
        assert!(rel(default[39] / inv[39], 3.4) < 1e-3);
        for j in 40..64 {
            assert!(rel(inv[j], default[j] / 4.0) < 1e-6, "j={j}");
        }
        assert!(rel(inv[63], 3.102344e-7) < 1e-5);
    }

    #[test]
    fn yarn_factor_is_taken_as_written() {
        // transformers 4.51–4.55 replaced the factor by max_pos / original (issue #38224).
        let mut m = Map::new();
        m.insert("rope_type".into(), "yarn".into());
        m.insert("factor".into(), 4.0.into());
        m.insert("original_max_position_embeddings".into(), 32768.into());
        let s = RopeScaling::from_json(&m, 40960).unwrap();
        let RopeScaling::Yarn(y) = &s else {
            panic!("not yarn")
        };
        assert_eq!(y.factor, 4.0);
        assert_eq!(s.scaled_max_positions(), Some(131072));
        assert!((y.attention_factor() - 1.138_629_436_111_989).abs() < 1e-12);
    }

    #[test]
    fn unsupported_rope_type_is_an_error() {
        let mut m = Map::new();
        m.insert("rope_type".into(), "longrope".into());
        let err = RopeScaling::from_json(&m, 4096).unwrap_err();
        assert!(err.contains("longrope"), "{err}");
    }
}
