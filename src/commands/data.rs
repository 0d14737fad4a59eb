//! `agentcpt data …`: import JSONL into Parquet shards, inspect shards, pre-tokenize them,
//! and preview the packed batches a recipe feeds the trainer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use agentcpt_datasets::{
    parse_conversation, read_all, training_text, ChatOptions, Content, DataParallel, Encoder,
    HfTokenizer, Loader, LoaderState, PackedSequence, Sample, ShardWriter, WriterOptions,
};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::recipe::LoadedRecipe;

/// Rows per shard written by `import` and `tokenize`.
pub const DEFAULT_SHARD_ROWS: usize = 10_000;

/// Writes samples into `DIR/{prefix}-00000.parquet`, `-00001`, … of at most `rows` rows.
struct ShardSeries {
    dir: PathBuf,
    prefix: String,
    rows_per_shard: usize,
    current: Option<(ShardWriter, usize)>,
    written: Vec<PathBuf>,
}

impl ShardSeries {
    fn new(dir: &Path, prefix: &str, rows_per_shard: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            rows_per_shard,
            current: None,
            written: vec![],
        })
    }

    fn write(&mut self, sample: Sample) -> Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, n)| *n >= self.rows_per_shard)
        {
            self.close()?;
        }
        if self.current.is_none() {
            let path = self
                .dir
                .join(format!("{}-{:05}.parquet", self.prefix, self.written.len()));
            self.current = Some((ShardWriter::create(&path, WriterOptions::default())?, 0));
            self.written.push(path);
        }
        let (writer, n) = self.current.as_mut().expect("opened above");
        writer.write(sample)?;
        *n += 1;
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((writer, _)) = self.current.take() {
            writer.finish()?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.close()?;
        Ok(self.written)
    }
}

/// One JSONL line → a sample: `text`, `messages` (+ optional `tools`) or `input_ids`;
/// `id` if present (else `FILE_STEM-LINE`); every other field goes to `meta`.
fn sample_from_line(
    value: Value,
    kind: &str,
    source: &str,
    fallback_id: String,
) -> Result<Sample, String> {
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object".into());
    };
    let id = match object.remove("id") {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("`id` must be a string or number, got {other}")),
        None => fallback_id,
    };
    let content = if let Some(text) = object.remove("text") {
        Content::Text(text.as_str().ok_or("`text` must be a string")?.to_string())
    } else if let Some(messages) = object.remove("messages") {
        let conversation = match object.remove("tools") {
            Some(tools) => json!({"messages": messages, "tools": tools}),
            None => messages,
        };
        let text = conversation.to_string();
        parse_conversation(&text)
            .map_err(|e| format!("`messages` is not a ChatML conversation: {e}"))?;
        Content::Messages(text)
    } else if let Some(ids) = object.remove("input_ids") {
        let ids: Vec<u32> = serde_json::from_value(ids)
            .map_err(|e| format!("`input_ids` must be a list of token ids: {e}"))?;
        Content::InputIds(ids)
    } else {
        return Err("no `text`, `messages` or `input_ids` field".into());
    };
    let meta = (!object.is_empty()).then(|| Value::Object(object).to_string());
    let sample = Sample {
        id,
        kind: kind.to_string(),
        source: source.to_string(),
        content,
        meta,
    };
    sample.validate()?;
    Ok(sample)
}

/// `data import`: JSONL documents or ChatML trajectories → Parquet shards.
pub fn import(
    files: &[PathBuf],
    kind: &str,
    source: Option<&str>,
    out: &Path,
    rows_per_shard: usize,
) -> Result<()> {
    if files.is_empty() {
        bail!("no input files");
    }
    let mut total = 0usize;
    for file in files {
        let stem = file
            .file_stem()
            .map_or("data".into(), |s| s.to_string_lossy().into_owned());
        let source = source.unwrap_or(&stem);
        let reader = std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        );
        let mut shards = ShardSeries::new(out, &stem, rows_per_shard)?;
        let mut rows = 0usize;
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| {
                format!(
                    "{}:{}: cannot read the line (not UTF-8?)",
                    file.display(),
                    n + 1
                )
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("{}:{}: not JSON: {e}", file.display(), n + 1))?;
            let sample = sample_from_line(value, kind, source, format!("{stem}-{}", n + 1))
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", file.display(), n + 1))?;
            shards
                .write(sample)
                .with_context(|| format!("{}:{}", file.display(), n + 1))?;
            rows += 1;
        }
        if rows == 0 {
            bail!("{}: no records", file.display());
        }
        let written = shards.finish()?;
        println!(
            "{}: {rows} samples → {} shard(s) in {}",
            file.display(),
            written.len(),
            out.display()
        );
        total += rows;
    }
    println!("imported {total} samples of kind `{kind}`");
    Ok(())
}

/// Token (or, without a tokenizer, character) lengths in powers-of-two buckets.
fn histogram(lengths: &[usize]) -> Vec<(usize, usize)> {
    let mut buckets: BTreeMap<usize, usize> = BTreeMap::new();
    for &len in lengths {
        *buckets.entry(len.max(1).next_power_of_two()).or_default() += 1;
    }
    buckets.into_iter().collect()
}

/// `data inspect`: schema, counts per kind and source, a length histogram, one sample.
pub fn inspect(patterns: &[String], tokenizer: Option<&Path>) -> Result<()> {
    let encoder = tokenizer.map(HfTokenizer::from_file).transpose()?;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    let mut columns: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut lengths = Vec::new();
    let mut first: Option<(Sample, Option<String>)> = None;
    for item in read_all(patterns)? {
        let (_, sample) = item?;
        *kinds.entry(sample.kind.clone()).or_default() += 1;
        *sources.entry(sample.source.clone()).or_default() += 1;
        *columns.entry(sample.content.column()).or_default() += 1;
        let text = training_text(&sample, &ChatOptions::default()).map_err(anyhow::Error::msg)?;
        lengths.push(match (&sample.content, &text, &encoder) {
            (Content::InputIds(ids), _, _) => ids.len(),
            (_, Some(t), Some(enc)) => enc.encode(t)?.len(),
            (_, Some(t), None) => t.chars().count(),
            (_, None, _) => 0,
        });
        if first.is_none() {
            first = Some((sample, text));
        }
    }
    let unit = if encoder.is_some() {
        "tokens"
    } else {
        "characters"
    };
    println!("schema: id, kind, source, text | messages | input_ids, meta");
    println!("rows: {}", lengths.len());
    println!("content columns: {columns:?}");
    println!("kinds: {kinds:?}");
    println!("sources: {sources:?}");
    let total: usize = lengths.iter().sum();
    println!(
        "length in {unit}: total {total}, mean {:.1}, max {}",
        total as f64 / lengths.len().max(1) as f64,
        lengths.iter().max().unwrap_or(&0)
    );
    for (bucket, count) in histogram(&lengths) {
        println!("  ≤ {bucket:>8} {unit}: {count}");
    }
    if let Some((sample, text)) = first {
        println!(
            "first sample `{}` ({}, {}):",
            sample.id, sample.kind, sample.source
        );
        match text {
            Some(t) => println!("{}", t.chars().take(2000).collect::<String>()),
            None => println!("{} pre-tokenized ids", lengths[0]),
        }
    }
    Ok(())
}

/// `data tokenize`: renders and tokenizes every sample into `input_ids` shards.
pub fn tokenize(
    patterns: &[String],
    tokenizer: &Path,
    out: &Path,
    rows_per_shard: usize,
) -> Result<()> {
    let encoder = HfTokenizer::from_file(tokenizer)?;
    let mut shards = ShardSeries::new(out, "tokenized", rows_per_shard)?;
    let (mut rows, mut tokens) = (0usize, 0usize);
    for item in read_all(patterns)? {
        let (_, sample) = item?;
        let ids =
            match training_text(&sample, &ChatOptions::default()).map_err(anyhow::Error::msg)? {
                Some(text) => encoder.encode(&text)?,
                None => match sample.content {
                    Content::InputIds(ref ids) => ids.clone(),
                    _ => unreachable!("only pre-tokenized samples have no text"),
                },
            };
        tokens += ids.len();
        rows += 1;
        shards.write(Sample {
            content: Content::InputIds(ids),
            ..sample
        })?;
    }
    let written = shards.finish()?;
    println!(
        "{rows} samples, {tokens} tokens → {} shard(s) in {}",
        written.len(),
        out.display()
    );
    Ok(())
}

/// One packed sequence as the trainer sees it, with source names.
fn sequence_json(seq: &PackedSequence, names: &[String]) -> Value {
    json!({
        "input_ids": seq.input_ids,
        "position_ids": seq.position_ids,
        "document_lengths": seq.doc_lens(),
        "document_sources": seq.doc_sources().iter().map(|s| s.map(|i| names[i as usize].clone())).collect::<Vec<_>>(),
        "document_ids": seq.segments.iter().map(|s| s.sample_id.as_deref()).collect::<Vec<_>>(),
        "loss_mask": seq.loss_mask,
    })
}

/// `data preview`: the next `batches` micro-batches of `recipe` as JSONL, optionally starting
/// from a saved loader state and saving the state after the last one.
pub fn preview(
    recipe: &LoadedRecipe,
    batches: usize,
    state: Option<&Path>,
    save_state: Option<&Path>,
    dp: DataParallel,
    out: &mut dyn Write,
) -> Result<()> {
    let config = recipe.recipe.data.clone();
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let encoder = recipe.encoder()?;
    let mut loader = match state {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read loader state {}", path.display()))?;
            let state: LoaderState = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a loader state", path.display()))?;
            Loader::resume(config, encoder, dp, &state)?
        }
        None => Loader::open(config, encoder, dp)?,
    };
    let micro_batch = recipe.recipe.train.micro_batch;
    let mut out = BufWriter::new(out);
    for _ in 0..batches {
        let batch = loader.next_batch(micro_batch)?;
        if batch.is_empty() {
            eprintln!(
                "the data ran out after {} sequences",
                loader.sequences_emitted()
            );
            break;
        }
        let sequences: Vec<Value> = batch.iter().map(|s| sequence_json(s, &names)).collect();
        serde_json::to_writer(&mut out, &json!({ "sequences": sequences }))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if let Some(path) = save_state {
        let text = serde_json::to_string_pretty(&loader.state())?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write loader state {}", path.display()))?;
    }
    for report in loader.report() {
        eprintln!(
            "source {}: weight {:.3}, realised share {:.3}, {} tokens",
            report.name, report.weight, report.share, report.stats.tokens
        );
    }
    Ok(())
}
