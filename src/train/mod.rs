//! Training: the loop, its optimiser and schedule, checkpoints and metrics.

pub mod checkpoint;
pub mod metrics;
pub mod optimizer;
pub mod schedule;
pub mod tensorboard;
pub mod trainer;
