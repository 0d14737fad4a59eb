//! A direct encoder for byte-level BPE tokenizers shaped like Qwen2/Qwen3's tokenizer.json:
//! added tokens matched on the raw text, NFC, the Qwen2 split ([`crate::qwen2_split`]), the
//! GPT-2 byte-to-character mapping, and BPE merges by rank with a per-thread word cache.
//!
//! HF `tokenizers` does the same through general machinery (offset-tracking normalized
//! strings, one allocation per piece and per token), which made tokenization more than 99%
//! of the data pipeline's time. Only a tokenizer of exactly this shape gets the direct path;
//! anything else (and words too long for the quadratic merge loop) goes through HF. The
//! tokenizer tests compare the two on real and random text.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;
use tokenizers::{Model, NormalizedString, Normalizer, NormalizerWrapper};

use crate::qwen2_split::{split, QWEN2_PATTERN};

/// Words longer than this (in bytes) are merged by HF's heap-based BPE instead.
const LONG_WORD: usize = 256;
/// Per-thread cached words before the cache starts over.
const CACHE_WORDS: usize = 200_000;

pub struct DirectEncoder {
    /// Added tokens (`<|im_start|>`, `<think>`, …) and their ids, leftmost-longest.
    added: AhoCorasick,
    added_ids: Vec<u32>,
    normalizer: Option<NormalizerWrapper>,
    /// The id of each byte's character.
    byte_ids: [u32; 256],
    byte_chars: [char; 256],
    /// `(left, right)` → `(rank, merged id)`.
    merges: HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>,
    model: tokenizers::ModelWrapper,
    /// Tells this encoder's cached words apart from another's on the same thread.
    id: u64,
}

/// A thread's merged words, and the encoder they belong to.
struct WordCache {
    owner: u64,
    words: HashMap<Box<[u8]>, Box<[u32]>>,
}

/// Encoder ids start at 1: a thread's cache starts out owned by none.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static WORDS: RefCell<WordCache> = RefCell::new(WordCache {
        owner: 0,
        words: HashMap::new(),
    });
}

impl DirectEncoder {
    /// The direct encoder for `tokenizer` (parsed from `json`), or `None` when the tokenizer
    /// is not of the shape this module reproduces.
    pub fn new(json: &Value, tokenizer: &tokenizers::Tokenizer) -> Option<Self> {
        let pre = &json["pre_tokenizer"]["pretokenizers"];
        let shape_ok = matches!(pre.as_array().map(Vec::as_slice), Some([split, byte_level])
            if split["type"] == "Split"
                && split["pattern"]["Regex"] == QWEN2_PATTERN
                && split["behavior"] == "Isolated"
                && split["invert"] == false
                && byte_level["type"] == "ByteLevel"
                && byte_level["add_prefix_space"] == false
                && byte_level["use_regex"] == false);
        let model = &json["model"];
        let empty = |v: &Value| v.is_null() || v == "";
        let model_ok = model["type"] == "BPE"
            && model["dropout"].is_null()
            && empty(&model["continuing_subword_prefix"])
            && empty(&model["end_of_word_suffix"])
            && model["byte_fallback"] != true
            && model["ignore_merges"] != true;
        let normalizer_ok = json["normalizer"].is_null() || json["normalizer"]["type"] == "NFC";
        // HF's encode applies these; the direct path does not.
        let plain = json["truncation"].is_null() && json["padding"].is_null();
        let added = json["added_tokens"].as_array()?;
        let added_ok = added.iter().all(|t| {
            ["lstrip", "rstrip", "single_word", "normalized"]
                .iter()
                .all(|flag| t[flag] == false)
        });
        if !(shape_ok && model_ok && normalizer_ok && added_ok && plain) {
            return None;
        }
        let vocab: HashMap<&str, u32> = model["vocab"]
            .as_object()?
            .iter()
            .map(|(k, v)| Some((k.as_str(), u32::try_from(v.as_u64()?).ok()?)))
            .collect::<Option<_>>()?;
        let byte_chars = byte_chars();
        let mut byte_ids = [0u32; 256];
        for (b, c) in byte_chars.iter().enumerate() {
            byte_ids[b] = *vocab.get(c.to_string().as_str())?;
        }
        let mut merges = HashMap::default();
        for (rank, merge) in model["merges"].as_array()?.iter().enumerate() {
            let (left, right) = match merge {
                Value::String(s) => s.split_once(' ')?,
                Value::Array(pair) => (pair.first()?.as_str()?, pair.get(1)?.as_str()?),
                _ => return None,
            };
            let merged = *vocab.get(format!("{left}{right}").as_str())?;
            let key = pair_key(*vocab.get(left)?, *vocab.get(right)?);
            // A repeated merge keeps its last rank, as HF's merge map does.
            merges.insert(key, (rank as u32, merged));
        }
        // As HF: empty contents are skipped, ids are the vocabulary's for each content.
        let contents: Vec<&str> = added
            .iter()
            .map(|t| t["content"].as_str())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect();
        let added_ids = contents
            .iter()
            .map(|c| tokenizer.token_to_id(c))
            .collect::<Option<_>>()?;
        Some(Self {
            added: AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(contents)
                .ok()?,
            added_ids,
            normalizer: tokenizer.get_normalizer().cloned(),
            byte_ids,
            byte_chars,
            merges,
            model: tokenizer.get_model().clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn encode(&self, text: &str) -> tokenizers::Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut start = 0;
        for m in self.added.find_iter(text) {
            self.encode_plain(&text[start..m.start()], &mut ids)?;
            ids.push(self.added_ids[m.pattern().as_usize()]);
            start = m.end();
        }
        self.encode_plain(&text[start..], &mut ids)?;
        Ok(ids)
    }

    /// Text without added tokens.
    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) -> tokenizers::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let normalized;
        let text = match &self.normalizer {
            // NFC leaves ASCII unchanged; anything else goes through HF's own normalizer.
            Some(normalizer) if !text.is_ascii() => {
                let mut n = NormalizedString::from(text);
                normalizer.normalize(&mut n)?;
                normalized = n.get().to_owned();
                normalized.as_str()
            }
            _ => text,
        };
        for (a, b) in split(text) {
            self.encode_word(&text.as_bytes()[a..b], ids)?;
        }
        Ok(())
    }

    fn encode_word(&self, word: &[u8], ids: &mut Vec<u32>) -> tokenizers::Result<()> {
        if word.len() > LONG_WORD {
            let chars: String = word.iter().map(|&b| self.byte_chars[b as usize]).collect();
            ids.extend(self.model.tokenize(&chars)?.into_iter().map(|t| t.id));
            return Ok(());
        }
        WORDS.with(|cell| {
            let WordCache {
                owner,
                words: cache,
            } = &mut *cell.borrow_mut();
            if *owner != self.id || cache.len() >= CACHE_WORDS {
                *owner = self.id;
                cache.clear();
            }
            if let Some(hit) = cache.get(word) {
                ids.extend_from_slice(hit);
                return;
            }
            let merged = self.merge(word);
            ids.extend_from_slice(&merged);
            cache.insert(word.into(), merged.into_boxed_slice());
        });
        Ok(())
    }

    /// Repeatedly merges the adjacent pair of lowest rank, leftmost first on ties.
    fn merge(&self, word: &[u8]) -> Vec<u32> {
        let mut symbols: Vec<u32> = word.iter().map(|&b| self.byte_ids[b as usize]).collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    let &(rank, merged) = self.merges.get(&pair_key(w[0], w[1]))?;
                    Some((rank, i, merged))
                })
                .min();
            let Some((_, i, merged)) = best else {
                return symbols;
            };
            symbols[i] = merged;
            symbols.remove(i + 1);
        }
    }
}

fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// GPT-2's reversible byte → printable character table: printable Latin-1 bytes map to
/// themselves, the rest to U+0100 onwards, in byte order.
fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut chars = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        chars[b as usize] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below U+0200")
        };
    }
    chars
}

/// Hashes the packed `u64` id pairs of the merge table with one multiplication.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, key: u64) {
        // Fold the high half down: the table indexes buckets by the low bits.
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}
