//! Peak memory, throughput and MFU of one full training step (forward, backward, AdamW) on
//! one sequence of `--seq-len` tokens, with the trainer's step (layer recomputation, chunked
//! loss head, blockwise attention). Models: `small-moe` (issue 5's: hidden 512, 4 layers,
//! 8 query / 2 KV heads of 64, 16 experts top-4, vocab 32000), `qwen3-0.6b` (the dense
//! Qwen3-0.6B shape) and `qwen3-30b-a3b-4l` (Qwen3-30B-A3B's shape cut to 4 layers). One
//! length per process, so that the peak RSS is that length's; `scripts/bench-long-context.sh`
//! (CPU) and `scripts/bench-gpu.sh` (CUDA) run the lengths beside PyTorch.
//!
//! ```sh
//! cargo bench --bench long_context -- --seq-len 16384 [--model small-moe] [--device cpu]
//!     [--dtype f32] [--recompute-every 1] [--loss-chunk 1024] [--attention-block 512]
//!     [--steps 1] [--warmup 0] [--peak-tflops T]
//! ```
//! `--attention-block 0` materialises the scores; `--recompute-every 0` keeps every
//! activation. Prints one JSON line; `mfu` is null unless the peak is given or the GPU is
//! recognised.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use agentcpt::device::{default_dtype, known_peak_tflops, parse_dtype, select, DeviceSpec};
use agentcpt::train::metrics::peak_rss_bytes;
use agentcpt::train::optimizer::{add_gradients, apply, clip_factor, global_norm, AdamW};
use agentcpt_model::burn::tensor::{FloatDType, Int, Tensor, TensorData};
use agentcpt_model::info::{
    training_flops_per_token, training_memory, StepMemoryOptions, FLOPS_CONVENTION,
};
use agentcpt_model::step::StepOptions;
use agentcpt_model::{Qwen3, Qwen3Config, SequenceLayout};
use serde_json::json;

/// The system allocator, counting live heap bytes and their high-water mark, so that the
/// bench can give the peak of each phase of a step (flex keeps tensors on the heap; peak RSS
/// only gives the whole process's).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static HIGH: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    HIGH.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, size) };
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(size);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the heap's high-water mark while it ran.
fn heap_peak<T>(f: impl FnOnce() -> T) -> (T, u64) {
    HIGH.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let out = f();
    (out, HIGH.load(Ordering::Relaxed) as u64)
}

fn config(model: &str, seq_len: usize) -> Qwen3Config {
    let max_pos = seq_len.max(40960);
    let cfg = match model {
        "small-moe" => json!({
            "model_type": "qwen3_moe", "vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536,
            "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
            "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": max_pos,
            "num_experts": 16, "num_experts_per_tok": 4, "moe_intermediate_size": 256,
            "norm_topk_prob": true, "router_aux_loss_coef": 0.001
        }),
        "qwen3-0.6b" => json!({
            "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
            "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
            "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": max_pos,
            "tie_word_embeddings": true
        }),
        "qwen3-30b-a3b-4l" => json!({
            "model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
            "num_hidden_layers": 4, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
            "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": max_pos,
            "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
            "norm_topk_prob": true, "router_aux_loss_coef": 0.001
        }),
        other => panic!("--model: unknown `{other}` (small-moe, qwen3-0.6b, qwen3-30b-a3b-4l)"),
    };
    Qwen3Config::from_json(cfg, std::path::Path::new(model)).expect("valid config")
}

fn text_arg<'a>(args: &'a [String], name: &str, default: &'a str) -> &'a str {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str)
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    match text_arg(args, name, "") {
        "" => default,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {v}")),
    }
}

fn main() {
    // As the agentcpt binary does (src/allocator.rs).
    agentcpt::allocator::return_freed_tensors_to_the_os();
    let args: Vec<String> = std::env::args().collect();
    let seq = arg(&args, "--seq-len", 4096);
    let recompute = arg(&args, "--recompute-every", 1);
    let loss_chunk = arg(&args, "--loss-chunk", 1024);
    let block = arg(&args, "--attention-block", 512);
    let steps = arg(&args, "--steps", 1);
    let warmup = arg(&args, "--warmup", 0);

    let model_name = text_arg(&args, "--model", "small-moe");
    let spec: DeviceSpec = text_arg(&args, "--device", "cpu")
        .parse()
        .expect("--device");
    let dtype = match text_arg(&args, "--dtype", "") {
        "" => default_dtype(&spec),
        d => parse_dtype(d).expect("--dtype"),
    };
    let peak = match text_arg(&args, "--peak-tflops", "") {
        "" => known_peak_tflops(&spec, dtype),
        p => Some(p.parse::<f64>().expect("--peak-tflops: a number")),
    };
    // Master weights in f32, compute in `dtype`, as the trainer does.
    let device = select(&spec, Some(FloatDType::F32))
        .expect("device")
        .autodiff();
    device.seed(0);
    let config = config(model_name, seq);
    let flops_per_token = training_flops_per_token(&config, seq);
    // What `agentcpt model info` and `recipe --dry-run` predict for this step, printed
    // beside the measured peak (on GPUs the peak RSS is host memory and not comparable).
    let compute_bytes = if dtype == FloatDType::F32 { 4 } else { 2 };
    let estimate = training_memory(
        &config,
        seq,
        1,
        compute_bytes,
        &StepMemoryOptions {
            recompute_every: recompute,
            loss_chunk,
            attention_block: block,
        },
    );
    let predicted = estimate.total();
    let mut model = Qwen3::random(config, &device);
    let mut optimizer = AdamW::new(serde_json::from_value(json!({ "lr": 1e-4 })).expect("config"));
    // AdamW's moments exist from the second step on. Allocating them up front (zeros, as the
    // first step would) makes a single measured step's peak the steady state's, which is
    // what the estimate predicts. The zeros are written, not calloc'ed, so that their pages
    // are resident, as real moments' are.
    let zeros = model
        .named_tensors()
        .iter()
        .flat_map(|p| {
            let n: usize = p.shape().iter().product();
            ["exp_avg", "exp_avg_sq"].map(|m| {
                let written: Vec<f32> = std::iter::repeat_n(0.0, n).collect();
                (format!("{m}.{}", p.name()), written)
            })
        })
        .collect();
    optimizer
        .load_state(0, zeros, &device.clone().without_autodiff())
        .expect("zero moments");
    let ids: Vec<i64> = (0..seq as i64).map(|i| (i * 7919) % 32000).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, seq]), &device);
    let layout = SequenceLayout::contiguous(1, seq, 0, &device);
    let options = StepOptions {
        recompute_every: (recompute > 0).then_some(recompute),
        loss_chunk,
        ce_divisor: (seq - 1) as f64,
        aux_coef: Some(0.001),
        z_coef: None,
        compute_dtype: dtype,
        attention_block: (block > 0).then_some(block),
    };
    // Heap peaks of the last step: forward and backward, then the optimizer.
    let mut peaks = (0, 0);
    let mut step = |model: &mut Qwen3| {
        let (out, passes) =
            heap_peak(|| model.loss_and_grads(ids.clone(), ids.clone(), &layout, &options));
        let ((), update) = heap_peak(|| {
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
        });
        peaks = (passes, update);
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
    let peak_rss = peak_rss_bytes();
    println!(
        "{}",
        json!({
            "impl": "agentcpt",
            "model": model_name,
            "device": format!("{spec:?}"),
            "dtype": format!("{dtype:?}"),
            "seq_len": seq,
            "recompute_every": recompute,
            "loss_chunk": loss_chunk,
            "attention_block": block,
            "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "seconds_per_step": secs,
            "tokens_per_s": seq as f64 / secs,
            "tflops": seq as f64 * flops_per_token / secs / 1e12,
            "mfu": peak.map(|p| seq as f64 * flops_per_token / secs / 1e12 / p),
            "flops_convention": FLOPS_CONVENTION,
            "peak_rss_bytes": peak_rss,
            "predicted_peak_bytes": predicted,
            "predicted_over_measured": peak_rss.map(|m| predicted as f64 / m as f64),
            "heap_peak_passes_bytes": peaks.0,
            "predicted_passes_bytes": estimate.passes(),
            "heap_peak_update_bytes": peaks.1,
            "predicted_update_bytes": estimate.update(),
            "loss": loss,
        })
    );
}
