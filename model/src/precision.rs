//! Copies of a module's parameters in a compute dtype. Mixed-precision training keeps the f32
//! weights as the master copy and runs forward and backward on such a copy.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{FloatDType, Tensor};

struct Cast {
    dtype: FloatDType,
    detach: bool,
}

impl ModuleMapper for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let value = param.val();
        let value = if self.detach { frozen(value) } else { value };
        let value = if value.dtype() == self.dtype.into() {
            value
        } else {
            value.cast(self.dtype)
        };
        Param::initialized(param.id, value)
    }
}

/// `value` cut from the graph, so that ops on it record nothing. `detach` alone keeps a
/// parameter's `require_grad`: every op on the copy would still be recorded, and the graph
/// would keep the activations alive.
pub fn frozen<const D: usize>(value: Tensor<D>) -> Tensor<D> {
    value.detach().set_require_grad(false)
}

/// `module` with every float parameter cast to `dtype`. Under autodiff the casts are part of
/// the graph, so gradients reach the original parameters in their own dtype. The casts are
/// consumed by one backward pass: take a fresh copy for each.
pub fn compute_copy<M: Module>(module: &M, dtype: FloatDType) -> M {
    module.clone().map(&mut Cast {
        dtype,
        detach: false,
    })
}

/// Like [`compute_copy`] but cut from the graph: a forward on it records nothing for
/// autodiff, so it keeps no activations alive.
pub fn frozen_copy<M: Module>(module: &M, dtype: FloatDType) -> M {
    module.clone().map(&mut Cast {
        dtype,
        detach: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::RmsNorm;
    use burn::tensor::Device;

    /// The frozen copy's parameters are plain values, so a forward on them records nothing and
    /// keeps nothing alive (`detach` alone leaves a parameter requiring grad); the compute
    /// copy's still lead back to the trainable parameters.
    #[test]
    fn frozen_copies_are_cut_from_the_graph() {
        let device = Device::flex().autodiff();
        let norm = RmsNorm::new(Param::from_tensor(Tensor::ones([4], &device)), 1e-6);
        for dtype in [FloatDType::F32, FloatDType::BF16] {
            let frozen = frozen_copy(&norm, dtype);
            assert!(!frozen.weight.val().is_require_grad(), "{dtype:?}");
            let x = Tensor::<2>::ones([2, 4], &device).cast(dtype);
            let computed = compute_copy(&norm, dtype).forward(x).sum().backward();
            assert!(norm.weight.grad(&computed).is_some(), "{dtype:?}");
        }
    }
}
