#!/usr/bin/env python3
"""Python baseline of the data-pipeline benchmark (datasets/benches/pipeline.rs).

The usual Hugging Face recipe on the same text shards and the same tokenizer.json:

    load_dataset("parquet", data_files=shards)                     # Parquet -> Arrow cache
    .map(tokenize, batched=True, num_proc=2, remove_columns=...)   # AutoTokenizer
    greedy concat packer: doc ids + <|endoftext|>, cut every seq_len tokens

Tokens counted as in the Rust bench: document tokens plus one separator per document (the
last partial row is counted, as the Rust loader pads and emits it). Every run starts from
an empty, temporary HF cache (no cached Arrow files or map results are reused).

    python3 scripts/bench_data_pipeline_baseline.py \\
        --data-dir /tmp/agentcpt-bench-pipeline/text [--tokenizer DIR_OR_JSON] \\
        [--num-proc 2] [--batch-size 1000] [--seq-len 4096] [--impl transformers|tokenizers] \\
        [--json OUT]

`--impl tokenizers` tokenizes with `tokenizers.Tokenizer.encode_batch_fast` instead of
`AutoTokenizer.__call__` (no offsets, no BatchEncoding): a stronger baseline.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

EOT_ID = 151643  # <|endoftext|>


def default_tokenizer_dir() -> Path:
    cache = os.environ.get("AGENTCPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agentcpt")
    return Path(cache) / "qwen3-tokenizer"


def make_tokenize(impl: str, tok_dir: Path):
    """A batched map function text -> input_ids (no special tokens added)."""
    if impl == "transformers":
        from transformers import AutoTokenizer
        from transformers.utils import logging

        logging.set_verbosity_error()  # "sequence length is longer than ..." warnings
        tok = AutoTokenizer.from_pretrained(str(tok_dir))

        def tokenize(batch):
            return {"input_ids": tok(batch["text"], add_special_tokens=False)["input_ids"]}
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))

        def tokenize(batch):
            return {"input_ids": [e.ids for e in tok.encode_batch_fast(batch["text"], add_special_tokens=False)]}

    return tokenize


def cpu_secs() -> float:
    """CPU time of this process and of its reaped children (the map workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pack_concat(ds, seq_len: int, batch_size: int):
    """Greedy concatenation: every document + EOT appended to a buffer, cut every seq_len."""
    buf: list[int] = []
    rows = 0
    tokens = 0
    for batch in ds.iter(batch_size=batch_size):
        for ids in batch["input_ids"]:
            buf.extend(ids)
            buf.append(EOT_ID)
            tokens += len(ids) + 1
            while len(buf) >= seq_len:
                row = buf[:seq_len]
                del buf[:seq_len]
                rows += 1
                assert len(row) == seq_len
    if buf:
        rows += 1  # the last row, padded (as the Rust loader does with drop_last = false)
    return rows, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="directory of text shards")
    ap.add_argument("--tokenizer", type=Path, default=default_tokenizer_dir(),
                    help="directory with tokenizer.json (+ tokenizer_config.json)")
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--impl", choices=["transformers", "tokenizers"], default="transformers")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tok_dir = args.tokenizer.parent if args.tokenizer.suffix == ".json" else args.tokenizer

    import datasets
    from datasets import load_dataset

    files = sorted(glob.glob(str(args.data_dir / "*.parquet")))
    if not files:
        print(f"no *.parquet in {args.data_dir}", file=sys.stderr)
        return 2
    cache = Path(tempfile.mkdtemp(prefix="agentcpt-hf-bench-"))
    try:
        c0 = cpu_secs()
        t0 = time.perf_counter()
        ds = load_dataset("parquet", data_files=files, split="train", cache_dir=str(cache))
        t1 = time.perf_counter()
        tokenize = make_tokenize(args.impl, tok_dir)
        ds = ds.map(tokenize, batched=True, batch_size=args.batch_size, num_proc=args.num_proc,
                    remove_columns=ds.column_names, load_from_cache_file=False)
        t2 = time.perf_counter()
        rows, tokens = pack_concat(ds, args.seq_len, args.batch_size)
        t3 = time.perf_counter()
        cpu = cpu_secs() - c0
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    total = t3 - t0
    name = f"python baseline ({args.impl}, num_proc={args.num_proc})"
    print(f"{name}: {len(files)} shards, {rows} rows of {args.seq_len}, {tokens} tokens")
    print(f"  load_dataset   {t1 - t0:8.2f} s")
    print(f"  map(tokenize)  {t2 - t1:8.2f} s  ({tokens / (t2 - t1):,.0f} tokens/s)")
    print(f"  pack (concat)  {t3 - t2:8.2f} s")
    print(f"  total          {total:8.2f} s  {tokens / total:,.0f} tokens/s  "
          f"(cpu {cpu:.2f} s with the map workers, {cpu / total:.2f} cores)")
    if args.json:
        args.json.write_text(json.dumps({
            "name": name,
            "datasets": datasets.__version__,
            "cores": os.cpu_count(),
            "tokens": tokens,
            "rows": rows,
            "seconds": total,
            "cpu_seconds": cpu,
            "tokens_per_s": tokens / total,
            "phases": {"load": t1 - t0, "map": t2 - t1, "pack": t3 - t2},
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
