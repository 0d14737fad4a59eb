//! Integration tests, one binary: parity with transformers on recorded fixtures, checkpoint
//! I/O, and the command line as users run it.

mod cli;
mod common;
mod data;
mod parity;
mod synth;
mod train;
mod weights;
