#!/usr/bin/env bash
# GPU benchmark, ready for a CUDA machine: tokens/s, TFLOP/s and MFU of one full training
# step (forward, backward, AdamW) at 4K and 32K tokens for a Qwen3-0.6B-shaped dense model
# and a 4-layer Qwen3-30B-A3B-shaped MoE, agentcpt (bf16 compute on f32 master weights,
# layer recomputation, chunked loss, blockwise attention; benches/long_context.rs built with
# `--features cuda`) beside PyTorch + transformers (bf16, SDPA) on the same GPU. One
# process per run; peaks are host RSS for agentcpt and torch.cuda.max_memory_allocated for
# PyTorch.
#
#   PYTHON=python3 scripts/bench-gpu.sh [SEQ_LEN ...]     (default: 4096 32768)
#
# Environment: MODELS (default "qwen3-0.6b qwen3-30b-a3b-4l"), PEAK_TFLOPS (the GPU's dense
# bf16 peak when nvidia-smi's name is not recognised), BENCH_ARGS (extra Rust bench flags).
set -euo pipefail
cd "$(dirname "$0")/.."
LENGTHS=("${@:-4096 32768}")
MODELS="${MODELS:-qwen3-0.6b qwen3-30b-a3b-4l}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
PEAK=()
if [[ -n "${PEAK_TFLOPS:-}" ]]; then PEAK=(--peak-tflops "$PEAK_TFLOPS"); fi
cargo bench --profile release --features cuda --bench long_context --no-run -q
for model in $MODELS; do
  for seq in ${LENGTHS[*]}; do
    cargo bench --profile release --features cuda -q --bench long_context -- \
      --model "$model" --device cuda --dtype bf16 --seq-len "$seq" --warmup 1 --steps 3 \
      "${PEAK[@]}" ${BENCH_ARGS:-}
    if [[ -n "${PYTHON:-}" ]]; then
      "$PYTHON" model/benches/train_step_torch.py --adamw --device cuda --dtype bf16 \
        --model "$model" --warmup 1 --steps 3 "$seq" || echo "{\"impl\": \"torch\", \"model\": \"$model\", \"seq_len\": $seq, \"failed\": true}"
    fi
  done
done
