//! Token-weighted mixing of sources, deterministic from a seed.
//!
//! Why tokens, not documents: a HAS trajectory can be 100× longer than a FAS plan, so a
//! document-level ratio says little about what the model trains on; the paper's mixture is
//! quoted in tokens (agentic-cpt.md §4).
//!
//! The rule ("randomised largest deficit"): with `T_i` tokens already taken from active
//! source `i`, normalised weights `w_i` and `T = Σ T_i`, each source's deficit against a
//! horizon `H` ahead is `d_i = w_i·(T + H) − T_i`. The next document comes from a source
//! drawn with probability ∝ `max(d_i, 0)`. Since `Σ d_i = H > 0` some source is always
//! eligible, an over-served source is never drawn, and the realised token shares stay within
//! about (longest document + H)/T of the weights, while the interleaving stays random.
//! Dropping a source renormalises the remaining weights over the remaining sources' tokens.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::Rng;

/// What a source does when its data runs out (for this rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Start another epoch (reshuffled file order).
    #[default]
    Repeat,
    /// Leave the mixture; the other sources' weights are renormalised.
    Drop,
    /// End the whole loader (after flushing the packer).
    Stop,
}

/// The mixing state: weights, which sources are active, and tokens taken per source.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    weights: Vec<f64>,
    active: Vec<bool>,
    tokens: Vec<u64>,
    horizon: f64,
}

impl Mixture {
    /// `weights` are relative token shares (any positive scale); `horizon` is in tokens.
    pub fn new(weights: &[f64], horizon_tokens: u64) -> Result<Self> {
        if weights.is_empty() {
            return Err(DataError::Config(
                "a mixture needs at least one source".into(),
            ));
        }
        if let Some(w) = weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
            return Err(DataError::Config(format!(
                "mixture weights must be finite and >= 0, got {w}"
            )));
        }
        if weights.iter().all(|&w| w == 0.0) {
            return Err(DataError::Config("all mixture weights are 0".into()));
        }
        Ok(Mixture {
            weights: weights.to_vec(),
            active: weights.iter().map(|&w| w > 0.0).collect(),
            tokens: vec![0; weights.len()],
            horizon: horizon_tokens.max(1) as f64,
        })
    }

    /// Restores counters and active flags (from a loader state).
    pub fn restore(&mut self, tokens: &[u64], active: &[bool]) {
        self.tokens.copy_from_slice(tokens);
        for (a, (&was, &w)) in self.active.iter_mut().zip(active.iter().zip(&self.weights)) {
            *a = was && w > 0.0;
        }
    }

    /// Picks the source of the next document; `None` when no source is active.
    pub fn pick(&self, rng: &mut Rng) -> Option<usize> {
        let live: Vec<usize> = (0..self.weights.len())
            .filter(|&i| self.active[i])
            .collect();
        if live.is_empty() {
            return None;
        }
        let w_sum: f64 = live.iter().map(|&i| self.weights[i]).sum();
        let t_sum: f64 = live.iter().map(|&i| self.tokens[i] as f64).sum();
        let deficits: Vec<f64> = live
            .iter()
            .map(|&i| {
                (self.weights[i] / w_sum * (t_sum + self.horizon) - self.tokens[i] as f64).max(0.0)
            })
            .collect();
        let total: f64 = deficits.iter().sum();
        // Always draw, so the RNG advances identically whatever the deficits are.
        let u = rng.next_f64() * total;
        if total <= 0.0 {
            return Some(live[0]);
        }
        let mut acc = 0.0;
        for (k, &d) in deficits.iter().enumerate() {
            acc += d;
            if u < acc {
                return Some(live[k]);
            }
        }
        // Rounding at the top end: the last eligible source.
        live.iter()
            .zip(&deficits)
            .rev()
            .find(|(_, &d)| d > 0.0)
            .map(|(&i, _)| i)
    }

    /// Counts `n` tokens taken from `source`.
    pub fn record(&mut self, source: usize, n: u64) {
        self.tokens[source] += n;
    }

    /// Removes a source from the mixture.
    pub fn deactivate(&mut self, source: usize) {
        self.active[source] = false;
    }

    pub fn is_active(&self, source: usize) -> bool {
        self.active[source]
    }

    /// Tokens taken per source.
    pub fn tokens(&self) -> &[u64] {
        &self.tokens
    }

    /// Realised token share per source (over all sources, active or not).
    pub fn shares(&self) -> Vec<f64> {
        let total: u64 = self.tokens.iter().sum();
        self.tokens
            .iter()
            .map(|&t| {
                if total == 0 {
                    0.0
                } else {
                    t as f64 / total as f64
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates documents of very different lengths per source.
    fn simulate(weights: &[f64], lens: &[u64], docs: usize, seed: u64) -> Vec<f64> {
        let mut m = Mixture::new(weights, 256).unwrap();
        let mut rng = Rng::seed_from_u64(seed);
        for _ in 0..docs {
            let s = m.pick(&mut rng).unwrap();
            m.record(s, lens[s]);
        }
        m.shares()
    }

    #[test]
    fn token_shares_track_weights() {
        let shares = simulate(&[5.0, 3.0, 2.0], &[40, 900, 3000], 20_000, 1);
        for (s, w) in shares.iter().zip([0.5, 0.3, 0.2]) {
            assert!((s - w).abs() < 0.01, "{shares:?}");
        }
    }

    #[test]
    fn same_seed_same_picks_other_seed_other_picks() {
        let picks = |seed| {
            let mut m = Mixture::new(&[1.0, 1.0], 100).unwrap();
            let mut rng = Rng::seed_from_u64(seed);
            (0..200)
                .map(|_| {
                    let s = m.pick(&mut rng).unwrap();
                    m.record(s, 10);
                    s
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(3), picks(3));
        assert_ne!(picks(3), picks(4));
    }

    #[test]
    fn dropping_renormalises() {
        let mut m = Mixture::new(&[1.0, 1.0, 2.0], 64).unwrap();
        let mut rng = Rng::seed_from_u64(9);
        m.deactivate(2);
        for _ in 0..1000 {
            let s = m.pick(&mut rng).unwrap();
            assert_ne!(s, 2);
            m.record(s, 7);
        }
        let t = m.tokens();
        assert!(
            (t[0] as f64 / (t[0] + t[1]) as f64 - 0.5).abs() < 0.02,
            "{t:?}"
        );
        m.deactivate(0);
        m.deactivate(1);
        assert_eq!(m.pick(&mut rng), None);
    }

    #[test]
    fn rejects_bad_weights() {
        assert!(Mixture::new(&[], 1).is_err());
        assert!(Mixture::new(&[1.0, -1.0], 1).is_err());
        assert!(Mixture::new(&[f64::NAN], 1).is_err());
        assert!(Mixture::new(&[0.0, 0.0], 1).is_err());
    }
}
