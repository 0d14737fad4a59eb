//! `synth questions`: entity memory → questions in several styles (FAS step 2).
//!
//! Every entity anchors one cluster: itself plus up to `cluster_size - 1` entities that share
//! a source document with it, drawn by a seeded RNG. The model writes one question per style
//! for the cluster, each linked to the statement ids its answer depends on; questions with
//! an unknown style, an empty answer or no valid linked statement are counted rejects.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::output::{read_jsonl, write_jsonl};
use super::parse::extract_json;
use super::runner::{Outcome, Reject};
use super::{Report, Synth, SynthError};
use crate::rng::{fnv1a, mix_seed, Rng};

/// The question styles of the method.
pub const STYLES: &[&str] = &[
    "factual_retrieval",
    "numerical_computation",
    "multi_hop",
    "synthesis",
];

/// One cluster: the entity records it covers.
struct Cluster {
    entities: Vec<Value>,
}

/// Reads `memory.jsonl` as written by `synth memory`.
fn read_memory(path: &Path) -> Result<Vec<Value>, SynthError> {
    let records = read_jsonl(path)?;
    for (line, r) in &records {
        let ok = r["entity"].is_string()
            && r["key"].is_string()
            && r["statements"].as_array().is_some_and(|s| {
                s.iter()
                    .all(|s| s["id"].is_string() && s["text"].is_string())
            });
        if !ok {
            return Err(SynthError::Input(format!(
                "{}:{line}: not a memory record (`entity`, `key`, `statements` with `id` and `text`)",
                path.display()
            )));
        }
    }
    Ok(records.into_iter().map(|(_, r)| r).collect())
}

fn clusters(memory: &[Value], cluster_size: usize, seed: u64) -> Vec<(String, Cluster)> {
    let mut by_source: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in memory.iter().enumerate() {
        for s in e["sources"].as_array().into_iter().flatten() {
            by_source
                .entry(s.as_str().unwrap_or_default())
                .or_default()
                .push(i);
        }
    }
    memory
        .iter()
        .enumerate()
        .map(|(i, anchor)| {
            let key = anchor["key"].as_str().unwrap_or_default();
            let mut neighbours: Vec<usize> = anchor["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| by_source.get(s.as_str().unwrap_or_default()))
                .flatten()
                .copied()
                .filter(|&j| j != i)
                .collect();
            neighbours.sort_unstable();
            neighbours.dedup();
            Rng::seed_from_u64(mix_seed(&[seed, fnv1a(key.as_bytes())])).shuffle(&mut neighbours);
            let mut entities = vec![anchor.clone()];
            entities.extend(
                neighbours
                    .into_iter()
                    .take(cluster_size.saturating_sub(1))
                    .map(|j| memory[j].clone()),
            );
            (format!("q-{key}"), Cluster { entities })
        })
        .collect()
}

/// Parses the model's questions against the cluster's statements.
fn parse_questions(
    output: &str,
    cluster_id: &str,
    cluster: &Cluster,
    styles: &[String],
) -> Outcome {
    let v = match extract_json(output) {
        Ok(v) => v,
        Err(e) => return Outcome::reject("malformed_json", e),
    };
    let Some(questions) = v.get("questions").and_then(Value::as_array) else {
        return Outcome::reject("malformed_json", "no `questions` array");
    };
    let statements: BTreeMap<&str, &Value> = cluster
        .entities
        .iter()
        .flat_map(|e| e["statements"].as_array().into_iter().flatten())
        .map(|s| (s["id"].as_str().unwrap_or_default(), s))
        .collect();
    let names: Vec<&Value> = cluster.entities.iter().map(|e| &e["entity"]).collect();
    let mut outcome = Outcome::default();
    for (k, q) in questions.iter().enumerate() {
        let style = q.get("style").and_then(Value::as_str).unwrap_or_default();
        let question = q
            .get("question")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim();
        let answer = q
            .get("answer")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim();
        let linked: Vec<&Value> = q
            .get("statements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<std::collections::BTreeSet<&str>>()
            .into_iter()
            .filter_map(|id| statements.get(id).copied())
            .collect();
        let reject = if !styles.iter().any(|s| s == style) {
            Some(("unknown_style", format!("style `{style}`")))
        } else if question.is_empty() || answer.is_empty() {
            Some(("empty_question_or_answer", String::new()))
        } else if linked.is_empty() {
            Some(("no_linked_statement", "no valid statement id".to_string()))
        } else {
            None
        };
        match reject {
            Some((reason, detail)) => outcome
                .rejects
                .push(Reject::new(reason, format!("question {k}: {detail}"))),
            None => outcome.kept.push(json!({
                "id": format!("{cluster_id}-{k}"),
                "cluster": cluster_id,
                "style": style,
                "question": question,
                "answer": answer,
                "entities": names,
                "statements": linked,
            })),
        }
    }
    if outcome.kept.is_empty() && outcome.rejects.is_empty() {
        outcome
            .rejects
            .push(Reject::new("no_questions", "empty `questions`"));
    }
    outcome
}

/// Statements as the prompts list them: `[id] text (date)`.
pub fn statement_lines<'a>(statements: impl Iterator<Item = &'a Value>) -> String {
    statements
        .map(|s| {
            let date = s["date"]
                .as_str()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            format!(
                "[{}] {}{date}",
                s["id"].as_str().unwrap_or_default(),
                s["text"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `synth questions`: writes `OUT/questions.jsonl` and `OUT/report.json`.
pub fn run(
    synth: &Synth,
    memory_path: &Path,
    out: &Path,
    cluster_size: usize,
    styles: &[String],
) -> Result<Report, SynthError> {
    for s in styles {
        if !STYLES.contains(&s.as_str()) {
            return Err(SynthError::Input(format!(
                "--styles: unknown style `{s}` (known: {})",
                STYLES.join(", ")
            )));
        }
    }
    let memory = read_memory(memory_path)?;
    let items = clusters(&memory, cluster_size.max(1), synth.options.seed);
    let settings = json!({
        "memory": super::input_fingerprints(&[memory_path.to_path_buf()])?,
        "cluster_size": cluster_size,
        "styles": styles,
    });
    let styles_text = styles.join(", ");
    let run = synth.run(
        "questions",
        &[("fas-questions", &["entities", "statements", "styles"])],
        settings,
        out,
        &items,
        &|id, cluster: &Cluster| {
            let names: Vec<&str> = cluster
                .entities
                .iter()
                .filter_map(|e| e["entity"].as_str())
                .collect();
            let lines = statement_lines(
                cluster
                    .entities
                    .iter()
                    .flat_map(|e| e["statements"].as_array().into_iter().flatten()),
            );
            let output = synth.ask(
                "fas-questions",
                &[
                    ("entities", &names.join("; ")),
                    ("statements", &lines),
                    ("styles", &styles_text),
                ],
                id,
                "questions",
            )?;
            Ok(parse_questions(&output, id, cluster, styles))
        },
    )?;
    let (questions, counts) = run.kept();
    let mut by_style: BTreeMap<String, usize> = BTreeMap::new();
    for q in &questions {
        *by_style
            .entry(q["style"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let path = out.join("questions.jsonl");
    write_jsonl(&path, &questions)?;
    let details = json!({
        "clusters": items.len(),
        "questions": questions.len(),
        "by_style": by_style,
    });
    Report::save(out, "questions", counts, vec![path], details)
}

/// What a sample made from question `q` records of it: its id, style and statement ids.
pub fn question_meta(id: &str, q: &Value) -> Value {
    let statements: Vec<&Value> = q["statements"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["id"])
        .collect();
    json!({"question_id": id, "style": q["style"], "statements": statements})
}

/// Reads `questions.jsonl` as written by `synth questions`.
pub fn read_questions(path: &Path) -> Result<Vec<(String, Value)>, SynthError> {
    read_jsonl(path)?
        .into_iter()
        .map(|(line, q)| {
            let ok = q["id"].is_string()
                && q["question"].is_string()
                && q["answer"].is_string()
                && q["statements"].is_array();
            if !ok {
                return Err(SynthError::Input(format!(
                    "{}:{line}: not a question record (`id`, `question`, `answer`, `statements`)",
                    path.display()
                )));
            }
            Ok((q["id"].as_str().unwrap_or_default().to_string(), q))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Vec<Value> {
        vec![
            json!({"entity": "A", "key": "a", "sources": ["d1"], "statements": [{"id": "st-1", "text": "A is 3.", "date": null}]}),
            json!({"entity": "B", "key": "b", "sources": ["d1", "d2"], "statements": [{"id": "st-2", "text": "B is 4.", "date": "2001"}]}),
            json!({"entity": "C", "key": "c", "sources": ["d3"], "statements": [{"id": "st-3", "text": "C is 5.", "date": null}]}),
        ]
    }

    #[test]
    fn clusters_join_entities_that_share_a_source() {
        let c = clusters(&memory(), 3, 0);
        let names = |i: usize| {
            c[i].1
                .entities
                .iter()
                .map(|e| e["entity"].as_str().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(c[0].0, "q-a");
        assert_eq!(names(0), ["A", "B"]);
        assert_eq!(names(2), ["C"]);
    }

    #[test]
    fn questions_are_checked_against_the_cluster() {
        let c = clusters(&memory(), 2, 0);
        let output = r#"{"questions": [
            {"style": "multi_hop", "question": "q1", "answer": "7", "statements": ["st-1", "st-2", "st-1"]},
            {"style": "poetry", "question": "q2", "answer": "x", "statements": ["st-1"]},
            {"style": "synthesis", "question": "q3", "answer": "x", "statements": ["st-9"]},
            {"style": "factual_retrieval", "question": "", "answer": "x", "statements": ["st-1"]}
        ]}"#;
        let styles: Vec<String> = STYLES.iter().map(|s| s.to_string()).collect();
        let o = parse_questions(output, "q-a", &c[0].1, &styles);
        assert_eq!(o.kept.len(), 1);
        assert_eq!(o.kept[0]["statements"].as_array().unwrap().len(), 2);
        let reasons: Vec<&str> = o.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "unknown_style",
                "no_linked_statement",
                "empty_question_or_answer"
            ]
        );
        assert_eq!(
            parse_questions("{}", "q-a", &c[0].1, &styles).rejects[0].reason,
            "malformed_json"
        );
        // Only the styles asked for are kept.
        let o = parse_questions(output, "q-a", &c[0].1, &["synthesis".to_string()]);
        assert!(o.kept.is_empty());
    }
}
