//! Where parameter values come from while a model is built: a checkpoint or random init.
//! Both go through the same named, shape-checked calls, so a model cannot be built from a
//! checkpoint that misses, mis-shapes or adds a tensor.

use burn::module::Param;
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use super::CheckpointReader;
use crate::error::Result;

/// How a parameter is initialised when it is not loaded.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// `N(0, initializer_range)`: linear, embedding, router and expert weights.
    Normal,
    /// 1: RMSNorm weights.
    Ones,
}

pub enum ParamSource {
    /// Fresh weights, `N(0, std)` for matrices (transformers' `initializer_range`).
    Random {
        std: f64,
    },
    Checkpoint(Box<CheckpointReader>),
}

impl ParamSource {
    pub fn checkpoint(reader: CheckpointReader) -> Self {
        ParamSource::Checkpoint(Box::new(reader))
    }

    /// The parameter `name` of shape `shape`, on `device`.
    pub fn param<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        init: Init,
        device: &Device,
    ) -> Result<Param<Tensor<D>>> {
        let tensor = match self {
            ParamSource::Random { std } => match init {
                Init::Normal => Tensor::random(shape, Distribution::Normal(0.0, *std), device),
                Init::Ones => Tensor::ones(shape, device),
            },
            ParamSource::Checkpoint(reader) => {
                let values = reader.read_f32(name, &shape)?;
                Tensor::from_data(TensorData::new(values, shape), device)
            }
        };
        Ok(Param::from_tensor(tensor))
    }

    /// Consumes a checkpoint tensor the model does not use (a tied model's `lm_head.weight`).
    pub fn skip(&mut self, name: &str) {
        if let ParamSource::Checkpoint(reader) = self {
            reader.skip(name);
        }
    }

    /// Errors if the checkpoint holds tensors the model did not read.
    pub fn finish(self) -> Result<()> {
        match self {
            ParamSource::Random { .. } => Ok(()),
            ParamSource::Checkpoint(reader) => reader.finish(),
        }
    }
}
