//! One module per top-level command.

pub mod generate;
pub mod model;
