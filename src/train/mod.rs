//! Training components: the optimiser and the learning-rate schedule.

pub mod optimizer;
pub mod schedule;
