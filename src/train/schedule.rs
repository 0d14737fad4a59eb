//! Learning-rate schedules: constant, linear warmup + cosine, and warmup-stable-decay (WSD).
//! A schedule is a pure function of the step, so resuming needs only the step.

use serde::{Deserialize, Serialize};

/// How WSD's final phase falls from the peak to the minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayShape {
    Linear,
    Cosine,
    /// `1 − sqrt(progress)`, the shape MiniCPM and nanotron use.
    Sqrt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant {
        #[serde(default)]
        warmup_steps: u64,
    },
    /// Linear warmup, then cosine from the peak down to `min_lr_ratio × peak` at the last step.
    Cosine {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        min_lr_ratio: f64,
    },
    /// Linear warmup, a stable peak, then a decay over the last `decay_ratio` of the steps.
    Wsd {
        #[serde(default)]
        warmup_steps: u64,
        decay_ratio: f64,
        #[serde(default)]
        min_lr_ratio: f64,
        #[serde(default = "default_decay")]
        decay: DecayShape,
    },
}

fn default_decay() -> DecayShape {
    DecayShape::Sqrt
}

impl Schedule {
    /// The learning rate of optimiser step `step` (0-based) out of `total_steps`.
    pub fn lr(&self, peak: f64, step: u64, total_steps: u64) -> f64 {
        let warmup = match self {
            Schedule::Constant { warmup_steps }
            | Schedule::Cosine { warmup_steps, .. }
            | Schedule::Wsd { warmup_steps, .. } => *warmup_steps,
        };
        if step < warmup {
            // torchtitan's (step + 1) / warmup: the first step already trains.
            return peak * (step + 1) as f64 / warmup as f64;
        }
        let span = total_steps.saturating_sub(warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
        match self {
            Schedule::Constant { .. } => peak,
            Schedule::Cosine { min_lr_ratio, .. } => {
                let min = peak * min_lr_ratio;
                min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::Wsd {
                decay_ratio,
                min_lr_ratio,
                decay,
                ..
            } => {
                let min = peak * min_lr_ratio;
                let decay_steps = (total_steps as f64 * decay_ratio).round().max(1.0);
                let decay_start = total_steps as f64 - decay_steps;
                if (step as f64) < decay_start {
                    return peak;
                }
                let t = ((step as f64 - decay_start) / decay_steps).clamp(0.0, 1.0);
                let fraction = match decay {
                    DecayShape::Linear => 1.0 - t,
                    DecayShape::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
                    DecayShape::Sqrt => 1.0 - t.sqrt(),
                };
                min + (peak - min) * fraction
            }
        }
    }

    /// Checks the parameters; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Schedule::Cosine { min_lr_ratio, .. } | Schedule::Wsd { min_lr_ratio, .. }
                if !(0.0..=1.0).contains(min_lr_ratio) =>
            {
                Err(format!(
                    "min_lr_ratio must be in [0, 1], got {min_lr_ratio}"
                ))
            }
            Schedule::Wsd { decay_ratio, .. } if !(*decay_ratio > 0.0 && *decay_ratio <= 1.0) => {
                Err(format!("decay_ratio must be in (0, 1], got {decay_ratio}"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_then_reaches_the_minimum() {
        let s = Schedule::Cosine {
            warmup_steps: 10,
            min_lr_ratio: 0.1,
        };
        assert!((s.lr(1.0, 0, 110) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 9, 110) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 10, 110) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 60, 110) - 0.55).abs() < 1e-12);
        assert!((s.lr(1.0, 110, 110) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn wsd_is_stable_then_decays() {
        let s = Schedule::Wsd {
            warmup_steps: 0,
            decay_ratio: 0.2,
            min_lr_ratio: 0.0,
            decay: DecayShape::Linear,
        };
        assert_eq!(s.lr(2.0, 50, 100), 2.0);
        assert_eq!(s.lr(2.0, 79, 100), 2.0);
        assert!((s.lr(2.0, 90, 100) - 1.0).abs() < 1e-12);
        assert!(s.validate().is_ok());
        let bad = Schedule::Wsd {
            warmup_steps: 0,
            decay_ratio: 1.5,
            min_lr_ratio: 0.0,
            decay: DecayShape::Linear,
        };
        assert!(bad.validate().unwrap_err().contains("decay_ratio"));
    }
}
