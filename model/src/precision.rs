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
        let value = if self.detach { value.detach() } else { value };
        let value = if value.dtype() == self.dtype.into() {
            value
        } else {
            value.cast(self.dtype)
        };
        Param::initialized(param.id, value)
    }
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
