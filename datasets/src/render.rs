//! A sample's training text: raw text as is, conversations through the Qwen3 chat template.

use crate::chat::{self, ChatOptions};
use crate::schema::{Content, Sample};

/// The text the tokenizer sees for `sample`, or `None` for pre-tokenized samples.
pub fn training_text(sample: &Sample, opts: &ChatOptions) -> Result<Option<String>, String> {
    match &sample.content {
        Content::Text(t) => Ok(Some(t.clone())),
        Content::Messages(m) => chat::render_json(m, opts)
            .map(Some)
            .map_err(|e| format!("sample `{}`: {e}", sample.id)),
        Content::InputIds(_) => Ok(None),
    }
}
