#!/usr/bin/env python3
"""Writes the tiny synthetic corpus the tiny recipes train on (recipes/data/tiny/*.jsonl):
FAS-style planning and reasoning actions, HAS-style step decisions as ChatML trajectories,
and general text. Deterministic; standard library only. Import with `agentcpt data import`
(see recipes/README.md)."""
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "recipes" / "data" / "tiny"
ENTITIES = [
    ("Ada Lovelace", "wrote the first published algorithm", "1843"),
    ("the Eiffel Tower", "was completed", "1889"),
    ("Marie Curie", "won her second Nobel Prize", "1911"),
    ("the Rust language", "reached version 1.0", "2015"),
    ("Mount Everest", "was first summited", "1953"),
    ("the printing press", "was introduced in Mainz", "1450"),
    ("the Hubble telescope", "was launched", "1990"),
    ("Alan Turing", "published on computable numbers", "1936"),
]
TOOLS = [{"type": "function", "function": {"name": "search", "description": "Web search",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]


def fas_planning(rng, i):
    name, fact, year = rng.choice(ENTITIES)
    q = f"In which year {fact.replace('was ', '').replace('won ', 'did ' + name + ' win ')} for {name}?"
    text = (f"Question: {q}\nAnalysis: the question asks for a date tied to {name}. "
            f"The answer needs one fact, so a single search suffices.\n"
            f"Action: <tool_call>{json.dumps({'name': 'search', 'arguments': {'query': name + ' ' + fact}})}</tool_call>")
    return {"id": f"fas-plan-{i}", "text": text}


def fas_reasoning(rng, i):
    a, b = rng.sample(ENTITIES, 2)
    gap = abs(int(a[2]) - int(b[2]))
    text = (f"Question: how many years separate when {a[0]} {a[1]} and when {b[0]} {b[1]}?\n"
            f"Step 1: {a[0]} {a[1]} in {a[2]}.\nStep 2: {b[0]} {b[1]} in {b[2]}.\n"
            f"Step 3: |{a[2]} - {b[2]}| = {gap}.\nAnswer: {gap} years.")
    return {"id": f"fas-reason-{i}", "text": text}


def has_trajectory(rng, i):
    name, fact, year = rng.choice(ENTITIES)
    options = [f"search for '{name} {fact}'", f"answer {int(year) + rng.randint(1, 9)} from memory",
               f"search for '{name} biography'"]
    rng.shuffle(options)
    choice = next(k for k, o in enumerate(options) if o.startswith("search for '" + name + " " + fact))
    listing = "\n".join(f"Option {k + 1}: {o}" for k, o in enumerate(options))
    messages = [
        {"role": "system", "content": "You are a research agent."},
        {"role": "user", "content": f"When {fact.split(' ', 1)[1] if fact.startswith('was ') else fact} for {name}?"},
        {"role": "assistant", "content": f"<think>\n{listing}\nI choose option {choice + 1}.\n</think>\n\n",
         "tool_calls": [{"type": "function", "function": {"name": "search",
                                                           "arguments": {"query": f"{name} {fact}"}}}]},
        {"role": "tool", "content": f"{name} {fact} in {year}."},
        {"role": "assistant", "content": f"<think>\nThe source states {year}.\n</think>\n\n<answer>{year}</answer>"},
    ]
    return {"id": f"has-{i}", "messages": messages, "tools": TOOLS, "judgement": "Correct"}


def general(rng, i):
    words = "the a of agent tool plan search answer model data step result reason time year".split()
    return {"id": f"general-{i}", "text": " ".join(rng.choice(words) for _ in range(rng.randint(20, 80))) + "."}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    for name, make, n in [("fas_planning", fas_planning, 120), ("fas_reasoning", fas_reasoning, 120),
                          ("has", has_trajectory, 120), ("general", general, 80)]:
        with open(OUT / f"{name}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps(make(rng, i)) + "\n")
    # Held-out documents for the recipes' [eval] section, drawn with another seed.
    rng = random.Random(99)
    with open(OUT / "heldout.jsonl", "w") as f:
        for i in range(16):
            make = [fas_planning, fas_reasoning, has_trajectory, general][i % 4]
            record = make(rng, i)
            record["id"] = f"heldout-{i}"
            f.write(json.dumps(record) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
