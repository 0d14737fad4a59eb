#!/usr/bin/env python3
"""Checks that agentcpt's sample shards interoperate with the Python Parquet tools.

(a) Shards written by agentcpt (`datasets/examples/write_sample_shards.rs write`: text,
    messages and input_ids rows, with and without meta, zstd/snappy/uncompressed, one and
    several row groups) are read with pyarrow, pandas, polars and HF `datasets`
    (`load_dataset("parquet", data_files=...)`); every row and column must equal what was
    written (nulls included), and the Arrow schema pyarrow sees must be the sample schema.
(b) Shards of the same rows are written by pyarrow, pandas, polars and HF `datasets`
    (`Dataset.to_parquet`), with their default settings and with common variants (large
    types, int64/uint32 ids, dictionary/categorical strings, string views, zstd, small
    row groups); each is read back with agentcpt's reader (`... read DIR`, which uses
    `agentcpt_datasets::read_all`) and every row must equal what was written. Codecs that
    agentcpt does not build (gzip, lz4, brotli: no tool's default) must be refused with an
    error naming the file; they are listed as known gaps.

Usage (from the repository root, with a venv holding pyarrow, pandas, polars, datasets):

    python3 scripts/check-parquet-interop.py [--workdir DIR] [--keep]
        [--example PATH]   # a prebuilt write_sample_shards binary (default: cargo builds it)

Prints one line per check and a summary; exits 1 on any mismatch or failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

COLUMNS = ["id", "kind", "source", "text", "messages", "input_ids", "meta"]
REPO = Path(__file__).resolve().parent.parent

# The sample schema as pyarrow spells it (datasets/src/schema.rs::sample_schema).
SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("messages", pa.string()),
        pa.field("input_ids", pa.list_(pa.field("item", pa.int32(), nullable=False))),
        pa.field("meta", pa.string()),
    ]
)


# ----------------------------------------------------------------------------- helpers


def is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return True
    except ImportError:
        pass
    return False


def norm_row(row: dict) -> dict:
    """A row as plain Python values: str / list[int] / None, exactly the seven columns."""
    out = {}
    for c in COLUMNS:
        v = row.get(c)
        if is_missing(v):
            out[c] = None
        elif c == "input_ids":
            items = list(v.tolist() if hasattr(v, "tolist") else v)
            for x in items:
                if isinstance(x, bool) or not isinstance(x, int):
                    raise TypeError(f"input_ids item {x!r} has type {type(x).__name__}")
            out[c] = items
        else:
            if isinstance(v, bytes):
                raise TypeError(f"column {c} came back as bytes")
            if not isinstance(v, str):
                raise TypeError(f"column {c} value {v!r} has type {type(v).__name__}")
            out[c] = v
    return out


def short(v, n=80) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def diff_rows(want: list[dict], got: list[dict]) -> list[str]:
    """Human-readable differences between two row lists (empty when equal)."""
    errs = []
    if len(want) != len(got):
        errs.append(f"{len(got)} rows, expected {len(want)}")
    for i, (w, g) in enumerate(zip(want, got)):
        for c in COLUMNS:
            if w[c] != g[c]:
                errs.append(f"row {i} (`{w['id']}`) column {c}: got {short(g[c])}, expected {short(w[c])}")
                break
        if len(errs) >= 5:
            errs.append("...")
            break
    return errs


class Report:
    def __init__(self):
        self.results: list[tuple[str, bool, str]] = []

    def add(self, name: str, ok: bool, detail: str = ""):
        self.results.append((name, ok, detail))
        print(f"[{'PASS' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}", flush=True)

    def run(self, name: str, fn):
        try:
            errs, detail = fn()
        except Exception as e:  # a crash is a failure of that check, not of the script
            tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
            self.add(name, False, f"{type(e).__name__}: {e} ({tb})")
            return
        if errs:
            self.add(name, False, "; ".join(errs))
        else:
            self.add(name, True, detail)


# ------------------------------------------------------------------- (a) agentcpt → tools


def read_pyarrow(path: Path) -> list[dict]:
    return [norm_row(r) for r in pq.read_table(path).to_pylist()]


def read_pandas(path: Path) -> list[dict]:
    import pandas as pd

    df = pd.read_parquet(path)
    return [norm_row(r) for r in df.to_dict(orient="records")]


def read_polars(path: Path) -> list[dict]:
    import polars as pl

    return [norm_row(r) for r in pl.read_parquet(path).to_dicts()]


def read_hf(path: Path, cache: Path) -> list[dict]:
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(cache))
    return [norm_row(r) for r in ds]


def check_agentcpt_shards(rep: Report, example: Path, work: Path):
    out = work / "agentcpt"
    subprocess.run([str(example), "write", str(out)], check=True, capture_output=True)
    expected: dict[str, list[dict]] = {}
    for line in (out / "expected.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        expected.setdefault(row["file"], []).append(norm_row(row))
    kinds = sorted({("text" if r["text"] is not None else "messages" if r["messages"] is not None else "input_ids")
                    for rows in expected.values() for r in rows})
    print(f"(a) agentcpt shards: {', '.join(sorted(expected))} ({sum(map(len, expected.values()))} rows; "
          f"content kinds {kinds})")
    import datasets as hf_datasets
    import pandas as pd
    import polars as pl

    readers = [
        (f"pyarrow {pa.__version__}", read_pyarrow),
        (f"pandas {pd.__version__}", read_pandas),
        (f"polars {pl.__version__}", read_polars),
        (f"datasets {hf_datasets.__version__} load_dataset",
         lambda p: read_hf(p, work / "hf-cache")),
    ]
    for name, rows in sorted(expected.items()):
        path = out / name

        def schema_check(path=path):
            schema = pq.read_schema(path).remove_metadata()
            if not schema.equals(SAMPLE_SCHEMA):
                return [f"schema {schema} != {SAMPLE_SCHEMA}"], ""
            md = pq.ParquetFile(path).metadata
            codecs = sorted({md.row_group(i).column(j).compression
                             for i in range(md.num_row_groups) for j in range(md.num_columns)})
            return [], f"sample schema; {md.num_row_groups} row group(s), {'/'.join(codecs)}"

        rep.run(f"(a) {name}: schema seen by pyarrow", schema_check)
        for reader_name, fn in readers:
            rep.run(f"(a) {name} read by {reader_name}",
                    lambda fn=fn, path=path, rows=rows: (diff_rows(rows, fn(path)), f"{len(rows)} rows equal"))


# ------------------------------------------------------------------- (b) tools → agentcpt


def foreign_writers(rows: list[dict]):
    """(name, writer(path)) pairs; each writes `rows` in the sample schema its own way."""
    import pandas as pd
    import polars as pl
    from datasets import Dataset, Features, Sequence, Value

    def arrow_table(types: dict | None = None) -> pa.Table:
        if types is None:
            return pa.Table.from_pylist(rows)  # pyarrow infers: string, list<int64>
        schema = pa.schema([pa.field(c, types[c]) for c in COLUMNS])
        return pa.Table.from_pylist(rows, schema=schema)

    string_types = {c: pa.string() for c in COLUMNS}
    exact = {**string_types, "input_ids": pa.list_(pa.int32())}
    large = {**{c: pa.large_string() for c in COLUMNS}, "input_ids": pa.large_list(pa.int64())}
    views = {**{c: pa.string_view() for c in COLUMNS}, "input_ids": pa.list_(pa.int32())}
    uint = {**string_types, "input_ids": pa.list_(pa.uint32())}
    binary = {**{c: pa.binary() for c in COLUMNS}, "input_ids": pa.list_(pa.int32())}

    def dict_strings(t: pa.Table) -> pa.Table:
        for c in ("kind", "source"):
            t = t.set_column(t.schema.get_field_index(c), c, t[c].dictionary_encode())
        return t

    def frame() -> pd.DataFrame:
        return pd.DataFrame(rows, columns=COLUMNS)

    def polars_frame(ids_type=None) -> pl.DataFrame:
        schema = {c: pl.String for c in COLUMNS}
        schema["input_ids"] = pl.List(ids_type or pl.Int64)
        return pl.DataFrame(rows, schema=schema)

    hf_features = Features({c: Value("string") for c in COLUMNS} | {"input_ids": Sequence(Value("int32"))})

    return [
        # pyarrow
        ("pyarrow write_table (defaults, inferred types)", lambda p: pq.write_table(arrow_table(), p)),
        ("pyarrow write_table (sample schema)", lambda p: pq.write_table(arrow_table(exact), p)),
        ("pyarrow large_string + large_list<int64>, zstd",
         lambda p: pq.write_table(arrow_table(large), p, compression="zstd")),
        ("pyarrow string_view", lambda p: pq.write_table(arrow_table(views), p)),
        ("pyarrow list<uint32> ids", lambda p: pq.write_table(arrow_table(uint), p)),
        ("pyarrow binary strings", lambda p: pq.write_table(arrow_table(binary), p)),
        ("pyarrow dictionary<int32,string> kind/source",
         lambda p: pq.write_table(dict_strings(arrow_table(exact)), p)),
        ("pyarrow no dictionary pages, row groups of 4, data page v2, parquet format 1.0",
         lambda p: pq.write_table(arrow_table(), p, use_dictionary=False, row_group_size=4,
                                  data_page_version="2.0", version="1.0")),
        ("pyarrow no stored arrow schema",
         lambda p: pq.write_table(arrow_table(exact), p, store_schema=False)),
        # pandas
        ("pandas to_parquet (defaults)", lambda p: frame().to_parquet(p)),
        ("pandas to_parquet categorical kind/source",
         lambda p: frame().astype({"kind": "category", "source": "category"}).to_parquet(p)),
        ("pandas to_parquet index=False, zstd",
         lambda p: frame().to_parquet(p, index=False, compression="zstd")),
        # polars
        ("polars write_parquet (defaults)", lambda p: polars_frame().write_parquet(p)),
        ("polars write_parquet list<int32>, row groups of 5",
         lambda p: polars_frame(pl.Int32).write_parquet(p, row_group_size=5)),
        ("polars write_parquet list<uint32>, snappy",
         lambda p: polars_frame(pl.UInt32).write_parquet(p, compression="snappy")),
        ("polars categorical kind/source",
         lambda p: polars_frame().with_columns(pl.col("kind").cast(pl.Categorical),
                                               pl.col("source").cast(pl.Categorical)).write_parquet(p)),
        ("polars write_parquet(use_pyarrow=True)", lambda p: polars_frame().write_parquet(p, use_pyarrow=True)),
        # HF datasets
        ("datasets Dataset.to_parquet (inferred features)", lambda p: Dataset.from_list(rows).to_parquet(p)),
        ("datasets Dataset.to_parquet (Sequence(int32) features)",
         lambda p: Dataset.from_list(rows, features=hf_features).to_parquet(p)),
    ]


# Codecs that agentcpt does not build (datasets/Cargo.toml enables only snappy and zstd, the
# defaults of pyarrow/pandas/HF and of polars). None of the tools writes them by default; the
# check is that the reader refuses them with an error naming the file and the codec.
UNSUPPORTED_CODECS = ["gzip", "lz4", "brotli"]
CODEC_ERROR = "Disabled feature at compile time"


def check_unsupported_codecs(rep: Report, example: Path, work: Path, rows: list[dict]):
    for codec in UNSUPPORTED_CODECS:
        d = work / "codec" / codec
        d.mkdir(parents=True, exist_ok=True)
        path = d / "shard.parquet"

        def check(codec=codec, path=path, d=d):
            pq.write_table(pa.Table.from_pylist(rows), path, compression=codec)
            proc = subprocess.run([str(example), "read", str(d)], capture_output=True, text=True)
            err = proc.stderr.strip()
            if proc.returncode == 0:
                got = [norm_row(json.loads(line)) for line in proc.stdout.splitlines()]
                return diff_rows(rows, got), "read (codec supported now: move it to the writers)"
            if CODEC_ERROR in err and str(path) in err:
                return [], f"known gap, refused clearly: {err.removeprefix('error: ')}"
            return [f"unclear error: {err}"], ""

        rep.run(f"(b) pyarrow compression={codec!r} (not a default) → agentcpt read_all", check)


def check_foreign_shards(rep: Report, example: Path, work: Path):
    # The rows agentcpt wrote in (a), in one list (ids unique), as the rows to write here.
    rows = [norm_row(json.loads(line))
            for line in (work / "agentcpt" / "expected.jsonl").read_text(encoding="utf-8").splitlines()]
    seen, uniq = set(), []
    for r in rows:
        if r["id"] not in seen:
            seen.add(r["id"])
            uniq.append(r)
    rows = uniq
    print(f"(b) foreign shards: {len(rows)} rows each")
    for i, (name, writer) in enumerate(foreign_writers(rows)):
        d = work / "foreign" / f"{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        path = d / "shard.parquet"

        def check(name=name, writer=writer, path=path, d=d):
            writer(str(path))
            schema = pq.read_schema(path)
            types = ", ".join(f"{f.name}: {f.type}" for f in schema if f.name in ("id", "kind", "input_ids"))
            proc = subprocess.run([str(example), "read", str(d)], capture_output=True, text=True)
            if proc.returncode != 0:
                return [f"agentcpt reader failed ({types}): {proc.stderr.strip()}"], ""
            got = [norm_row(json.loads(line)) for line in proc.stdout.splitlines()]
            return diff_rows(rows, got), f"{len(rows)} rows equal ({types})"

        rep.run(f"(b) {name} → agentcpt read_all", check)
    check_unsupported_codecs(rep, example, work, rows)


# ----------------------------------------------------------------------------------- main


def build_example() -> Path:
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "agentcpt-datasets", "--example", "write_sample_shards"],
        cwd=REPO, check=True,
    )
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                     cwd=REPO, check=True, capture_output=True, text=True).stdout)
    return Path(meta["target_directory"]) / "release" / "examples" / "write_sample_shards"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, help="where shards are written (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--example", type=Path, help="prebuilt write_sample_shards binary")
    args = ap.parse_args()

    example = args.example or build_example()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="agentcpt-interop-"))
    if args.workdir and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    rep = Report()
    try:
        check_agentcpt_shards(rep, example, work)
        check_foreign_shards(rep, example, work)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep or args.workdir:
            print(f"shards kept in {work}")
    failed = [r for r in rep.results if not r[1]]
    print(f"\nsummary: {len(rep.results) - len(failed)}/{len(rep.results)} checks passed")
    gaps = [r for r in rep.results if r[1] and "known gap" in r[2]]
    if gaps:
        print(f"known gaps (refused with a clear error, not failures): {len(gaps)}")
        for name, _, detail in gaps:
            print(f"  GAP {name}: {detail}")
    for name, _, detail in failed:
        print(f"  FAIL {name}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
