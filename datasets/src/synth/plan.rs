//! `synth plan`: one planning action per question (FAS step 3): a problem analysis and a
//! first action (a tool call in the Tongyi agent format, or a direct answer), never executed,
//! then an LLM judge that checks it against the knowledge the question was built from.

use std::path::Path;

use serde_json::{json, Value};

use super::output::{sample_record, samples_from, write_shards};
use super::parse::{extract_json, parse_step, Action};
use super::questions::{read_questions, statement_lines};
use super::runner::{check_settings, run_items, Outcome, Reject};
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
    let versions = synth.prompt_versions(&["agent-system", "fas-plan", "fas-plan-judge"]);
    synth.check_prompts(&[
        ("agent-system", &["tools", "date"]),
        ("fas-plan", &["system", "question"]),
        (
            "fas-plan-judge",
            &["question", "answer", "statements", "plan"],
        ),
    ])?;
    let settings = synth.settings(
        "plan",
        json!({"questions": super::input_fingerprints(&[questions_path.to_path_buf()])?, "date": date, "prompts": versions}),
    );
    let journal = check_settings(out, &settings)?;
    let tools = tool_names();
    let model = synth.model.name();
    let (outcomes, counts) = run_items(
        &questions,
        &journal,
        synth.options.concurrency,
        &*synth.progress,
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
            let meta = json!({
                "generator": "synth plan",
                "model": model,
                "seed": synth.options.seed,
                "prompts": versions,
                "question_id": id,
                "style": q["style"],
                "statements": q["statements"].as_array().into_iter().flatten().map(|s| s["id"].clone()).collect::<Vec<_>>(),
                "action": action_kind,
                "judge": {"verdict": "accept", "reason": reason},
            });
            Ok(Outcome {
                kept: vec![sample_record(
                    &format!("plan-{id}"),
                    "fas_planning",
                    "synth-fas",
                    &text,
                    meta,
                )],
                rejects: Vec::<Reject>::new(),
            })
        },
    )?;
    let records: Vec<Value> = outcomes.into_iter().flat_map(|o| o.kept).collect();
    let outputs = write_shards(out, "fas_planning", &samples_from(&records))?;
    let report = Report {
        command: "plan".into(),
        counts,
        outputs,
        details: json!({"questions": questions.len(), "samples": records.len()}),
    };
    report.save(out)?;
    Ok(report)
}
