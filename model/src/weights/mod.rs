//! Hugging Face checkpoints: reading sharded safetensors into parameters, random
//! initialisation through the same path, and saving back in the same layout.

mod reader;
mod source;
mod writer;

pub use reader::{read_safetensors, CheckpointReader, TensorMap};
pub use source::{Init, ParamSource};
pub use writer::{save_pretrained, write_safetensors, SaveDType, SaveOptions};

use burn::tensor::Gradients;
use burn::tensor::Tensor;

/// A parameter (or its gradient) under its Hugging Face name, in Hugging Face layout.
#[derive(Debug, Clone)]
pub enum NamedTensor {
    Vector(String, Tensor<1>),
    Matrix(String, Tensor<2>),
}

impl NamedTensor {
    pub fn name(&self) -> &str {
        match self {
            NamedTensor::Vector(n, _) | NamedTensor::Matrix(n, _) => n,
        }
    }

    pub fn shape(&self) -> Vec<usize> {
        match self {
            NamedTensor::Vector(_, t) => t.dims().to_vec(),
            NamedTensor::Matrix(_, t) => t.dims().to_vec(),
        }
    }

    /// The gradient of this parameter, under the same name (`None` if it got none).
    pub fn grad(&self, grads: &Gradients) -> Option<NamedTensor> {
        match self {
            NamedTensor::Vector(n, t) => t.grad(grads).map(|g| NamedTensor::Vector(n.clone(), g)),
            NamedTensor::Matrix(n, t) => t.grad(grads).map(|g| NamedTensor::Matrix(n.clone(), g)),
        }
    }

    /// The values as f32, row-major.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let data = match self {
            NamedTensor::Vector(_, t) => t.to_data(),
            NamedTensor::Matrix(_, t) => t.to_data(),
        };
        data.convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32")
    }
}
