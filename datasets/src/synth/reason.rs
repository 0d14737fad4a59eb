//! `synth reason`: reasoning actions (FAS step 4) in two model calls: A1 answers from
//! internal knowledge alone, A2 refines A1 with the linked statements. A sample is kept only
//! when A2's answer agrees with the reference answer (after normalisation) and its reasoning
//! length is within bounds; the knowledge itself is not shown in the training text.

use std::ops::RangeInclusive;
use std::path::Path;

use serde_json::{json, Value};

use super::output::sample_record;
use super::parse::{answers_match, parse_step, Action};
use super::questions::{question_meta, read_questions, statement_lines};
use super::runner::Outcome;
use super::{chatml, Report, Synth, SynthError};

/// Runs `synth reason`: writes `OUT/fas_reasoning-*.parquet` and `OUT/report.json`.
/// `reasoning_chars` bounds the length of A2's reasoning, in characters.
pub fn run(
    synth: &Synth,
    questions_path: &Path,
    out: &Path,
    reasoning_chars: RangeInclusive<usize>,
) -> Result<Report, SynthError> {
    let questions = read_questions(questions_path)?;
    let settings = json!({
        "questions": super::input_fingerprints(&[questions_path.to_path_buf()])?,
        "reasoning_chars": [reasoning_chars.start(), reasoning_chars.end()],
    });
    let run = synth.run(
        "reason",
        &[
            ("fas-reason-internal", &["question"]),
            ("fas-reason-refine", &["question", "attempt", "statements"]),
        ],
        settings,
        out,
        &questions,
        &|id, q: &Value| {
            let question = q["question"].as_str().unwrap_or_default();
            let reference = q["answer"].as_str().unwrap_or_default();
            let attempt = synth.ask(
                "fas-reason-internal",
                &[("question", question)],
                id,
                "internal",
            )?;
            let first = match parse_step(&attempt, None) {
                Ok(s) => s,
                Err((reason, detail)) => {
                    return Ok(Outcome::reject(&format!("attempt_{reason}"), detail))
                }
            };
            let Action::Answer {
                answer: first_answer,
                ..
            } = &first.action
            else {
                return Ok(Outcome::reject("attempt_no_answer", "A1 called a tool"));
            };
            let statements = statement_lines(q["statements"].as_array().into_iter().flatten());
            let refined = synth.ask(
                "fas-reason-refine",
                &[
                    ("question", question),
                    ("attempt", attempt.trim()),
                    ("statements", &statements),
                ],
                id,
                "refine",
            )?;
            let step = match parse_step(&refined, None) {
                Ok(s) => s,
                Err((reason, detail)) => return Ok(Outcome::reject(reason, detail)),
            };
            let Action::Answer { answer, .. } = &step.action else {
                return Ok(Outcome::reject("no_answer", "A2 called a tool"));
            };
            if !answers_match(answer, reference) {
                return Ok(Outcome::reject(
                    "wrong_answer",
                    format!("`{answer}` vs reference `{reference}`"),
                ));
            }
            let chars = step.thought.chars().count();
            if chars < *reasoning_chars.start() {
                return Ok(Outcome::reject(
                    "reasoning_too_short",
                    format!("{chars} characters"),
                ));
            }
            if chars > *reasoning_chars.end() {
                return Ok(Outcome::reject(
                    "reasoning_too_long",
                    format!("{chars} characters"),
                ));
            }
            let assistant = format!(
                "<think>\n{}\n</think>\n<answer>{answer}</answer>",
                step.thought
            );
            let text = chatml(&[("user", question), ("assistant", &assistant)]);
            let mut meta = question_meta(id, q);
            meta["reference_answer"] = reference.into();
            meta["internal_answer_correct"] = answers_match(first_answer, reference).into();
            Ok(Outcome::keep(sample_record(
                &format!("reason-{id}"),
                "fas_reasoning",
                "synth-fas",
                &text,
                meta,
            )))
        },
    )?;
    let n = questions.len();
    let (kept, counts) = run.samples(synth, "reason");
    let details = json!({"questions": n});
    Report::save_samples(out, "reason", "fas_reasoning", &kept, counts, details)
}
