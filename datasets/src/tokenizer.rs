//! Tokenizers: the real Qwen3 tokenizer (HF `tokenizers`, from a tokenizer.json) behind a
//! small [`Encoder`] trait, so that the loader can also run on a byte-level stand-in in
//! tests and dry runs.
//!
//! Why a trait: the loader's behaviour (mixing, packing, resume) does not depend on the
//! vocabulary, and its tests should not need an 11 MB download; only tokenizer tests do.

use std::path::{Path, PathBuf};

use crate::bpe::DirectEncoder;
use crate::error::{DataError, Result};
use crate::rng::fnv1a;

/// `<|endoftext|>`: the Qwen3 document separator used for packing.
pub const QWEN3_EOT_ID: u32 = 151643;
/// `<|im_start|>`.
pub const QWEN3_IM_START_ID: u32 = 151644;
/// `<|im_end|>`.
pub const QWEN3_IM_END_ID: u32 = 151645;

/// Text → token ids, deterministic.
pub trait Encoder: Send + Sync {
    /// Encodes text without adding any special tokens (Qwen3 has no BOS). Special-token
    /// strings in the text (`<|im_start|>`, `<think>`, …) become their single ids.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;

    /// Encodes several texts; item `i` is exactly `self.encode(texts[i])`. The default runs
    /// them one by one; [`HfTokenizer`] spreads them over threads.
    fn encode_batch(&self, texts: &[&str]) -> Vec<Result<Vec<u32>>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// A stable fingerprint of the vocabulary and rules (stored in loader states so that a
    /// resume with another tokenizer is refused).
    fn fingerprint(&self) -> u64;
}

/// The HF tokenizer loaded from a tokenizer.json (added and special tokens included).
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    /// The direct encoder, when the tokenizer.json has the Qwen2/Qwen3 shape; encoding goes
    /// through it.
    direct: Option<DirectEncoder>,
    fingerprint: u64,
}

impl HfTokenizer {
    /// Loads a tokenizer.json file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::from_bytes(&bytes)
            .map_err(|e| DataError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Loads a tokenizer.json from memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DataError::Tokenizer(e.to_string()))?;
        let fingerprint = fnv1a(bytes);
        Ok(HfTokenizer {
            direct: DirectEncoder::new(&json, &inner),
            inner,
            fingerprint,
        })
    }

    /// Decodes ids back to text (`skip_special` drops special tokens such as `<|im_end|>`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| DataError::Tokenizer(e.to_string()))
    }

    /// The id of a token string (including added tokens).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of ids the tokenizer defines (151669 for Qwen3; the model has 151936 rows).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped HF tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

impl HfTokenizer {
    /// Encodes through HF `tokenizers` itself, bypassing the direct encoder: the reference
    /// the direct path is tested against.
    pub fn encode_reference(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode_fast(text, false)
            .map(|enc| enc.get_ids().to_vec())
            .map_err(|e| DataError::Tokenizer(e.to_string()))
    }

    /// Whether encoding takes the direct path ([`crate::bpe`]).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }
}

impl Encoder for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.direct {
            Some(direct) => direct
                .encode(text)
                .map_err(|e| DataError::Tokenizer(e.to_string())),
            None => self.encode_reference(text),
        }
    }

    /// The texts are encoded in parallel on rayon's global pool, through HF `tokenizers`' own
    /// parallelism switch (all cores unless `RAYON_NUM_THREADS` or
    /// `TOKENIZERS_PARALLELISM=false` say otherwise). Each item is [`Self::encode`] itself,
    /// run on a worker thread, so only the ids come back.
    fn encode_batch(&self, texts: &[&str]) -> Vec<Result<Vec<u32>>> {
        use tokenizers::parallelism::MaybeParallelRefIterator;
        texts.maybe_par_iter().map(|t| self.encode(t)).collect()
    }

    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// A stand-in tokenizer: one id per UTF-8 byte (ids 0–255). For tests and dry runs only.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteEncoder;

impl Encoder for ByteEncoder {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn fingerprint(&self) -> u64 {
        fnv1a(b"agentcpt-byte-encoder-v1")
    }
}

/// Where `scripts/fetch-qwen-tokenizer.sh` puts the Qwen3 tokenizer:
/// `${AGENTCPT_CACHE:-$HOME/.cache/agentcpt}/qwen3-tokenizer/tokenizer.json`.
pub fn default_qwen3_tokenizer_path() -> PathBuf {
    let cache = std::env::var_os("AGENTCPT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".cache")
                .join("agentcpt")
        });
    cache.join("qwen3-tokenizer").join("tokenizer.json")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chat::{render_json, ChatOptions};

    /// The real Qwen3 tokenizer; fails the test (with the fix) when it was not fetched.
    pub(crate) fn qwen3() -> HfTokenizer {
        let path = default_qwen3_tokenizer_path();
        if !path.exists() {
            panic!(
                "the Qwen3 tokenizer is missing at {}: run scripts/fetch-qwen-tokenizer.sh \
                 (set AGENTCPT_CACHE to change the cache directory)",
                path.display()
            );
        }
        HfTokenizer::from_file(&path).expect("load Qwen3 tokenizer.json")
    }

    /// A tokenizer.json of another shape (here: NFKC, or truncation on) keeps the HF path.
    #[test]
    fn other_tokenizer_shapes_are_not_encoded_directly() {
        let text = std::fs::read_to_string(default_qwen3_tokenizer_path()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let variants = [
            ("normalizer", serde_json::json!({"type": "NFKC"})),
            (
                "truncation",
                serde_json::json!({"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}),
            ),
        ];
        for (key, value) in variants {
            let mut changed = json.clone();
            changed[key] = value;
            let tok = HfTokenizer::from_bytes(changed.to_string().as_bytes()).unwrap();
            assert!(!tok.is_direct(), "{key}");
        }
        assert!(qwen3().is_direct());
    }

    /// The direct encoder gives HF's ids, on agent text with special tokens and on random
    /// text over every character class (long words included).
    #[test]
    fn direct_encoder_matches_hf_tokenizers() {
        let tok = qwen3();
        assert!(tok.is_direct());
        let pieces = [
            "<|im_start|>",
            "<|im_end|>",
            "<think>",
            "</think>",
            "<tool_call>",
            "{\"name\": ",
            "\"arguments\"",
            "Hello",
            " world",
            "I'm",
            "'LL",
            "'ſ",
            "  ",
            "\n\n",
            "\r\n",
            "\t",
            "\u{a0}",
            "\u{2028}",
            "3.14",
            "٣٤",
            "½",
            "中文",
            "नमस्ते",
            "e\u{301}",
            "😀",
            "https://x.org/a?b=1",
            "    def f(x):\n",
            "!!",
            "...",
            " ",
            "\u{3000}",
            "ﬁ",
            "Å",
        ];
        // Words longer than the direct path merges itself.
        let long_word = "Ġabc".repeat(80);
        let long_digits_and_marks = "e\u{301}x".repeat(120);
        let pieces: Vec<&str> = pieces
            .into_iter()
            .chain([long_word.as_str(), long_digits_and_marks.as_str()])
            .collect();
        let mut rng = crate::rng::Rng::seed_from_u64(11);
        for _ in 0..3000 {
            let n = rng.below(40) as usize;
            let text: String = (0..n)
                .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
                .collect();
            assert_eq!(
                tok.encode(&text).unwrap(),
                tok.encode_reference(&text).unwrap(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn qwen3_special_tokens_are_single_ids() {
        let tok = qwen3();
        assert_eq!(tok.vocab_size(), 151669);
        for (text, id) in [
            ("<|endoftext|>", QWEN3_EOT_ID),
            ("<|im_start|>", QWEN3_IM_START_ID),
            ("<|im_end|>", QWEN3_IM_END_ID),
            ("<tool_call>", 151657),
            ("</tool_call>", 151658),
            ("<tool_response>", 151665),
            ("</tool_response>", 151666),
            ("<think>", 151667),
            ("</think>", 151668),
        ] {
            assert_eq!(tok.encode(text).unwrap(), vec![id], "{text}");
            assert_eq!(tok.token_to_id(text), Some(id));
        }
        assert_eq!(
            tok.encode("<|im_start|>assistant\n").unwrap(),
            vec![151644, 77091, 198]
        );
        assert_eq!(tok.encode("\n\n").unwrap(), vec![271]);
        assert_eq!(tok.encode("system").unwrap(), vec![8948]);
        assert_eq!(tok.encode("user").unwrap(), vec![872]);
    }

    #[test]
    fn qwen3_rendered_chat_matches_transformers_ids() {
        // Ids from transformers 4.57.1 (`scripts/check-chat-template.py --ids`) for the
        // `react_trajectory_tool_response_as_user` case of chat/template_cases.json.
        let tok = qwen3();
        let conv = r#"[{"role":"system","content":"You are a deep research assistant.\nCurrent date: 2025-01-01"},{"role":"user","content":"What is 2+2?"},
          {"role":"assistant","content":"<think>t1</think>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"2+2\"]}}\n</tool_call>"},
          {"role":"user","content":"<tool_response>\nA Google search for '2+2' found 1 results:\n\n## Web Results\n1. [Four](http://x)\n</tool_response>"},
          {"role":"assistant","content":"<think>t2</think>\n<answer>4</answer>"}]"#;
        let text = render_json(conv, &ChatOptions::default()).unwrap();
        let ids = tok.encode(&text).unwrap();
        assert_eq!(ids, EXPECTED_REACT_IDS.to_vec());
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }

    #[test]
    fn qwen3_text_round_trips_and_unicode() {
        let tok = qwen3();
        let text =
            "Tourist arrivals in France reached 4,222 thousand in June 2025 — ünïcode 中文 🙂";
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        assert_eq!(ids, EXPECTED_UNICODE_IDS.to_vec());
    }

    #[test]
    fn qwen3_batch_encoding_equals_one_by_one() {
        let tok = qwen3();
        let texts = [
            "Tourist arrivals in France — ünïcode 中文 🙂",
            "",
            "<|im_start|>user\nHi<|im_end|>\n<think>\n\n</think>",
            "  leading spaces and\n\n\nnewlines\t",
        ];
        let long = texts.concat().repeat(50);
        let mut all: Vec<&str> = texts.to_vec();
        all.push(&long);
        let batch = tok.encode_batch(&all);
        assert_eq!(batch.len(), all.len());
        for (t, got) in all.iter().zip(batch) {
            assert_eq!(got.unwrap(), tok.encode(t).unwrap(), "{t:?}");
        }
        let bytes = ByteEncoder.encode_batch(&["ab", ""]);
        assert_eq!(bytes.len(), 2);
        assert_eq!(bytes[0].as_ref().unwrap(), &vec![97, 98]);
    }

    #[test]
    fn missing_tokenizer_file_is_a_clear_error() {
        let e = HfTokenizer::from_file("/nonexistent/tokenizer.json")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/tokenizer.json"), "{e}");
        let e = HfTokenizer::from_bytes(b"{}").err().unwrap().to_string();
        assert!(e.starts_with("tokenizer:"), "{e}");
    }

    const EXPECTED_REACT_IDS: &[u32] = &[
        151644, 8948, 198, 2610, 525, 264, 5538, 3412, 17847, 624, 5405, 2400, 25, 220, 17, 15, 17,
        20, 12, 15, 16, 12, 15, 16, 151645, 198, 151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30,
        151645, 198, 151644, 77091, 198, 151667, 198, 83, 16, 198, 151668, 271, 151657, 198, 4913,
        606, 788, 330, 1836, 497, 330, 16370, 788, 5212, 1631, 788, 4383, 17, 10, 17, 1341, 11248,
        151658, 151645, 198, 151644, 872, 198, 151665, 198, 32, 5085, 2711, 369, 364, 17, 10, 17,
        6, 1730, 220, 16, 3059, 1447, 565, 4895, 18099, 198, 16, 13, 508, 26972, 9533, 1254, 1110,
        87, 340, 151666, 151645, 198, 151644, 77091, 198, 151667, 198, 83, 17, 198, 151668, 271,
        27, 9217, 29, 19, 522, 9217, 29, 151645, 198,
    ];
    const EXPECTED_UNICODE_IDS: &[u32] = &[
        54950, 380, 69047, 304, 9625, 8643, 220, 19, 11, 17, 17, 17, 16183, 304, 5534, 220, 17, 15,
        17, 20, 1959, 10489, 77, 37572, 1851, 72858, 16744, 27484,
    ];
}
