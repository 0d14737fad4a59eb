//! agentcpt: agentic continual pre-training of Qwen3 models. This crate holds the command
//! line; the model lives in `agentcpt-model`, the data in `agentcpt-datasets`.

pub mod allocator;
pub mod cli;
pub mod commands;
pub mod device;
pub mod local_llm;
pub mod recipe;
pub mod report;
pub mod train;
