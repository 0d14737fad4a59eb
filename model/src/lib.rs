//! Qwen3 dense and Qwen3-MoE causal language models as burn modules, at numerical parity
//! with Hugging Face transformers, with YaRN, packed-document attention, Hugging Face
//! checkpoint I/O and KV-cache generation.

pub mod attention;
pub mod config;
pub mod error;
pub mod flash;
pub mod flash_cpu;
#[cfg(feature = "cube")]
pub mod flash_cube;
pub mod generate;
pub mod info;
pub mod layout;
pub mod loss;
pub mod mlp;
pub mod model;
pub mod moe;
pub mod norm;
pub mod precision;
pub mod rope;
pub mod step;
pub mod weights;

pub use config::{Architecture, MoeConfig, Qwen3Config};
pub use error::{ModelError, Result};
pub use layout::SequenceLayout;
pub use model::{ForwardOutput, Qwen3};
pub use rope::{RopeScaling, YarnScaling};

/// burn, re-exported so that dependants use the same version.
pub use burn;
