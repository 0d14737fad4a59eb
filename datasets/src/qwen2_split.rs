//! The Qwen2/Qwen3 pre-tokenizer split, hand-written. The tokenizer.json splits text with
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! which HF `tokenizers` runs through a backtracking regex engine (the look-ahead needs
//! one). This scanner yields exactly the same pieces in one forward pass, with the character classes taken from the regex crate's own
//! Unicode tables, so `\p{L}`, `\p{N}` and `\s` mean what they mean there. The tokenizer
//! tests check it piece for piece against the regex on real and adversarial text.

use std::sync::OnceLock;

use regex_syntax::hir::{self, HirKind};
use tokenizers::Offsets;

/// The pattern this module replaces, as it appears in the Qwen2/Qwen3 tokenizer.json.
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    /// `\r` or `\n`.
    Newline,
    /// Any other `\s`.
    Space,
    /// Neither `\s`, `\p{L}` nor `\p{N}`.
    Other,
}

/// Sorted code-point ranges of `\p{L}`, `\p{N}` and `\s`.
struct Tables {
    letter: Vec<(char, char)>,
    number: Vec<(char, char)>,
    space: Vec<(char, char)>,
}

fn ranges(class: &str) -> Vec<(char, char)> {
    let hir = regex_syntax::Parser::new()
        .parse(class)
        .expect("a valid Unicode class");
    match hir.kind() {
        HirKind::Class(hir::Class::Unicode(c)) => {
            c.ranges().iter().map(|r| (r.start(), r.end())).collect()
        }
        other => unreachable!("{class} parsed to {other:?}"),
    }
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables {
        letter: ranges(r"\p{L}"),
        number: ranges(r"\p{N}"),
        space: ranges(r"\s"),
    })
}

fn contains(ranges: &[(char, char)], c: char) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

fn class(c: char) -> Class {
    match c {
        'a'..='z' | 'A'..='Z' => Class::Letter,
        '0'..='9' => Class::Number,
        '\r' | '\n' => Class::Newline,
        ' ' | '\t' | '\x0b' | '\x0c' => Class::Space,
        _ if c.is_ascii() => Class::Other,
        _ => {
            let t = tables();
            if contains(&t.letter, c) {
                Class::Letter
            } else if contains(&t.number, c) {
                Class::Number
            } else if contains(&t.space, c) {
                Class::Space
            } else {
                Class::Other
            }
        }
    }
}

/// The pieces of `text` as byte ranges, contiguous and covering it.
pub fn split(text: &str) -> Vec<Offsets> {
    let chars: Vec<(usize, char, Class)> =
        text.char_indices().map(|(i, c)| (i, c, class(c))).collect();
    let end = text.len();
    let at = |k: usize| chars.get(k).map_or(end, |&(i, _, _)| i);
    let class_at = |k: usize| chars.get(k).map(|&(_, _, c)| c);
    let run = |mut k: usize, keep: &dyn Fn(Class) -> bool| {
        while class_at(k).is_some_and(keep) {
            k += 1;
        }
        k
    };
    let mut pieces = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        let (_, c, cls) = chars[k];
        let next = |n: usize| chars.get(k + n).map(|&(_, c, _)| c.to_ascii_lowercase());
        let stop = if let Some(len) = contraction(c, next(1), next(2)) {
            k + len
        } else if cls == Class::Letter {
            run(k, &|c| c == Class::Letter)
        } else if cls != Class::Newline
            && cls != Class::Number
            && class_at(k + 1) == Some(Class::Letter)
        {
            run(k + 1, &|c| c == Class::Letter)
        } else if cls == Class::Number {
            k + 1
        } else if cls == Class::Other || (c == ' ' && class_at(k + 1) == Some(Class::Other)) {
            let others = run(k + 1, &|c| c == Class::Other);
            run(others, &|c| c == Class::Newline)
        } else {
            // A whitespace run: up to its last newline if it has one; otherwise all of it at
            // the end of the text, all but its last character before a non-space (which
            // then leads the next piece), or the single character.
            let ws_end = run(k, &|c| c == Class::Newline || c == Class::Space);
            match (k..ws_end).rev().find(|&j| chars[j].2 == Class::Newline) {
                Some(last_newline) => last_newline + 1,
                None if ws_end == chars.len() || ws_end - k == 1 => ws_end,
                None => ws_end - 1,
            }
        };
        pieces.push((at(k), at(stop)));
        k = stop;
    }
    pieces
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at an apostrophe: the length in characters. The regex's
/// case folding also maps `ſ` (U+017F) to `s`.
fn contraction(c: char, n1: Option<char>, n2: Option<char>) -> Option<usize> {
    if c != '\'' {
        return None;
    }
    match (n1?, n2) {
        ('s' | 't' | 'm' | 'd' | 'ſ', _) => Some(2),
        ('r' | 'v', Some('e')) | ('l', Some('l')) => Some(3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn reference(text: &str) -> Vec<Offsets> {
        static REGEX: OnceLock<fancy_regex::Regex> = OnceLock::new();
        let regex = REGEX.get_or_init(|| fancy_regex::Regex::new(QWEN2_PATTERN).unwrap());
        regex
            .find_iter(text)
            .map(|m| {
                let m = m.unwrap();
                (m.start(), m.end())
            })
            .collect()
    }

    #[test]
    fn fixed_cases_match_the_regex() {
        for text in [
            "",
            "Hello world",
            "I'm here, they'RE not; it'ſ 'sorry' 'LL",
            "  leading and trailing  ",
            "a\n\n  b\r\n\tc \n",
            "x = f(3.14) + 1_000; // done!!\n",
            "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": [\"a b\"]}}\n</tool_call>",
            "नमस्ते दुनिया ٣٤ Ⅻ ½ 中文字符 😀😀 naïve e\u{301}",
            "\u{a0}\u{2028}x\u{85}\u{3000}  \u{b}\u{c}",
        ] {
            assert_eq!(split(text), reference(text), "{text:?}");
        }
    }

    /// Random strings over characters of every class the pattern distinguishes.
    #[test]
    fn random_strings_match_the_regex() {
        let alphabet: Vec<char> =
            "aZsStTrReEvVlLmMdDſKé中Ωß0٣Ⅻ½\u{94d}\u{301} \t\n\r\u{a0}\u{2028}\u{85}\u{b}'\".-(<😀_"
                .chars()
                .collect();
        let mut rng = Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.below(24) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(split(&text), reference(&text), "{text:?}");
        }
    }
}
