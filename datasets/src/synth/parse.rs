//! Reading what language models write: JSON objects inside chatter, ReAct steps
//! (`<think>`, `<tool_call>`, `<answer>`), and answers compared after normalisation.

use serde_json::Value;

/// The first JSON object in `text` (code fences and text around it are skipped), after any
/// `<think>…</think>` block, whose drafts are not the answer.
pub fn extract_json(text: &str) -> Result<Value, String> {
    let text = match text.rfind("</think>") {
        Some(end) => &text[end + "</think>".len()..],
        None => text,
    };
    let mut from = 0;
    while let Some(offset) = text[from..].find('{') {
        let start = from + offset;
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        if let Some(Ok(v @ Value::Object(_))) = stream.next() {
            return Ok(v);
        }
        from = start + 1;
    }
    Err("no JSON object in the output".into())
}

/// The text between the first `<tag>` and the following `</tag>`, trimmed.
pub fn between<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(text[start..end].trim())
}

/// The action that ends a ReAct step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A tool call; `raw` is the whole `<tool_call>…</tool_call>` block, verbatim.
    ToolCall { name: String, raw: String },
    /// A final answer; `raw` is the whole `<answer>…</answer>` block, verbatim.
    Answer { answer: String, raw: String },
}

/// One ReAct step: the thought and the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub thought: String,
    pub action: Action,
}

/// Why a step does not parse; the string is the counted reject reason.
pub type StepError = (&'static str, String);

/// Parses `<think>…</think>` followed by exactly one `<tool_call>` or `<answer>` block.
/// `tools`, when given, lists the tool names a call may use.
pub fn parse_step(text: &str, tools: Option<&[String]>) -> Result<Step, StepError> {
    let thought = between(text, "think").filter(|t| !t.is_empty()).ok_or((
        "no_think",
        "no non-empty <think>…</think> block".to_string(),
    ))?;
    let after = &text[text.find("</think>").expect("between found it") + "</think>".len()..];
    let calls = after.matches("<tool_call>").count();
    let answers = after.matches("<answer>").count();
    let action = match (calls, answers) {
        (1, 0) => {
            let raw = block(after, "tool_call")?;
            let name = tool_call_name(between(raw, "tool_call").unwrap_or_default())?;
            if let Some(tools) = tools {
                if !tools.contains(&name) {
                    return Err(("unknown_tool", format!("tool `{name}` is not offered")));
                }
            }
            Action::ToolCall {
                name,
                raw: raw.to_string(),
            }
        }
        (0, 1) => {
            let raw = block(after, "answer")?;
            let answer = between(raw, "answer").unwrap_or_default();
            if answer.is_empty() {
                return Err(("empty_answer", "<answer></answer> is empty".into()));
            }
            Action::Answer {
                answer: answer.to_string(),
                raw: raw.to_string(),
            }
        }
        (0, 0) => {
            return Err((
                "no_action",
                "no <tool_call> or <answer> after </think>".into(),
            ))
        }
        _ => {
            return Err((
                "several_actions",
                format!("{calls} tool calls and {answers} answers in one step"),
            ))
        }
    };
    Ok(Step {
        thought: thought.to_string(),
        action,
    })
}

/// The first `<tag>…</tag>` block of `text`, tags included.
fn block<'a>(text: &'a str, tag: &str) -> Result<&'a str, StepError> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let start = text
        .find(&open)
        .ok_or(("no_action", format!("no {open}")))?;
    let end = text[start..]
        .find(&close)
        .ok_or(("no_action", format!("{open} is not closed")))?;
    Ok(&text[start..start + end + close.len()])
}

/// The tool name of a `<tool_call>` body: a JSON object with a string `name` and object
/// `arguments`, optionally followed by `<code>…</code>` (Tongyi's PythonInterpreter form).
pub fn tool_call_name(body: &str) -> Result<String, StepError> {
    let json_part = body.split("<code>").next().unwrap_or_default();
    let mut stream = serde_json::Deserializer::from_str(json_part).into_iter::<Value>();
    let value = match stream.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(("tool_call_not_json", format!("tool call is not JSON: {e}"))),
        None => return Err(("tool_call_not_json", "empty tool call".into())),
    };
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or((
            "tool_call_not_json",
            "tool call has no string `name`".to_string(),
        ))?;
    match value.get("arguments") {
        Some(Value::Object(_)) => Ok(name.to_string()),
        _ => Err((
            "tool_call_not_json",
            format!("tool call `{name}` has no `arguments` object"),
        )),
    }
}

/// Lower case, digit-group commas dropped, markdown and punctuation to spaces (but decimal
/// points and leading minus signs), articles dropped, whitespace collapsed.
pub fn normalize_answer(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut cleaned = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let digit_comma = c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if digit_comma {
            continue;
        }
        let next_is_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
        // A decimal point, and a minus sign starting a number, are part of the answer.
        let minus = c == '-' && next_is_digit && (i == 0 || chars[i - 1].is_whitespace());
        if c.is_alphanumeric() || (c == '.' && next_is_digit) || minus {
            cleaned.extend(c.to_lowercase());
        } else {
            cleaned.push(' ');
        }
    }
    cleaned
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `answer` gives `reference`: equal after normalisation, or the reference appears
/// in the answer as a whole-word run ("**Ricin** is the toxin" gives "ricin").
pub fn answers_match(answer: &str, reference: &str) -> bool {
    let (a, r) = (normalize_answer(answer), normalize_answer(reference));
    if r.is_empty() {
        return false;
    }
    a == r || format!(" {a} ").contains(&format!(" {r} "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_found_inside_chatter_and_fences() {
        let v = extract_json("Sure!\n```json\n{\"a\": [1, {\"b\": 2}]}\n```\nDone {").unwrap();
        assert_eq!(v["a"][1]["b"], 2);
        assert_eq!(extract_json("{oops} then {\"x\": 1}").unwrap()["x"], 1);
        assert!(extract_json("no object [1, 2]").is_err());
        let thought = "<think>draft {\"verdict\": \"reject\"}</think>{\"verdict\": \"accept\"}";
        assert_eq!(extract_json(thought).unwrap()["verdict"], "accept");
    }

    #[test]
    fn steps_parse_with_their_verbatim_action() {
        let text = "<think>\nfind it\n</think>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"x\"]}}\n</tool_call>";
        let step = parse_step(text, Some(&["search".to_string()])).unwrap();
        assert_eq!(step.thought, "find it");
        let Action::ToolCall { name, raw } = &step.action else {
            panic!("a tool call")
        };
        assert_eq!(name, "search");
        assert!(raw.starts_with("<tool_call>\n{") && raw.ends_with("}\n</tool_call>"));
        let python = "<think>t</think><tool_call>{\"name\": \"PythonInterpreter\", \"arguments\": {}}\n<code>print(1)</code></tool_call>";
        assert!(parse_step(python, None).is_ok());
        let answer = parse_step("<think>t</think>\n<answer>\n**42**\n</answer>", None).unwrap();
        assert_eq!(
            answer.action,
            Action::Answer {
                answer: "**42**".into(),
                raw: "<answer>\n**42**\n</answer>".into()
            }
        );
    }

    #[test]
    fn malformed_steps_name_their_reason() {
        let reason = |t: &str| parse_step(t, Some(&["search".to_string()])).unwrap_err().0;
        assert_eq!(reason("<tool_call>{}</tool_call>"), "no_think");
        assert_eq!(reason("<think>t</think> nothing"), "no_action");
        assert_eq!(
            reason("<think>t</think><tool_call>{name: search}</tool_call>"),
            "tool_call_not_json"
        );
        assert_eq!(
            reason("<think>t</think><tool_call>{\"name\": \"search\"}</tool_call>"),
            "tool_call_not_json"
        );
        assert_eq!(
            reason("<think>t</think><tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>"),
            "unknown_tool"
        );
        assert_eq!(
            reason("<think>t</think><answer>a</answer><answer>b</answer>"),
            "several_actions"
        );
    }

    #[test]
    fn answers_match_after_normalisation() {
        assert!(answers_match("The toxin is **Ricin**.", "Ricin"));
        assert!(answers_match("1,234 people", "1234 people"));
        assert!(answers_match("3.5 km", "3.5 km"));
        assert!(!answers_match("Ricinus", "Ricin"));
        assert!(!answers_match("-5 degrees", "5 degrees"));
        assert!(answers_match("It was -5.", "-5"));
        assert!(!answers_match("anything", ""));
        assert_eq!(normalize_answer("The  Epsom-Derby!"), "epsom derby");
    }
}
