#!/usr/bin/env python3
"""Checks the hand-derived chat-template cases against transformers' apply_chat_template.

The Rust tests (datasets/src/chat/tests.rs) assert that our renderer reproduces the
`expected` strings in datasets/src/chat/template_cases.json; this script asserts that those
strings are what transformers renders with the real Qwen3 template, and (with --ids) writes
the token ids transformers' tokenizer gives for them, so both halves of the parity claim can
be re-checked. Needs `transformers` and the files from scripts/fetch-qwen-tokenizer.sh.

usage: python scripts/check-chat-template.py [--ids]
"""
import json
import os
import sys
from pathlib import Path

from transformers import AutoTokenizer

root = Path(__file__).resolve().parent.parent
cache = Path(os.environ.get("AGENTCPT_CACHE", Path.home() / ".cache" / "agentcpt"))
tok_dir = cache / "qwen3-tokenizer"
if not (tok_dir / "tokenizer_config.json").exists():
    sys.exit(f"{tok_dir} is missing: run scripts/fetch-qwen-tokenizer.sh first")
tok = AutoTokenizer.from_pretrained(str(tok_dir))
cases = json.loads((root / "datasets/src/chat/template_cases.json").read_text())

failed = 0
for case in cases:
    conv = json.loads(case["conversation"])
    messages, tools = (conv, None) if isinstance(conv, list) else (conv["messages"], conv.get("tools"))
    kwargs = {}
    if not case["enable_thinking"]:
        kwargs["enable_thinking"] = False
    got = tok.apply_chat_template(
        messages, tools=tools, tokenize=False,
        add_generation_prompt=case["add_generation_prompt"], **kwargs)
    ok = got == case["expected"]
    failed += not ok
    print(("ok   " if ok else "FAIL ") + case["name"])
    if not ok:
        print("  transformers:", json.dumps(got, ensure_ascii=False))
        print("  expected:    ", json.dumps(case["expected"], ensure_ascii=False))
    if "--ids" in sys.argv:
        print("  ids:", json.dumps(tok(got, add_special_tokens=False)["input_ids"]))
sys.exit(1 if failed else 0)
