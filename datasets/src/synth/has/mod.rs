//! `synth has`: High-order Action Synthesis. ReAct trajectories become step-wise decision
//! samples: at every step the original thought + action is shuffled (seeded) among N
//! model-written alternatives in the same syntax, the sample states the choice of the
//! original's position, then continues with the real tool response, verbatim; after the last
//! step comes the trajectory's judgement. Failed trajectories are used as well as successful
//! ones. Nothing is executed.
//!
//! The sample layout (raw Qwen3 ChatML, as `text`):
//!
//! ```text
//! <|im_start|>system\n{system, verbatim}<|im_end|>
//! <|im_start|>user\n{question, verbatim}<|im_end|>
//! <|im_start|>assistant\nI have 3 options for the next step.\nOption 1:\n{thought}\n<tool_call>…</tool_call>\nOption 2:\n…\nI will choose option 2.<|im_end|>
//! <|im_start|>user\n{the real tool response turn, verbatim}<|im_end|>
//! …
//! <|im_start|>assistant\nI have 2 options for the final answer.\n…\nI will choose option 1.\n<answer>…</answer>\nMy decision is Correct.<|im_end|>
//! ```

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::output::{read_jsonl, sample_record, samples_from, write_shards};
use super::parse::{answers_match, extract_json, parse_step, Action, Step};
use super::runner::{Outcome, Reject};
use super::{chatml, Report, Synth, SynthError};
use crate::rng::{fnv1a, mix_seed, Rng};
use crate::tokenizer::Encoder;

/// `synth has` settings.
#[derive(Debug, Clone)]
pub struct HasOptions {
    /// Alternatives per step, drawn per step (seeded) from this range.
    pub alternatives: std::ops::RangeInclusive<usize>,
    /// Ask the `answer-judge` prompt when the normaliser does not match the reference.
    pub llm_judge: bool,
    /// Samples up to this many tokens go to the stage-1 shards, longer ones to stage 2.
    pub stage1_max_tokens: usize,
}

/// A trajectory as read: the turns, the reference answers, a given judgement.
#[derive(Debug, Clone)]
pub struct Trajectory {
    pub source: String,
    pub messages: Vec<(String, String)>,
    pub references: Vec<String>,
    pub judgement: Option<bool>,
}

/// A trajectory's parsed structure.
struct Parsed<'a> {
    /// Leading turns (system and question), verbatim.
    head: Vec<(&'a str, &'a str)>,
    question: &'a str,
    /// Per step: the step and the tool-response turn after it (none for the final step).
    steps: Vec<(Step, Option<(&'a str, String)>)>,
    tools: Option<Vec<String>>,
}

/// Reads trajectories from JSONL, or from Parquet shards (`agentcpt data import --kind
/// trajectory` output: `messages`, with the other fields in `meta`). Each has `messages`
/// (role/content, tool responses as `user` turns wrapped in `<tool_response>` or as `tool`
/// turns), a reference `answer` (string, number or nested lists of them) and optionally a
/// given judgement (`judgement`: "correct"/"incorrect", or `correct`: bool). Ids are the
/// record's `id`, else `FILE_STEM:LINE`.
pub fn read_trajectories(inputs: &[PathBuf]) -> Result<Vec<(String, Trajectory)>, SynthError> {
    let mut out = Vec::new();
    for path in inputs {
        if path.extension().is_some_and(|e| e == "parquet") {
            for row in crate::reader::read_all(&[path.display().to_string()])? {
                let (_, sample) = row?;
                let bad = |what: String| {
                    SynthError::Input(format!(
                        "{}: sample `{}`: {what}",
                        path.display(),
                        sample.id
                    ))
                };
                let crate::schema::Content::Messages(json) = &sample.content else {
                    return Err(bad("a trajectory needs the `messages` column".into()));
                };
                let messages: Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
                let messages = match messages {
                    Value::Object(mut o) => o.remove("messages").unwrap_or(Value::Null),
                    other => other,
                };
                let fields: Value = match &sample.meta {
                    Some(meta) => serde_json::from_str(meta).map_err(|e| bad(e.to_string()))?,
                    None => Value::Null,
                };
                let source = format!("{}#{}", path.display(), sample.id);
                let t = trajectory(&messages, &fields, source).map_err(bad)?;
                out.push((sample.id.clone(), t));
            }
            continue;
        }
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        for (line, v) in read_jsonl(path)? {
            let source = format!("{}:{line}", path.display());
            let t = trajectory(&v["messages"], &v, source)
                .map_err(|e| SynthError::Input(format!("{}:{line}: {e}", path.display())))?;
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{stem}:{line}"));
            out.push((id, t));
        }
    }
    Ok(out)
}

/// One trajectory from its `messages` and the object holding `answer` / `judgement` /
/// `correct`.
fn trajectory(messages: &Value, fields: &Value, source: String) -> Result<Trajectory, String> {
    let messages = messages
        .as_array()
        .ok_or("no `messages` array")?
        .iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str);
            let content = m.get("content").and_then(Value::as_str);
            match (role, content) {
                (Some(r), Some(c)) => Ok((r.to_string(), c.to_string())),
                _ => Err("a message needs string `role` and `content`".to_string()),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut references = Vec::new();
    flatten_strings(
        fields.get("answer").or(fields.get("reference_answer")),
        &mut references,
    );
    let judgement = match (
        fields.get("judgement").and_then(Value::as_str),
        fields.get("correct"),
    ) {
        (Some(j), _) => match j.to_ascii_lowercase().as_str() {
            "correct" => Some(true),
            "incorrect" => Some(false),
            other => {
                return Err(format!(
                    "`judgement` must be \"correct\" or \"incorrect\", got `{other}`"
                ))
            }
        },
        (None, Some(Value::Bool(b))) => Some(*b),
        (None, Some(other)) => return Err(format!("`correct` must be true or false, got {other}")),
        (None, None) => None,
    };
    Ok(Trajectory {
        source,
        messages,
        references,
        judgement,
    })
}

fn flatten_strings(v: Option<&Value>, out: &mut Vec<String>) {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => out.push(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push(v.to_string()),
        Some(Value::Array(items)) => items.iter().for_each(|i| flatten_strings(Some(i), out)),
        _ => {}
    }
}

fn is_tool_response(role: &str, content: &str) -> bool {
    role == "tool" || (role == "user" && content.trim_start().starts_with("<tool_response>"))
}

/// Tool names from a `<tools>` block of JSON schemas (bare or OpenAI `function` form; one
/// per line, or separated by commas as some agent prompts write them). `None` when the
/// block does not parse: then tool names are not checked.
pub(crate) fn tool_names(text: &str) -> Option<Vec<String>> {
    let block = super::parse::between(text, "tools")?;
    let mut names = Vec::new();
    let mut pos = 0;
    while let Some(offset) = block[pos..].find('{') {
        let mut stream =
            serde_json::Deserializer::from_str(&block[pos + offset..]).into_iter::<Value>();
        let Some(Ok(v)) = stream.next() else {
            return None;
        };
        if let Some(n) = v["name"].as_str().or(v["function"]["name"].as_str()) {
            names.push(n.to_string());
        }
        pos += offset + stream.byte_offset();
    }
    (!names.is_empty()).then_some(names)
}

/// Splits a trajectory into head, question and steps; `Err` is the counted reject.
fn parse_trajectory(t: &Trajectory) -> Result<Parsed<'_>, Reject> {
    let m = &t.messages;
    let mut i = 0;
    let mut head = Vec::new();
    while i < m.len() && m[i].0 == "system" {
        head.push((m[i].0.as_str(), m[i].1.as_str()));
        i += 1;
    }
    if i >= m.len() || m[i].0 != "user" || is_tool_response(&m[i].0, &m[i].1) {
        return Err(Reject::new(
            "no_question",
            "no user question after the system turns",
        ));
    }
    let question = m[i].1.as_str();
    head.push(("user", question));
    let tools = head.iter().find_map(|(_, c)| tool_names(c));
    i += 1;
    let mut steps = Vec::new();
    while i < m.len() {
        let (role, content) = (&m[i].0, &m[i].1);
        if role != "assistant" {
            return Err(Reject::new(
                "unexpected_turn",
                format!("turn {i} is `{role}` where an assistant step was expected"),
            ));
        }
        let step = parse_step(content, tools.as_deref())
            .map_err(|(reason, detail)| Reject::new(reason, format!("turn {i}: {detail}")))?;
        i += 1;
        match &step.action {
            Action::ToolCall { .. } => {
                let Some((role, content)) = m.get(i).filter(|(r, c)| is_tool_response(r, c)) else {
                    return Err(Reject::new(
                        "missing_tool_response",
                        format!("turn {} has no tool response after it", i - 1),
                    ));
                };
                let turn = if role == "tool" {
                    format!("<tool_response>\n{content}\n</tool_response>")
                } else {
                    content.clone()
                };
                steps.push((step, Some(("user", turn))));
                i += 1;
            }
            Action::Answer { .. } => {
                if i < m.len() {
                    return Err(Reject::new(
                        "answer_before_end",
                        format!("turn {} answers but the trajectory goes on", i - 1),
                    ));
                }
                steps.push((step, None));
            }
        }
    }
    match steps.last() {
        Some((
            Step {
                action: Action::Answer { .. },
                ..
            },
            _,
        )) => {}
        _ => {
            return Err(Reject::new(
                "missing_answer",
                "the trajectory does not end with an <answer>",
            ))
        }
    }
    Ok(Parsed {
        head,
        question,
        steps,
        tools,
    })
}

/// The text of one option: the plain thought, then the action block verbatim.
fn option_text(step: &Step) -> String {
    let raw = match &step.action {
        Action::ToolCall { raw, .. } | Action::Answer { raw, .. } => raw,
    };
    format!("{}\n{raw}", step.thought)
}

/// Alternatives from the model's output: blocks separated by `---` lines that parse as a
/// step of the right kind and are not the original. `Err` names the first problem.
fn parse_alternatives(
    output: &str,
    original: &Step,
    tools: Option<&[String]>,
    n: usize,
) -> Result<Vec<Step>, Reject> {
    let mut blocks = vec![String::new()];
    for line in output.lines() {
        if line.trim() == "---" {
            blocks.push(String::new());
        } else {
            let b = blocks.last_mut().expect("never empty");
            b.push_str(line);
            b.push('\n');
        }
    }
    let want_answer = matches!(original.action, Action::Answer { .. });
    let mut kept: Vec<Step> = Vec::new();
    let mut first_problem = None;
    for block in blocks.iter().filter(|b| !b.trim().is_empty()) {
        match parse_step(block, tools) {
            Ok(step) if matches!(step.action, Action::Answer { .. }) != want_answer => {
                first_problem.get_or_insert((
                    "wrong_action_kind",
                    "an alternative has the wrong kind of action".to_string(),
                ));
            }
            Ok(step)
                if option_text(&step) == option_text(original)
                    || kept.iter().any(|k| option_text(k) == option_text(&step)) => {}
            Ok(step) => kept.push(step),
            Err((reason, detail)) => {
                first_problem.get_or_insert((reason, detail));
            }
        }
    }
    kept.truncate(n);
    if kept.is_empty() {
        let (reason, detail) =
            first_problem.unwrap_or(("no_alternatives", "the output holds no alternative".into()));
        return Err(Reject::new(
            "malformed_alternatives",
            format!("{reason}: {detail}"),
        ));
    }
    Ok(kept)
}

/// The journalled result for one trajectory, before token routing.
fn synthesize(
    synth: &Synth,
    options: &HasOptions,
    id: &str,
    t: &Trajectory,
) -> Result<Outcome, super::LlmError> {
    let parsed = match parse_trajectory(t) {
        Ok(p) => p,
        Err(r) => return Ok(r.into()),
    };
    let Some((
        Step {
            action:
                Action::Answer {
                    answer: final_answer,
                    ..
                },
            ..
        },
        _,
    )) = parsed.steps.last()
    else {
        return Ok(Outcome::reject("missing_answer", "no final <answer>"));
    };
    // The judgement: given, else the normaliser, else (optionally) the LLM judge.
    let (correct, judgement_source) = if let Some(j) = t.judgement {
        (j, "given")
    } else if t.references.is_empty() {
        return Ok(Outcome::reject(
            "no_judgement",
            "no judgement and no reference answer",
        ));
    } else if t.references.iter().any(|r| answers_match(final_answer, r)) {
        (true, "normalised_match")
    } else if options.llm_judge {
        let verdict = synth.ask(
            "answer-judge",
            &[
                ("question", parsed.question),
                ("reference", &t.references.join(" / ")),
                ("answer", final_answer),
            ],
            id,
            "judge",
        )?;
        match extract_json(&verdict)
            .ok()
            .and_then(|v| v["correct"].as_bool())
        {
            Some(c) => (c, "llm_judge"),
            None => {
                return Ok(Outcome::reject(
                    "malformed_judge",
                    format!("judge said `{}`", verdict.trim()),
                ))
            }
        }
    } else {
        (false, "normalised_mismatch")
    };
    let mut turns: Vec<(String, String)> = parsed
        .head
        .iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect();
    let mut context: Vec<(&str, &str)> = parsed.head.clone();
    let (mut option_counts, mut positions) = (Vec::new(), Vec::new());
    let (lo, hi) = (*options.alternatives.start(), *options.alternatives.end());
    for (k, (step, response)) in parsed.steps.iter().enumerate() {
        let mut rng = Rng::seed_from_u64(mix_seed(&[
            synth.options.seed,
            fnv1a(id.as_bytes()),
            k as u64,
        ]));
        let n = lo + rng.below((hi - lo + 1) as u64) as usize;
        let is_final = response.is_none();
        let (kind, format) = if is_final {
            (
                "final answer",
                "<think>\nyour reasoning\n</think>\n<answer>\nyour answer\n</answer>",
            )
        } else {
            ("tool call", "<think>\nyour reasoning\n</think>\n<tool_call>\n{\"name\": \"tool name\", \"arguments\": {...}}\n</tool_call>")
        };
        let output = synth.ask(
            "has-alternatives",
            &[
                ("context", &chatml(&context)),
                ("n", &n.to_string()),
                ("kind", kind),
                ("format", format),
            ],
            id,
            &format!("step-{}", k + 1),
        )?;
        let alternatives = match parse_alternatives(&output, step, parsed.tools.as_deref(), n) {
            Ok(a) => a,
            Err(mut r) => {
                r.detail = format!("step {}: {}", k + 1, r.detail);
                return Ok(r.into());
            }
        };
        // The original goes last, then a seeded shuffle decides where it lands.
        let mut order: Vec<usize> = (0..=alternatives.len()).collect();
        rng.shuffle(&mut order);
        let original = alternatives.len();
        let position = order.iter().position(|&o| o == original).expect("present") + 1;
        let what = if is_final {
            "the final answer"
        } else {
            "the next step"
        };
        let mut text = format!("I have {} options for {what}.\n", order.len());
        for (slot, &o) in order.iter().enumerate() {
            let step = if o == original {
                step
            } else {
                &alternatives[o]
            };
            text.push_str(&format!("Option {}:\n{}\n", slot + 1, option_text(step)));
        }
        text.push_str(&format!("I will choose option {position}."));
        if let Action::Answer { raw, .. } = &step.action {
            let verdict = if correct { "Correct" } else { "Incorrect" };
            text.push_str(&format!("\n{raw}\nMy decision is {verdict}."));
        }
        option_counts.push(order.len());
        positions.push(position);
        turns.push(("assistant".into(), text));
        context.push(("assistant", original_turn(t, &parsed, k)));
        if let Some((role, content)) = response {
            turns.push((role.to_string(), content.clone()));
            context.push((role, content));
        }
    }
    let refs: Vec<(&str, &str)> = turns
        .iter()
        .map(|(r, c)| (r.as_str(), c.as_str()))
        .collect();
    let meta = json!({
        "trajectory_id": id,
        "trajectory": t.source,
        "steps": parsed.steps.len(),
        "options": option_counts,
        "original_positions": positions,
        "judgement": if correct { "correct" } else { "incorrect" },
        "judgement_source": judgement_source,
        "reference_answers": t.references,
    });
    Ok(Outcome::keep(sample_record(
        &format!("has-{id}"),
        "has",
        "synth-has",
        &chatml(&refs),
        meta,
    )))
}

/// The original assistant turn of step `k`, verbatim, for the next step's context.
fn original_turn<'a>(t: &'a Trajectory, parsed: &Parsed<'_>, k: usize) -> &'a str {
    // Steps start after the head and take two turns each (step, response).
    t.messages[parsed.head.len() + 2 * k].1.as_str()
}

/// Runs `synth has`: writes `OUT/has-stage1-*.parquet`, `OUT/has-stage2-*.parquet` (by token
/// length, counted with `encoder`) and `OUT/report.json`.
pub fn run(
    synth: &Synth,
    inputs: &[PathBuf],
    out: &Path,
    options: &HasOptions,
    encoder: &dyn Encoder,
) -> Result<Report, SynthError> {
    if *options.alternatives.start() == 0 || options.alternatives.is_empty() {
        return Err(SynthError::Input(format!(
            "--alternatives {}..={}: need at least one alternative per step",
            options.alternatives.start(),
            options.alternatives.end()
        )));
    }
    let trajectories = read_trajectories(inputs)?;
    let settings = json!({
        "inputs": super::input_fingerprints(inputs)?,
        "alternatives": [options.alternatives.start(), options.alternatives.end()],
        "llm_judge": options.llm_judge,
    });
    let run = synth.run(
        "has",
        &[
            ("has-alternatives", &["context", "n", "kind", "format"]),
            ("answer-judge", &["question", "reference", "answer"]),
        ],
        settings,
        out,
        &trajectories,
        &|id, t| synthesize(synth, options, id, t),
    )?;
    let (kept, counts) = run.samples(synth, "has");
    let (mut stage1, mut stage2) = (Vec::new(), Vec::new());
    let mut judgements = std::collections::BTreeMap::<String, usize>::new();
    for mut record in kept {
        let text = record["text"].as_str().unwrap_or_default();
        let tokens = encoder.encode(text).map_err(SynthError::Data)?.len();
        record["meta"]["tokens"] = tokens.into();
        let j = record["meta"]["judgement"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *judgements.entry(j).or_default() += 1;
        if tokens <= options.stage1_max_tokens {
            stage1.push(record);
        } else {
            stage2.push(record);
        }
    }
    let mut outputs = write_shards(out, "has-stage1", &samples_from(&stage1))?;
    outputs.extend(write_shards(out, "has-stage2", &samples_from(&stage2))?);
    let details = json!({
        "trajectories": trajectories.len(),
        "stage1_samples": stage1.len(),
        "stage2_samples": stage2.len(),
        "stage1_max_tokens": options.stage1_max_tokens,
        "judgements": judgements,
    });
    Report::save(out, "has", counts, outputs, details)
}

#[cfg(test)]
mod tests;
