//! agentcpt's own model as a chat model: Qwen3 chat-template rendering, KV-cache generation,
//! decoding. Used in process by `synth --local DIR` and behind `agentcpt serve`.

use std::path::Path;
use std::sync::Mutex;

use agentcpt_datasets::synth::{ChatMessage, ChatModel, ChatRequest, Completion, LlmError};
use agentcpt_datasets::{render_json, ChatOptions, Encoder, HfTokenizer};
use agentcpt_model::burn::tensor::Device;
use agentcpt_model::generate::{generate, GenerationConfig};
use agentcpt_model::Qwen3;
use anyhow::{bail, Context, Result};

/// How text becomes token ids for the local model.
pub enum ChatTokenizer {
    /// A Hugging Face `tokenizer.json` (the real Qwen3 one for real checkpoints).
    Hf(Box<HfTokenizer>),
    /// One id per byte, id 256 ends a turn: the tiny byte-level models of the test recipes.
    Bytes,
}

impl ChatTokenizer {
    /// `spec` is `bytes` or a path to `tokenizer.json`; without it, `MODEL_DIR/tokenizer.json`.
    pub fn resolve(spec: Option<&str>, model_dir: &Path) -> Result<Self> {
        match spec {
            Some("bytes") => Ok(ChatTokenizer::Bytes),
            Some(path) => Ok(ChatTokenizer::Hf(Box::new(HfTokenizer::from_file(path)?))),
            None => {
                let path = model_dir.join("tokenizer.json");
                if !path.exists() {
                    bail!(
                        "{} has no tokenizer.json: pass --tokenizer PATH (or `bytes` for byte-level models)",
                        model_dir.display()
                    );
                }
                Ok(ChatTokenizer::Hf(Box::new(HfTokenizer::from_file(&path)?)))
            }
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let ids = match self {
            ChatTokenizer::Hf(t) => t.encode(text)?,
            ChatTokenizer::Bytes => agentcpt_datasets::ByteEncoder.encode(text)?,
        };
        Ok(ids.into_iter().map(i64::from).collect())
    }

    fn decode(&self, ids: &[i64]) -> Result<String> {
        match self {
            ChatTokenizer::Hf(t) => {
                let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
                Ok(t.decode(&ids, true)?)
            }
            ChatTokenizer::Bytes => {
                let bytes: Vec<u8> = ids.iter().filter(|&&i| i < 256).map(|&i| i as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// Ids that end an assistant turn.
    fn stop_tokens(&self) -> Vec<i64> {
        match self {
            ChatTokenizer::Hf(t) => ["<|im_end|>", "<|endoftext|>"]
                .iter()
                .filter_map(|s| t.token_to_id(s))
                .map(i64::from)
                .collect(),
            ChatTokenizer::Bytes => vec![256],
        }
    }
}

/// A prompt that does not fit the model's context (the request's fault, not the server's).
#[derive(Debug, thiserror::Error)]
#[error("the prompt is {prompt} tokens; the model's context is {context}")]
pub struct TooLong {
    pub prompt: usize,
    pub context: usize,
}

/// One generated reply with its token counts.
pub struct Reply {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// `stop` (a stop token) or `length` (max tokens or the context ran out).
    pub finish_reason: &'static str,
}

/// A loaded model answering chat requests, one at a time.
pub struct LocalChat {
    name: String,
    model: Qwen3,
    tokenizer: ChatTokenizer,
    device: Device,
    busy: Mutex<()>,
}

impl LocalChat {
    pub fn load(
        dir: &Path,
        tokenizer: ChatTokenizer,
        name: Option<String>,
        device: Device,
    ) -> Result<Self> {
        let model =
            Qwen3::load(dir, &device).with_context(|| format!("loading {}", dir.display()))?;
        let name = name.unwrap_or_else(|| {
            dir.canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "agentcpt-local".into())
        });
        Ok(LocalChat {
            name,
            model,
            tokenizer,
            device,
            busy: Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders `messages` with the Qwen3 template and generates the assistant's reply.
    /// An over-long prompt is an error naming both lengths.
    pub fn reply(&self, messages: &[ChatMessage], request: &ChatRequest) -> Result<Reply> {
        let json = serde_json::to_string(messages)?;
        let options = ChatOptions {
            add_generation_prompt: true,
            ..ChatOptions::default()
        };
        let prompt = self.tokenizer.encode(&render_json(&json, &options)?)?;
        let context = self.model.config.max_sequence_length();
        if prompt.len() >= context {
            return Err(TooLong {
                prompt: prompt.len(),
                context,
            }
            .into());
        }
        let config = GenerationConfig {
            max_new_tokens: request.max_tokens.min(context - prompt.len()),
            temperature: request.temperature,
            top_p: request.top_p,
            stop_tokens: self.tokenizer.stop_tokens(),
            seed: request.seed,
        };
        let out = {
            let _one_at_a_time = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            generate(&self.model, &prompt, &config, &self.device)?
        };
        let stopped = out.last().is_some_and(|t| config.stop_tokens.contains(t));
        let content = if stopped {
            &out[..out.len() - 1]
        } else {
            &out[..]
        };
        Ok(Reply {
            text: self.tokenizer.decode(content)?,
            prompt_tokens: prompt.len(),
            completion_tokens: out.len(),
            finish_reason: if stopped { "stop" } else { "length" },
        })
    }
}

impl ChatModel for LocalChat {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn complete(&self, request: &ChatRequest) -> std::result::Result<Completion, LlmError> {
        let reply = self.reply(&request.messages, request).map_err(|e| {
            match e.downcast_ref::<TooLong>() {
                Some(too_long) => LlmError::Refused(too_long.to_string()),
                None => LlmError::Local(format!("{e:#}")),
            }
        })?;
        Ok(Completion {
            text: reply.text,
            model: self.name.clone(),
        })
    }
}
