//! The dense SwiGLU MLP, also the shape of one MoE expert.

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::module::linear;
use burn::tensor::Tensor;

/// `down(silu(gate(x)) ⊙ up(x))`; weights in Hugging Face layout `[out, in]`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Param<Tensor<2>>,
    pub up_proj: Param<Tensor<2>>,
    pub down_proj: Param<Tensor<2>>,
}

impl Mlp {
    /// # Shapes
    /// - x: `[..., hidden]` → `[..., hidden]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let gate = silu(project(x.clone(), &self.gate_proj));
        let up = project(x, &self.up_proj);
        project(gate.mul(up), &self.down_proj)
    }
}

/// `x · Wᵀ` for a weight stored `[out, in]`.
pub fn project<const D: usize>(x: Tensor<D>, weight: &Param<Tensor<2>>) -> Tensor<D> {
    linear(x, weight.val().transpose(), None)
}
