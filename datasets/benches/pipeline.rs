//! Data-pipeline throughput: Parquet shards → (tokenize) → packed rows of 4096 tokens.
//!
//! ```sh
//! cargo bench -p agentcpt-datasets --bench pipeline -- [--data-dir DIR] [--text-mb 32]
//!     [--ids-tokens 50000000] [--seq-len 4096] [--tokenizer tokenizer.json] [--json OUT]
//!     [--only tokenize,text,ids]
//! ```
//!
//! It first writes (once; reused while the generation parameters are unchanged):
//! - `DIR/text/*.parquet`: about `--text-mb` MB of English-like text documents, generated
//!   deterministically (Zipf-distributed common words plus made-up words, numbers,
//!   punctuation, paragraphs; 80 to 8000 words per document) — the same shards that
//!   `scripts/bench_data_pipeline_baseline.py` reads;
//! - `DIR/ids/*.parquet`: the same documents tokenized with the real Qwen3 tokenizer, as
//!   `input_ids` rows.
//!
//! Then it measures, in tokens per second (packed tokens: document tokens plus one
//! separator per document, padding excluded):
//! - `tokenize serial` / `tokenize batch`: the tokenizer alone over all documents in memory
//!   (one `encode` per document; `encode_batch` over rayon's threads) — the ceilings — and
//!   HF `tokenizers`' own `encode_batch_fast`, which the direct encoder replaces;
//! - `text -> loader (concat|best_fit)`: `Loader` over the text shards, one epoch (then a
//!   check that its first rows and state equal those of a loader reading one document at a
//!   time, i.e. that batched, parallel tokenization changes nothing);
//! - `input_ids -> loader (best_fit|concat)`: `Loader` over the pre-tokenized shards,
//!   repeated epochs until `--ids-tokens` tokens are packed.
//!
//! Each line also gives the process CPU time (all threads) and the cores it kept busy, which
//! tells a loaded machine apart from a slow pipeline. `scripts/bench-data-pipeline.sh` runs
//! this next to the Python baseline and prints the ratio.
//!
//! The tokenizer is `scripts/fetch-qwen-tokenizer.sh`'s (or `--tokenizer`).

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use agentcpt_datasets::rng::Rng;
use agentcpt_datasets::{
    default_qwen3_tokenizer_path, read_all, write_shard, Content, DataParallel, Encoder,
    HfTokenizer, Loader, LoaderConfig, OnExhausted, PackMode, Sample, SourceConfig, WriterOptions,
};
use serde_json::json;

/// Bump when the generator changes (cached shards are rewritten).
const GENERATOR_VERSION: u32 = 1;
const SEED: u64 = 20_250_611;
const SHARDS: usize = 8;
/// Rows compared between batched and one-by-one tokenization.
const VERIFY_ROWS: usize = 100;

struct Args {
    data_dir: PathBuf,
    text_mb: usize,
    ids_tokens: u64,
    seq_len: usize,
    tokenizer: PathBuf,
    json: Option<PathBuf>,
    only: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        data_dir: std::env::temp_dir().join("agentcpt-bench-pipeline"),
        text_mb: 32,
        ids_tokens: 50_000_000,
        seq_len: 4096,
        tokenizer: default_qwen3_tokenizer_path(),
        json: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--data-dir" => a.data_dir = val().into(),
            "--text-mb" => a.text_mb = val().parse().expect("--text-mb N"),
            "--ids-tokens" => a.ids_tokens = val().parse().expect("--ids-tokens N"),
            "--seq-len" => a.seq_len = val().parse().expect("--seq-len N"),
            "--tokenizer" => a.tokenizer = val().into(),
            "--json" => a.json = Some(val().into()),
            "--only" => a.only = Some(val()),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

// ------------------------------------------------------------------ text generation

#[rustfmt::skip]
const COMMON: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has",
    "there", "been", "if", "more", "when", "will", "would", "who", "so", "no", "she", "other",
    "its", "may", "these", "what", "them", "than", "some", "him", "time", "into", "only", "do",
    "could", "new", "about", "two", "any", "first", "also", "then", "our", "people", "most",
    "over", "such", "made", "after", "state", "used", "many", "between", "where", "should",
    "world", "work", "system", "each", "those", "both", "year", "through", "much", "under",
    "however", "government", "data", "number", "water", "during", "model", "because", "early",
    "public", "result", "process", "within", "against", "information", "development",
    "important", "research", "local", "several", "example", "include", "service", "market",
    "history", "large", "small", "different", "following", "social", "economic", "general",
    "without", "possible", "training", "language", "network", "problem", "order", "level",
    "field", "group", "study", "region", "company", "national", "support", "although",
    "structure", "analysis", "method", "energy", "around", "because", "before", "building",
    "century", "change", "children", "city", "common", "community", "control", "country",
    "course", "design", "effect", "family", "form", "health", "human", "industry", "interest",
    "known", "law", "life", "light", "long", "major", "means", "music", "nature", "often",
    "part", "period", "place", "point", "policy", "power", "program", "question", "rate",
    "record", "report", "school", "science", "second", "series", "several", "side", "source",
    "space", "species", "standard", "still", "subject", "surface", "team", "theory", "though",
    "towards", "university", "value", "various", "war", "while", "written", "agent", "tool",
    "search", "query", "answer", "reasoning", "planning", "evidence", "observation", "result",
    "function", "argument", "response", "document", "experiment", "hypothesis", "population",
    "temperature", "production", "agreement", "committee", "particular", "significant",
];

#[rustfmt::skip]
const SYLLABLES: &[&str] = &[
    "ba", "cor", "den", "fal", "gri", "hon", "ist", "jun", "kel", "lum", "mar", "nex", "ol",
    "pra", "qui", "ros", "sta", "tur", "ul", "ven", "wex", "yal", "zor", "tion", "ment", "ing",
    "ex", "an", "ic", "ous",
];

/// A Zipf-like index in `0..n` (log-uniform rank).
fn zipf(rng: &mut Rng, n: usize) -> usize {
    let r = ((n as f64 + 1.0).ln() * rng.next_f64()).exp() as usize;
    r.saturating_sub(1).min(n - 1)
}

fn push_word(rng: &mut Rng, out: &mut String, capital: bool) {
    let start = out.len();
    let roll = rng.below(100);
    if roll < 86 {
        out.push_str(COMMON[zipf(rng, COMMON.len())]);
    } else if roll < 97 {
        for _ in 0..2 + rng.below(3) {
            out.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
        }
    } else {
        match rng.below(4) {
            0 => out.push_str(&format!("{}", 1800 + rng.below(230))),
            1 => out.push_str(&format!("{}.{}%", rng.below(100), rng.below(10))),
            2 => out.push_str(&format!("{},{:03}", 1 + rng.below(999), rng.below(1000))),
            _ => out.push_str(&format!("{}", rng.below(100))),
        }
    }
    if capital {
        let first = out[start..].chars().next().unwrap_or(' ');
        if first.is_ascii_lowercase() {
            out.replace_range(start..start + 1, &first.to_ascii_uppercase().to_string());
        }
    }
}

/// One English-like document of about `words` words.
fn document(rng: &mut Rng, words: usize) -> String {
    let mut out = String::with_capacity(words * 7);
    let mut n = 0;
    while n < words {
        let sentences = 3 + rng.below(6);
        for s in 0..sentences {
            if s > 0 {
                out.push(' ');
            }
            let len = 5 + rng.below(21) as usize;
            for w in 0..len {
                if w > 0 {
                    out.push(' ');
                }
                if w > 0 && rng.below(40) == 0 {
                    out.push('(');
                    push_word(rng, &mut out, false);
                    out.push(')');
                } else {
                    let capital = w == 0 || rng.below(30) == 0;
                    push_word(rng, &mut out, capital);
                }
                if w + 1 < len && rng.below(12) == 0 {
                    out.push(if rng.below(8) == 0 { ';' } else { ',' });
                }
            }
            out.push(match rng.below(20) {
                0 => '?',
                1 => '!',
                _ => '.',
            });
            n += len;
        }
        out.push_str("\n\n");
    }
    out.truncate(out.trim_end().len());
    out
}

/// Writes the text and ids shards unless the manifest says they are current.
fn generate(args: &Args, tok: &HfTokenizer) -> std::io::Result<()> {
    let manifest = format!(
        "generator {GENERATOR_VERSION} seed {SEED} text_mb {} shards {SHARDS} tokenizer {:016x}\n",
        args.text_mb,
        tok.fingerprint()
    );
    let manifest_path = args.data_dir.join("MANIFEST");
    if std::fs::read_to_string(&manifest_path).ok().as_deref() == Some(manifest.as_str()) {
        eprintln!("reusing shards in {}", args.data_dir.display());
        return Ok(());
    }
    let t0 = Instant::now();
    for sub in ["text", "ids"] {
        let d = args.data_dir.join(sub);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d)?;
    }
    let _ = std::fs::remove_file(&manifest_path);
    let mut rng = Rng::seed_from_u64(SEED);
    let budget = args.text_mb << 20;
    let per_shard = budget.div_ceil(SHARDS);
    let mut doc_no = 0usize;
    let mut total_tokens = 0u64;
    for shard in 0..SHARDS {
        let mut docs = Vec::new();
        let mut bytes = 0;
        while bytes < per_shard {
            let words = (80.0 * (100f64.ln() * rng.next_f64()).exp()) as usize;
            let text = document(&mut rng, words);
            bytes += text.len();
            docs.push(Sample::text(
                format!("doc-{doc_no:07}"),
                "general",
                "bench-gen",
                text,
            ));
            doc_no += 1;
        }
        let texts: Vec<&str> = docs
            .iter()
            .map(|s| match &s.content {
                Content::Text(t) => t.as_str(),
                _ => unreachable!(),
            })
            .collect();
        let encodings = tok
            .inner()
            .encode_batch_fast(texts, false)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let ids: Vec<Sample> = docs
            .iter()
            .zip(&encodings)
            .map(|(s, e)| {
                total_tokens += e.get_ids().len() as u64 + 1;
                Sample {
                    id: s.id.clone(),
                    kind: s.kind.clone(),
                    source: s.source.clone(),
                    content: Content::InputIds(e.get_ids().to_vec()),
                    meta: None,
                }
            })
            .collect();
        let name = format!("shard-{shard:05}.parquet");
        let opts = WriterOptions::default();
        write_shard(args.data_dir.join("text").join(&name), docs, opts)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        write_shard(args.data_dir.join("ids").join(&name), ids, opts)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    std::fs::write(&manifest_path, manifest)?;
    eprintln!(
        "wrote {doc_no} documents ({} MB of text, {total_tokens} tokens with separators) \
         into {} in {:.1}s",
        args.text_mb,
        args.data_dir.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

// ------------------------------------------------------------------------ measuring

/// CPU time (user + system, all threads) of this process so far, in seconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s); NaN where there is no procfs.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(utime), Some(stime)) => (utime + stime) / 100.0,
        _ => f64::NAN,
    }
}

/// Wall and CPU clocks started together.
struct Clock(Instant, f64);

impl Clock {
    fn start() -> Self {
        Clock(Instant::now(), cpu_secs())
    }

    fn stop(&self, name: impl Into<String>, tokens: u64, rows: u64) -> Measured {
        Measured {
            name: name.into(),
            tokens,
            rows,
            secs: self.0.elapsed().as_secs_f64(),
            cpu_secs: cpu_secs() - self.1,
        }
    }
}

struct Measured {
    name: String,
    tokens: u64,
    rows: u64,
    secs: f64,
    cpu_secs: f64,
}

impl Measured {
    fn print(&self) {
        println!(
            "{:<36} {:>10} tokens {:>6} rows {:>7.2} s {:>11.0} tokens/s  (cpu {:>6.2} s, {:.2} cores)",
            self.name,
            self.tokens,
            self.rows,
            self.secs,
            self.tokens as f64 / self.secs,
            self.cpu_secs,
            self.cpu_secs / self.secs,
        );
    }
}

fn source(name: &str, dir: &Path, on_exhausted: OnExhausted) -> SourceConfig {
    SourceConfig {
        name: name.into(),
        paths: vec![dir.display().to_string()],
        weight: 1.0,
        on_exhausted,
        overlong: Default::default(),
        on_bad: Default::default(),
        shuffle_files: true,
        keep_all_thinking: false,
    }
}

/// Runs a loader until it ends or `max_tokens` packed tokens; counts non-padding tokens.
fn run_loader(name: &str, cfg: LoaderConfig, enc: Arc<dyn Encoder>, max_tokens: u64) -> Measured {
    let clock = Clock::start();
    let mut loader = Loader::open(cfg, enc, DataParallel::SINGLE).expect("open loader");
    let (mut tokens, mut rows) = (0u64, 0u64);
    while tokens < max_tokens {
        let Some(seq) = loader.next_sequence().expect("next_sequence") else {
            break;
        };
        tokens += seq
            .segments
            .iter()
            .filter(|s| s.source.is_some())
            .map(|s| s.len as u64)
            .sum::<u64>();
        rows += 1;
        black_box(&seq);
    }
    clock.stop(name, tokens, rows)
}

fn main() {
    let args = parse_args();
    let tok = HfTokenizer::from_file(&args.tokenizer).unwrap_or_else(|e| {
        panic!("{e}\n(fetch the tokenizer with scripts/fetch-qwen-tokenizer.sh)")
    });
    generate(&args, &tok).expect("generate shards");
    let tok: Arc<HfTokenizer> = Arc::new(tok);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let text_dir = args.data_dir.join("text");
    let ids_dir = args.data_dir.join("ids");
    println!(
        "machine: {cores} cores; seq_len {}; shards in {}",
        args.seq_len,
        args.data_dir.display()
    );
    let mut results = Vec::new();
    let want = |k: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == k))
    };

    if want("tokenize") {
        let docs: Vec<String> = read_all(&[text_dir.display().to_string()])
            .expect("read text shards")
            .map(|r| match r.expect("row").1.content {
                Content::Text(t) => t,
                _ => unreachable!(),
            })
            .collect();
        let bytes: usize = docs.iter().map(String::len).sum();
        println!(
            "text: {} documents, {:.1} MB",
            docs.len(),
            bytes as f64 / 1e6
        );

        // Tokens per document plus its separator, over the documents `batch` at a time.
        let mut measure = |name: String, batch: usize, count: &dyn Fn(&[&str]) -> u64| {
            let clock = Clock::start();
            let tokens = docs
                .chunks(batch)
                .map(|chunk| count(&chunk.iter().map(String::as_str).collect::<Vec<_>>()))
                .sum();
            let m = clock.stop(name, tokens, 0);
            m.print();
            results.push(m);
        };
        let threads = rayon_threads();
        measure("tokenize serial (encode per doc)".into(), 1, &|d| {
            tok.encode(d[0]).expect("encode").len() as u64 + 1
        });
        measure(
            format!("tokenize batch ({threads} rayon threads)"),
            256,
            &|d| {
                tok.encode_batch(d)
                    .into_iter()
                    .map(|ids| ids.expect("encode").len() as u64 + 1)
                    .sum()
            },
        );
        // The same through HF `tokenizers` itself: what the direct encoder replaces.
        measure(
            format!("HF tokenizers encode_batch_fast ({threads} rayon threads)"),
            256,
            &|d| {
                let enc = tok
                    .inner()
                    .encode_batch_fast(d.to_vec(), false)
                    .expect("encode");
                enc.iter().map(|e| e.get_ids().len() as u64 + 1).sum()
            },
        );
    }

    if want("text") {
        let text_cfg = |mode: PackMode| {
            let mut cfg = LoaderConfig::new(
                args.seq_len,
                1,
                vec![source("text", &text_dir, OnExhausted::Stop)],
            );
            cfg.packing = mode;
            cfg
        };
        for mode in [PackMode::Concat, PackMode::BestFit] {
            let name = format!("text -> loader ({})", mode_name(mode));
            let m = run_loader(&name, text_cfg(mode), tok.clone(), u64::MAX);
            m.print();
            results.push(m);
        }
        // The batched, parallel tokenization must not change anything: the first rows and
        // the state after them equal those of a loader reading one document at a time.
        let mut one_by_one = text_cfg(PackMode::BestFit);
        one_by_one.read_batch_rows = 1;
        let mut a = Loader::open(one_by_one, tok.clone(), DataParallel::SINGLE).expect("open");
        let mut b = Loader::open(
            text_cfg(PackMode::BestFit),
            tok.clone(),
            DataParallel::SINGLE,
        )
        .expect("open");
        for _ in 0..VERIFY_ROWS {
            let (x, y) = (
                a.next_sequence().expect("row"),
                b.next_sequence().expect("row"),
            );
            assert_eq!(x, y, "batched tokenization changed a row");
        }
        assert_eq!(
            a.state(),
            b.state(),
            "batched tokenization changed the state"
        );
        println!("check: first {VERIFY_ROWS} rows and state equal with one-by-one reading");
    }

    if want("ids") {
        for mode in [PackMode::BestFit, PackMode::Concat] {
            let mut cfg = LoaderConfig::new(
                args.seq_len,
                1,
                vec![source("ids", &ids_dir, OnExhausted::Repeat)],
            );
            cfg.packing = mode;
            let name = format!("input_ids -> loader ({})", mode_name(mode));
            let m = run_loader(&name, cfg, tok.clone(), args.ids_tokens);
            m.print();
            results.push(m);
        }
    }

    if let Some(path) = &args.json {
        let out = json!({
            "machine": {"cores": cores},
            "seq_len": args.seq_len,
            "data_dir": args.data_dir,
            "results": results.iter().map(|m| json!({
                "name": m.name,
                "tokens": m.tokens,
                "rows": m.rows,
                "seconds": m.secs,
                "cpu_seconds": m.cpu_secs,
                "tokens_per_s": m.tokens as f64 / m.secs,
            })).collect::<Vec<_>>(),
        });
        let mut f = File::create(path).expect("create --json file");
        writeln!(f, "{}", serde_json::to_string_pretty(&out).unwrap()).expect("write json");
    }
}

fn mode_name(mode: PackMode) -> &'static str {
    match mode {
        PackMode::Concat => "concat",
        PackMode::BestFit => "best_fit",
    }
}

/// Threads rayon (inside `tokenizers`) will use.
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
