//! A blocking OpenAI-compatible chat-completions client with timeouts and retries.
//!
//! The API key is read from an environment variable once and only ever placed in the
//! `Authorization` header: it is not part of any error, log line, cache key or output.

use std::time::Duration;

use serde_json::{json, Value};

use super::llm::{ChatModel, ChatRequest, Completion, LlmError};

/// How to reach the endpoint and how hard to try.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key (none: no `Authorization`).
    pub api_key_env: Option<String>,
    /// Whole-request timeout (connect, send, wait, read).
    pub timeout: Duration,
    /// Retries after the first attempt, for retryable failures only.
    pub max_retries: u32,
    /// First backoff; doubles per retry, up to `max_backoff`. A `Retry-After` header wins.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl ClientConfig {
    pub fn new(base_url: &str, model: &str) -> Self {
        ClientConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key_env: None,
            timeout: Duration::from_secs(300),
            max_retries: 6,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// The client. Cheap to share across worker threads (the agent pools connections).
pub struct OpenAiClient {
    config: ClientConfig,
    api_key: Option<String>,
    agent: ureq::Agent,
}

/// Shows where the client points, and whether it has a key, never the key.
impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl OpenAiClient {
    /// Fails when `api_key_env` names a variable that is unset or empty.
    pub fn new(config: ClientConfig) -> Result<Self, String> {
        let api_key = match &config.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Some(key.trim().to_string()),
                _ => {
                    return Err(format!(
                        "environment variable `{var}` (the API key) is not set or empty"
                    ))
                }
            },
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(OpenAiClient {
            config,
            api_key,
            agent,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.base_url)
    }

    /// One attempt; `Err((error, retry_after))`.
    fn attempt(&self, body: &str) -> Result<Completion, (LlmError, Option<Duration>)> {
        let url = self.url("chat/completions");
        let mut request = self.agent.post(&url).content_type("application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let transport = |e: ureq::Error| {
            let msg = match e {
                ureq::Error::Timeout(_) => format!("timed out after {:?}", self.config.timeout),
                other => other.to_string(),
            };
            (
                LlmError::Transport {
                    url: url.clone(),
                    msg,
                },
                None,
            )
        };
        let mut response = request.send(body).map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(transport)?;
        if !(200..300).contains(&status) {
            let body: String = self.scrub(text.chars().take(500).collect());
            if matches!(status, 400 | 413 | 422) {
                let msg = format!("{url}: HTTP {status}: {body}");
                return Err((LlmError::Refused(msg), None));
            }
            return Err((LlmError::Status { url, status, body }, retry_after));
        }
        parse_completion(&text, &url).map_err(|e| (e, None))
    }

    /// `text` with the API key blanked out, for anything that may be stored or shown.
    fn scrub(&self, text: String) -> String {
        match &self.api_key {
            Some(key) => text.replace(key.as_str(), "<api key>"),
            None => text,
        }
    }
}

/// Reads `choices[0].message.content` and `model` from a chat-completion body.
pub fn parse_completion(body: &str, url: &str) -> Result<Completion, LlmError> {
    let v: Value = serde_json::from_str(body).map_err(|e| LlmError::Protocol {
        url: url.to_string(),
        msg: format!("invalid JSON: {e}"),
    })?;
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| LlmError::Unusable {
            url: url.to_string(),
            msg: "no `choices[0].message.content` string".into(),
        })?;
    Ok(Completion {
        text: content.to_string(),
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

/// The request body of the OpenAI wire format.
pub fn request_body(model: &str, request: &ChatRequest) -> Value {
    json!({
        "model": model,
        "messages": request.messages,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "seed": request.seed,
    })
}

/// A little jitter (±25%) so that workers backing off together do not return together.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + 0.5 * (crate::rng::splitmix64(nanos as u64) % 1000) as f64 / 1000.0;
    d.mul_f64(factor)
}

impl ChatModel for OpenAiClient {
    fn name(&self) -> String {
        self.config.model.clone()
    }

    fn complete(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let body = request_body(&self.config.model, request).to_string();
        let mut backoff = self.config.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.attempt(&body) {
                Ok(c) => return Ok(c),
                Err((e, _)) if !e.is_retryable() => return Err(e),
                Err((e, _)) if attempts > self.config.max_retries => {
                    return Err(LlmError::Exhausted {
                        attempts,
                        last: Box::new(e),
                    })
                }
                Err((_, retry_after)) => {
                    let wait = retry_after
                        .unwrap_or_else(|| jittered(backoff))
                        .min(self.config.max_backoff);
                    std::thread::sleep(wait);
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }
}
