//! Time and throughput of the CPU attention kernel (`agentcpt_model::flash_cpu`) on one
//! layer: forward, then backward, causal, one sequence. Prints one JSON line.
//!
//! ```sh
//! cargo bench --profile dev -p agentcpt-model --bench attention_cpu -- \
//!     --seq-len 8192 [--heads 8] [--kv-heads 2] [--head-dim 64]
//! ```
//! FLOPs count the causal half of the score matrix: forward 2 products (q·kᵀ, p·v), backward
//! 5 (q·kᵀ again, dO·vᵀ, pᵀ·dO, dSᵀ·q, dS·k), 2 FLOPs per multiply-add.

use std::time::Instant;

use agentcpt_model::flash_cpu::{backward, backward_parts, forward, Dims};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
        })
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dims = Dims {
        b: 1,
        h: arg(&args, "--heads", 8),
        kv: arg(&args, "--kv-heads", 2),
        s: arg(&args, "--seq-len", 8192),
        d: arg(&args, "--head-dim", 64),
    };
    let q = values(dims.h * dims.s * dims.d, 1);
    let k = values(dims.kv * dims.s * dims.d, 2);
    let v = values(dims.kv * dims.s * dims.d, 3);
    let dout = values(q.len(), 4);
    let starts = vec![0; dims.s];
    let product = dims.h as f64 * (dims.s as f64).powi(2) / 2.0 * dims.d as f64 * 2.0;

    let start = Instant::now();
    let (out, lse) = forward(&q, &k, &v, dims, &starts);
    let forward_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let parts = backward_parts(&dims);
    let grads = backward(&q, &k, &v, &out, &lse, &dout, dims, &starts, parts);
    let backward_s = start.elapsed().as_secs_f64();
    assert!(grads.0.iter().all(|x| x.is_finite()), "non-finite dq");
    println!(
        "{}",
        serde_json::json!({
            "kernel": "flash_cpu",
            "seq_len": dims.s,
            "heads": dims.h,
            "kv_heads": dims.kv,
            "head_dim": dims.d,
            "threads": rayon::current_num_threads(),
            "backward_parts": parts,
            "forward_s": forward_s,
            "backward_s": backward_s,
            "forward_gflops": 2.0 * product / forward_s / 1e9,
            "backward_gflops": 5.0 * product / backward_s / 1e9,
        })
    );
}
