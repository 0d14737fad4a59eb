//! `synth memory`: documents → entity-anchored memory (FAS step 1).
//!
//! Each document (chunked at paragraph boundaries when long) is one item: the model lists
//! entities with declarative statements and their dates. Statements are then merged across
//! documents by normalised entity name and normalised statement text, keeping every source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::output::{read_jsonl, write_jsonl};
use super::parse::{extract_json, normalize_answer};
use super::runner::{Outcome, Reject};
use super::{Report, Synth, SynthError};
use crate::schema::Content;

/// One document to read.
#[derive(Debug, Clone)]
pub struct Document {
    pub id: String,
    pub text: String,
}

/// Documents from JSONL (`text`, or `messages` whose tool responses become documents) and
/// Parquet shards in the pipeline schema (`text` or `messages`).
pub fn read_documents(inputs: &[PathBuf]) -> Result<Vec<Document>, SynthError> {
    let mut docs = Vec::new();
    for path in inputs {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        if path.extension().is_some_and(|e| e == "parquet") {
            for row in crate::reader::read_all(&[path.display().to_string()])? {
                let (_, sample) = row?;
                match &sample.content {
                    Content::Text(t) => docs.push(Document {
                        id: sample.id.clone(),
                        text: t.clone(),
                    }),
                    Content::Messages(m) => {
                        let conv = crate::chat::parse_conversation(m).map_err(|e| {
                            SynthError::Input(format!(
                                "{}: sample `{}`: {e}",
                                path.display(),
                                sample.id
                            ))
                        })?;
                        let turns = conv
                            .messages
                            .iter()
                            .map(|m| (m.role.as_str(), m.content.as_str()));
                        docs.extend(tool_responses(&sample.id, turns));
                    }
                    Content::InputIds(_) => {
                        return Err(SynthError::Input(format!(
                            "{}: sample `{}` holds token ids; give the text shards",
                            path.display(),
                            sample.id
                        )))
                    }
                }
            }
            continue;
        }
        for (line, v) in read_jsonl(path)? {
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{stem}:{line}"));
            if let Some(text) = v.get("text").and_then(Value::as_str) {
                docs.push(Document {
                    id,
                    text: text.to_string(),
                });
            } else if let Some(messages) = v.get("messages").and_then(Value::as_array) {
                let turns = messages.iter().filter_map(|m| {
                    let role = m.get("role").and_then(Value::as_str)?;
                    Some((role, m.get("content").and_then(Value::as_str)?))
                });
                docs.extend(tool_responses(&id, turns));
            } else {
                return Err(SynthError::Input(format!(
                    "{}:{line}: a document needs a `text` string or a `messages` array",
                    path.display()
                )));
            }
        }
    }
    Ok(docs)
}

/// The tool responses of a trajectory, one document each, tags stripped: `tool` turns, and
/// every `<tool_response>` block of other turns (Qwen3 groups parallel calls' responses in
/// one turn).
fn tool_responses<'a>(id: &str, turns: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<Document> {
    let mut texts = Vec::new();
    for (role, content) in turns {
        if role == "tool" {
            texts.push(content.trim());
            continue;
        }
        let mut rest = content;
        while let Some(start) = rest.find("<tool_response>") {
            let after = &rest[start + "<tool_response>".len()..];
            let Some(end) = after.find("</tool_response>") else {
                break;
            };
            texts.push(after[..end].trim());
            rest = &after[end..];
        }
    }
    texts
        .into_iter()
        .enumerate()
        .map(|(k, text)| Document {
            id: format!("{id}#response-{}", k + 1),
            text: text.to_string(),
        })
        .collect()
}

/// Splits `text` into pieces of at most `max_bytes` (or one character, if longer), at blank
/// lines where possible.
pub fn chunk(text: &str, max_bytes: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    for para in text.split("\n\n") {
        if !current.is_empty() && current.len() + para.len() + 2 > max_bytes {
            chunks.push(std::mem::take(&mut current));
        }
        let mut para = para;
        while para.len() > max_bytes {
            let mut cut = max_bytes;
            while !para.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 {
                cut = para.chars().next().map_or(para.len(), char::len_utf8);
            }
            chunks.push(para[..cut].to_string());
            para = &para[cut..];
        }
        if !current.is_empty() {
            current.push_str("\n\n");
        }
        current.push_str(para);
    }
    if !current.trim().is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// A statement's text and the date it refers to.
type Statement = (String, Option<String>);

/// Parses the model's entity list; `Err` is the reject.
fn parse_entities(output: &str) -> Result<Vec<(String, Vec<Statement>)>, Reject> {
    let v = extract_json(output).map_err(|e| Reject::new("malformed_json", e))?;
    let entities = v
        .get("entities")
        .and_then(Value::as_array)
        .ok_or_else(|| Reject::new("malformed_json", "no `entities` array"))?;
    let mut out = Vec::new();
    for e in entities {
        let Some(name) = e.get("name").and_then(Value::as_str).map(str::trim) else {
            continue;
        };
        let statements: Vec<Statement> = e
            .get("statements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let text = s.get("text").and_then(Value::as_str)?.trim();
                let date = s.get("date").and_then(Value::as_str).map(str::to_string);
                (!text.is_empty()).then(|| (text.to_string(), date))
            })
            .collect();
        if !name.is_empty() && !normalize_answer(name).is_empty() && !statements.is_empty() {
            out.push((name.to_string(), statements));
        }
    }
    if out.is_empty() {
        return Err(Reject::new("no_entities", "no entity with a statement"));
    }
    Ok(out)
}

/// Runs `synth memory`: writes `OUT/memory.jsonl` and `OUT/report.json`.
pub fn run(
    synth: &Synth,
    inputs: &[PathBuf],
    out: &Path,
    max_doc_bytes: usize,
) -> Result<Report, SynthError> {
    let docs = read_documents(inputs)?;
    let mut items = Vec::new();
    for d in &docs {
        let pieces = chunk(&d.text, max_doc_bytes.max(1));
        let n = pieces.len();
        for (i, text) in pieces.into_iter().enumerate() {
            let id = if n == 1 {
                d.id.clone()
            } else {
                format!("{}#chunk-{}", d.id, i + 1)
            };
            items.push((
                id,
                Document {
                    id: d.id.clone(),
                    text,
                },
            ));
        }
    }
    let settings = json!({
        "inputs": super::input_fingerprints(inputs)?,
        "max_doc_bytes": max_doc_bytes,
    });
    let run = synth.run(
        "memory",
        &[("fas-memory", &["source", "document"])],
        settings,
        out,
        &items,
        &|id, doc: &Document| {
            if doc.text.trim().is_empty() {
                return Ok(Outcome::reject(
                    "empty_document",
                    format!("`{}` has no text", doc.id),
                ));
            }
            let output = synth.ask(
                "fas-memory",
                &[("source", &doc.id), ("document", &doc.text)],
                id,
                "memory",
            )?;
            Ok(match parse_entities(&output) {
            Ok(entities) => Outcome {
                kept: entities
                    .into_iter()
                    .map(|(name, st)| json!({"name": name, "source": doc.id, "statements": st.iter().map(|(t, d)| json!({"text": t, "date": d})).collect::<Vec<_>>()}))
                    .collect(),
                rejects: vec![],
            },
            Err(r) => r.into(),
        })
        },
    )?;
    let (kept, counts) = run.kept();
    let memory = merge(kept.iter());
    let path = out.join("memory.jsonl");
    write_jsonl(&path, &memory)?;
    let statements: usize = memory
        .iter()
        .map(|e| e["statements"].as_array().map_or(0, Vec::len))
        .sum();
    let details = json!({
        "documents": docs.len(),
        "chunks": items.len(),
        "entities": memory.len(),
        "statements": statements,
    });
    Report::save(out, "memory", counts, vec![path], details)
}

/// Merges per-document entity records into one record per normalised entity name, sorted
/// by that key; statements deduplicated by normalised text, sources accumulated.
pub fn merge<'a>(records: impl Iterator<Item = &'a Value>) -> Vec<Value> {
    struct Entity {
        names: BTreeMap<String, usize>,
        statements: BTreeMap<String, (String, Option<String>, Vec<String>)>,
        sources: Vec<String>,
    }
    let mut entities: BTreeMap<String, Entity> = BTreeMap::new();
    for r in records {
        let name = r["name"].as_str().unwrap_or_default();
        let source = r["source"].as_str().unwrap_or_default().to_string();
        let key = normalize_answer(name);
        let e = entities.entry(key).or_insert_with(|| Entity {
            names: BTreeMap::new(),
            statements: BTreeMap::new(),
            sources: vec![],
        });
        *e.names.entry(name.to_string()).or_default() += 1;
        if !e.sources.contains(&source) {
            e.sources.push(source.clone());
        }
        for s in r["statements"].as_array().into_iter().flatten() {
            let text = s["text"].as_str().unwrap_or_default();
            let date = s["date"].as_str().map(str::to_string);
            let st = e
                .statements
                .entry(normalize_answer(text))
                .or_insert_with(|| (text.to_string(), date.clone(), vec![]));
            if st.1.is_none() {
                st.1 = date;
            }
            if !st.2.contains(&source) {
                st.2.push(source.clone());
            }
        }
    }
    entities
        .into_iter()
        .map(|(key, e)| {
            // The most frequent spelling; ties go to the alphabetically first.
            let name = e
                .names
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            let statements: Vec<Value> = e
                .statements
                .into_iter()
                .map(|(norm, (text, date, sources))| {
                    json!({"id": statement_id(&key, &norm), "text": text, "date": date, "sources": sources})
                })
                .collect();
            json!({"entity": name, "key": key, "sources": e.sources, "statements": statements})
        })
        .collect()
}

/// A stable statement id: `st-` and 12 hex digits of SHA-256(entity key, statement).
fn statement_id(key: &str, norm: &str) -> String {
    let digest = Sha256::digest(format!("{key}\u{0}{norm}").as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("st-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_merge_across_documents() {
        let records = [
            json!({"name": "Santa Claus", "source": "d1", "statements": [{"text": "Santa Claus won the 1964 Derby.", "date": "1964"}]}),
            json!({"name": "santa claus", "source": "d2", "statements": [{"text": "Santa Claus won the 1964 Derby", "date": null}, {"text": "Santa Claus was trained in Ireland.", "date": null}]}),
            json!({"name": "Epsom", "source": "d2", "statements": [{"text": "Epsom hosts the Derby.", "date": null}]}),
        ];
        let memory = merge(records.iter());
        assert_eq!(memory.len(), 2);
        assert_eq!(memory[0]["entity"], "Epsom");
        let santa = &memory[1];
        assert_eq!(santa["sources"], json!(["d1", "d2"]));
        let st = santa["statements"].as_array().unwrap();
        assert_eq!(st.len(), 2);
        let derby = st.iter().find(|s| s["date"] == "1964").unwrap();
        assert_eq!(derby["sources"], json!(["d1", "d2"]));
        assert!(derby["id"].as_str().unwrap().starts_with("st-"));
    }

    #[test]
    fn chunks_split_at_paragraphs_and_char_boundaries() {
        assert_eq!(chunk("a\n\nb", 100), vec!["a\n\nb"]);
        assert_eq!(chunk("aaaa\n\nbbbb", 6), vec!["aaaa", "bbbb"]);
        let long = "é".repeat(10);
        let pieces = chunk(&long, 5);
        assert_eq!(pieces.concat(), long);
        assert!(pieces.iter().all(|p| p.len() <= 5));
        // A limit under one character still makes progress.
        assert_eq!(chunk("éé", 1), vec!["é", "é"]);
    }

    #[test]
    fn entity_output_is_validated() {
        assert_eq!(parse_entities("nope").unwrap_err().reason, "malformed_json");
        assert_eq!(
            parse_entities(r#"{"entities": [{"name": "X", "statements": []}]}"#)
                .unwrap_err()
                .reason,
            "no_entities"
        );
        let ok = parse_entities(
            r#"{"entities": [{"name": " X ", "statements": [{"text": "X is.", "date": "2001"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            vec![(
                "X".to_string(),
                vec![("X is.".to_string(), Some("2001".to_string()))]
            )]
        );
    }
}
