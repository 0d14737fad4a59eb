#!/usr/bin/env bash
# Peak RSS and tokens/s of one full training step (forward, backward, AdamW) of the small
# Qwen3-MoE (hidden 512, 4 layers, 8/2 heads of 64, 16 experts top-4, vocab 32000) on the
# CPU, one process per length: agentcpt (benches/long_context.rs: layer recomputation,
# chunked loss head, blockwise attention) and, up to TORCH_MAX, PyTorch + transformers
# (SDPA) with the same threads (model/benches/train_step_torch.py --adamw).
#
#   scripts/bench-long-context.sh [SEQ_LEN ...]      (default: 4096 8192 16384 32768)
#
# Environment: PYTHON (interpreter with torch + transformers; unset: agentcpt only),
# TORCH_MAX (longest length given to PyTorch, default 16384), THREADS (default: nproc),
# BENCH_ARGS (extra flags for the Rust bench, e.g. "--attention-block 0").
set -euo pipefail
cd "$(dirname "$0")/.."
LENGTHS=("${@:-4096 8192 16384 32768}")
THREADS="${THREADS:-$(nproc)}"
TORCH_MAX="${TORCH_MAX:-16384}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -g | awk '/Mem:/ {print $2}') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --profile dev --bench long_context --no-run -q
for seq in ${LENGTHS[*]}; do
  RAYON_NUM_THREADS="$THREADS" cargo bench --profile dev -q --bench long_context -- \
    --seq-len "$seq" ${BENCH_ARGS:-}
  if [[ -n "${PYTHON:-}" && "$seq" -le "$TORCH_MAX" ]]; then
    "$PYTHON" model/benches/train_step_torch.py --adamw --threads "$THREADS" --warmup 0 \
      --steps 1 "$seq"
  fi
done
