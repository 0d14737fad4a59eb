//! `synth plan`: one planning action per question (FAS step 3): a problem analysis and a
//! first action (a tool call in the Tongyi agent format, or a direct answer), never executed,
//! then an LLM judge that checks it against the knowledge the question was built from.

use std::path::Path;

use serde_json::{json, Value};

use super::output::sample_record;
use super::parse::{extract_json, parse_step, Action};
use super::questions::{question_meta, read_questions, statement_lines};
use super::runner::Outcome;
use super::{chatml, Report, Synth, SynthError};

/// The tools planning actions may call: the Tongyi DeepResearch set (schemas as its agent
/// sees them, one per line).
pub const TOOLS: &[&str] = &[
    r#"{"type": "function", "function": {"name": "search", "description": "Perform Google web searches then returns a string of the top search results. Accepts multiple queries.", "parameters": {"type": "object", "properties": {"query": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "The list of search queries."}}, "required": ["query"]}}}"#,
    r#"{"type": "function", "function": {"name": "visit", "description": "Visit webpage(s) and return the summary of the content.", "parameters": {"type": "object", "properties": {"url": {"type": "array", "items": {"type": "string"}, "description": "The URL(s) of the webpage(s) to visit."}, "goal": {"type": "string", "description": "The specific information goal for visiting webpage(s)."}}, "required": ["url", "goal"]}}}"#,
    r#"{"type": "function", "function": {"name": "google_scholar", "description": "Leverage Google Scholar to retrieve relevant information from academic publications. Accepts multiple queries.", "parameters": {"type": "object", "properties": {"query": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "The list of search queries for Google Scholar."}}, "required": ["query"]}}}"#,
    r#"{"type": "function", "function": {"name": "PythonInterpreter", "description": "Executes Python code in a sandboxed environment. The code goes after the JSON, inside <code></code> tags; print what you need to see.", "parameters": {"type": "object", "properties": {}, "required": []}}}"#,
];

/// The tool names of [`TOOLS`].
pub fn tool_names() -> Vec<String> {
    TOOLS
        .iter()
        .map(|t| {
            let v: Value = serde_json::from_str(t).expect("built-in tool schemas are JSON");
            v["function"]["name"].as_str().expect("named").to_string()
        })
        .collect()
}

/// Runs `synth plan`: writes `OUT/fas_planning-*.parquet` and `OUT/report.json`.
pub fn run(
    synth: &Synth,
    questions_path: &Path,
    out: &Path,
    date: &str,
) -> Result<Report, SynthError> {
    let questions = read_questions(questions_path)?;
    let system = synth
        .prompts
        .get("agent-system")
        .text(&[("tools", &TOOLS.join("\n")), ("date", date)])
        .map_err(SynthError::Input)?;
    let tools = tool_names();
    let settings = json!({
        "questions": super::input_fingerprints(&[questions_path.to_path_buf()])?,
        "date": date,
    });
    let run = synth.run(
        "plan",
        &[
            ("agent-system", &["tools", "date"]),
            ("fas-plan", &["system", "question"]),
            (
                "fas-plan-judge",
                &["question", "answer", "statements", "plan"],
            ),
        ],
        settings,
        out,
        &questions,
        &|id, q: &Value| {
            let question = q["question"].as_str().unwrap_or_default();
            let plan = synth.ask(
                "fas-plan",
                &[("system", &system), ("question", question)],
                id,
                "plan",
            )?;
            let step = match parse_step(&plan, Some(&tools)) {
                Ok(step) => step,
                Err((reason, detail)) => return Ok(Outcome::reject(reason, detail)),
            };
            let (action_kind, action) = match &step.action {
                Action::ToolCall { name, raw } => (format!("tool_call:{name}"), raw),
                Action::Answer { raw, .. } => ("answer".to_string(), raw),
            };
            let assistant = format!("<think>\n{}\n</think>\n{action}", step.thought);
            let statements = statement_lines(q["statements"].as_array().into_iter().flatten());
            let verdict = synth.ask(
                "fas-plan-judge",
                &[
                    ("question", question),
                    ("answer", q["answer"].as_str().unwrap_or_default()),
                    ("statements", &statements),
                    ("plan", &assistant),
                ],
                id,
                "judge",
            )?;
            let verdict = match extract_json(&verdict) {
                Ok(v) => v,
                Err(e) => return Ok(Outcome::reject("malformed_judge", e)),
            };
            let reason = verdict["reason"].as_str().unwrap_or_default().to_string();
            match verdict["verdict"].as_str() {
                Some("accept") => {}
                Some("reject") => return Ok(Outcome::reject("judge_rejected", reason)),
                other => {
                    return Ok(Outcome::reject(
                        "malformed_judge",
                        format!("verdict {other:?}"),
                    ))
                }
            }
            let text = chatml(&[
                ("system", &system),
                ("user", question),
                ("assistant", &assistant),
            ]);
            let mut meta = question_meta(id, q);
            meta["action"] = action_kind.into();
            meta["judge"] = json!({"verdict": "accept", "reason": reason});
            Ok(Outcome::keep(sample_record(
                &format!("plan-{id}"),
                "fas_planning",
                "synth-fas",
                &text,
                meta,
            )))
        },
    )?;
    let n = questions.len();
    let (kept, counts) = run.samples(synth, "plan");
    Report::save_samples(
        out,
        "plan",
        "fas_planning",
        &kept,
        counts,
        json!({"questions": n}),
    )
}
