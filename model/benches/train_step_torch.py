#!/usr/bin/env python3
"""PyTorch + transformers baseline for model/benches/train_step.rs and benches/long_context.rs:
tokens/s of the same small Qwen3-MoE (hidden 512, 4 layers, 8 query / 2 KV heads of 64,
16 experts top-4, vocab 32000), f32, on the CPU with as many threads as the Rust run, and
the process's peak RSS. `--adamw` adds the optimizer step (a full training step, as
benches/long_context.rs measures); run one length per process for a per-length peak.
Needs tests/fixtures/requirements.txt.

    python model/benches/train_step_torch.py [--threads 2] [--adamw] [--steps 3]
        [--model small-moe|qwen3-0.6b|qwen3-30b-a3b-4l] [--device cpu|cuda] [--dtype f32|bf16]
        [SEQ_LEN ...]

The models are benches/long_context.rs's. On CUDA the peak is torch.cuda.max_memory_allocated.
"""
import argparse
import json
import resource
import sys
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

COMMON = dict(rms_norm_eps=1e-6, rope_theta=1e6, use_cache=False)
MODELS = {
    "small-moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM, dict(
        vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, head_dim=64, num_experts=16,
        num_experts_per_tok=4, moe_intermediate_size=256, norm_topk_prob=True,
        router_aux_loss_coef=0.001, output_router_logits=True)),
    "qwen3-0.6b": (Qwen3Config, Qwen3ForCausalLM, dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)),
    "qwen3-30b-a3b-4l": (Qwen3MoeConfig, Qwen3MoeForCausalLM, dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=4,
        num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
        num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True,
        router_aux_loss_coef=0.001, output_router_logits=True)),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("seq_lens", nargs="*", type=int, default=[512, 1024, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--adamw", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--model", choices=sorted(MODELS), default="small-moe")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config_class, model_class, fields = MODELS[args.model]
    config = config_class(**fields, **COMMON,
                          max_position_embeddings=max([40960, *args.seq_lens]))
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = model_class(config).to(device=args.device, dtype=dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if args.adamw else None
    print(f"{args.model} on torch {torch.__version__} ({model.config._attn_implementation}), "
          f"{args.device} {args.dtype}, {args.threads} threads", file=sys.stderr)
    for seq in args.seq_lens:
        ids = (torch.arange(seq) * 7919 % 32000).unsqueeze(0).to(args.device)

        def step():
            model.zero_grad(set_to_none=True)
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            if optimizer is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()

        for _ in range(args.warmup):
            step()
        steps = args.steps
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        secs = time.perf_counter() - start
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({
            "impl": f"torch {torch.__version__} ({model.config._attn_implementation})",
            "model": args.model, "device": args.device, "dtype": args.dtype,
            "seq_len": seq, "threads": args.threads, "adamw": args.adamw,
            "seconds_per_step": secs / steps, "tokens_per_s": seq * steps / secs,
            "peak_rss_bytes": peak,
        }))


if __name__ == "__main__":
    main()
