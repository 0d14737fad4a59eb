//! Versioned prompt templates: the files under `datasets/prompts/`, built into the binary and
//! overridable one by one from a directory (`--prompts DIR`).
//!
//! A file starts with a header line `# NAME vN`, then any `#` comment lines, then sections
//! opened by a line `[system]` or `[user]`. `{{var}}` placeholders are filled at render time;
//! a placeholder left unfilled is an error naming the file. Provenance records
//! `NAME@vN+SHA` (first 12 hex digits of the file's SHA-256), so an edited prompt is told
//! apart from the shipped one even when its version line was not bumped.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::llm::ChatMessage;

/// The prompts agentcpt ships, by name.
const BUILT_IN: &[(&str, &str)] = &[
    ("fas-memory", include_str!("../../prompts/fas-memory.txt")),
    (
        "fas-questions",
        include_str!("../../prompts/fas-questions.txt"),
    ),
    ("fas-plan", include_str!("../../prompts/fas-plan.txt")),
    (
        "fas-plan-judge",
        include_str!("../../prompts/fas-plan-judge.txt"),
    ),
    (
        "fas-reason-internal",
        include_str!("../../prompts/fas-reason-internal.txt"),
    ),
    (
        "fas-reason-refine",
        include_str!("../../prompts/fas-reason-refine.txt"),
    ),
    (
        "has-alternatives",
        include_str!("../../prompts/has-alternatives.txt"),
    ),
    (
        "answer-judge",
        include_str!("../../prompts/answer-judge.txt"),
    ),
    (
        "agent-system",
        include_str!("../../prompts/agent-system.txt"),
    ),
];

/// One parsed template.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Where it came from (a path, or `built-in:NAME`), for error messages.
    pub origin: String,
    /// `NAME@vN+SHA`.
    pub version: String,
    sections: Vec<(String, String)>,
}

impl Prompt {
    /// Parses `text`; `name` must match the header.
    pub fn parse(name: &str, origin: &str, text: &str) -> Result<Prompt, String> {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let version = header
            .strip_prefix("# ")
            .and_then(|h| h.strip_prefix(name))
            .and_then(|h| h.trim().strip_prefix('v'))
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| format!("{origin}: line 1 must be `# {name} vN`, got `{header}`"))?;
        let mut sections: Vec<(String, String)> = Vec::new();
        for (i, line) in lines.enumerate() {
            let role = match line.trim_end() {
                "[system]" => Some("system"),
                "[user]" => Some("user"),
                _ => None,
            };
            match (role, sections.last_mut()) {
                (Some(role), _) => sections.push((role.to_string(), String::new())),
                (None, Some((_, body))) => {
                    body.push_str(line);
                    body.push('\n');
                }
                (None, None) if line.starts_with('#') || line.trim().is_empty() => {}
                (None, None) => {
                    return Err(format!(
                        "{origin}:{}: text before the first `[system]` or `[user]` line",
                        i + 2
                    ))
                }
            }
        }
        if !sections.iter().any(|(role, _)| role == "user") {
            return Err(format!("{origin}: no `[user]` section"));
        }
        for (_, body) in &mut sections {
            *body = body.trim().to_string();
        }
        let sha: String = Sha256::digest(text.as_bytes())
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Prompt {
            origin: origin.to_string(),
            version: format!("{name}@v{version}+{sha}"),
            sections,
        })
    }

    /// The chat messages with every `{{var}}` filled from `vars`.
    pub fn render(&self, vars: &[(&str, &str)]) -> Result<Vec<ChatMessage>, String> {
        self.sections
            .iter()
            .map(|(role, body)| Ok(ChatMessage::new(role, fill(body, vars, &self.origin)?)))
            .collect()
    }

    /// The first section's text, filled (for prompts used as a system message).
    pub fn text(&self, vars: &[(&str, &str)]) -> Result<String, String> {
        fill(&self.sections[0].1, vars, &self.origin)
    }
}

/// Replaces `{{name}}` by its value in one pass (values are not re-scanned, so a document
/// containing `{{x}}` stays as it is).
fn fill(template: &str, vars: &[(&str, &str)], origin: &str) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{origin}: unclosed `{{{{`"))?;
        let name = after[..end].trim();
        let value = vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("{origin}: placeholder `{{{{{name}}}}}` has no value"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every prompt a synth command may use.
#[derive(Debug, Clone)]
pub struct Prompts {
    prompts: Vec<(&'static str, Prompt)>,
}

impl Prompts {
    /// The built-in prompts, each replaced by `DIR/NAME.txt` where that file exists.
    pub fn load(dir: Option<&Path>) -> Result<Prompts, String> {
        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(format!("--prompts {}: not a directory", dir.display()));
            }
        }
        let mut prompts = Vec::new();
        for (name, built_in) in BUILT_IN {
            let file = dir.map(|d| d.join(format!("{name}.txt")));
            let prompt = match file.filter(|f| f.exists()) {
                Some(f) => {
                    let text =
                        std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                    Prompt::parse(name, &f.display().to_string(), &text)?
                }
                None => Prompt::parse(name, &format!("built-in:{name}"), built_in)?,
            };
            prompts.push((*name, prompt));
        }
        Ok(Prompts { prompts })
    }

    /// The prompt called `name` (one of the built-in names).
    pub fn get(&self, name: &str) -> &Prompt {
        &self
            .prompts
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no prompt `{name}` is built in"))
            .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_prompts_parse_and_carry_versions() {
        let prompts = Prompts::load(None).unwrap();
        for (name, _) in BUILT_IN {
            let v = &prompts.get(name).version;
            assert!(v.starts_with(&format!("{name}@v")), "{v}");
        }
    }

    #[test]
    fn placeholders_fill_once_and_missing_ones_are_errors() {
        let p = Prompt::parse(
            "t",
            "t.txt",
            "# t v2\n# note\n[system]\nS {{a}}\n[user]\n{{b}}!\n",
        )
        .unwrap();
        assert!(p.version.starts_with("t@v2+"));
        let m = p.render(&[("a", "{{b}}"), ("b", "x")]).unwrap();
        assert_eq!(m[0].content, "S {{b}}");
        assert_eq!(m[1], ChatMessage::new("user", "x!"));
        let e = p.render(&[("a", "1")]).unwrap_err();
        assert!(e.contains("t.txt") && e.contains("{{b}}"), "{e}");
        let e = Prompt::parse("t", "t.txt", "# other v1\n[user]\nx").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = Prompt::parse("t", "t.txt", "# t v1\nstray\n[user]\nx").unwrap_err();
        assert!(e.contains("t.txt:2"), "{e}");
    }
}
