#!/usr/bin/env bash
# Data-pipeline throughput, side by side on this machine: agentcpt's Rust loader
# (datasets/benches/pipeline.rs) and the Python baseline (HF datasets load_dataset("parquet")
# + map(batched=True, num_proc=N) with the same tokenizer.json + a greedy concat packer,
# scripts/bench_data_pipeline_baseline.py), on the same generated text shards, packing rows
# of 4096 tokens. Prints tokens/s of both and their ratio (the issue's goal: Rust >= 2x),
# and the pre-tokenized input_ids throughput (goal >= 20M tokens/s).
#
#   scripts/bench-data-pipeline.sh
#
# Environment:
#   PYTHON           interpreter with datasets, transformers, tokenizers, pyarrow
#                    (default: python3)
#   DATA_DIR         where the shards are generated/reused (default: $TMPDIR/agentcpt-bench-pipeline)
#   TEXT_MB          MB of text to generate (default 32)
#   NUM_PROC         the baseline's map num_proc (default 2)
#   BASELINE_IMPLS   baseline tokenizer front-ends, any of "transformers tokenizers"
#                    (default: both; transformers = AutoTokenizer.__call__, the usual recipe)
#   RUST_ONLY=1      skip the Python baseline
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
DATA_DIR="${DATA_DIR:-${TMPDIR:-/tmp}/agentcpt-bench-pipeline}"
TEXT_MB="${TEXT_MB:-32}"
NUM_PROC="${NUM_PROC:-2}"
BASELINE_IMPLS="${BASELINE_IMPLS:-transformers tokenizers}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

bash scripts/fetch-qwen-tokenizer.sh >/dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -g | awk '/Mem:/ {print $2}') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== Rust: cargo bench -p agentcpt-datasets --bench pipeline"
cargo bench -q -p agentcpt-datasets --bench pipeline -- \
  --data-dir "$DATA_DIR" --text-mb "$TEXT_MB" --json "$OUT/rust.json"

if [[ "${RUST_ONLY:-0}" != 1 ]]; then
  for impl in $BASELINE_IMPLS; do
    echo "== Python baseline ($impl, num_proc=$NUM_PROC)"
    "$PYTHON" scripts/bench_data_pipeline_baseline.py --data-dir "$DATA_DIR/text" \
      --num-proc "$NUM_PROC" --impl "$impl" --json "$OUT/python-$impl.json"
  done
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PYTHON" - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rust = {r["name"]: r for r in json.load(open(os.path.join(out, "rust.json")))["results"]}
py = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "python-*.json")))]
print("\n== summary (tokens/s; packed tokens incl. separators, rows of 4096)")
def line(kind, name, r):
    cpu = r.get("cpu_seconds") or float("nan")
    print(f"  {kind:<7} {name:<44} {r['tokens_per_s']:>14,.0f}   "
          f"({r['tokens'] / cpu:>12,.0f} per cpu-s, {cpu / r['seconds']:.2f} cores)")
for name, r in rust.items():
    line("rust", name, r)
for p in py:
    line("python", p["name"], p)
text = [r for n, r in rust.items() if n.startswith("text -> loader (concat)")]
if text and py:
    for p in py:
        ratio = text[0]["tokens_per_s"] / p["tokens_per_s"]
        print(f"  ratio   rust text->loader (concat) / {p['name']}: {ratio:.2f}x "
              f"({'meets' if ratio >= 2 else 'below'} the 2x goal)")
ids = [r for n, r in rust.items() if n.startswith("input_ids -> loader")]
for r in ids:
    ok = r["tokens_per_s"] >= 20e6
    print(f"  goal    {r['name']}: {r['tokens_per_s'] / 1e6:.1f}M tokens/s "
          f"({'meets' if ok else 'below'} the 20M goal)")
PY
