//! agentcpt-datasets: the data pipeline of the Agentic CPT trainer, without burn.
//!
//! Samples live in Parquet shards with one schema for every kind ([`schema`]); a
//! [`loader::Loader`] streams them ([`reader`]), renders ChatML conversations with the
//! Qwen3 template ([`chat`]), tokenizes ([`tokenizer`]), mixes sources by token weight
//! ([`mixture`]) and packs fixed-length rows with document boundaries ([`packing`]). Its
//! [`loader::LoaderState`] makes resume exact. [`synth`] writes FAS and HAS training data
//! with a language model. See `datasets/README.md`.

mod bpe;
pub mod chat;
pub mod error;
pub mod json;
pub mod loader;
pub mod mixture;
pub mod packing;
mod qwen2_split;
pub mod reader;
pub mod render;
pub mod rng;
pub mod schema;
pub mod synth;
pub mod tokenizer;

#[cfg(test)]
pub(crate) mod test_util;

pub use chat::{parse_conversation, render, render_json, ChatOptions, Conversation, Message, Role};
pub use error::{ChatError, DataError, Result};
pub use loader::{Loader, LoaderConfig, LoaderState, SourceConfig, SourceReport, SourceStats};
pub use mixture::{Mixture, OnExhausted};
pub use packing::{Overlong, PackMode, PackedSequence, Packer, PackingConfig, Segment};
pub use reader::{expand_globs, read_all, DataParallel, DocRef, OnBad, ParquetShard, ShardUnit};
pub use render::training_text;
pub use schema::{
    sample_schema, write_shard, Compression, Content, Sample, ShardWriter, WriterOptions,
};
pub use tokenizer::{
    default_qwen3_tokenizer_path, ByteEncoder, Encoder, HfTokenizer, QWEN3_EOT_ID,
};
