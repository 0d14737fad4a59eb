//! Qwen3 ChatML rendering: the Qwen3 chat template, re-implemented in Rust.
//!
//! Why re-implement instead of running Jinja: the `messages` content kind must turn into
//! exactly the text that transformers' `apply_chat_template` produces for the Qwen3
//! tokenizer_config (template shipped with Qwen3 since 4.51), so that CPT sees the same
//! byte stream that SFT/RL will see. The rules, in template order:
//!
//! - **System and tools.** With a non-empty `tools` list the first turn is a system turn
//!   holding the first message's system content (if any) + `\n\n`, a `# Tools` block with one
//!   `json.dumps` line per tool inside `<tools></tools>`, and the `<tool_call>` instruction.
//!   Without tools, a leading system message renders as a plain turn.
//! - **Last query.** The last `user` message whose content is not wholly a
//!   `<tool_response>…</tool_response>` is the "last query".
//! - **Assistant turns.** Reasoning is `reasoning_content` if present, else the text between
//!   `<think>` and `</think>` in the content (and the content is what follows `</think>`).
//!   After the last query, a turn with reasoning (or the final turn) renders as
//!   `<think>\n{reasoning}\n</think>\n\n{content}`; turns before it lose their reasoning.
//!   Each tool call appends `\n<tool_call>\n{"name": …, "arguments": …}\n</tool_call>` (no
//!   leading newline for the first call when the content is empty).
//! - **Tool results.** Consecutive `tool` messages merge into one `user` turn of
//!   `\n<tool_response>\n{content}\n</tool_response>` blocks.
//!
//! Deliberate differences from the Jinja template (which would raise or drop silently):
//! unknown roles and non-string `content` are errors; a `null`/missing assistant `content`
//! renders as `""`. [`ChatOptions::keep_all_thinking`] is an opt-in extension for CPT text
//! (agentic-cpt.md §8) that keeps the reasoning of every assistant turn.

use crate::error::ChatError;
use crate::json::Json;

const TOOLS_HEADER: &str = "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>";
const TOOLS_FOOTER: &str = "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";

/// Who speaks in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }

    /// The role name as written after `<|im_start|>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// The arguments of a tool call: a JSON value rendered with `json.dumps`, or a string that
/// is inserted verbatim (the template's `arguments is string` branch).
#[derive(Debug, Clone, PartialEq)]
pub enum ToolArguments {
    Json(Json),
    Raw(String),
}

/// One call in an assistant turn's `tool_calls`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: ToolArguments,
}

/// One ChatML message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// `reasoning_content`, when the message carries its reasoning separately.
    pub reasoning_content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

/// A conversation: messages plus the tool schemas offered to the model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub tools: Vec<Json>,
}

/// Rendering switches (the template's `add_generation_prompt`, `enable_thinking`, plus our
/// `keep_all_thinking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatOptions {
    /// Append `<|im_start|>assistant\n` (off for training text).
    pub add_generation_prompt: bool,
    /// With `add_generation_prompt`, `false` appends an empty think block.
    pub enable_thinking: bool,
    /// Keep the reasoning of assistant turns before the last query too (not template
    /// behaviour; identical output for single-question agent trajectories).
    pub keep_all_thinking: bool,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            add_generation_prompt: false,
            enable_thinking: true,
            keep_all_thinking: false,
        }
    }
}

fn err(msg: impl Into<String>) -> ChatError {
    ChatError(msg.into())
}

/// Parses a `messages` column value: a JSON array of messages, or an object
/// `{"messages": [...], "tools": [...]}`.
pub fn parse_conversation(text: &str) -> Result<Conversation, ChatError> {
    let value = Json::parse(text).map_err(|e| err(format!("invalid JSON: {e}")))?;
    let (messages, tools) = match &value {
        Json::Array(items) => (items.as_slice(), &[][..]),
        Json::Object(_) => {
            let messages = match value.get("messages") {
                Some(Json::Array(items)) => items.as_slice(),
                Some(other) => {
                    return Err(err(format!(
                        "`messages` must be an array, got {}",
                        other.type_name()
                    )))
                }
                None => return Err(err("object without a `messages` array")),
            };
            let tools = match value.get("tools") {
                None | Some(Json::Null) => &[][..],
                Some(Json::Array(items)) => items.as_slice(),
                Some(other) => {
                    return Err(err(format!(
                        "`tools` must be an array, got {}",
                        other.type_name()
                    )))
                }
            };
            (messages, tools)
        }
        other => {
            return Err(err(format!(
                "expected an array of messages or an object with `messages`, got {}",
                other.type_name()
            )))
        }
    };
    if messages.is_empty() {
        return Err(err("no messages"));
    }
    let messages = messages
        .iter()
        .enumerate()
        .map(|(i, m)| parse_message(m).map_err(|e| err(format!("message {i}: {}", e.0))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Conversation {
        messages,
        tools: tools.to_vec(),
    })
}

fn parse_message(m: &Json) -> Result<Message, ChatError> {
    if !matches!(m, Json::Object(_)) {
        return Err(err(format!("expected an object, got {}", m.type_name())));
    }
    let role_str = m
        .get("role")
        .and_then(Json::as_str)
        .ok_or_else(|| err("missing string `role`"))?;
    let role = Role::parse(role_str).ok_or_else(|| {
        err(format!(
            "unknown role `{role_str}` (expected system, user, assistant or tool)"
        ))
    })?;
    let content = match m.get("content") {
        Some(Json::String(s)) => s.clone(),
        None | Some(Json::Null) if role == Role::Assistant => String::new(),
        None => return Err(err(format!("{role_str} message without `content`"))),
        Some(other) => {
            return Err(err(format!(
                "`content` must be a string, got {}",
                other.type_name()
            )))
        }
    };
    let reasoning_content = match m.get("reasoning_content") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(err(format!(
                "`reasoning_content` must be a string, got {}",
                other.type_name()
            )))
        }
    };
    let tool_calls = match m.get("tool_calls") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(calls)) if role == Role::Assistant => calls
            .iter()
            .enumerate()
            .map(|(j, c)| parse_tool_call(c).map_err(|e| err(format!("tool call {j}: {}", e.0))))
            .collect::<Result<_, _>>()?,
        Some(Json::Array(calls)) if calls.is_empty() => Vec::new(),
        Some(_) => return Err(err("`tool_calls` must be an array on an assistant message")),
    };
    Ok(Message {
        role,
        content,
        reasoning_content,
        tool_calls,
    })
}

fn parse_tool_call(c: &Json) -> Result<ToolCall, ChatError> {
    let f = match c.get("function") {
        Some(f @ Json::Object(_)) => f,
        Some(other) => {
            return Err(err(format!(
                "`function` must be an object, got {}",
                other.type_name()
            )))
        }
        None => c,
    };
    let name = f
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(|| err("missing string `name`"))?
        .to_owned();
    let arguments = match f.get("arguments") {
        Some(Json::String(s)) => ToolArguments::Raw(s.clone()),
        Some(v) => ToolArguments::Json(v.clone()),
        None => return Err(err("missing `arguments`")),
    };
    Ok(ToolCall { name, arguments })
}

/// Whether a user turn is wholly a tool response (then it is not a "query").
fn is_tool_response_only(content: &str) -> bool {
    content.starts_with("<tool_response>") && content.ends_with("</tool_response>")
}

/// Splits an assistant message into (content, reasoning) like the template does.
fn split_reasoning(m: &Message) -> (&str, &str) {
    if let Some(r) = &m.reasoning_content {
        return (m.content.as_str(), r.as_str());
    }
    match m.content.rfind("</think>") {
        Some(last) => {
            let content = m.content[last + "</think>".len()..].trim_start_matches('\n');
            let first = m.content.find("</think>").unwrap_or(last);
            let before = m.content[..first].trim_end_matches('\n');
            let reasoning = match before.rfind("<think>") {
                Some(p) => &before[p + "<think>".len()..],
                None => before,
            }
            .trim_start_matches('\n');
            (content, reasoning)
        }
        None => (m.content.as_str(), ""),
    }
}

/// Renders a conversation to Qwen3 ChatML text, as `apply_chat_template(tokenize=False)`
/// does with the Qwen3 template.
pub fn render(conv: &Conversation, opts: &ChatOptions) -> Result<String, ChatError> {
    let msgs = &conv.messages;
    let n = msgs.len();
    if n == 0 {
        return Err(err("no messages"));
    }
    let mut out = String::with_capacity(msgs.iter().map(|m| m.content.len() + 32).sum());
    let first_is_system = msgs[0].role == Role::System;
    if !conv.tools.is_empty() {
        out.push_str("<|im_start|>system\n");
        if first_is_system {
            out.push_str(&msgs[0].content);
            out.push_str("\n\n");
        }
        out.push_str(TOOLS_HEADER);
        for tool in &conv.tools {
            out.push('\n');
            out.push_str(&tool.to_python_json());
        }
        out.push_str(TOOLS_FOOTER);
    } else if first_is_system {
        out.push_str("<|im_start|>system\n");
        out.push_str(&msgs[0].content);
        out.push_str("<|im_end|>\n");
    }

    let last_query = msgs
        .iter()
        .rposition(|m| m.role == Role::User && !is_tool_response_only(&m.content))
        .unwrap_or(n - 1);

    for (i, m) in msgs.iter().enumerate() {
        match m.role {
            Role::System if i == 0 => {}
            Role::User | Role::System => {
                out.push_str("<|im_start|>");
                out.push_str(m.role.as_str());
                out.push('\n');
                out.push_str(&m.content);
                out.push_str("<|im_end|>\n");
            }
            Role::Assistant => {
                let (content, reasoning) = split_reasoning(m);
                let after_query = opts.keep_all_thinking || i > last_query;
                if after_query && (i == n - 1 || !reasoning.is_empty()) {
                    out.push_str("<|im_start|>assistant\n<think>\n");
                    out.push_str(reasoning.trim_matches('\n'));
                    out.push_str("\n</think>\n\n");
                    out.push_str(content.trim_start_matches('\n'));
                } else {
                    out.push_str("<|im_start|>assistant\n");
                    out.push_str(content);
                }
                for (j, call) in m.tool_calls.iter().enumerate() {
                    if j > 0 || !content.is_empty() {
                        out.push('\n');
                    }
                    out.push_str("<tool_call>\n{\"name\": \"");
                    out.push_str(&call.name);
                    out.push_str("\", \"arguments\": ");
                    match &call.arguments {
                        ToolArguments::Raw(s) => out.push_str(s),
                        ToolArguments::Json(v) => out.push_str(&v.to_python_json()),
                    }
                    out.push_str("}\n</tool_call>");
                }
                out.push_str("<|im_end|>\n");
            }
            Role::Tool => {
                if i == 0 || msgs[i - 1].role != Role::Tool {
                    out.push_str("<|im_start|>user");
                }
                out.push_str("\n<tool_response>\n");
                out.push_str(&m.content);
                out.push_str("\n</tool_response>");
                if i == n - 1 || msgs[i + 1].role != Role::Tool {
                    out.push_str("<|im_end|>\n");
                }
            }
        }
    }
    if opts.add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
        if !opts.enable_thinking {
            out.push_str("<think>\n\n</think>\n\n");
        }
    }
    Ok(out)
}

/// Parses and renders a `messages` column value in one step.
pub fn render_json(messages_json: &str, opts: &ChatOptions) -> Result<String, ChatError> {
    render(&parse_conversation(messages_json)?, opts)
}

#[cfg(test)]
mod tests;
