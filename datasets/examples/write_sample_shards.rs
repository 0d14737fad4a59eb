//! Writes sample shards with every content kind, or reads shards back, for the Parquet
//! interop check (`scripts/check-parquet-interop.py`).
//!
//! ```sh
//! # Shards written by agentcpt (text, messages, input_ids, with and without meta, several
//! # codecs and row-group sizes) plus `expected.jsonl`: the rows as written.
//! cargo run --release -p agentcpt-datasets --example write_sample_shards -- write DIR
//! # Every shard below DIR read with `agentcpt_datasets::read_all`, one JSON line per row.
//! cargo run --release -p agentcpt-datasets --example write_sample_shards -- read DIR
//! ```
//!
//! A JSON line is `{"file", "row_group", "row", "id", "kind", "source", "text", "messages",
//! "input_ids", "meta"}` (`file` is the file name, `row` counts within the file; the content
//! columns a row does not use are `null`). With `write`, `row_group` is `null`.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use agentcpt_datasets::{
    expand_globs, read_all, write_shard, Compression, Content, Sample, WriterOptions,
};
use serde_json::{json, Value};

fn sample(id: &str, kind: &str, source: &str, content: Content, meta: Option<&str>) -> Sample {
    Sample {
        id: id.into(),
        kind: kind.into(),
        source: source.into(),
        content,
        meta: meta.map(str::to_owned),
    }
}

/// A long text that crosses data pages (deterministic).
fn long_text(n_words: usize) -> String {
    const WORDS: [&str; 12] = [
        "the", "agent", "calls", "a", "tool,", "reads", "résumé", "数据", "and", "plans", "again.",
        "🙂\n",
    ];
    let mut s = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..n_words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        s.push(' ');
    }
    s
}

/// The shards written by `write`: (file name, writer options, samples).
fn shards() -> Vec<(&'static str, WriterOptions, Vec<Sample>)> {
    use Content::{InputIds, Messages, Text};
    let conv = r#"[{"role":"system","content":"You are a deep research assistant."},{"role":"user","content":"What is 2+2? ünïcode 中文"},{"role":"assistant","content":"<think>t1</think>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"2+2\"]}}\n</tool_call>"},{"role":"user","content":"<tool_response>\nFour.\n</tool_response>"},{"role":"assistant","content":"<answer>4</answer>"}]"#;
    let conv_tools = r#"{"messages":[{"role":"user","content":"weather in Paris?"},{"role":"assistant","content":"","reasoning_content":"need the tool","tool_calls":[{"type":"function","function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},{"role":"tool","content":"{\"temp\": 21}"},{"role":"assistant","content":"21 °C"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#;
    let mixed = vec![
        sample(
            "t-ascii",
            "general",
            "web",
            Text("Hello, world.".into()),
            None,
        ),
        sample(
            "t-unicode",
            "general",
            "web",
            Text("ünïcode 中文 🙂 e\u{301} — \"quotes\" \\ back\ttab\r\nCRLF".into()),
            Some(r#"{"lang": "mixed", "score": 0.5, "tags": ["a", "é"]}"#),
        ),
        sample("t-empty", "general", "web", Text(String::new()), Some("{}")),
        sample(
            "t-nul",
            "general",
            "web",
            Text("before\u{0}after".into()),
            Some("null"),
        ),
        sample(
            "t-special",
            "fas_planning",
            "gen-v1",
            Text("<|im_start|>user\nplan<|im_end|>\n<think>\n</think>".into()),
            Some(r#"{"judge": {"verdict": true}}"#),
        ),
        sample("t-long", "general", "books", Text(long_text(60_000)), None),
        sample(
            "m-react",
            "trajectory",
            "tongyi",
            Messages(conv.into()),
            None,
        ),
        sample(
            "m-tools",
            "function_calling",
            "fc-v2",
            Messages(conv_tools.into()),
            Some(r#"{"n_calls": 1}"#),
        ),
        sample(
            "i-small",
            "has",
            "gen-v1",
            InputIds(vec![151644, 872, 198, 151645]),
            Some(r#"{"options": [3, 7]}"#),
        ),
        sample("i-empty", "has", "gen-v1", InputIds(Vec::new()), None),
        sample(
            "i-extremes",
            "has",
            "gen-v1",
            InputIds(vec![0, 1, i32::MAX as u32, 151935]),
            None,
        ),
        sample(
            "i-long",
            "general",
            "pretok",
            InputIds((0..20_000u32).map(|i| (i * 7919) % 151_669).collect()),
            None,
        ),
    ];
    let ids_only: Vec<Sample> = (0..7u32)
        .map(|k| {
            sample(
                &format!("ids-{k}"),
                "general",
                "pretok",
                InputIds((0..k * 3).map(|i| i * 1000 + k).collect()),
                (k % 2 == 0).then_some(r#"{"even": true}"#),
            )
        })
        .collect();
    vec![
        (
            "agentcpt-zstd.parquet",
            WriterOptions::default(),
            mixed.clone(),
        ),
        (
            "agentcpt-snappy-rg3.parquet",
            WriterOptions {
                row_group_rows: 3,
                row_group_bytes: usize::MAX,
                compression: Compression::Snappy,
            },
            mixed,
        ),
        (
            "agentcpt-plain-ids.parquet",
            WriterOptions {
                row_group_rows: 2,
                row_group_bytes: usize::MAX,
                compression: Compression::None,
            },
            ids_only,
        ),
    ]
}

fn row_json(file: &str, row_group: Option<u32>, row: u64, s: &Sample) -> Value {
    let (text, messages, ids) = match &s.content {
        Content::Text(t) => (Some(t.as_str()), None, None),
        Content::Messages(m) => (None, Some(m.as_str()), None),
        Content::InputIds(ids) => (None, None, Some(ids)),
    };
    json!({
        "file": file,
        "row_group": row_group,
        "row": row,
        "id": s.id,
        "kind": s.kind,
        "source": s.source,
        "text": text,
        "messages": messages,
        "input_ids": ids,
        "meta": s.meta,
    })
}

fn write(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let expected = dir.join("expected.jsonl");
    let f = std::fs::File::create(&expected).map_err(|e| format!("{}: {e}", expected.display()))?;
    let mut out = BufWriter::new(f);
    for (name, opts, samples) in shards() {
        let n = write_shard(dir.join(name), samples.iter().cloned(), opts)
            .map_err(|e| e.to_string())?;
        for (row, s) in samples.iter().enumerate() {
            writeln!(out, "{}", row_json(name, None, row as u64, s)).map_err(|e| e.to_string())?;
        }
        eprintln!("wrote {name}: {n} rows");
    }
    out.flush().map_err(|e| e.to_string())
}

fn read(dir: &Path) -> Result<(), String> {
    let pattern = vec![dir.display().to_string()];
    let files = expand_globs("read", &pattern).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut last_file = u32::MAX;
    let mut row_in_file = 0u64;
    for item in read_all(&pattern).map_err(|e| e.to_string())? {
        let (doc, s) = item.map_err(|e| e.to_string())?;
        if doc.file != last_file {
            last_file = doc.file;
            row_in_file = 0;
        }
        let name = files[doc.file as usize]
            .strip_prefix(dir)
            .unwrap_or(&files[doc.file as usize])
            .display()
            .to_string();
        let line = row_json(&name, Some(doc.row_group), row_in_file, &s);
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        row_in_file += 1;
    }
    out.flush().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [mode, dir] if mode == "write" => write(Path::new(dir)),
        [mode, dir] if mode == "read" => read(Path::new(dir)),
        _ => Err("usage: write_sample_shards write|read DIR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
