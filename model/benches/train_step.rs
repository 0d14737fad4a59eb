//! Forward + backward throughput of a small Qwen3-MoE on the CPU (flex), for comparison
//! with PyTorch. Run: `cargo bench -p agentcpt-model --bench train_step [-- SEQ_LEN…]`.
//! Prints one line per sequence length: tokens/s over timed steps after one warm-up step.

use std::time::Instant;

use agentcpt_model::burn::tensor::{Device, Int, Tensor, TensorData};
use agentcpt_model::{Qwen3, Qwen3Config, SequenceLayout};
use serde_json::json;

fn config() -> Qwen3Config {
    let cfg = json!({
        "model_type": "qwen3_moe", "vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536,
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": 32768,
        "num_experts": 16, "num_experts_per_tok": 4, "moe_intermediate_size": 256,
        "norm_topk_prob": true, "router_aux_loss_coef": 0.001
    });
    Qwen3Config::from_json(cfg, std::path::Path::new("bench config")).expect("valid config")
}

fn main() {
    let seq_lens: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seq_lens = if seq_lens.is_empty() {
        vec![512, 1024, 2048]
    } else {
        seq_lens
    };
    let device = Device::flex().autodiff();
    device.seed(0);
    let model = Qwen3::random(config(), &device);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("small Qwen3-MoE (hidden 512, 4 layers, 16 experts top-4, vocab 32000) on flex, {threads} threads");
    for seq in seq_lens {
        let ids: Vec<i64> = (0..seq as i64).map(|i| (i * 7919) % 32000).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, seq]), &device);
        let layout = SequenceLayout::contiguous(1, seq, 0, &device);
        let step = || {
            let out = model.forward(ids.clone(), &layout);
            let loss = model.loss(&out, ids.clone(), Some(0.001));
            let grads = loss.total.backward();
            let _ = model
                .embed_tokens
                .val()
                .grad(&grads)
                .expect("gradient")
                .into_data();
        };
        step();
        let steps = 3;
        let start = Instant::now();
        for _ in 0..steps {
            step();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "seq_len {seq:>6}: {:>9.0} tokens/s forward+backward ({:.3} s/step)",
            (seq * steps) as f64 / secs,
            secs / steps as f64
        );
    }
}
