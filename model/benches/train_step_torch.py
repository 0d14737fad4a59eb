#!/usr/bin/env python3
"""PyTorch + transformers baseline for benches/train_step.rs: forward+backward tokens/s of
the same small Qwen3-MoE (hidden 512, 4 layers, 16 experts top-4, vocab 32000), f32, on
the CPU with as many threads as the Rust run. Needs tests/fixtures/requirements.txt.

    python model/benches/train_step_torch.py [--threads 2] [SEQ_LEN ...]
"""
import argparse
import time

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("seq_lens", nargs="*", type=int, default=[512, 1024, 2048])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = Qwen3MoeConfig(
        vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6,
        rope_theta=1e6, max_position_embeddings=32768, num_experts=16, num_experts_per_tok=4,
        moe_intermediate_size=256, norm_topk_prob=True, router_aux_loss_coef=0.001,
        output_router_logits=True, use_cache=False,
    )
    model = Qwen3MoeForCausalLM(config).float()
    print(f"small Qwen3-MoE on torch {torch.__version__} ({model.config._attn_implementation}), "
          f"{args.threads} threads")
    for seq in args.seq_lens:
        ids = (torch.arange(seq) * 7919 % 32000).unsqueeze(0)

        def step():
            model.zero_grad(set_to_none=True)
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()

        step()
        steps = 3
        start = time.perf_counter()
        for _ in range(steps):
            step()
        secs = time.perf_counter() - start
        print(f"seq_len {seq:>6}: {seq * steps / secs:>9.0f} tokens/s forward+backward "
              f"({secs / steps:.3f} s/step)")


if __name__ == "__main__":
    main()
