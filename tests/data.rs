//! `agentcpt data …` as users run it: import, inspect, and preview's determinism, exact
//! resume and rank partition (the black-box contract of the data pipeline).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::cli::{agentcpt, stderr, stdout};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn preview(args: &[&str]) -> Output {
    let mut all = vec!["data", "preview"];
    all.extend_from_slice(args);
    let o = agentcpt(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// A copy of the tiny stage-1 recipe whose sources drop out when they run dry.
fn finite_recipe(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo("recipes/tiny-stage1.toml")).unwrap();
    let data = repo("recipes/data");
    let text = text
        .replace(
            "paths = [\"data/",
            &format!("on_exhausted = \"drop\"\npaths = [\"{}/", data.display()),
        )
        .replace(
            "config = \"models/",
            &format!("config = \"{}/models/", repo("recipes").display()),
        );
    let path = dir.join("finite.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn preview_is_deterministic_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = repo("recipes/tiny-stage1.toml");
    let recipe = recipe.to_str().unwrap();
    let full = stdout(&preview(&[recipe, "--batches", "5"]));
    assert_eq!(
        full,
        stdout(&preview(&[recipe, "--batches", "5"])),
        "same seed, same bytes"
    );
    assert_eq!(full.lines().count(), 5);

    let state = tmp.path().join("state.json");
    let head = stdout(&preview(&[
        recipe,
        "--batches",
        "3",
        "--save-state",
        state.to_str().unwrap(),
    ]));
    let tail = stdout(&preview(&[
        recipe,
        "--batches",
        "2",
        "--state",
        state.to_str().unwrap(),
    ]));
    assert_eq!(
        format!("{head}{tail}"),
        full,
        "restored state continues the uninterrupted run"
    );

    let other_seed = stdout(&preview(&[
        recipe,
        "--batches",
        "5",
        "--set",
        "data.seed=9",
    ]));
    assert_ne!(other_seed, full, "the seed changes the order");
    let batch: Value = serde_json::from_str(full.lines().next().unwrap()).unwrap();
    let seq = &batch["sequences"][0];
    assert_eq!(seq["input_ids"].as_array().unwrap().len(), 256);
    let lengths: u64 = seq["document_lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .sum();
    assert_eq!(lengths, 256);
}

fn sample_ids(output: &str) -> Vec<String> {
    output
        .lines()
        .flat_map(|line| {
            let batch: Value = serde_json::from_str(line).unwrap();
            batch["sequences"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["document_ids"].as_array().unwrap().clone())
                .filter_map(|id| id.as_str().map(String::from))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn four_ranks_partition_the_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = finite_recipe(tmp.path());
    let recipe = recipe.to_str().unwrap();
    let single: BTreeSet<String> = sample_ids(&stdout(&preview(&[recipe, "--batches", "100000"])))
        .into_iter()
        .collect();
    assert_eq!(single.len(), 440, "every sample of the tiny corpus appears");
    let mut union = BTreeSet::new();
    for rank in 0..4 {
        let ids: BTreeSet<String> = sample_ids(&stdout(&preview(&[
            recipe,
            "--batches",
            "100000",
            "--rank",
            &rank.to_string(),
            "--world",
            "4",
        ])))
        .into_iter()
        .collect();
        assert!(
            union.is_disjoint(&ids),
            "rank {rank} repeats samples of another rank"
        );
        union.extend(ids);
    }
    assert_eq!(union, single);
}

/// `agentcpt data import FILE --kind KIND --out OUT`.
fn import(file: &Path, kind: &str, out: &Path) -> Output {
    agentcpt(&[
        "data",
        "import",
        file.to_str().unwrap(),
        "--kind",
        kind,
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn import_reads_documents_and_trajectories() {
    let tmp = tempfile::tempdir().unwrap();
    let jsonl = tmp.path().join("mixed.jsonl");
    std::fs::write(
        &jsonl,
        concat!(
            r#"{"id": 7, "text": "plain text", "answer": "x"}"#, "\n",
            "\n",
            r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": []}"#, "\n",
            r#"{"input_ids": [1, 2, 3]}"#, "\n",
        ),
    )
    .unwrap();
    let out = tmp.path().join("shards");
    let o = import(&jsonl, "trajectory", &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let glob = format!("{}/*.parquet", out.display());
    let o = agentcpt(&["data", "inspect", &glob]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("rows: 3"), "{text}");
    assert!(
        text.contains("\"input_ids\": 1")
            && text.contains("\"messages\": 1")
            && text.contains("\"text\": 1"),
        "{text}"
    );
    assert!(text.contains("first sample `7`"), "{text}");
}

#[test]
fn bad_data_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "not_json.jsonl",
            "{\"text\": \"ok\"}\n{oops\n",
            "not_json.jsonl:2: not JSON",
        ),
        (
            "no_content.jsonl",
            "{\"title\": \"x\"}\n",
            "no_content.jsonl:1: no `text`, `messages` or `input_ids`",
        ),
        (
            "not_chatml.jsonl",
            "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}\n",
            "not_chatml.jsonl:1: `messages` is not a ChatML conversation",
        ),
    ];
    for (name, content, expected) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, content).unwrap();
        let out = tmp.path().join(format!("{name}.out"));
        let o = import(&path, "general", &out);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(expected), "{name}: {}", stderr(&o));
    }
    let o = agentcpt(&[
        "data",
        "inspect",
        &format!("{}/nothing-*.parquet", tmp.path().display()),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nothing-*.parquet"), "{}", stderr(&o));
    let fake = tmp.path().join("fake.parquet");
    std::fs::write(&fake, "not parquet at all").unwrap();
    let o = agentcpt(&["data", "inspect", fake.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fake.parquet"), "{}", stderr(&o));
}

#[test]
fn bad_recipes_name_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("recipes/tiny-stage1.toml")).unwrap();
    let bad = tmp.path().join("typo.toml");
    std::fs::write(&bad, text.replace("[train]\n", "[train]\nstepz = 3\n")).unwrap();
    let o = agentcpt(&["data", "preview", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("typo.toml") && e.contains("line") && e.contains("stepz"),
        "{e}"
    );

    let zero = tmp.path().join("zero.toml");
    std::fs::write(
        &zero,
        text.replace("weight = 0.3", "weight = 0.0")
            .replace("weight = 0.1", "weight = 0.0"),
    )
    .unwrap();
    let e = stderr(&agentcpt(&["data", "preview", zero.to_str().unwrap()]));
    assert!(
        e.contains("zero.toml") && e.contains("data.sources.weight") && e.contains("sum to zero"),
        "{e}"
    );

    let wrong_type = tmp.path().join("type.toml");
    std::fs::write(
        &wrong_type,
        text.replace("seq_len = 256", "seq_len = \"long\""),
    )
    .unwrap();
    let e = stderr(&agentcpt(&[
        "data",
        "preview",
        wrong_type.to_str().unwrap(),
    ]));
    assert!(e.contains("type.toml") && e.contains("seq_len"), "{e}");
}

#[test]
fn realised_mixture_is_within_two_percent_over_10k_sequences() {
    let recipe = repo("recipes/tiny-stage1.toml");
    let out = stdout(&preview(&[recipe.to_str().unwrap(), "--batches", "5000"]));
    let mut tokens: std::collections::BTreeMap<String, u64> = Default::default();
    let mut sequences = 0;
    for line in out.lines() {
        let batch: Value = serde_json::from_str(line).unwrap();
        for seq in batch["sequences"].as_array().unwrap() {
            sequences += 1;
            let lengths = seq["document_lengths"].as_array().unwrap();
            for (len, source) in lengths
                .iter()
                .zip(seq["document_sources"].as_array().unwrap())
            {
                if let Some(source) = source.as_str() {
                    *tokens.entry(source.to_string()).or_default() += len.as_u64().unwrap();
                }
            }
        }
    }
    assert_eq!(sequences, 10_000);
    let total: u64 = tokens.values().sum();
    for (source, weight) in [
        ("fas_planning", 0.3),
        ("fas_reasoning", 0.3),
        ("has", 0.3),
        ("general", 0.1),
    ] {
        let share = tokens[source] as f64 / total as f64;
        assert!(
            (share - weight).abs() <= 0.02,
            "{source}: {share:.4} of tokens, weight {weight}"
        );
    }
}
