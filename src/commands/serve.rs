//! `agentcpt serve`: the local model behind an OpenAI-compatible HTTP API
//! (`GET /v1/models`, `POST /v1/chat/completions`, non-streaming), on 127.0.0.1 by default.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agentcpt_datasets::synth::{ChatMessage, ChatRequest};
use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Response, Server};

use crate::local_llm::{LocalChat, TooLong};

/// Largest request body accepted.
const MAX_BODY: u64 = 64 << 20;
/// Threads taking requests (generation itself runs one at a time).
const WORKERS: usize = 4;

/// Binds `host:port` (port 0 picks a free one), prints `listening on http://ADDR`, serves
/// until killed.
pub fn run(chat: LocalChat, host: &str, port: u16) -> Result<()> {
    let server =
        Server::http((host, port)).map_err(|e| anyhow!("cannot listen on {host}:{port}: {e}"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("{host}:{port} is not an IP address"))?;
    println!("listening on http://{addr} (model `{}`)", chat.name());
    use std::io::Write;
    std::io::stdout().flush()?;
    let server = Arc::new(server);
    let chat = Arc::new(chat);
    let ids = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (server, chat, ids) = (server.clone(), chat.clone(), ids.clone());
            std::thread::spawn(move || {
                while let Ok(mut request) = server.recv() {
                    let (status, body) = handle(&chat, &ids, &mut request);
                    let header =
                        Header::from_bytes("Content-Type", "application/json").expect("valid");
                    let response = Response::from_string(body.to_string())
                        .with_status_code(status)
                        .with_header(header);
                    // A client that hung up is not the server's problem.
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| anyhow!("a server thread panicked"))?;
    }
    Ok(())
}

/// An OpenAI-style error body.
fn error(status: u16, kind: &str, message: impl Into<String>) -> (u16, Value) {
    (
        status,
        json!({"error": {"message": message.into(), "type": kind, "code": status}}),
    )
}

fn handle(chat: &LocalChat, ids: &AtomicU64, request: &mut tiny_http::Request) -> (u16, Value) {
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    match (request.method(), path.as_str()) {
        (Method::Get, "/v1/models") => (
            200,
            json!({"object": "list", "data": [{"id": chat.name(), "object": "model", "created": 0, "owned_by": "agentcpt"}]}),
        ),
        (Method::Post, "/v1/chat/completions") => {
            let mut body = String::new();
            if let Err(e) = request
                .as_reader()
                .take(MAX_BODY + 1)
                .read_to_string(&mut body)
            {
                return error(
                    400,
                    "invalid_request_error",
                    format!("cannot read the body: {e}"),
                );
            }
            if body.len() as u64 > MAX_BODY {
                let msg = format!("the body is over {MAX_BODY} bytes");
                return error(413, "invalid_request_error", msg);
            }
            match completion(chat, ids, &body) {
                Ok(v) => (200, v),
                Err(e) => e,
            }
        }
        (_, "/v1/models" | "/v1/chat/completions") => error(
            405,
            "invalid_request_error",
            format!("{} is not allowed on {path}", request.method()),
        ),
        _ => error(
            404,
            "not_found",
            format!("no route {path}; this server has /v1/models and /v1/chat/completions"),
        ),
    }
}

/// Reads an OpenAI chat-completion request (`content` as a string or a list of text parts).
fn parse_request(body: &str, served: &str) -> Result<ChatRequest, (u16, Value)> {
    let bad = |m: String| error(400, "invalid_request_error", m);
    let v: Value =
        serde_json::from_str(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    if let Some(model) = v.get("model").and_then(Value::as_str) {
        if model != served {
            return Err(error(
                404,
                "model_not_found",
                format!("model `{model}` is not served here; this server has `{served}`"),
            ));
        }
    }
    if v.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "`stream: true` is not supported; send stream: false".into()
        ));
    }
    if v.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(bad("only `n: 1` is supported".into()));
    }
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`messages` must be a non-empty array".into()))?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("messages[{i}] has no `role`")))?;
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect(),
                Some(Value::Null) | None => String::new(),
                Some(_) => {
                    return Err(bad(format!(
                        "messages[{i}].content must be a string or a list of text parts"
                    )))
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let number = |key: &str, default: f64| -> Result<f64, (u16, Value)> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| bad(format!("`{key}` must be a number"))),
        }
    };
    // Integers as integers: seeds near 2^63 would lose their low bits through f64.
    let integer = |key: &str| -> Result<Option<u64>, (u16, Value)> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(format!("`{key}` must be a non-negative integer"))),
        }
    };
    let max_tokens = integer("max_completion_tokens")?
        .or(integer("max_tokens")?)
        .unwrap_or(512);
    let seed = integer("seed")?.unwrap_or(0);
    if max_tokens < 1 {
        return Err(bad("`max_tokens` must be at least 1".into()));
    }
    Ok(ChatRequest {
        messages,
        temperature: number("temperature", 1.0)?,
        top_p: number("top_p", 1.0)?,
        max_tokens: usize::try_from(max_tokens).unwrap_or(usize::MAX),
        seed,
    })
}

fn completion(chat: &LocalChat, ids: &AtomicU64, body: &str) -> Result<Value, (u16, Value)> {
    let request = parse_request(body, chat.name())?;
    let reply = chat.reply(&request.messages, &request).map_err(|e| {
        if e.downcast_ref::<TooLong>().is_some() {
            error(400, "context_length_exceeded", format!("{e:#}"))
        } else if e.downcast_ref::<agentcpt_datasets::ChatError>().is_some() {
            // An unknown role, a message the template cannot render: the request's fault.
            error(400, "invalid_request_error", format!("{e:#}"))
        } else if e
            .downcast_ref::<agentcpt_model::ModelError>()
            .is_some_and(|m| matches!(m, agentcpt_model::ModelError::Input(_)))
        {
            error(400, "invalid_request_error", format!("{e:#}"))
        } else {
            error(500, "server_error", format!("{e:#}"))
        }
    })?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(json!({
        "id": format!("chatcmpl-{}", ids.fetch_add(1, Ordering::Relaxed)),
        "object": "chat.completion",
        "created": created,
        "model": chat.name(),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": reply.finish_reason}],
        "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens, "total_tokens": reply.prompt_tokens + reply.completion_tokens},
    }))
}
