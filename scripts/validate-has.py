#!/usr/bin/env python3
"""Validate `agentcpt synth has` on real ReAct trajectories, by hand.

Serves a stand-in model on loopback that answers every `has-alternatives` prompt with
well-formed alternatives (so that every trajectory yields a sample), runs
`agentcpt synth has` on TRAJECTORIES.jsonl against it, then checks the Parquet output
independently of the Rust code:

  * one sample per trajectory (or a counted reject, listed with its reason);
  * at every step, the option at the recorded position is the original step (its plain
    thought, then its <tool_call>/<answer> block, verbatim), and the sample says it chose it;
  * every tool response turn appears byte-identical, in order;
  * the final "My decision is …" matches the judgement in `meta`, and, where the judgement
    came from the answer normaliser, what this script's own normaliser says.

Usage: scripts/validate-has.py TRAJECTORIES.jsonl [--agentcpt target/debug/agentcpt]
           [--out DIR] [--tokenizer tokenizer.json]
Needs pyarrow. Exit status 0 when every check passes.
"""

import argparse
import glob
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading

import pyarrow.parquet as pq


def alternatives(prompt: str) -> str:
    n = int(re.search(r"Write (\d+) different alternative", prompt).group(1))
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    out = []
    for i in range(n):
        if "each a final answer" in prompt:
            out.append(f"<think>\nalternative answer {i + 1}\n</think>\n<answer>\nalternative {tag}-{i}\n</answer>")
        else:
            call = json.dumps({"name": "search", "arguments": {"query": [f"alternative query {tag}-{i}"]}})
            out.append(f"<think>\nalternative {i + 1}: try another query\n</think>\n<tool_call>\n{call}\n</tool_call>")
    return "\n---\n".join(out)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = "\n".join(m["content"] for m in body["messages"])
        if "Answer to grade" in prompt:
            text = '{"correct": false}'
        else:
            text = alternatives(prompt)
        reply = json.dumps({"model": "stand-in", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def normalize(text: str) -> str:
    text = re.sub(r"(?<=\d),(?=\d)", "", text.lower())
    text = re.sub(r"\.(?=\d)", "\0", text)
    text = re.sub(r"[^\w\0]|_", " ", text).replace("\0", ".")
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def matches(answer: str, reference: str) -> bool:
    a, r = normalize(answer), normalize(reference)
    return bool(r) and (a == r or f" {r} " in f" {a} ")


def flatten(v):
    if isinstance(v, str):
        return [v] if v.strip() else []
    if isinstance(v, list):
        return [s for x in v for s in flatten(x)]
    return []


def original_option(content: str) -> str:
    thought = content[content.index("<think>") + 7 : content.index("</think>")].strip()
    after = content[content.index("</think>") + 8 :]
    for open_, close in (("<tool_call>", "</tool_call>"), ("<answer>", "</answer>")):
        if open_ in after:
            start = after.index(open_)
            end = after.index(close, start) + len(close)
            return f"{thought}\n{after[start:end]}"
    raise ValueError("no action")


def option_at(turn: str, n: int) -> str:
    start = turn.index(f"Option {n}:\n") + len(f"Option {n}:\n")
    ends = [i for i in (turn.find(f"\nOption {n + 1}:\n", start), turn.find("\nI will choose option", start)) if i >= 0]
    return turn[start : min(ends)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trajectories")
    ap.add_argument("--agentcpt", default="target/debug/agentcpt")
    ap.add_argument("--out")
    ap.add_argument("--tokenizer", default=os.path.expanduser("~/.cache/agentcpt/qwen3-tokenizer/tokenizer.json"))
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="validate-has-")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    cmd = [args.agentcpt, "synth", "has", args.trajectories, "--out", out, "--base-url", url, "--model", "stand-in", "--count-tokenizer", args.tokenizer, "--no-cache"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    print(run.stdout, end="")
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        return 1

    stem = os.path.splitext(os.path.basename(args.trajectories))[0]
    inputs = {}
    with open(args.trajectories) as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                t = json.loads(line)
                inputs[t.get("id", f"{stem}:{line_no}")] = t
    samples = {}
    for path in sorted(glob.glob(os.path.join(out, "has-stage*-*.parquet"))):
        for row in pq.read_table(path).to_pylist():
            meta = json.loads(row["meta"])
            assert meta["trajectory_id"] not in samples, f"two samples for {meta['trajectory_id']}"
            samples[meta["trajectory_id"]] = (row, meta, os.path.basename(path))
    rejects = {}
    with open(os.path.join(out, "journal.jsonl")) as f:
        for line in f:
            if line.strip():
                j = json.loads(line)
                if not j["kept"]:
                    rejects[j["item"]] = j["rejects"][0]
    failures, steps, responses, routed = [], 0, 0, {"stage1": 0, "stage2": 0}
    for tid, t in inputs.items():
        if tid in rejects:
            continue
        if tid not in samples:
            failures.append(f"{tid}: neither a sample nor a reject")
            continue
        row, meta, shard = samples[tid]
        routed["stage1" if "stage1" in shard else "stage2"] += 1
        text = row["text"]
        turns = [m for m in t["messages"]]
        assistant = [m["content"] for m in turns if m["role"] == "assistant"]
        tool_turns = [m["content"] for m in turns[2:] if m["role"] in ("user", "tool")]
        sample_turns = text.split("<|im_start|>assistant\n")[1:]
        if len(sample_turns) != len(assistant) or len(meta["original_positions"]) != len(assistant):
            failures.append(f"{tid}: {len(sample_turns)} decision turns for {len(assistant)} steps")
            continue
        for k, (orig, turn) in enumerate(zip(assistant, sample_turns)):
            n = meta["original_positions"][k]
            if option_at(turn, n) != original_option(orig):
                failures.append(f"{tid}: step {k + 1}: option {n} is not the original step")
            if f"I will choose option {n}." not in turn:
                failures.append(f"{tid}: step {k + 1}: no decision for option {n}")
            if f"I have {meta['options'][k]} options" not in turn:
                failures.append(f"{tid}: step {k + 1}: option count differs from meta")
            steps += 1
        pos = 0
        for content in tool_turns:
            needle = f"<|im_start|>user\n{content}<|im_end|>"
            found = text.find(needle, pos)
            if found < 0:
                failures.append(f"{tid}: a tool response is not in the sample verbatim")
                break
            pos = found + len(needle)
            responses += 1
        verdict = "Correct" if meta["judgement"] == "correct" else "Incorrect"
        if not text.endswith(f"My decision is {verdict}.<|im_end|>\n"):
            failures.append(f"{tid}: final decision does not match meta judgement {meta['judgement']}")
        if meta["judgement_source"].startswith("normalised"):
            final = assistant[-1]
            answer = final[final.index("<answer>") + 8 : final.index("</answer>")]
            expected = any(matches(answer, r) for r in flatten(t.get("answer")))
            if expected != (meta["judgement"] == "correct"):
                failures.append(f"{tid}: judgement {meta['judgement']} but this script's normaliser says {expected}")
    reasons = {}
    for r in rejects.values():
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    judged = {}
    for _, meta, _ in samples.values():
        judged[meta["judgement"]] = judged.get(meta["judgement"], 0) + 1
    print(f"trajectories: {len(inputs)}, samples: {len(samples)} {routed}, rejects: {reasons}")
    print(f"checked {steps} decision steps and {responses} tool responses; judgements {judged}")
    for f in failures[:20]:
        print("FAIL", f)
    print("all checks passed" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
