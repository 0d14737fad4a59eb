//! One module per top-level command.

pub mod data;
pub mod generate;
pub mod model;
pub mod recipe;
pub mod serve;
pub mod synth;
