//! Grouped-query self-attention with QK-norm and rotate-half RoPE, and [`attend`], the one
//! function that computes attention (swapped for a memory-linear kernel at long context).

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, FloatDType, Tensor};

use crate::mlp::project;
use crate::norm::RmsNorm;
use crate::rope::{float_dtype, RopeTables};

#[derive(Module, Debug)]
pub struct Attention {
    /// `[H·D, hidden]`
    pub q_proj: Param<Tensor<2>>,
    /// `[K·D, hidden]`
    pub k_proj: Param<Tensor<2>>,
    /// `[K·D, hidden]`
    pub v_proj: Param<Tensor<2>>,
    /// `[hidden, H·D]`
    pub o_proj: Param<Tensor<2>>,
    /// One `[D]` weight shared by all query heads, applied before RoPE.
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// Keys and values of the tokens already seen, after RoPE, `[B, K, past, D]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub keys: Option<Tensor<4>>,
    pub values: Option<Tensor<4>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Attention {
    /// # Shapes
    /// - x: `[B, S, hidden]` → `[B, S, hidden]`
    /// - mask: `[B, 1, S, past + S]`, true where attention is not allowed
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        mask: &Tensor<4, Bool>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let (q, mut k, mut v) = self.qkv(x, rope);
        if let Some(cache) = cache {
            if let (Some(pk), Some(pv)) = (cache.keys.take(), cache.values.take()) {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            cache.keys = Some(k.clone());
            cache.values = Some(v.clone());
        }
        self.output(attend(q, k, v, mask))
    }

    /// Queries, keys and values after QK-norm and RoPE.
    ///
    /// # Shapes
    /// - x: `[B, S, hidden]` → q `[B, H, S, D]`, k and v `[B, K, S, D]`
    pub fn qkv(&self, x: Tensor<3>, rope: &RopeTables) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [b, s, _] = x.dims();
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = project(x.clone(), &self.q_proj).reshape([b, s, h, d]);
        let k = project(x.clone(), &self.k_proj).reshape([b, s, kv, d]);
        let v = project(x, &self.v_proj).reshape([b, s, kv, d]);
        let q = rope.apply(self.q_norm.forward(q).swap_dims(1, 2));
        let k = rope.apply(self.k_norm.forward(k).swap_dims(1, 2));
        (q, k, v.swap_dims(1, 2))
    }

    /// The output projection of the heads' results.
    ///
    /// # Shapes
    /// - out: `[B, H, S, D]` → `[B, S, hidden]`
    pub fn output(&self, out: Tensor<4>) -> Tensor<3> {
        let [b, h, s, d] = out.dims();
        project(out.swap_dims(1, 2).reshape([b, s, h * d]), &self.o_proj)
    }
}

/// Softmax attention, `softmax_f32(q·kᵀ/√D + mask)·v`, with GQA (query head `h` reads key
/// head `h / (H/K)`). Materialises the `[B, H, Sq, Sk]` scores: correct at any length, memory
/// quadratic in it.
///
/// # Shapes
/// - q: `[B, H, Sq, D]`, k and v: `[B, K, Sk, D]`, mask: `[B, 1, Sq, Sk]` → `[B, H, Sq, D]`
pub fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: &Tensor<4, Bool>) -> Tensor<4> {
    let [b, h, sq, d] = q.dims();
    let [_, kv, sk, _] = k.dims();
    let dtype = float_dtype(q.dtype());
    let k = repeat_kv(k, h / kv);
    let v = repeat_kv(v, h / kv);
    let scores = q
        .cast(FloatDType::F32)
        .matmul(k.cast(FloatDType::F32).swap_dims(2, 3))
        .mul_scalar(1.0 / (d as f64).sqrt());
    // transformers fills with finfo.min rather than -inf, so a fully masked row stays finite.
    let scores = scores.mask_fill(mask.clone().expand([b, h, sq, sk]), f32::MIN);
    softmax(scores, 3).cast(dtype).matmul(v)
}

/// `[B, K, S, D]` → `[B, K·n, S, D]`, each key head repeated in a contiguous block.
fn repeat_kv(x: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return x;
    }
    let [b, kv, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, n, s, d])
        .reshape([b, kv * n, s, d])
}
