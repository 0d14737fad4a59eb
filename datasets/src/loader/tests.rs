//! Loader tests: determinism, exact resume, rank sharding, mixture accuracy, bad input.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::schema::{write_shard, Sample, ShardWriter};
use crate::test_util::{messages_sample, small_groups, write_text_shard};
use crate::tokenizer::ByteEncoder;

fn src(name: &str, dir: &Path, weight: f64) -> SourceConfig {
    SourceConfig {
        name: name.into(),
        paths: vec![format!("{}/{name}-*.parquet", dir.display())],
        weight,
        on_exhausted: OnExhausted::Repeat,
        overlong: Overlong::Split,
        on_bad: OnBad::Error,
        shuffle_files: true,
        keep_all_thinking: false,
    }
}

/// Three sources with very different document lengths (short plans, long trajectories)
/// plus content of all three kinds.
fn corpus(dir: &Path) {
    for f in 0..3 {
        write_text_shard(
            dir,
            &format!("fas-{f}.parquet"),
            &format!("fas{f}_"),
            40,
            |i| 20 + (i * 37) % 90,
            7,
        );
    }
    for f in 0..2 {
        let path = dir.join(format!("has-{f}.parquet"));
        let mut w = ShardWriter::create(&path, small_groups(3)).unwrap();
        for i in 0..12 {
            let think = "x".repeat(50 + (i * 53) % 400);
            let json = format!(
                r#"[{{"role":"user","content":"q{f}-{i}"}},{{"role":"assistant","content":"<think>{think}</think>\n<answer>{i}</answer>"}}]"#
            );
            w.write(messages_sample(&format!("has{f}_{i}"), &json))
                .unwrap();
        }
        w.finish().unwrap();
    }
    let ids = (0..30).map(|i| Sample {
        id: format!("gen{i}"),
        kind: "general".into(),
        source: "pretok".into(),
        content: Content::InputIds((0..(10 + (i * 29) % 300) as u32).collect()),
        meta: None,
    });
    write_shard(dir.join("gen-0.parquet"), ids, small_groups(8)).unwrap();
}

fn config(dir: &Path, seq_len: usize, mode: PackMode) -> LoaderConfig {
    let mut cfg = LoaderConfig::new(
        seq_len,
        1234,
        vec![
            src("fas", dir, 5.0),
            src("has", dir, 3.0),
            src("gen", dir, 2.0),
        ],
    );
    cfg.packing = mode;
    cfg.open_bins = 3;
    cfg.read_batch_rows = 5;
    cfg
}

fn open(cfg: &LoaderConfig, dp: DataParallel) -> Loader {
    Loader::open(cfg.clone(), Arc::new(ByteEncoder), dp).unwrap()
}

fn take(l: &mut Loader, n: usize) -> Vec<PackedSequence> {
    (0..n)
        .map(|_| l.next_sequence().unwrap().expect("more data"))
        .collect()
}

fn check_rows(rows: &[PackedSequence], seq_len: usize) {
    for r in rows {
        assert_eq!(r.input_ids.len(), seq_len);
        assert_eq!(r.position_ids.len(), seq_len);
        assert_eq!(r.loss_mask.len(), seq_len);
        assert_eq!(r.doc_lens().iter().sum::<u32>() as usize, seq_len);
    }
}

#[test]
fn same_seed_gives_identical_batches() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    for mode in [PackMode::BestFit, PackMode::Concat] {
        let cfg = config(dir.path(), 256, mode);
        let a = take(&mut open(&cfg, DataParallel::SINGLE), 60);
        let b = take(&mut open(&cfg, DataParallel::SINGLE), 60);
        check_rows(&a, 256);
        assert_eq!(a, b, "{mode:?}");
        let mut other = cfg.clone();
        other.seed = 99;
        assert_ne!(a, take(&mut open(&other, DataParallel::SINGLE), 60));
    }
}

#[test]
fn resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    for mode in [PackMode::BestFit, PackMode::Concat] {
        // seq_len 128 < the longest documents, so splits (refs with offsets) are in states;
        // 300 rows run every source through at least one epoch boundary.
        let cfg = config(dir.path(), 128, mode);
        let mut whole = open(&cfg, DataParallel::SINGLE);
        let straight = take(&mut whole, 300);
        assert!(whole.report().iter().all(|r| r.stats.epochs_completed >= 1));
        for k in [0, 1, 7, 33, 80, 149, 230, 299] {
            let mut l = open(&cfg, DataParallel::SINGLE);
            let mut got = take(&mut l, k);
            let json = serde_json::to_string(&l.state()).unwrap();
            assert!(json.len() < 8192, "state is {} bytes", json.len());
            drop(l);
            let state: LoaderState = serde_json::from_str(&json).unwrap();
            let mut resumed = Loader::resume(
                cfg.clone(),
                Arc::new(ByteEncoder),
                DataParallel::SINGLE,
                &state,
            )
            .unwrap();
            assert_eq!(resumed.sequences_emitted(), k as u64);
            got.extend(take(&mut resumed, 300 - k));
            assert_eq!(got, straight, "{mode:?}, resumed after {k}");
        }
    }
}

#[test]
fn resume_twice_and_stats_survive() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let cfg = config(dir.path(), 200, PackMode::BestFit);
    let mut straight = open(&cfg, DataParallel::SINGLE);
    let want = take(&mut straight, 90);
    let mut got = Vec::new();
    let mut state: Option<LoaderState> = None;
    for chunk in [30, 30, 30] {
        let mut l = match &state {
            None => open(&cfg, DataParallel::SINGLE),
            Some(s) => {
                Loader::resume(cfg.clone(), Arc::new(ByteEncoder), DataParallel::SINGLE, s).unwrap()
            }
        };
        got.extend(take(&mut l, chunk));
        state = Some(l.state());
    }
    assert_eq!(got, want);
    assert_eq!(state.unwrap(), straight.state());
}

#[test]
fn read_ahead_changes_neither_rows_nor_states() {
    // Sources read and tokenize up to `read_batch_rows` documents ahead; with 1 they read
    // one at a time. Rows, states and reports must be identical after every row, including
    // across epochs and with a bad row skipped inside a read-ahead batch.
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let good = r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]"#;
    let samples: Vec<Sample> = (0..9)
        .map(|i| messages_sample(&format!("b{i}"), if i == 4 { "[1]" } else { good }))
        .collect();
    let batch = crate::schema::samples_to_batch(&samples);
    let file = std::fs::File::create(dir.path().join("bad-0.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let mut cfg = config(dir.path(), 128, PackMode::BestFit);
    let mut bad = src("bad", dir.path(), 1.0);
    bad.on_bad = OnBad::Skip;
    cfg.sources.push(bad);
    let run = |rows_ahead: usize| {
        let mut c = cfg.clone();
        c.read_batch_rows = rows_ahead;
        let mut l = open(&c, DataParallel::SINGLE);
        (0..250)
            .map(|_| {
                let row = l.next_sequence().unwrap().expect("more data");
                (row, l.state(), format!("{:?}", l.report()))
            })
            .collect::<Vec<_>>()
    };
    let one_by_one = run(1);
    assert!(one_by_one.last().unwrap().1.sources[3].stats.bad_rows >= 2);
    for rows_ahead in [2, 5, 256] {
        let got = run(rows_ahead);
        for (i, (a, b)) in one_by_one.iter().zip(&got).enumerate() {
            assert_eq!(a, b, "read_batch_rows {rows_ahead}, row {i}");
        }
    }
}

/// Sample ids of the documents that start in these rows (each document once).
fn doc_ids(rows: &[PackedSequence]) -> Vec<String> {
    rows.iter()
        .flat_map(|r| r.segments.iter())
        .filter(|s| s.doc_offset == 0)
        .filter_map(|s| s.sample_id.as_ref().map(|i| i.to_string()))
        .collect()
}

#[test]
fn four_ranks_partition_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    for unit in [ShardUnit::Row, ShardUnit::RowGroup] {
        let mut cfg = config(dir.path(), 256, PackMode::BestFit);
        cfg.shard_unit = unit;
        for s in &mut cfg.sources {
            s.on_exhausted = OnExhausted::Drop;
        }
        let drain = |dp| {
            let rows: Vec<PackedSequence> = open(&cfg, dp).map(|r| r.unwrap()).collect();
            check_rows(&rows, 256);
            doc_ids(&rows)
        };
        let mut single = drain(DataParallel::SINGLE);
        single.sort();
        assert_eq!(single.len(), 3 * 40 + 2 * 12 + 30);
        let mut union = Vec::new();
        for rank in 0..4 {
            let ids = drain(DataParallel::new(rank, 4).unwrap());
            assert!(!ids.is_empty(), "rank {rank} got nothing ({unit:?})");
            union.extend(ids);
        }
        union.sort();
        let n = union.len();
        union.dedup();
        assert_eq!(n, union.len(), "duplicates across ranks ({unit:?})");
        assert_eq!(union, single, "{unit:?}");
    }
}

#[test]
fn realised_token_mixture_is_within_two_percent() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let cfg = config(dir.path(), 512, PackMode::BestFit);
    let rows = take(&mut open(&cfg, DataParallel::SINGLE), 600);
    let mut tokens: BTreeMap<u32, u64> = BTreeMap::new();
    for r in &rows {
        for (s, n) in r.tokens_per_source() {
            *tokens.entry(s).or_default() += n;
        }
    }
    let total: u64 = tokens.values().sum();
    for (s, want) in [(0u32, 0.5), (1, 0.3), (2, 0.2)] {
        let share = tokens[&s] as f64 / total as f64;
        assert!(
            (share - want).abs() < 0.02,
            "source {s}: {share:.4} vs {want}"
        );
    }
    // The loader's own report agrees.
    let l = {
        let mut l = open(&cfg, DataParallel::SINGLE);
        take(&mut l, 600);
        l
    };
    for (rep, want) in l.report().iter().zip([0.5, 0.3, 0.2]) {
        assert!((rep.share - want).abs() < 0.02, "{rep:?}");
        assert!((rep.weight - want).abs() < 1e-12);
        assert!(rep.stats.epochs_completed >= 1, "{rep:?}");
    }
}

#[test]
fn exhaustion_policies() {
    let dir = tempfile::tempdir().unwrap();
    write_text_shard(dir.path(), "a-0.parquet", "a", 10, |_| 30, 4);
    write_text_shard(dir.path(), "b-0.parquet", "b", 200, |_| 30, 50);
    let mut cfg = LoaderConfig::new(
        64,
        5,
        vec![src("a", dir.path(), 1.0), src("b", dir.path(), 1.0)],
    );
    // stop: the loader ends when `a` runs dry, with `b` mostly unread.
    cfg.sources[0].on_exhausted = OnExhausted::Stop;
    let rows: Vec<_> = open(&cfg, DataParallel::SINGLE)
        .map(|r| r.unwrap())
        .collect();
    let ids = doc_ids(&rows);
    assert_eq!(ids.iter().filter(|i| i.starts_with('a')).count(), 10);
    assert!(ids.iter().filter(|i| i.starts_with('b')).count() < 40);
    // drop: `a` leaves, `b` continues alone until it runs dry too.
    cfg.sources[0].on_exhausted = OnExhausted::Drop;
    cfg.sources[1].on_exhausted = OnExhausted::Drop;
    let mut l = open(&cfg, DataParallel::SINGLE);
    let rows: Vec<_> = (&mut l).map(|r| r.unwrap()).collect();
    assert_eq!(doc_ids(&rows).len(), 210);
    assert!(l.next_sequence().unwrap().is_none());
    let rep = l.report();
    assert!(!rep[0].active && !rep[1].active);
    assert_eq!(rep[0].stats.docs + rep[1].stats.docs, 210);
    // repeat with nothing for this rank is an error, not a hang.
    let one = tempfile::tempdir().unwrap();
    write_text_shard(one.path(), "c-0.parquet", "c", 1, |_| 10, 1);
    let cfg = LoaderConfig::new(32, 0, vec![src("c", one.path(), 1.0)]);
    let e = open(&cfg, DataParallel::new(1, 2).unwrap())
        .next_sequence()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("source `c` has no usable samples for rank 1 of 2"),
        "{e}"
    );
}

#[test]
fn overlong_policies_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    write_text_shard(
        dir.path(),
        "long-0.parquet",
        "l",
        6,
        |i| if i % 2 == 0 { 300 } else { 20 },
        6,
    );
    for (policy, docs, truncated, skipped) in [
        (Overlong::Split, 6, 0, 0),
        (Overlong::Truncate, 6, 3, 0),
        (Overlong::Skip, 3, 0, 3),
    ] {
        let mut s = src("long", dir.path(), 1.0);
        s.overlong = policy;
        s.on_exhausted = OnExhausted::Drop;
        let mut l = open(&LoaderConfig::new(100, 0, vec![s]), DataParallel::SINGLE);
        let rows: Vec<_> = (&mut l).map(|r| r.unwrap()).collect();
        check_rows(&rows, 100);
        let st = l.report()[0].stats;
        assert_eq!(
            (st.docs, st.truncated_docs, st.skipped_overlong),
            (docs, truncated, skipped)
        );
        let placed: u64 = rows
            .iter()
            .flat_map(|r| r.tokens_per_source())
            .map(|(_, n)| n)
            .sum();
        assert_eq!(placed, st.tokens, "{policy:?}");
        match policy {
            Overlong::Split => assert_eq!(st.tokens, 3 * 301 + 3 * 21),
            Overlong::Truncate => {
                assert_eq!((st.tokens, st.tokens_dropped), (3 * 100 + 3 * 21, 3 * 201))
            }
            Overlong::Skip => assert_eq!((st.tokens, st.tokens_dropped), (3 * 21, 3 * 301)),
        }
    }
}

#[test]
fn bad_messages_name_file_and_row_group_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat-0.parquet");
    // The writer validates messages, so write the bad row through a raw batch.
    let good = r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]"#;
    let rows = [good, good, r#"{"role":"user"}"#, good];
    let samples: Vec<Sample> = rows
        .iter()
        .enumerate()
        .map(|(i, m)| messages_sample(&format!("m{i}"), m))
        .collect();
    let batch = crate::schema::samples_to_batch(&samples);
    let file = std::fs::File::create(&path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let mut s = src("chat", dir.path(), 1.0);
    s.on_exhausted = OnExhausted::Drop;
    let cfg = LoaderConfig::new(64, 0, vec![s.clone()]);
    let e = open(&cfg, DataParallel::SINGLE)
        .map(|r| r.map(|_| ()))
        .collect::<Result<Vec<()>>>()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("chat-0.parquet: row group 0, row 2")
            && e.contains("sample `m2`")
            && e.contains("not ChatML"),
        "{e}"
    );
    s.on_bad = OnBad::Skip;
    let mut l = open(&LoaderConfig::new(64, 0, vec![s]), DataParallel::SINGLE);
    let rows: Vec<_> = (&mut l).map(|r| r.unwrap()).collect();
    assert_eq!(doc_ids(&rows), vec!["m0", "m1", "m3"]);
    assert_eq!(l.report()[0].stats.bad_rows, 1);
}

#[test]
fn open_errors_name_the_source_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = Loader::open(
        LoaderConfig::new(64, 0, vec![src("nothing", dir.path(), 1.0)]),
        Arc::new(ByteEncoder),
        DataParallel::SINGLE,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("source `nothing`") && e.contains("matched no files"),
        "{e}"
    );
    std::fs::write(dir.path().join("x-0.parquet"), "garbage").unwrap();
    let e = open(
        &LoaderConfig::new(64, 0, vec![src("x", dir.path(), 1.0)]),
        DataParallel::SINGLE,
    )
    .next_sequence()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("x-0.parquet") && e.contains("not a readable Parquet file"),
        "{e}"
    );
    let bad = LoaderConfig::new(1, 0, vec![src("x", dir.path(), 1.0)]);
    assert!(Loader::open(bad, Arc::new(ByteEncoder), DataParallel::SINGLE).is_err());
}

#[test]
fn resume_refuses_a_different_setup() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let cfg = config(dir.path(), 128, PackMode::BestFit);
    let mut l = open(&cfg, DataParallel::new(0, 2).unwrap());
    take(&mut l, 5);
    let state = l.state();
    let resume = |cfg: &LoaderConfig, dp| {
        Loader::resume(cfg.clone(), Arc::new(ByteEncoder), dp, &state)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(resume(&cfg, DataParallel::new(1, 2).unwrap()).contains("rank/world"));
    assert!(resume(&cfg, DataParallel::SINGLE).contains("rank/world"));
    let mut other = cfg.clone();
    other.sources[0].weight = 1.0;
    assert!(resume(&other, DataParallel::new(0, 2).unwrap()).contains("config changed"));
    let mut same = cfg.clone();
    same.read_batch_rows = 64; // does not change the output: accepted
    assert_eq!(resume(&same, DataParallel::new(0, 2).unwrap()), "");
    write_text_shard(dir.path(), "fas-9.parquet", "new", 3, |_| 10, 3);
    assert!(resume(&cfg, DataParallel::new(0, 2).unwrap()).contains("data files"));
}

#[test]
fn config_reads_from_toml_like_json_with_defaults() {
    let cfg: LoaderConfig = serde_json::from_str(
        r#"{"seq_len": 32768, "seed": 7, "packing": "best_fit",
            "sources": [{"name": "fas", "paths": ["data/fas/*.parquet"], "weight": 0.7,
                         "overlong": "skip", "on_exhausted": "drop"},
                        {"name": "has", "paths": ["data/has"], "weight": 0.3, "on_bad": "skip"}]}"#,
    )
    .unwrap();
    assert_eq!(cfg.eot_id, 151643);
    assert_eq!(cfg.packing_config().pad_id, 151643);
    assert_eq!(cfg.sources[0].overlong, Overlong::Skip);
    assert!(cfg.mask_doc_start && cfg.sources[1].shuffle_files);
    let unknown =
        serde_json::from_str::<LoaderConfig>(r#"{"seq_len": 8, "sources": [], "sed": 1}"#);
    assert!(unknown
        .unwrap_err()
        .to_string()
        .contains("unknown field `sed`"));
}

#[test]
fn qwen3_tokenizer_end_to_end() {
    let tok = Arc::new(crate::tokenizer::tests::qwen3());
    let dir = tempfile::tempdir().unwrap();
    let conv = r#"{"messages":[{"role":"system","content":"S"},{"role":"user","content":"Q?"},
        {"role":"assistant","content":"<think>plan</think>","tool_calls":[{"name":"search","arguments":{"query":["q"]}}]},
        {"role":"tool","content":"R"},{"role":"assistant","content":"<think>done</think>\n<answer>A</answer>"}],
        "tools":[{"name":"search","parameters":{}}]}"#;
    let mut w = ShardWriter::create(dir.path().join("t-0.parquet"), small_groups(2)).unwrap();
    w.write(messages_sample("c0", conv)).unwrap();
    w.write(Sample::text(
        "t1",
        "general",
        "s",
        "Plain text <|im_start|> inline",
    ))
    .unwrap();
    w.finish().unwrap();
    let mut s = src("t", dir.path(), 1.0);
    s.on_exhausted = OnExhausted::Drop;
    s.shuffle_files = false;
    let mut cfg = LoaderConfig::new(4096, 0, vec![s]);
    cfg.open_bins = 1;
    let rows: Vec<_> = Loader::open(cfg, tok.clone(), DataParallel::SINGLE)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    let mut want = tok
        .encode(&crate::chat::render_json(conv, &ChatOptions::default()).unwrap())
        .unwrap();
    want.push(QWEN3_EOT_ID);
    want.extend(tok.encode("Plain text <|im_start|> inline").unwrap());
    want.push(QWEN3_EOT_ID);
    assert_eq!(&rows[0].input_ids[..want.len()], &want[..]);
    assert!(want.contains(&crate::tokenizer::QWEN3_IM_START_ID));
    assert_eq!(rows[0].segments.len(), 3);
    assert!(rows[0].input_ids[want.len()..]
        .iter()
        .all(|&t| t == QWEN3_EOT_ID));
}

#[test]
fn loader_can_move_to_a_prefetch_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Loader>();
    assert_send::<LoaderState>();
    assert_send::<PackedSequence>();
}
