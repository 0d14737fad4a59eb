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
#   REPEAT           rounds of (Rust text pipeline, Python baselines), medians reported (default 3)
#   RUST_ONLY=1      skip the Python baseline
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
DATA_DIR="${DATA_DIR:-${TMPDIR:-/tmp}/agentcpt-bench-pipeline}"
TEXT_MB="${TEXT_MB:-32}"
NUM_PROC="${NUM_PROC:-2}"
BASELINE_IMPLS="${BASELINE_IMPLS:-transformers tokenizers}"
REPEAT="${REPEAT:-3}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

bash scripts/fetch-qwen-tokenizer.sh >/dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -g | awk '/Mem:/ {print $2}') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The diagnostics (tokenizer alone, pre-tokenized streaming) once; then the text pipelines,
# Rust and Python alternately, REPEAT times, so that both see the same machine; the summary
# takes medians.
echo "== Rust: cargo bench -p agentcpt-datasets --bench pipeline (tokenizer alone, input_ids)"
cargo bench -q -p agentcpt-datasets --bench pipeline -- --only tokenize,ids \
  --data-dir "$DATA_DIR" --text-mb "$TEXT_MB" --json "$OUT/rust-diag.json"
for rep in $(seq 1 "$REPEAT"); do
  echo "== round $rep/$REPEAT: Rust text -> loader"
  cargo bench -q -p agentcpt-datasets --bench pipeline -- --only text \
    --data-dir "$DATA_DIR" --text-mb "$TEXT_MB" --json "$OUT/rust-text-$rep.json"
  if [[ "${RUST_ONLY:-0}" != 1 ]]; then
    for impl in $BASELINE_IMPLS; do
      echo "== round $rep/$REPEAT: Python baseline ($impl, num_proc=$NUM_PROC)"
      "$PYTHON" scripts/bench_data_pipeline_baseline.py --data-dir "$DATA_DIR/text" \
        --num-proc "$NUM_PROC" --impl "$impl" --json "$OUT/python-$impl-$rep.json"
    done
  fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PYTHON" - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}  # (kind, name) -> [result, ...]
for path in sorted(glob.glob(os.path.join(out, "rust-*.json"))):
    for r in json.load(open(path))["results"]:
        runs.setdefault(("rust", r["name"]), []).append(r)
for path in sorted(glob.glob(os.path.join(out, "python-*.json"))):
    r = json.load(open(path))
    runs.setdefault(("python", r["name"]), []).append(r)

def median(kind, name):
    return statistics.median(r["tokens_per_s"] for r in runs[(kind, name)])

print("\n== summary (tokens/s, median of the runs; packed tokens incl. separators, rows of 4096)")
for (kind, name), rs in runs.items():
    tps = [r["tokens_per_s"] for r in rs]
    per_cpu = statistics.median(r["tokens"] / r["cpu_seconds"] for r in rs)
    cores = statistics.median(r["cpu_seconds"] / r["seconds"] for r in rs)
    spread = f"[{min(tps):,.0f} .. {max(tps):,.0f}]" if len(rs) > 1 else ""
    print(f"  {kind:<7} {name:<40} {median(kind, name):>13,.0f}  {spread:<26} "
          f"{per_cpu:>9,.0f}/cpu-s  {cores:.2f} cores  ({len(rs)} run{'s' if len(rs) > 1 else ''})")
# Ratios within each round (Rust and Python ran back to back), then their median.
rounds = {}  # rep -> {(kind, name): tokens_per_s}
for path in glob.glob(os.path.join(out, "rust-text-*.json")):
    rep = path.rsplit("-", 1)[1].split(".")[0]
    for r in json.load(open(path))["results"]:
        rounds.setdefault(rep, {})[("rust", r["name"])] = r["tokens_per_s"]
for path in glob.glob(os.path.join(out, "python-*-*.json")):
    rep = path.rsplit("-", 1)[1].split(".")[0]
    r = json.load(open(path))
    rounds.setdefault(rep, {})[("python", r["name"])] = r["tokens_per_s"]
py = [name for kind, name in runs if kind == "python"]
for rust_name in [n for k, n in runs if k == "rust" and n.startswith("text -> loader")]:
    for p in py:
        per_round = [v[("rust", rust_name)] / v[("python", p)] for _, v in sorted(rounds.items())
                     if ("rust", rust_name) in v and ("python", p) in v]
        ratio = statistics.median(per_round)
        print(f"  ratio   {rust_name} / {p}: {ratio:.2f}x "
              f"(per round: {', '.join(f'{x:.2f}' for x in per_round)}; "
              f"{'meets' if ratio >= 2 else 'below'} the 2x goal)")
for name in [n for k, n in runs if k == "rust" and n.startswith("input_ids -> loader")]:
    v = median("rust", name)
    print(f"  goal    {name}: {v / 1e6:.1f}M tokens/s ({'meets' if v >= 20e6 else 'below'} the 20M goal)")
PY
