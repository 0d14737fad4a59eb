//! Runs one synth command's items on a bounded pool of workers, journalling every finished
//! item so that a re-run skips it, and stopping cleanly when the model cannot be reached.
//!
//! Why a journal rather than writing shards as items finish: outputs are written in input
//! order once every item is done, so a run's shards are the same for a seed whatever the
//! concurrency, interruptions and re-runs; and no shard is ever left half-written. The
//! journal is appended and flushed per item; a torn last line is dropped on load.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::llm::LlmError;
use super::output::{append_log, open_log};
use super::SynthError;

/// One rejected record or item, with a counted reason (`malformed_json`, `judge_rejected`…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub reason: String,
    pub detail: String,
}

impl Reject {
    pub fn new(reason: &str, detail: impl Into<String>) -> Self {
        Reject {
            reason: reason.to_string(),
            detail: detail.into(),
        }
    }
}

/// What one item produced: kept records (command-specific JSON) and rejects. An item with
/// no kept record counts as rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub kept: Vec<Value>,
    pub rejects: Vec<Reject>,
}

impl Outcome {
    /// One kept record.
    pub fn keep(record: Value) -> Self {
        Outcome {
            kept: vec![record],
            rejects: vec![],
        }
    }

    pub fn reject(reason: &str, detail: impl Into<String>) -> Self {
        Reject::new(reason, detail).into()
    }
}

/// An item rejected as a whole.
impl From<Reject> for Outcome {
    fn from(reject: Reject) -> Self {
        Outcome {
            kept: vec![],
            rejects: vec![reject],
        }
    }
}

/// The reject reason of a request the model refused.
const REFUSED: &str = "request_refused";

/// Refusals in a row, before anything else succeeds, that stop a run as misconfigured.
const REFUSALS_BEFORE_STOP: usize = 5;

fn is_refusal(o: &Outcome) -> bool {
    o.kept.is_empty() && o.rejects.iter().any(|r| r.reason == REFUSED)
}

/// What the workers share.
struct State<'a> {
    journal_path: &'a Path,
    progress: &'a (dyn Fn(&Counts) + Sync),
    done: HashMap<String, Outcome>,
    file: File,
    counts: Counts,
    error: Option<SynthError>,
    /// Refused items not journalled yet. Until an item of the run gets past the model, a
    /// refusal may come from a misconfiguration (every request refused: a wrong model name,
    /// a `max_tokens` the server rejects), and journalling it would make it final.
    held: Vec<(String, Outcome)>,
    /// Something got past the model, in this run or an earlier one.
    trusted: bool,
}

impl State<'_> {
    fn finish(&mut self, id: &str, outcome: Outcome) -> Result<(), SynthError> {
        if is_refusal(&outcome) && !self.trusted {
            self.held.push((id.to_string(), outcome));
            if self.held.len() >= REFUSALS_BEFORE_STOP {
                let first = self.held[0].1.rejects[0].detail.clone();
                return Err(SynthError::Input(format!(
                    "the model refused the first {} requests of this run; that looks like a configuration problem (model name, --max-tokens, context length), not bad items. First refusal: {first}",
                    self.held.len()
                )));
            }
            return Ok(());
        }
        if !is_refusal(&outcome) {
            self.trusted = true;
        }
        self.flush_held()?;
        self.journal(id, outcome)
    }

    fn flush_held(&mut self) -> Result<(), SynthError> {
        for (id, outcome) in std::mem::take(&mut self.held) {
            self.journal(&id, outcome)?;
        }
        Ok(())
    }

    fn journal(&mut self, id: &str, outcome: Outcome) -> Result<(), SynthError> {
        let line = Line {
            item: id.to_string(),
            outcome,
        };
        append_log(&mut self.file, &line).map_err(|e| SynthError::io(self.journal_path, e))?;
        self.counts.add(&line.outcome);
        self.done.insert(line.item, line.outcome);
        (self.progress)(&self.counts);
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Line {
    item: String,
    #[serde(flatten)]
    outcome: Outcome,
}

/// Progress and final counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub items: usize,
    /// Items finished, this run or an earlier one.
    pub done: usize,
    /// Items taken from the journal of an earlier run.
    pub resumed: usize,
    pub kept_records: usize,
    pub kept_items: usize,
    pub rejected_items: usize,
    /// Rejected records and items, by reason.
    pub reject_reasons: BTreeMap<String, usize>,
}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        self.done += 1;
        self.kept_records += outcome.kept.len();
        if outcome.kept.is_empty() {
            self.rejected_items += 1;
        } else {
            self.kept_items += 1;
        }
        for r in &outcome.rejects {
            *self.reject_reasons.entry(r.reason.clone()).or_default() += 1;
        }
    }
}

/// Runs `work` on every `(id, item)` not yet in the journal at `journal_path`, with at most
/// `concurrency` at once, calling `progress` after each. Returns every item's outcome in input
/// order. Ids must be unique. On an [`LlmError`] the run stops taking new items, lets the
/// running ones finish, and returns the error: what finished stays journalled.
pub fn run_items<T: Sync>(
    items: &[(String, T)],
    journal_path: &Path,
    concurrency: usize,
    progress: &(dyn Fn(&Counts) + Sync),
    work: &(dyn Fn(&str, &T) -> Result<Outcome, LlmError> + Sync),
) -> Result<(Vec<Outcome>, Counts), SynthError> {
    let mut seen = std::collections::HashSet::new();
    for (id, _) in items {
        if !seen.insert(id.as_str()) {
            return Err(SynthError::Input(format!(
                "item id `{id}` appears twice (ids are the records' `id`, else FILE_STEM:LINE: give records ids, or input files distinct names)"
            )));
        }
    }
    let (lines, file) =
        open_log::<Line>(journal_path).map_err(|e| SynthError::io(journal_path, e))?;
    let done: HashMap<String, Outcome> = lines
        .into_iter()
        .filter(|l| seen.contains(l.item.as_str()))
        .map(|l| (l.item, l.outcome))
        .collect();
    let mut counts = Counts {
        items: items.len(),
        ..Counts::default()
    };
    for outcome in done.values() {
        counts.add(outcome);
        counts.resumed += 1;
    }
    progress(&counts);
    let todo: Vec<usize> = (0..items.len())
        .filter(|&i| !done.contains_key(&items[i].0))
        .collect();
    let trusted = done.values().any(|o| !is_refusal(o));
    let state = Mutex::new(State {
        journal_path,
        progress,
        done,
        file,
        counts,
        error: None,
        held: Vec::new(),
        trusted,
    });
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..concurrency.max(1).min(todo.len().max(1)) {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Some(&i) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let (id, item) = &items[i];
                let result = match work(id, item) {
                    Err(LlmError::Refused(msg)) => Ok(Outcome::reject(REFUSED, msg)),
                    Err(LlmError::Unusable { msg, .. }) => {
                        Ok(Outcome::reject("unusable_completion", msg))
                    }
                    other => other,
                };
                let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                let failure = match result {
                    Ok(outcome) => state.finish(id, outcome).err(),
                    Err(e) => Some(SynthError::Llm {
                        item: id.clone(),
                        error: e,
                        journal: journal_path.to_path_buf(),
                    }),
                };
                if let Some(e) = failure {
                    stop.store(true, Ordering::SeqCst);
                    state.error.get_or_insert(e);
                    return;
                }
            });
        }
    });
    let mut state = state.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = state.error.take() {
        return Err(e);
    }
    // A short run refused throughout: few enough items to take the refusals as final.
    state.flush_held()?;
    let State {
        mut done, counts, ..
    } = state;
    let outcomes = items
        .iter()
        .map(|(id, _)| done.remove(id).expect("every item ran"))
        .collect();
    Ok((outcomes, counts))
}

/// Records the settings of a run in `OUT/run.json`; a re-run into the same directory with
/// different settings is refused (its journalled items were made under the old ones).
pub fn check_settings(out: &Path, settings: &Value) -> Result<PathBuf, SynthError> {
    std::fs::create_dir_all(out).map_err(|e| SynthError::io(out, e))?;
    let path = out.join("run.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| SynthError::io(&path, e))?;
        let old: Value = serde_json::from_str(&text)
            .map_err(|e| SynthError::Input(format!("{}: not JSON: {e}", path.display())))?;
        if &old != settings {
            let keys: Vec<String> = settings
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| old.get(k.as_str()) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "`{k}`: was {}, now {v}",
                        old.get(k.as_str()).unwrap_or(&Value::Null)
                    )
                })
                .collect();
            return Err(SynthError::Input(format!(
                "{} was made with other settings ({}); use another --out directory, or delete it to start over",
                out.display(),
                keys.join("; ")
            )));
        }
    } else {
        let text = serde_json::to_string_pretty(settings).expect("settings serialise");
        super::output::write_atomic(&path, text.as_bytes())?;
    }
    Ok(out.join("journal.jsonl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<(String, usize)> {
        (0..n).map(|i| (format!("item-{i}"), i)).collect()
    }

    /// Outcomes come back in input order whatever the concurrency; an LLM failure stops the
    /// run with what finished journalled, and a re-run only does the rest.
    #[test]
    fn journal_resumes_after_an_llm_failure() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.jsonl");
        let items = items(20);
        let calls = AtomicUsize::new(0);
        let work = |_: &str, &i: &usize| {
            calls.fetch_add(1, Ordering::SeqCst);
            if i == 13 {
                return Err(LlmError::Transport {
                    url: "http://x".into(),
                    msg: "refused".into(),
                });
            }
            Ok(if i % 3 == 0 {
                Outcome::reject("odd", format!("{i}"))
            } else {
                Outcome {
                    kept: vec![Value::from(i)],
                    rejects: vec![],
                }
            })
        };
        let err = run_items(&items, &journal, 1, &|_| {}, &work).unwrap_err();
        assert!(
            matches!(err, SynthError::Llm { ref item, .. } if item == "item-13"),
            "{err}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 14);
        // Simulate a torn line from a crash.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"item\": \"item-1\xe2\x82").unwrap();
        drop(f);
        let (outcomes, counts) = run_items(&items, &journal, 4, &|_| {}, &|id, &i| {
            assert!(i >= 13, "{id} was journalled");
            Ok(Outcome {
                kept: vec![Value::from(i)],
                rejects: vec![],
            })
        })
        .unwrap();
        assert_eq!(counts.resumed, 13);
        assert_eq!(counts.done, 20);
        assert_eq!(counts.reject_reasons["odd"], 5);
        let kept: Vec<u64> = outcomes
            .iter()
            .flat_map(|o| o.kept.iter().map(|v| v.as_u64().unwrap()))
            .collect();
        let expected: Vec<u64> = (0..20u64).filter(|i| *i >= 13 || i % 3 != 0).collect();
        assert_eq!(kept, expected);
    }

    /// Refusals before anything succeeds stop the run unjournalled (a misconfiguration);
    /// after a success they are ordinary rejects.
    #[test]
    fn a_run_refused_throughout_stops_without_journalling() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.jsonl");
        let refused =
            |_: &str, _: &usize| Err(LlmError::Refused("HTTP 400: bad max_tokens".into()));
        let err = run_items(&items(8), &journal, 1, &|_| {}, &refused).unwrap_err();
        assert!(
            err.to_string().contains("refused the first 5 requests"),
            "{err}"
        );
        assert!(std::fs::read_to_string(&journal).unwrap().trim().is_empty());
        let mixed = |_: &str, &i: &usize| {
            if i == 0 {
                Ok(Outcome {
                    kept: vec![Value::from(0)],
                    rejects: vec![],
                })
            } else {
                Err(LlmError::Refused("too long".into()))
            }
        };
        let (_, counts) = run_items(&items(8), &journal, 1, &|_| {}, &mixed).unwrap();
        assert_eq!(counts.reject_reasons[REFUSED], 7);
        // A run too short to tell is journalled as it is.
        let short = dir.path().join("short.jsonl");
        let (_, counts) = run_items(&items(2), &short, 1, &|_| {}, &refused).unwrap();
        assert_eq!(counts.rejected_items, 2);
    }

    #[test]
    fn changed_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_settings(dir.path(), &serde_json::json!({"seed": 1, "n": 2})).unwrap();
        check_settings(dir.path(), &serde_json::json!({"seed": 1, "n": 2})).unwrap();
        let e = check_settings(dir.path(), &serde_json::json!({"seed": 2, "n": 2})).unwrap_err();
        assert!(e.to_string().contains("`seed`: was 1, now 2"), "{e}");
    }
}
