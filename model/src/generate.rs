//! Autoregressive decoding with a KV cache: greedy, temperature and nucleus (top-p) sampling,
//! stop tokens, seeded.

use burn::tensor::{Device, Tensor, TensorData};

use crate::attention::KvCache;
use crate::error::{ModelError, Result};
use crate::layout::SequenceLayout;
use crate::model::Qwen3;

#[derive(Debug, Clone)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 keeps every token.
    pub top_p: f64,
    /// Generation stops after emitting any of these.
    pub stop_tokens: Vec<i64>,
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.0,
            top_p: 1.0,
            stop_tokens: vec![],
            seed: 0,
        }
    }
}

/// Generates a continuation of `prompt`; returns the new tokens (the stop token included).
pub fn generate(
    model: &Qwen3,
    prompt: &[i64],
    config: &GenerationConfig,
    device: &Device,
) -> Result<Vec<i64>> {
    if !(config.top_p > 0.0 && config.top_p <= 1.0) {
        return Err(ModelError::Input(format!(
            "top_p must be in (0, 1], got {}",
            config.top_p
        )));
    }
    if config.temperature < 0.0 {
        return Err(ModelError::Input(format!(
            "temperature must be ≥ 0, got {}",
            config.temperature
        )));
    }
    let mut caches = vec![KvCache::default(); model.layers.len()];
    let mut rng = SplitMix64(config.seed);
    let mut input = model.token_tensor(&[prompt.to_vec()], device)?;
    let mut past = 0;
    let mut out = Vec::new();
    while out.len() < config.max_new_tokens {
        let s = input.dims()[1];
        let layout = SequenceLayout::contiguous(1, s, past, device);
        let logits = model.forward_cached(input, &layout, &mut caches);
        past += s;
        let vocab = logits.dims()[2];
        let last: Vec<f32> = logits
            .narrow(1, s - 1, 1)
            .reshape([vocab])
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32");
        let next = sample(&last, config, &mut rng);
        out.push(next);
        if config.stop_tokens.contains(&next) {
            break;
        }
        input = Tensor::from_data(TensorData::new(vec![next], [1, 1]), device);
    }
    Ok(out)
}

fn sample(logits: &[f32], config: &GenerationConfig, rng: &mut SplitMix64) -> i64 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 {
                    (i, l)
                } else {
                    best
                }
            })
            .0 as i64
    };
    if config.temperature == 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, ((l as f64 - max) / config.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    // Smallest prefix whose mass reaches top_p.
    let mut mass = 0.0;
    let keep = probs
        .iter()
        .position(|p| {
            mass += p.1;
            mass >= config.top_p
        })
        .map_or(probs.len(), |i| i + 1);
    let kept = &probs[..keep];
    let mut r = rng.next_f64() * kept.iter().map(|p| p.1).sum::<f64>();
    for &(i, p) in kept {
        r -= p;
        if r <= 0.0 {
            return i as i64;
        }
    }
    kept.last().map_or_else(argmax, |p| p.0 as i64)
}

/// A small, seedable generator; sampling needs nothing stronger.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_moe(device: &Device) -> Qwen3 {
        crate::model::tests::seeded(device, 17, || {
            Qwen3::random(crate::model::tests::tiny_moe_config(), device)
        })
    }

    /// Decoding with the cache must pick what a full forward over the whole sequence picks.
    #[test]
    fn cached_greedy_decoding_matches_full_recompute() {
        let device = Device::flex();
        let model = tiny_moe(&device);
        let prompt = vec![3, 14, 15, 9, 26];
        let config = GenerationConfig {
            max_new_tokens: 8,
            ..Default::default()
        };
        let generated = generate(&model, &prompt, &config, &device).unwrap();
        let mut sequence = prompt.clone();
        for &token in &generated {
            let s = sequence.len();
            let ids = model.token_tensor(&[sequence.clone()], &device).unwrap();
            let logits = model
                .forward(ids, &SequenceLayout::contiguous(1, s, 0, &device))
                .logits;
            let last = logits
                .narrow(1, s - 1, 1)
                .reshape([64])
                .argmax(0)
                .into_scalar::<i64>();
            assert_eq!(token, last, "step {}", s - prompt.len());
            sequence.push(token);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        let logits = [10.0, 9.0, -10.0, -10.0];
        let config = GenerationConfig {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        };
        let mut rng = SplitMix64(7);
        assert!((0..200).all(|_| sample(&logits, &config, &mut rng) == 0));
        let config = GenerationConfig {
            temperature: 1.0,
            top_p: 1.0,
            ..Default::default()
        };
        let seen: std::collections::BTreeSet<i64> = (0..200)
            .map(|_| sample(&logits, &config, &mut rng))
            .collect();
        assert!(seen.contains(&0) && seen.contains(&1));
    }

    #[test]
    fn greedy_picks_the_argmax() {
        let mut rng = SplitMix64(1);
        assert_eq!(
            sample(&[0.1, 3.0, 2.0], &GenerationConfig::default(), &mut rng),
            1
        );
    }
}
