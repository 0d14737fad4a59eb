//! Chat-template tests.
//!
//! `template_cases.json` holds conversations with expected renderings derived by hand from
//! the Qwen3 template rules; `scripts/check-chat-template.py` verifies the same strings
//! against transformers 4.57.1 `apply_chat_template` with the real Qwen3 template.

use super::*;

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    conversation: String,
    add_generation_prompt: bool,
    enable_thinking: bool,
    expected: String,
}

fn cases() -> Vec<Case> {
    serde_json::from_str(include_str!("template_cases.json")).expect("template_cases.json")
}

#[test]
fn renders_like_the_qwen3_template() {
    let cases = cases();
    assert!(cases.len() >= 7);
    for case in cases {
        let opts = ChatOptions {
            add_generation_prompt: case.add_generation_prompt,
            enable_thinking: case.enable_thinking,
            keep_all_thinking: false,
        };
        let got =
            render_json(&case.conversation, &opts).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(got, case.expected, "case {}", case.name);
    }
}

#[test]
fn keep_all_thinking_keeps_earlier_reasoning() {
    let conv = r#"[{"role":"user","content":"Q1"},{"role":"assistant","content":"<think>\nr1\n</think>\n\nA1"},
                  {"role":"user","content":"Q2"},{"role":"assistant","content":"<think>r2</think>A2"}]"#;
    let opts = ChatOptions {
        keep_all_thinking: true,
        ..ChatOptions::default()
    };
    assert_eq!(
        render_json(conv, &opts).unwrap(),
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n<think>\nr1\n</think>\n\nA1<|im_end|>\n\
         <|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\nA2<|im_end|>\n"
    );
}

#[test]
fn null_assistant_content_renders_empty() {
    let conv = r#"[{"role":"user","content":"Q"},
                  {"role":"assistant","content":null,"tool_calls":[{"name":"f","arguments":{"b":1,"a":2}}]},
                  {"role":"tool","content":"r"}]"#;
    assert_eq!(
        render_json(conv, &ChatOptions::default()).unwrap(),
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"b\": 1, \"a\": 2}}\n</tool_call><|im_end|>\n\
         <|im_start|>user\n<tool_response>\nr\n</tool_response><|im_end|>\n"
    );
}

#[test]
fn rejects_what_is_not_chatml() {
    let bad = [
        ("not json", "invalid JSON"),
        ("42", "expected an array of messages"),
        ("[]", "no messages"),
        (r#"{"msgs": []}"#, "without a `messages` array"),
        (r#"[{"role":"bot","content":"x"}]"#, "unknown role `bot`"),
        (r#"[{"content":"x"}]"#, "missing string `role`"),
        (r#"[{"role":"user"}]"#, "without `content`"),
        (
            r#"[{"role":"user","content":[{"type":"text","text":"x"}]}]"#,
            "must be a string",
        ),
        (r#"["hello"]"#, "expected an object"),
        (
            r#"[{"role":"assistant","content":"","tool_calls":[{"arguments":{}}]}]"#,
            "missing string `name`",
        ),
        (
            r#"[{"role":"assistant","content":"","tool_calls":[{"name":"f"}]}]"#,
            "missing `arguments`",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"tools":{}}"#,
            "`tools` must be an array",
        ),
    ];
    for (text, want) in bad {
        let e = parse_conversation(text).expect_err(text);
        assert!(e.0.contains(want), "{text}: got `{}`, want `{want}`", e.0);
    }
    // The error names the message index.
    let e = parse_conversation(r#"[{"role":"user","content":"a"},{"role":"x","content":"b"}]"#)
        .unwrap_err();
    assert!(e.0.starts_with("message 1:"), "{}", e.0);
}
