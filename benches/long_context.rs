//! Peak memory and throughput of one full training step (forward, backward, AdamW) at long
//! context, on the CPU (flex): the small Qwen3-MoE of issue 5 (hidden 512, 4 layers, 8 query
//! / 2 KV heads of 64, 16 experts top-4, vocab 32000) on one sequence of `--seq-len`
//! tokens, with the trainer's step (layer recomputation, chunked loss head, blockwise
//! attention). One length per process, so that the peak RSS is that length's;
//! `scripts/bench-long-context.sh` runs the lengths and the PyTorch baseline.
//!
//! ```sh
//! cargo bench --bench long_context -- --seq-len 16384 [--recompute-every 1]
//!     [--loss-chunk 1024] [--attention-block 512] [--steps 1] [--warmup 0]
//! ```
//! `--attention-block 0` materialises the scores; `--recompute-every 0` keeps every
//! activation. Prints one JSON line.

use std::collections::BTreeMap;
use std::time::Instant;

use agentcpt::train::metrics::peak_rss_bytes;
use agentcpt::train::optimizer::{add_gradients, apply, clip_factor, global_norm, AdamW};
use agentcpt_model::burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use agentcpt_model::step::StepOptions;
use agentcpt_model::{Qwen3, Qwen3Config, SequenceLayout};
use serde_json::json;

fn config(seq_len: usize) -> Qwen3Config {
    let cfg = json!({
        "model_type": "qwen3_moe", "vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536,
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": seq_len.max(32768),
        "num_experts": 16, "num_experts_per_tok": 4, "moe_intermediate_size": 256,
        "norm_topk_prob": true, "router_aux_loss_coef": 0.001
    });
    Qwen3Config::from_json(cfg, std::path::Path::new("bench config")).expect("valid config")
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seq = arg(&args, "--seq-len", 4096);
    let recompute = arg(&args, "--recompute-every", 1);
    let loss_chunk = arg(&args, "--loss-chunk", 1024);
    let block = arg(&args, "--attention-block", 512);
    let steps = arg(&args, "--steps", 1);
    let warmup = arg(&args, "--warmup", 0);

    let device = Device::flex().autodiff();
    device.seed(0);
    let mut model = Qwen3::random(config(seq), &device);
    let mut optimizer = AdamW::new(serde_json::from_value(json!({ "lr": 1e-4 })).expect("config"));
    let ids: Vec<i64> = (0..seq as i64).map(|i| (i * 7919) % 32000).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, seq]), &device);
    let layout = SequenceLayout::contiguous(1, seq, 0, &device);
    let options = StepOptions {
        recompute_every: (recompute > 0).then_some(recompute),
        loss_chunk,
        ce_divisor: (seq - 1) as f64,
        aux_coef: Some(0.001),
        z_coef: None,
        compute_dtype: FloatDType::F32,
        attention_block: (block > 0).then_some(block),
    };
    let mut step = |model: &mut Qwen3| {
        let out = model.loss_and_grads(ids.clone(), ids.clone(), &layout, &options);
        let mut grads = BTreeMap::new();
        add_gradients(&mut grads, out.grads);
        let norm = global_norm(&grads.values().map(|(g, _)| g.clone()).collect::<Vec<_>>());
        apply(
            model,
            &mut optimizer,
            &mut grads,
            clip_factor(norm, 1.0),
            1e-4,
        );
        out.ce_sum / (seq - 1) as f64
    };
    for _ in 0..warmup {
        step(&mut model);
    }
    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = step(&mut model);
    }
    let secs = start.elapsed().as_secs_f64() / steps as f64;
    println!(
        "{}",
        json!({
            "impl": "agentcpt",
            "seq_len": seq,
            "recompute_every": recompute,
            "loss_chunk": loss_chunk,
            "attention_block": block,
            "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "seconds_per_step": secs,
            "tokens_per_s": seq as f64 / secs,
            "peak_rss_bytes": peak_rss_bytes(),
            "loss": loss,
        })
    );
}
