//! RMSNorm as transformers computes it: statistics in f32, cast back, then the weight.

use burn::module::{Module, Param};
use burn::tensor::{FloatDType, Tensor};

use crate::rope::float_dtype;

#[derive(Module, Debug)]
pub struct RmsNorm {
    /// `[dim]`, used as `w` (not `1 + w`).
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Param<Tensor<1>>, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// `w ⊙ cast(x · rsqrt(mean(x²) + eps))` over the last dimension.
    ///
    /// # Shapes
    /// - x: `[..., dim]` → `[..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = float_dtype(x.dtype());
        let x32 = x.cast(FloatDType::F32);
        let inv_rms = x32
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt()
            .recip();
        let normed = x32.mul(inv_rms).cast(dtype);
        let dim = self.weight.dims()[0];
        let mut shape = [1; D];
        shape[D - 1] = dim;
        normed.mul(self.weight.val().reshape(shape))
    }
}
