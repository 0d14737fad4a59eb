//! AdamW with f32 moments keyed by Hugging Face parameter name, decoupled weight decay
//! (none on norms and embeddings unless asked), and PyTorch-style global-norm clipping.
//! Keyed by name so that a checkpoint's optimizer state is readable and survives a reload.

use std::collections::BTreeMap;

use agentcpt_model::burn::module::Param;
use agentcpt_model::burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use agentcpt_model::model::ParamSlot;
use agentcpt_model::rope::float_dtype;
use agentcpt_model::weights::NamedTensor;
use agentcpt_model::Qwen3;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    #[serde(default = "default_betas")]
    pub betas: (f64, f64),
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Also decay RMSNorm weights and the input embedding (off by default, as is usual).
    #[serde(default)]
    pub decay_norms_and_embeddings: bool,
    /// Global gradient-norm clip; 0 disables clipping.
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.95)
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.1
}
fn default_max_grad_norm() -> f64 {
    1.0
}

/// One parameter's moments, flattened.
#[derive(Debug, Clone)]
pub struct Moments {
    pub exp_avg: Tensor<1>,
    pub exp_avg_sq: Tensor<1>,
}

#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimiser steps taken (bias correction uses it).
    pub step: u64,
    pub moments: BTreeMap<String, Moments>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    fn decays(&self, name: &str, rank: usize) -> bool {
        self.config.decay_norms_and_embeddings || (rank > 1 && name != "model.embed_tokens.weight")
    }

    /// The new value of parameter `name` after one step with gradient `grad` scaled by
    /// `grad_scale` (the clip factor). Works on tensors outside the autodiff graph.
    pub fn update(
        &mut self,
        name: &str,
        param: Tensor<1>,
        rank: usize,
        grad: Tensor<1>,
        grad_scale: f64,
        lr: f64,
    ) -> Tensor<1> {
        let (b1, b2) = self.config.betas;
        let grad = grad.cast(FloatDType::F32).mul_scalar(grad_scale);
        let moments = self
            .moments
            .entry(name.to_string())
            .or_insert_with(|| Moments {
                exp_avg: grad.zeros_like(),
                exp_avg_sq: grad.zeros_like(),
            });
        moments.exp_avg = moments
            .exp_avg
            .clone()
            .mul_scalar(b1)
            .add(grad.clone().mul_scalar(1.0 - b1));
        moments.exp_avg_sq = moments
            .exp_avg_sq
            .clone()
            .mul_scalar(b2)
            .add(grad.square().mul_scalar(1.0 - b2));
        let t = (self.step + 1) as i32;
        let correction1 = 1.0 - b1.powi(t);
        let correction2 = 1.0 - b2.powi(t);
        let denom = moments
            .exp_avg_sq
            .clone()
            .sqrt()
            .div_scalar(correction2.sqrt())
            .add_scalar(self.config.eps);
        let direction = moments
            .exp_avg
            .clone()
            .div(denom)
            .mul_scalar(lr / correction1);
        let dtype = param.dtype();
        let param = param.cast(FloatDType::F32);
        let param = if self.decays(name, rank) {
            param.mul_scalar(1.0 - lr * self.config.weight_decay)
        } else {
            param
        };
        param.sub(direction).cast(float_dtype(dtype))
    }

    /// Marks the end of an optimiser step.
    pub fn finish_step(&mut self) {
        self.step += 1;
    }

    /// Restores the moments saved by [`Self::state_tensors`] (flattened f32 values by name).
    pub fn load_state(
        &mut self,
        step: u64,
        mut saved: std::collections::HashMap<String, Vec<f32>>,
        device: &Device,
    ) -> Result<()> {
        self.step = step;
        self.moments.clear();
        let names: Vec<String> = saved
            .keys()
            .filter_map(|k| k.strip_prefix("exp_avg.").map(String::from))
            .collect();
        for name in names {
            let mut take = |key: String| -> Result<Tensor<1>> {
                let values = saved
                    .remove(&key)
                    .with_context(|| format!("optimizer state lacks `{key}`"))?;
                let n = values.len();
                Ok(Tensor::from_data(
                    TensorData::new(values, [n]),
                    (device, DType::F32),
                ))
            };
            let exp_avg = take(format!("exp_avg.{name}"))?;
            let exp_avg_sq = take(format!("exp_avg_sq.{name}"))?;
            self.moments.insert(
                name,
                Moments {
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        if let Some(extra) = saved.keys().next() {
            bail!("optimizer state has an unexpected tensor `{extra}`");
        }
        Ok(())
    }

    /// The moments as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<NamedTensor> {
        self.moments
            .iter()
            .flat_map(|(name, m)| {
                [
                    NamedTensor::Vector(format!("exp_avg.{name}"), m.exp_avg.clone()),
                    NamedTensor::Vector(format!("exp_avg_sq.{name}"), m.exp_avg_sq.clone()),
                ]
            })
            .collect()
    }
}

/// `sqrt(Σ ‖g‖²)` over every gradient, and the factor `min(1, max / (norm + 1e-6))` that
/// clips it (PyTorch's `clip_grad_norm_`). One host read for all parameters.
pub fn global_norm(grads: &[Tensor<1>]) -> f64 {
    let squares: Vec<Tensor<1>> = grads
        .iter()
        .map(|g| g.clone().cast(FloatDType::F32).square().sum())
        .collect();
    Tensor::cat(squares, 0).sum().into_scalar::<f64>().sqrt()
}

pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

/// Adds a micro-batch's gradients into `acc` (summed by name across micro-batches),
/// flattened, with each parameter's rank.
pub fn add_gradients(acc: &mut BTreeMap<String, (Tensor<1>, usize)>, grads: Vec<NamedTensor>) {
    for grad in grads {
        let (name, flat, rank) = match grad {
            NamedTensor::Vector(name, g) => (name, g, 1),
            NamedTensor::Matrix(name, g) => {
                let n: usize = g.dims().iter().product();
                (name, g.reshape([n]), 2)
            }
        };
        let summed = match acc.remove(&name) {
            Some((a, _)) => a.add(flat),
            None => flat,
        };
        acc.insert(name, (summed, rank));
    }
}

/// One AdamW step on every parameter of `model` that has a gradient in `grads` (which it
/// empties), gradients scaled by `clip`.
pub fn apply(
    model: &mut Qwen3,
    optimizer: &mut AdamW,
    grads: &mut BTreeMap<String, (Tensor<1>, usize)>,
    clip: f64,
    lr: f64,
) {
    model.for_each_param_mut(&mut |name, slot| {
        let Some((grad, rank)) = grads.remove(name) else {
            return;
        };
        match slot {
            ParamSlot::Vector(p) => {
                let new = optimizer.update(name, p.val().inner(), rank, grad, clip, lr);
                *p = Param::from_tensor(Tensor::from_inner(new));
            }
            ParamSlot::Matrix(p) => {
                let dims = p.val().dims();
                let flat = p.val().inner().reshape([dims[0] * dims[1]]);
                let new = optimizer
                    .update(name, flat, rank, grad, clip, lr)
                    .reshape(dims);
                *p = Param::from_tensor(Tensor::from_inner(new));
            }
        }
    });
    optimizer.finish_step();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32]) -> Tensor<1> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [values.len()]),
            &Device::flex(),
        )
    }

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    /// Two steps checked against torch.optim.AdamW's update rule, written out by hand.
    #[test]
    fn matches_pytorch_adamw() {
        let config = AdamWConfig {
            lr: 0.1,
            betas: (0.9, 0.99),
            eps: 1e-8,
            weight_decay: 0.5,
            decay_norms_and_embeddings: false,
            max_grad_norm: 0.0,
        };
        let mut opt = AdamW::new(config);
        let (mut p, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        let mut param = tensor(&[1.0]);
        for (t, g) in [(1, 0.5f64), (2, -0.25)] {
            param = opt.update("w", param, 2, tensor(&[g as f32]), 1.0, 0.1);
            opt.finish_step();
            p *= 1.0 - 0.1 * 0.5;
            m = 0.9 * m + 0.1 * g;
            v = 0.99 * v + 0.01 * g * g;
            let denom = (v / (1.0 - 0.99f64.powi(t))).sqrt() + 1e-8;
            p -= 0.1 / (1.0 - 0.9f64.powi(t)) * m / denom;
        }
        assert!((values(param)[0] as f64 - p).abs() < 1e-6);
        // Rank-1 parameters (norms) are not decayed.
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.5,
            ..opt.config.clone()
        });
        let norm = opt.update(
            "model.norm.weight",
            tensor(&[1.0]),
            1,
            tensor(&[0.0]),
            1.0,
            0.1,
        );
        assert_eq!(values(norm), [1.0]);
    }

    #[test]
    fn global_norm_clips_like_clip_grad_norm() {
        let norm = global_norm(&[tensor(&[3.0]), tensor(&[4.0, 0.0])]);
        assert!((norm - 5.0).abs() < 1e-9);
        assert!((clip_factor(norm, 1.0) - 1.0 / (5.0 + 1e-6)).abs() < 1e-12);
        assert_eq!(clip_factor(norm, 10.0), 1.0);
    }
}
