//! HAS branching and parsing on recorded model answers.

use std::sync::Arc;

use super::*;
use crate::synth::{Completion, LlmError, Prompts, Synth, SynthOptions};
use crate::ByteEncoder;

/// A model that answers with `reply(prompt text)`.
pub(crate) struct Recorded<F>(pub F);

impl<F: Fn(&str) -> String + Send + Sync> super::super::ChatModel for Recorded<F> {
    fn name(&self) -> String {
        "recorded".into()
    }
    fn complete(&self, request: &super::super::ChatRequest) -> Result<Completion, LlmError> {
        let prompt: String = request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        Ok(Completion {
            text: (self.0)(&prompt),
            model: "recorded".into(),
        })
    }
}

fn synth(model: impl super::super::ChatModel + 'static) -> Synth {
    Synth {
        model: Arc::new(model),
        prompts: Prompts::load(None).unwrap(),
        options: SynthOptions {
            concurrency: 2,
            ..SynthOptions::default()
        },
        progress: Box::new(|_| {}),
    }
}

const SEARCH: &str = "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"1964 derby\"]}}\n</tool_call>";
const RESPONSE: &str = "<tool_response>\nA Google search for '1964 derby' found 1 results:\n\n## Web Results\n1. [Santa Claus](https://x)\n\nWon the 1964 Derby.\n</tool_response>";

fn trajectory(steps: &[&str], answer: &str) -> String {
    let mut messages = vec![
        json!({"role": "system", "content": "Agent.\n<tools>\n{\"name\": \"search\"}\n{\"name\": \"visit\"}\n</tools>"}),
        json!({"role": "user", "content": "Which horse won the 1964 Derby?"}),
    ];
    for s in steps {
        messages.push(json!({"role": "assistant", "content": s}));
        if s.contains("<tool_call>") {
            messages.push(json!({"role": "user", "content": RESPONSE}));
        }
    }
    json!({"messages": messages, "answer": [[answer]]}).to_string()
}

fn alternatives(prompt: &str) -> String {
    if prompt.contains("final answer") {
        "<think>\nmaybe\n</think>\n<answer>\nArkle\n</answer>\n---\n<think>\nor\n</think>\n<answer>\nMill Reef\n</answer>".into()
    } else {
        "<think>\nvisit it\n</think>\n<tool_call>\n{\"name\": \"visit\", \"arguments\": {\"url\": [\"https://x\"], \"goal\": \"winner\"}}\n</tool_call>\n---\n<think>\nscholar\n</think>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"derby winners\"]}}\n</tool_call>".into()
    }
}

fn run_on(
    lines: &[String],
    model: impl super::super::ChatModel + 'static,
    options: &HasOptions,
) -> (tempfile::TempDir, Report) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let report = run(
        &synth(model),
        &[input],
        &dir.path().join("out"),
        options,
        &ByteEncoder,
    )
    .unwrap();
    (dir, report)
}

fn options() -> HasOptions {
    HasOptions {
        alternatives: 1..=2,
        llm_judge: false,
        stage1_max_tokens: 32_768,
    }
}

fn samples(report: &Report) -> Vec<crate::schema::Sample> {
    report
        .outputs
        .iter()
        .flat_map(|p| crate::reader::read_all(&[p.display().to_string()]).unwrap())
        .map(|r| r.unwrap().1)
        .collect()
}

/// The text of option `n` in a decision turn (up to the next option or the decision).
fn option_at(turn: &str, n: u64) -> &str {
    let label = format!("Option {n}:\n");
    let rest = &turn[turn.find(&label).expect("the option is listed") + label.len()..];
    let end = rest
        .find("\nOption ")
        .or_else(|| rest.find("\nI will choose"))
        .expect("a decision follows");
    &rest[..end]
}

/// Every original step sits at its recorded position, the response is verbatim, the
/// judgement follows the reference; a wrong answer is used too, judged Incorrect.
#[test]
fn decisions_keep_the_original_at_its_recorded_position() {
    let step1 = format!("<think>\nsearch first\n</think>\n{SEARCH}");
    let last = "<think>\nit is Santa Claus\n</think>\n<answer>\n**Santa Claus**\n</answer>";
    let wrong = "<think>\nguess\n</think>\n<answer>\nNijinsky\n</answer>";
    let lines = [
        trajectory(&[&step1, last], "Santa Claus"),
        trajectory(&[&step1, wrong], "Santa Claus"),
    ];
    let (_dir, report) = run_on(&lines, Recorded(alternatives), &options());
    assert_eq!(report.counts.kept_items, 2, "{report:?}");
    let samples = samples(&report);
    let finals = [
        (
            "it is Santa Claus\n<answer>\n**Santa Claus**\n</answer>",
            "Correct",
        ),
        ("guess\n<answer>\nNijinsky\n</answer>", "Incorrect"),
    ];
    for (sample, (final_option, verdict)) in samples.iter().zip(finals) {
        let crate::schema::Content::Text(text) = &sample.content else {
            panic!("text")
        };
        let meta: Value = serde_json::from_str(sample.meta.as_ref().unwrap()).unwrap();
        let positions = meta["original_positions"].as_array().unwrap();
        let counts = meta["options"].as_array().unwrap();
        assert_eq!(positions.len(), 2);
        let turns: Vec<&str> = text.split("<|im_start|>assistant\n").skip(1).collect();
        assert_eq!(turns.len(), 2);
        let originals = [format!("search first\n{SEARCH}"), final_option.to_string()];
        for (k, turn) in turns.iter().enumerate() {
            let n = positions[k].as_u64().unwrap();
            let m = counts[k].as_u64().unwrap();
            assert!(
                (2..=3).contains(&m) && (1..=m).contains(&n),
                "{m} options, position {n}"
            );
            assert_eq!(option_at(turn, n), originals[k], "step {k}");
            assert!(turn.contains(&format!("I will choose option {n}.")));
        }
        assert!(text.contains(&format!("<|im_start|>user\n{RESPONSE}<|im_end|>")));
        assert!(
            text.ends_with(&format!("My decision is {verdict}.<|im_end|>\n")),
            "{text}"
        );
        assert_eq!(meta["judgement"], verdict.to_lowercase());
    }
}

/// Malformed trajectories and malformed model output are counted rejects, not errors.
#[test]
fn bad_trajectories_and_bad_alternatives_are_counted() {
    let good = format!("<think>\nsearch\n</think>\n{SEARCH}");
    let not_json = "<think>\nx\n</think>\n<tool_call>\n{name: search}\n</tool_call>";
    let answer = "<think>\ny\n</think>\n<answer>Santa Claus</answer>";
    let lines = [
        trajectory(&[not_json, answer], "Santa Claus"),
        trajectory(&[&good], "Santa Claus"),
        trajectory(&[&good, answer], ""),
    ];
    let (_dir, report) = run_on(&lines, Recorded(alternatives), &options());
    let reasons = &report.counts.reject_reasons;
    assert_eq!(reasons.get("tool_call_not_json"), Some(&1), "{reasons:?}");
    assert_eq!(reasons.get("missing_answer"), Some(&1), "{reasons:?}");
    assert_eq!(reasons.get("no_judgement"), Some(&1), "{reasons:?}");
    assert_eq!(report.counts.kept_items, 0);
    let (_dir, report) = run_on(
        &[trajectory(&[&good, answer], "Santa Claus")],
        Recorded(|_: &str| "I cannot help.".to_string()),
        &options(),
    );
    assert_eq!(
        report.counts.reject_reasons.get("malformed_alternatives"),
        Some(&1)
    );
}

/// The same seed gives the same shards; the LLM judge decides when the normaliser cannot.
#[test]
fn seeded_runs_repeat_and_the_llm_judge_is_asked() {
    let good = format!("<think>\nsearch\n</think>\n{SEARCH}");
    let answer = "<think>\ny\n</think>\n<answer>The Derby at Epsom</answer>";
    let lines = [trajectory(&[&good, answer], "Epsom Derby")];
    let judge = |p: &str| {
        if p.contains("Answer to grade") {
            "{\"correct\": true}".to_string()
        } else {
            alternatives(p)
        }
    };
    let opts = HasOptions {
        llm_judge: true,
        ..options()
    };
    let (_a, first) = run_on(&lines, Recorded(judge), &opts);
    let (_b, second) = run_on(&lines, Recorded(judge), &opts);
    // Equal but for the input path, which provenance records.
    let strip = |report: &Report| {
        samples(report)
            .into_iter()
            .map(|mut s| {
                let mut meta: Value = serde_json::from_str(s.meta.as_ref().unwrap()).unwrap();
                meta.as_object_mut().unwrap().remove("trajectory");
                s.meta = Some(meta.to_string());
                s
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&first), strip(&second));
    let meta: Value = serde_json::from_str(samples(&first)[0].meta.as_ref().unwrap()).unwrap();
    assert_eq!(meta["judgement"], "correct");
    assert_eq!(meta["judgement_source"], "llm_judge");
}

#[test]
fn tool_lists_read_one_per_line_or_comma_separated() {
    let lines = "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"search\"}}\n{\"name\": \"visit\"}\n</tools>";
    assert_eq!(tool_names(lines).unwrap(), ["search", "visit"]);
    let commas = "<tools>\n{\n  \"name\": \"search\"\n},\n{\"name\": \"visit\", \"parameters\": {}}\n</tools>";
    assert_eq!(tool_names(commas).unwrap(), ["search", "visit"]);
    assert_eq!(tool_names("<tools>{broken</tools>"), None);
}

/// Trajectories imported as Parquet (`messages` column, answer in `meta`) read like JSONL.
#[test]
fn imported_parquet_trajectories_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let step = format!("<think>\nsearch\n</think>\n{SEARCH}");
    let answer = "<think>\ny\n</think>\n<answer>Santa Claus</answer>";
    let line: Value = serde_json::from_str(&trajectory(&[&step, answer], "x")).unwrap();
    let sample = crate::schema::Sample {
        id: "traj-1".into(),
        kind: "trajectory".into(),
        source: "webdancer".into(),
        content: crate::schema::Content::Messages(
            json!({"messages": line["messages"], "tools": []}).to_string(),
        ),
        meta: Some(json!({"answer": [["Santa Claus"]]}).to_string()),
    };
    let shard = dir.path().join("t.parquet");
    crate::schema::write_shard(&shard, [sample], Default::default()).unwrap();
    let report = run(
        &synth(Recorded(alternatives)),
        &[shard],
        &dir.path().join("out"),
        &options(),
        &ByteEncoder,
    )
    .unwrap();
    assert_eq!(report.counts.kept_items, 1, "{report:?}");
    let meta: Value = serde_json::from_str(samples(&report)[0].meta.as_ref().unwrap()).unwrap();
    assert_eq!(meta["trajectory_id"], "traj-1");
    assert_eq!(meta["judgement"], "correct");
}
