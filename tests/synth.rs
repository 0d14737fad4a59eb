//! `agentcpt synth` and `agentcpt serve` over real HTTP on loopback: agentcpt's own server
//! with a tiny model (the wire protocol end to end), and scripted servers (tiny_http) that
//! answer like a model would, storm with 429s, stall, or die mid-run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentcpt_datasets::synth::client::{ClientConfig, OpenAiClient};
use agentcpt_datasets::synth::{ChatMessage, ChatModel, ChatRequest, LlmError};
use serde_json::{json, Value};

use crate::cli::{agentcpt, stderr, stdout};

/// A loopback HTTP server answering every request with `reply(request number, body)` →
/// `(status, body)`; stops when dropped.
struct Scripted {
    server: Arc<tiny_http::Server>,
    requests: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scripted {
    fn start(reply: impl Fn(usize, &str) -> (u16, String) + Send + Sync + 'static) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let (s, n) = (server.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for mut request in s.incoming_requests() {
                let mut body = String::new();
                request.as_reader().read_to_string(&mut body).unwrap();
                let (status, text) = reply(n.fetch_add(1, Ordering::SeqCst), &body);
                let header = tiny_http::Header::from_bytes("Retry-After", "0").unwrap();
                let response = tiny_http::Response::from_string(text)
                    .with_status_code(status)
                    .with_header(header);
                let _ = request.respond(response);
            }
        });
        Scripted {
            server,
            requests,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.server.server_addr().to_ip().unwrap())
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

use std::io::Read;

/// A chat-completion body with `text` as the reply.
fn completion(text: &str) -> String {
    json!({"id": "x", "object": "chat.completion", "model": "scripted", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}).to_string()
}

/// The prompt text of a request body (all messages joined).
fn prompt_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn client(url: &str, retries: u32, timeout: Duration) -> OpenAiClient {
    let mut config = ClientConfig::new(url, "scripted");
    config.max_retries = retries;
    config.backoff = Duration::from_millis(5);
    config.timeout = timeout;
    OpenAiClient::new(config).unwrap()
}

fn request(seed: u64) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new("user", "hello")],
        temperature: 0.8,
        top_p: 0.95,
        max_tokens: 24,
        seed,
    }
}

#[test]
fn client_retries_through_a_429_storm_and_gives_up_past_its_budget() {
    let server = Scripted::start(|n, _| {
        if n < 4 {
            (429, "slow down".into())
        } else {
            (200, completion("fine"))
        }
    });
    let reply = client(&server.url(), 5, Duration::from_secs(10))
        .complete(&request(0))
        .unwrap();
    assert_eq!(reply.text, "fine");
    assert_eq!(server.requests(), 5);

    let storm = Scripted::start(|_, _| (503, "overloaded".into()));
    let err = client(&storm.url(), 2, Duration::from_secs(10))
        .complete(&request(0))
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Exhausted { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(storm.requests(), 3);

    // Not retried: a refused request and an unknown model.
    let refused = Scripted::start(|n, _| (if n == 0 { 400 } else { 404 }, "no".into()));
    let c = client(&refused.url(), 5, Duration::from_secs(10));
    assert!(matches!(c.complete(&request(0)), Err(LlmError::Refused(_))));
    assert!(matches!(
        c.complete(&request(0)),
        Err(LlmError::Status { status: 404, .. })
    ));
    assert_eq!(refused.requests(), 2);
}

#[test]
fn slow_and_unreachable_servers_are_errors_that_name_the_url() {
    let slow = Scripted::start(|_, _| {
        std::thread::sleep(Duration::from_millis(1500));
        (200, completion("late"))
    });
    let err = client(&slow.url(), 1, Duration::from_millis(200))
        .complete(&request(0))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("timed out") && msg.contains(&slow.url()),
        "{msg}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let err = client(&url, 1, Duration::from_secs(2))
        .complete(&request(0))
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Exhausted { .. }) && err.to_string().contains(&url),
        "{err}"
    );
}

#[test]
fn the_api_key_goes_in_the_header_only() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", server.server_addr().to_ip().unwrap());
    let s = seen.clone();
    let t = std::thread::spawn(move || {
        let request = server.recv().unwrap();
        for h in request.headers() {
            s.lock().unwrap().push(format!("{}: {}", h.field, h.value));
        }
        // A well-formed reply without usable content: not retried, rejected by the caller.
        let body =
            r#"{"choices": [{"index": 0, "message": {"role": "assistant", "content": null}}]}"#;
        let _ = request.respond(tiny_http::Response::from_string(body).with_status_code(200));
    });
    std::env::set_var("AGENTCPT_TEST_KEY", "sk-secret-123");
    let mut config = ClientConfig::new(&url, "scripted");
    config.api_key_env = Some("AGENTCPT_TEST_KEY".into());
    let err = OpenAiClient::new(config)
        .unwrap()
        .complete(&request(0))
        .unwrap_err();
    t.join().unwrap();
    assert!(matches!(err, LlmError::Unusable { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("sk-secret"));
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.eq_ignore_ascii_case("Authorization: Bearer sk-secret-123")));
    let mut missing = ClientConfig::new(&url, "scripted");
    missing.api_key_env = Some("AGENTCPT_TEST_KEY_UNSET".into());
    assert!(OpenAiClient::new(missing)
        .unwrap_err()
        .contains("AGENTCPT_TEST_KEY_UNSET"));
}

/// `agentcpt serve` in the background; killed when dropped.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A random tiny byte-level MoE with a 4K context, saved under `dir`.
fn tiny_model(dir: &Path) -> PathBuf {
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string("recipes/models/tiny-moe/config.json").unwrap(),
    )
    .unwrap();
    let mut config = config.as_object().unwrap().clone();
    config.insert("max_position_embeddings".into(), 4096.into());
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, Value::Object(config).to_string()).unwrap();
    let model = dir.join("tiny");
    let o = agentcpt(&[
        "model",
        "init",
        "--config",
        config_path.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--save-dtype",
        "f32",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    model
}

fn serve(model: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentcpt"))
        .args([
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--tokenizer",
            "bytes",
            "--port",
            "0",
            "--device",
            "cpu",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in `{line}`"));
    Served {
        child,
        url: format!("http://{addr}/v1"),
    }
}

/// The wire protocol end to end: our client against our server with a tiny model.
#[test]
fn serve_answers_the_openai_protocol_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&tiny_model(dir.path()));
    let mut config = ClientConfig::new(&served.url, "tiny");
    config.max_retries = 0;
    let client = OpenAiClient::new(config).unwrap();
    let a = client.complete(&request(7)).unwrap();
    assert_eq!(a.model, "tiny");
    assert_eq!(
        a.text,
        client.complete(&request(7)).unwrap().text,
        "same seed, same reply"
    );
    let texts: std::collections::HashSet<String> = (0..4)
        .map(|s| client.complete(&request(100 + s)).unwrap().text)
        .collect();
    assert!(texts.len() > 1, "seeds change the sampled reply");
    // Errors in the OpenAI shape, with the right status.
    let mut wrong = ClientConfig::new(&served.url, "gpt-4");
    wrong.max_retries = 0;
    let err = OpenAiClient::new(wrong)
        .unwrap()
        .complete(&request(0))
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Status { status: 404, .. })
            && err.to_string().contains("model_not_found"),
        "{err}"
    );
    let long = ChatRequest {
        messages: vec![ChatMessage::new("user", "x".repeat(5000))],
        ..request(0)
    };
    let err = client.complete(&long).unwrap_err();
    assert!(
        matches!(err, LlmError::Refused(ref m) if m.contains("context")),
        "{err}"
    );
    let developer = ChatRequest {
        messages: vec![ChatMessage::new("developer", "hi")],
        ..request(0)
    };
    let err = client.complete(&developer).unwrap_err();
    assert!(
        matches!(err, LlmError::Refused(ref m) if m.contains("HTTP 400")),
        "{err}"
    );
    // /v1/models over a raw socket.
    let addr = served
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["data"][0]["id"], "tiny");
}

const SEARCH: &str = "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"Velmora length\"]}}\n</tool_call>";

fn trajectories(dir: &Path, n: usize) -> PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            json!({"messages": [
                {"role": "system", "content": "Agent.\n<tools>\n{\"name\": \"search\"}\n</tools>"},
                {"role": "user", "content": format!("How long is the river Velmora? ({i})")},
                {"role": "assistant", "content": format!("<think>\nsearch it\n</think>\n{SEARCH}")},
                {"role": "user", "content": format!("<tool_response>\nVelmora: 412 km ({i})\n</tool_response>")},
                {"role": "assistant", "content": "<think>\nfound\n</think>\n<answer>412 kilometres</answer>"},
            ], "answer": "412 kilometres"})
            .to_string()
        })
        .collect();
    let path = dir.join("trajectories.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn has_args<'a>(input: &'a str, out: &'a str, url: &'a str, model: &'a str) -> Vec<&'a str> {
    vec![
        "synth",
        "has",
        input,
        "--out",
        out,
        "--base-url",
        url,
        "--model",
        model,
        "--count-tokenizer",
        "bytes",
        "--concurrency",
        "1",
        "--max-retries",
        "1",
        "--retry-base-ms",
        "5",
    ]
}

/// Against agentcpt's own server the tiny model's replies are gibberish: every trajectory is
/// a counted reject, the run still succeeds, and a re-run resumes from the journal.
#[test]
fn synth_has_against_the_tiny_server_counts_rejects_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&tiny_model(dir.path()));
    let input = trajectories(dir.path(), 3);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let mut args = has_args(i, o, &served.url, "tiny");
    args.extend(["--max-tokens", "48"]);
    let run = agentcpt(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["counts"]["rejected_items"], 3, "{report}");
    assert_eq!(
        report["counts"]["reject_reasons"]["malformed_alternatives"],
        3
    );
    let again = agentcpt(&args);
    assert!(
        stdout(&again).contains("3 items (3 resumed)"),
        "{}",
        stdout(&again)
    );
    // Different settings into the same directory are refused.
    args.extend(["--seed", "9"]);
    let refused = agentcpt(&args);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("`options`"),
        "{}",
        stderr(&refused)
    );
}

/// Valid alternatives for a `has-alternatives` prompt.
fn alternatives(prompt: &str) -> String {
    if prompt.contains("each a final answer") {
        "<think>\nguess\n</think>\n<answer>\n300 kilometres\n</answer>".into()
    } else {
        "<think>\nlook at a map\n</think>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"Velmora map\"]}}\n</tool_call>\n---\n<think>\nask differently\n</think>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"Velmora km\"]}}\n</tool_call>".into()
    }
}

/// A server that dies mid-run: the run stops with an error that says how to resume, the
/// finished items stay journalled and their responses cached, and a re-run completes.
#[test]
fn a_server_dying_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = trajectories(dir.path(), 4);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    // Two model calls per trajectory; the sixth call onwards fails, so the third trajectory
    // dies after its first step's call (which the response cache keeps).
    let dying = Scripted::start(|n, body| {
        if n < 5 {
            (200, completion(&alternatives(&prompt_of(body))))
        } else {
            (503, "down".into())
        }
    });
    let run = agentcpt(&has_args(i, o, &dying.url(), "m"));
    assert_eq!(run.status.code(), Some(2), "{}", stdout(&run));
    assert!(
        stderr(&run).contains("re-run the same command to resume"),
        "{}",
        stderr(&run)
    );
    assert!(
        !out.join("has-stage1-00000.parquet").exists(),
        "no partial output passed off as complete"
    );
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    assert_eq!(journal.lines().filter(|l| !l.is_empty()).count(), 2);
    drop(dying);

    let healthy = Scripted::start(|_, body| (200, completion(&alternatives(&prompt_of(body)))));
    let run = agentcpt(&has_args(i, o, &healthy.url(), "m"));
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stdout(&run).contains("4 items (2 resumed), 4 kept"),
        "{}",
        stdout(&run)
    );
    assert_eq!(
        healthy.requests(),
        3,
        "only the calls neither journalled nor cached were made"
    );
}

/// The model's answer for each FAS prompt, computed from the prompt like a model would.
fn fas_model(prompt: &str) -> String {
    if let Some(doc) = prompt.split("<document>\n").nth(1) {
        // Memory: each sentence's first word is its entity.
        let doc = doc.split("\n</document>").next().unwrap();
        let mut entities: Vec<(String, Vec<Value>)> = Vec::new();
        for sentence in doc
            .split(". ")
            .flat_map(|s| s.split(".\n"))
            .map(|s| s.trim().trim_end_matches('.'))
            .filter(|s| !s.is_empty())
        {
            let name = sentence.split_whitespace().next().unwrap().to_string();
            let date = sentence
                .split_whitespace()
                .find(|w| w.len() == 4 && w.chars().all(|c| c.is_ascii_digit()));
            let st = json!({"text": format!("{sentence}."), "date": date});
            match entities.iter_mut().find(|(n, _)| *n == name) {
                Some((_, s)) => s.push(st),
                None => entities.push((name, vec![st])),
            }
        }
        return json!({"entities": entities.into_iter().map(|(n, s)| json!({"name": n, "statements": s})).collect::<Vec<_>>()}).to_string();
    }
    if prompt.contains("Write one question in each of these styles") {
        // Questions: one per statement, "complete the sentence"; plus one in a bad style.
        let mut qs =
            vec![json!({"style": "poetry", "question": "?", "answer": "x", "statements": []})];
        for line in prompt.lines().filter(|l| l.starts_with("[st-")) {
            let (id, rest) = line[1..].split_once("] ").unwrap();
            let text = rest
                .rsplit_once(" (")
                .map_or(rest, |(t, _)| t)
                .trim_end_matches('.');
            let (head, last) = text.rsplit_once(' ').unwrap();
            qs.push(json!({"style": "factual_retrieval", "question": format!("Complete: {head} …?"), "answer": last, "statements": [id]}));
        }
        return json!({"questions": qs}).to_string();
    }
    if prompt.contains("Plan under review") {
        let verdict = if prompt.contains("Ostrand") {
            "reject"
        } else {
            "accept"
        };
        return json!({"verdict": verdict, "reason": "checked"}).to_string();
    }
    if prompt.contains("analyse the problem inside <think>") {
        return "<think>\nThe question asks for one missing word; search for the sentence.\n</think>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"sentence\"]}}\n</tool_call>".into();
    }
    if prompt.contains("A first attempt, from memory alone") {
        let question = prompt
            .split("Question: Complete: ")
            .nth(1)
            .unwrap()
            .split(" …?")
            .next()
            .unwrap();
        let statement = prompt
            .lines()
            .find_map(|l| {
                l.split_once("] ")
                    .map(|(_, t)| t)
                    .filter(|t| t.starts_with(question))
            })
            .unwrap();
        let text = statement
            .rsplit_once(" (")
            .map_or(statement, |(t, _)| t)
            .trim_end_matches('.');
        let answer = text.rsplit_once(' ').unwrap().1;
        return format!("<think>\nThe sentence begins \"{question}\"; the record says \"{text}\", so the missing word is {answer}.\n</think>\n<answer>{answer}</answer>");
    }
    if prompt.contains("Reason step by step from what you know") {
        return "<think>\nI do not remember this.\n</think>\n<answer>unknown</answer>".into();
    }
    panic!("unexpected prompt: {prompt}")
}

/// memory → questions → plan → reason over a loopback server, then the outputs train in the
/// tiny stage-1 recipe.
#[test]
fn the_fas_chain_runs_end_to_end_and_its_output_trains() {
    let dir = tempfile::tempdir().unwrap();
    let server = Scripted::start(|_, body| (200, completion(&fas_model(&prompt_of(body)))));
    let url = server.url();
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let common = |out: &str| {
        vec![
            "--out".to_string(),
            out.to_string(),
            "--base-url".into(),
            url.clone(),
            "--model".into(),
            "m".into(),
        ]
    };
    let run = |args: Vec<String>| {
        let o = agentcpt(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let dir = &args[args.iter().position(|a| a == "--out").unwrap() + 1];
        serde_json::from_str::<Value>(
            &std::fs::read_to_string(Path::new(dir).join("report.json")).unwrap(),
        )
        .unwrap()
    };
    let memory = run([
        vec![
            "synth".into(),
            "memory".into(),
            "tests/fixtures/synth/documents.jsonl".into(),
        ],
        common(&out("memory")),
    ]
    .concat());
    assert_eq!(
        memory["counts"]["reject_reasons"]["empty_document"], 1,
        "{memory}"
    );
    assert_eq!(memory["details"]["documents"], 5);
    let memory_file = format!("{}/memory.jsonl", out("memory"));
    let records: Vec<Value> = std::fs::read_to_string(&memory_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let velmora = records.iter().find(|r| r["entity"] == "Velmora").unwrap();
    assert_eq!(velmora["statements"].as_array().unwrap().len(), 3);
    // Ostrand appears in two documents (as an entity in doc-rivers only).
    assert!(records.iter().any(|r| r["entity"] == "Kesten"
        && r["statements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["date"] == "1902")));

    let questions = run([
        vec![
            "synth".into(),
            "questions".into(),
            "--memory".into(),
            memory_file,
        ],
        common(&out("questions")),
    ]
    .concat());
    assert!(
        questions["counts"]["reject_reasons"]["unknown_style"]
            .as_u64()
            .unwrap()
            > 0,
        "{questions}"
    );
    let qfile = format!("{}/questions.jsonl", out("questions"));
    let n_questions = questions["details"]["questions"].as_u64().unwrap();
    assert!(n_questions >= 10, "{questions}");

    let plan = run([
        vec![
            "synth".into(),
            "plan".into(),
            "--questions".into(),
            qfile.clone(),
        ],
        common(&out("plan")),
    ]
    .concat());
    let judged_out = plan["counts"]["reject_reasons"]["judge_rejected"]
        .as_u64()
        .unwrap();
    assert!(judged_out > 0, "{plan}");
    assert_eq!(
        plan["details"]["samples"].as_u64().unwrap() + judged_out,
        n_questions
    );

    let reason = run([
        vec!["synth".into(), "reason".into(), "--questions".into(), qfile],
        common(&out("reason")),
    ]
    .concat());
    assert_eq!(
        reason["details"]["samples"].as_u64().unwrap(),
        n_questions,
        "{reason}"
    );

    // The outputs read back as pipeline samples ...
    let inspect = agentcpt(&[
        "data",
        "inspect",
        &format!("{}/fas_planning-*.parquet", out("plan")),
    ]);
    assert!(
        inspect.status.success() && stdout(&inspect).contains("kinds: {\"fas_planning\""),
        "{}{}",
        stdout(&inspect),
        stderr(&inspect)
    );
    // ... and train in the tiny stage-1 recipe.
    let recipe = std::fs::read_to_string("recipes/tiny-stage1.toml")
        .unwrap()
        .replace(
            "data/tiny/fas_planning-*.parquet",
            &format!("{}/fas_planning-*.parquet", out("plan")),
        )
        .replace(
            "data/tiny/fas_reasoning-*.parquet",
            &format!("{}/fas_reasoning-*.parquet", out("reason")),
        )
        .replace("steps = 40", "steps = 3")
        .replace(
            "config = \"models/",
            &format!("config = \"{}/recipes/models/", env!("CARGO_MANIFEST_DIR")),
        )
        .replace(
            "\"data/tiny/",
            &format!("\"{}/recipes/data/tiny/", env!("CARGO_MANIFEST_DIR")),
        );
    let recipe_path = dir.path().join("fas.toml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let run_dir = dir.path().join("runs/tiny-stage1");
    let set_dir = format!("run.output_dir=\"{}\"", run_dir.display());
    let train = agentcpt(&[
        "recipe",
        recipe_path.to_str().unwrap(),
        "--fresh",
        "--set",
        &set_dir,
    ]);
    assert!(train.status.success(), "{}", stderr(&train));
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let last: Value =
        serde_json::from_str(metrics.lines().rfind(|l| l.contains("\"loss\"")).unwrap()).unwrap();
    assert_eq!(last["step"], 3, "{last}");
}

/// `--local DIR` runs the tiny model in process: the same counted rejects as over HTTP,
/// and the model name in provenance is the directory's.
#[test]
fn synth_runs_the_local_model_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let input = trajectories(dir.path(), 2);
    let out = dir.path().join("out");
    let run = agentcpt(&[
        "synth",
        "has",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--local",
        model.to_str().unwrap(),
        "--tokenizer",
        "bytes",
        "--device",
        "cpu",
        "--count-tokenizer",
        "bytes",
        "--max-tokens",
        "32",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(settings["model"], "tiny");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["counts"]["rejected_items"], 2, "{report}");
}

/// Bad input is an error naming the file and line, before any model call.
#[test]
fn bad_synth_input_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"messages\": []}\n{not json\n").unwrap();
    let out = dir.path().join("out");
    let args = has_args(
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "http://127.0.0.1:9/v1",
        "m",
    );
    let run = agentcpt(&args);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("bad.jsonl:2: not JSON"),
        "{}",
        stderr(&run)
    );
    let no_model = agentcpt(&[
        "synth",
        "memory",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(no_model.status.code(), Some(2));
    assert!(
        stderr(&no_model).contains("--base-url"),
        "{}",
        stderr(&no_model)
    );
}
