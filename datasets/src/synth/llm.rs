//! One interface for every language model `synth` talks to: a remote OpenAI-compatible
//! endpoint ([`crate::synth::client`]) or agentcpt's own model in process (the root crate).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One chat message as the OpenAI wire format has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A chat-completion request. `seed` is sent to the server, which makes sampling
/// reproducible where the server honours it (agentcpt's own server does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: usize,
    pub seed: u64,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    /// The model name the server reported.
    pub model: String,
}

/// Why a completion could not be had. None of these is about the *content* of an answer
/// (malformed answers are counted rejects): they mean the model could not be reached or
/// refused, and a synth run stops on them so that a re-run retries the item.
#[derive(Debug, Error)]
pub enum LlmError {
    /// Connection refused, DNS failure, timeout, TLS, reset.
    #[error("{url}: {msg}")]
    Transport { url: String, msg: String },
    /// A non-success HTTP status (body excerpt included, never the API key).
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The server answered 200 with a body that is not JSON (a truncated or proxied
    /// reply): retried.
    #[error("{url}: not a chat completion: {msg}")]
    Protocol { url: String, msg: String },
    /// A well-formed reply with no usable text (`content` null or missing: a refusal, tool
    /// calls only): the item is rejected with reason `unusable_completion`.
    #[error("{url}: no usable reply: {msg}")]
    Unusable { url: String, msg: String },
    /// Retryable failures went on past the retry budget.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: Box<LlmError> },
    /// The model refused this one request (HTTP 400/413/422, a prompt longer than the
    /// context): the item is rejected with reason `request_refused` and the run goes on.
    #[error("request refused: {0}")]
    Refused(String),
    /// The in-process model failed.
    #[error("local model: {0}")]
    Local(String),
}

impl LlmError {
    /// Worth another attempt: transport errors, non-JSON bodies, 408, 409, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Transport { .. } | LlmError::Protocol { .. } => true,
            LlmError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || (500..600).contains(status)
            }
            _ => false,
        }
    }
}

/// A chat model. Implementations must be callable from several threads at once.
pub trait ChatModel: Send + Sync {
    /// The model name recorded in sample provenance.
    fn name(&self) -> String;
    fn complete(&self, request: &ChatRequest) -> Result<Completion, LlmError>;
}
