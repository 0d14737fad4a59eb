//! Reader tests: streaming, cursors, rank sharding and every bad-input case.

use std::sync::Arc;

use arrow_array::types::{Int8Type, UInt32Type};
use arrow_array::{BinaryArray, DictionaryArray, Int64Array, LargeStringArray, StringArray};
use parquet::basic::{LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use super::*;
use crate::schema::{write_shard, Sample};
use crate::test_util::{small_groups, write_batch, write_text_shard};

fn spec(files: Vec<PathBuf>, on_bad: OnBad, unit: ShardUnit, batch_rows: usize) -> SourceSpec {
    SourceSpec {
        name: "t".into(),
        index: 0,
        files,
        shuffle_seed: None,
        on_bad,
        unit,
        batch_rows,
    }
}

fn drain(r: &mut SourceReader) -> Result<Vec<(DocRef, Sample)>> {
    let mut out = Vec::new();
    while let Some(x) = r.next_sample()? {
        out.push(x);
    }
    Ok(out)
}

fn ids(v: &[(DocRef, Sample)]) -> Vec<String> {
    v.iter().map(|(_, s)| s.id.clone()).collect()
}

fn reader(files: Vec<PathBuf>, on_bad: OnBad) -> SourceReader {
    SourceReader::new(
        spec(files, on_bad, ShardUnit::Row, 3),
        DataParallel::SINGLE,
        Cursor::default(),
        BadCounts::default(),
    )
}

#[test]
fn streams_all_rows_in_order_across_row_groups_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_text_shard(dir.path(), "a.parquet", "a", 10, |i| 5 + i, 4);
    let b = write_text_shard(dir.path(), "b.parquet", "b", 3, |_| 8, 2);
    let shard = ParquetShard::open(&a).unwrap();
    assert_eq!(shard.num_row_groups(), 3);
    assert_eq!(shard.num_rows(), 10);
    let got = drain(&mut reader(vec![a, b], OnBad::Error)).unwrap();
    let want: Vec<String> = (0..10)
        .map(|i| format!("a{i}"))
        .chain((0..3).map(|i| format!("b{i}")))
        .collect();
    assert_eq!(ids(&got), want);
    assert_eq!(
        got[5].0,
        DocRef {
            source: 0,
            file: 0,
            row_group: 1,
            row: 1
        }
    );
}

#[test]
fn cursor_resumes_at_the_exact_row() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_text_shard(dir.path(), "a.parquet", "a", 11, |i| 5 + i, 4);
    let b = write_text_shard(dir.path(), "b.parquet", "b", 5, |_| 8, 3);
    let files = vec![a, b];
    let all = ids(&drain(&mut reader(files.clone(), OnBad::Error)).unwrap());
    for k in 0..all.len() {
        let mut r = reader(files.clone(), OnBad::Error);
        for _ in 0..k {
            r.next_sample().unwrap().unwrap();
        }
        let cursor = r.cursor();
        let mut resumed = SourceReader::new(
            spec(files.clone(), OnBad::Error, ShardUnit::Row, 2),
            DataParallel::SINGLE,
            cursor,
            BadCounts::default(),
        );
        assert_eq!(
            ids(&drain(&mut resumed).unwrap()),
            all[k..].to_vec(),
            "k={k}"
        );
    }
}

#[test]
fn ranks_partition_rows_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        write_text_shard(dir.path(), "a.parquet", "a", 17, |_| 4, 5),
        write_text_shard(dir.path(), "b.parquet", "b", 1, |_| 4, 5),
        write_text_shard(dir.path(), "c.parquet", "c", 9, |_| 4, 2),
    ];
    let all = {
        let mut v = ids(&drain(&mut reader(files.clone(), OnBad::Error)).unwrap());
        v.sort();
        v
    };
    for unit in [ShardUnit::Row, ShardUnit::RowGroup] {
        let mut union = Vec::new();
        for rank in 0..4 {
            let mut r = SourceReader::new(
                spec(files.clone(), OnBad::Error, unit, 3),
                DataParallel::new(rank, 4).unwrap(),
                Cursor::default(),
                BadCounts::default(),
            );
            let got = ids(&drain(&mut r).unwrap());
            if unit == ShardUnit::Row {
                assert!((6..=8).contains(&got.len()), "rank {rank}: {}", got.len());
            }
            union.extend(got);
        }
        union.sort();
        assert_eq!(union, all, "{unit:?}");
    }
}

#[test]
fn shuffled_epochs_change_file_order_only() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..6)
        .map(|f| {
            write_text_shard(
                dir.path(),
                &format!("{f}.parquet"),
                &format!("f{f}_"),
                2,
                |_| 4,
                2,
            )
        })
        .collect();
    let mut s = spec(files, OnBad::Error, ShardUnit::Row, 4);
    s.shuffle_seed = Some(11);
    let mut r = SourceReader::new(
        s,
        DataParallel::SINGLE,
        Cursor::default(),
        BadCounts::default(),
    );
    let e0 = ids(&drain(&mut r).unwrap());
    r.start_next_epoch();
    let e1 = ids(&drain(&mut r).unwrap());
    assert_ne!(e0, e1);
    let (mut a, mut b) = (e0.clone(), e1.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(r.cursor().epoch, 1);
}

#[test]
fn read_row_returns_the_referenced_sample() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_text_shard(dir.path(), "a.parquet", "a", 10, |i| 5 + i, 4);
    let shard = ParquetShard::open(&a).unwrap();
    assert_eq!(shard.read_row(2, 1).unwrap().id, "a9");
    let e = shard.read_row(3, 0).unwrap_err().to_string();
    assert!(e.contains("a.parquet"), "{e}");
}

// ---- bad input: every case names the file (and row group / row where known) ----

fn open_err(path: &Path) -> String {
    let e = match ParquetShard::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(&path.display().to_string()), "no path in: {e}");
    e
}

fn str_col(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

#[test]
fn missing_required_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("noid.parquet");
    write_batch(
        &p,
        vec![
            ("kind", str_col(&["general"]), false),
            ("source", str_col(&["s"]), false),
            ("text", str_col(&["hello"]), true),
        ],
    );
    let e = open_err(&p);
    assert!(e.contains("missing column `id`"), "{e}");
}

/// A one-row shard with valid id, kind and source columns and `column` as its content.
fn one_row_shard(path: &Path, name: &str, column: ArrayRef) {
    write_batch(
        path,
        vec![
            ("id", str_col(&["x"]), false),
            ("kind", str_col(&["general"]), false),
            ("source", str_col(&["s"]), false),
            (name, column, true),
        ],
    );
}

#[test]
fn renamed_content_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("renamed.parquet");
    one_row_shard(&p, "txt", str_col(&["hello"]));
    let e = open_err(&p);
    assert!(e.contains("no content column") && e.contains("txt"), "{e}");
}

#[test]
fn wrong_column_type() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wrongtype.parquet");
    one_row_shard(&p, "text", Arc::new(Int64Array::from(vec![1])));
    let e = open_err(&p);
    assert!(e.contains("column `text` has type Int64"), "{e}");
    let p2 = dir.path().join("wrongids.parquet");
    one_row_shard(&p2, "input_ids", str_col(&["1 2 3"]));
    let e = open_err(&p2);
    assert!(
        e.contains("column `input_ids`") && e.contains("list<int32>"),
        "{e}"
    );
}

#[test]
fn truncated_and_non_parquet_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_text_shard(dir.path(), "good.parquet", "g", 20, |_| 50, 5);
    let bytes = std::fs::read(&good).unwrap();
    let trunc = dir.path().join("truncated.parquet");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let e = open_err(&trunc);
    assert!(e.contains("not a readable Parquet file"), "{e}");
    let text = dir.path().join("notes.parquet");
    std::fs::write(&text, "this is not parquet at all, just some text\n").unwrap();
    assert!(open_err(&text).contains("not a readable Parquet file"));
    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    open_err(&empty);
    // Through the streaming reader, the error names the file too.
    let e = drain(&mut reader(vec![good.clone(), trunc.clone()], OnBad::Error))
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated.parquet"), "{e}");
    // With on_bad = skip the file is skipped and counted.
    let mut r = reader(vec![good, trunc, text], OnBad::Skip);
    assert_eq!(drain(&mut r).unwrap().len(), 20);
    assert_eq!(r.bad_counts().files, 2);
}

#[test]
fn empty_and_invalid_globs() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = format!("{}/*.parquet", dir.path().display());
    let e = expand_globs("fas", std::slice::from_ref(&pattern)).unwrap_err();
    assert!(matches!(e, DataError::EmptyGlob { .. }));
    let msg = e.to_string();
    assert!(msg.contains("fas") && msg.contains(&pattern), "{msg}");
    assert!(matches!(
        expand_globs("x", &["[".to_string()]),
        Err(DataError::BadGlob { .. })
    ));
    // A directory means every *.parquet below it.
    write_text_shard(dir.path(), "z.parquet", "z", 1, |_| 3, 1);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write_text_shard(&dir.path().join("sub"), "y.parquet", "y", 1, |_| 3, 1);
    let files = expand_globs("d", &[dir.path().display().to_string()]).unwrap();
    assert_eq!(files.len(), 2);
}

/// A shard whose `text` column is BYTE_ARRAY annotated UTF8 but holds invalid bytes.
fn write_invalid_utf8_annotated(path: &Path) {
    let col = |name: &str, rep: Repetition| {
        Arc::new(
            Type::primitive_type_builder(name, PhysicalType::BYTE_ARRAY)
                .with_repetition(rep)
                .with_logical_type(Some(LogicalType::String))
                .build()
                .unwrap(),
        )
    };
    let schema = Type::group_type_builder("schema")
        .with_fields(vec![
            col("id", Repetition::REQUIRED),
            col("kind", Repetition::REQUIRED),
            col("source", Repetition::REQUIRED),
            col("text", Repetition::OPTIONAL),
        ])
        .build()
        .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let mut w = SerializedFileWriter::new(file, Arc::new(schema), props).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let columns: [(Vec<&[u8]>, bool); 4] = [
        (vec![b"r0", b"r1"], false),
        (vec![b"general", b"general"], false),
        (vec![b"s", b"s"], false),
        (vec![b"fine", b"bad \xff\xfe bytes"], true),
    ];
    for (values, optional) in columns {
        let mut c = rg.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = values.into_iter().map(ByteArray::from).collect();
        let def = [1i16, 1];
        c.typed::<ByteArrayType>()
            .write_batch(&values, optional.then_some(&def[..]), None)
            .unwrap();
        c.close().unwrap();
    }
    rg.close().unwrap();
    w.close().unwrap();
}

#[test]
fn invalid_utf8_in_a_string_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("badutf8.parquet");
    write_invalid_utf8_annotated(&p);
    let e = drain(&mut reader(vec![p.clone()], OnBad::Error))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("badutf8.parquet") && e.contains("row group 0"),
        "{e}"
    );
    let mut r = reader(vec![p], OnBad::Skip);
    drain(&mut r).unwrap();
    assert_eq!(r.bad_counts().row_groups, 1);
}

#[test]
fn invalid_utf8_in_a_binary_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("binary.parquet");
    let bin: ArrayRef = Arc::new(BinaryArray::from(vec![
        &b"ok text"[..],
        &b"\xc3\x28 broken"[..],
        &b"more"[..],
    ]));
    write_batch(
        &p,
        vec![
            ("id", str_col(&["a", "b", "c"]), false),
            ("kind", str_col(&["general"; 3]), false),
            ("source", str_col(&["s"; 3]), false),
            ("text", bin, true),
        ],
    );
    let e = drain(&mut reader(vec![p.clone()], OnBad::Error))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("binary.parquet") && e.contains("row group 0, row 1") && e.contains("UTF-8"),
        "{e}"
    );
    let mut r = reader(vec![p], OnBad::Skip);
    assert_eq!(ids(&drain(&mut r).unwrap()), vec!["a", "c"]);
    assert_eq!(r.bad_counts().rows, 1);
}

#[test]
fn invalid_rows_name_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rows.parquet");
    write_batch(
        &p,
        vec![
            (
                "id",
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("c"),
                    Some("d"),
                ])),
                true,
            ),
            ("kind", str_col(&["general"; 4]), false),
            ("source", str_col(&["s"; 4]), false),
            (
                "text",
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    Some("y"),
                    None,
                    Some("z"),
                ])),
                true,
            ),
            (
                "messages",
                Arc::new(StringArray::from(vec![None, None, None, Some("[]")])),
                true,
            ),
        ],
    );
    let mut r = reader(vec![p.clone()], OnBad::Error);
    assert_eq!(r.next_sample().unwrap().unwrap().1.id, "a");
    let e = r.next_sample().unwrap_err().to_string();
    assert!(
        e.contains("rows.parquet: row group 0, row 1: `id` is null"),
        "{e}"
    );
    let mut r = reader(vec![p], OnBad::Skip);
    assert_eq!(ids(&drain(&mut r).unwrap()), vec!["a"]);
    assert_eq!(r.bad_counts().rows, 3); // null id, no content, two contents
}

#[test]
fn input_ids_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ids.parquet");
    let s = Sample {
        id: "t".into(),
        kind: "general".into(),
        source: "s".into(),
        content: Content::InputIds(vec![1, 2, 151643]),
        meta: Some("{\"k\": 1}".into()),
    };
    write_shard(&p, vec![s.clone()], small_groups(4)).unwrap();
    let got = drain(&mut reader(vec![p], OnBad::Error)).unwrap();
    assert_eq!(got[0].1, s);
}

#[test]
fn dictionary_string_columns_are_read_as_strings() {
    // pandas/polars categoricals and pyarrow `dictionary_encode` store an Arrow schema with
    // `Dictionary<K, Utf8 | LargeUtf8>`: the reader takes the strings.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dict.parquet");
    let kind: DictionaryArray<Int8Type> = vec!["general", "has", "general"].into_iter().collect();
    let source = DictionaryArray::<UInt32Type>::try_new(
        vec![1u32, 0, 1].into(),
        Arc::new(LargeStringArray::from(vec!["web", "gen"])),
    )
    .unwrap();
    write_batch(
        &p,
        vec![
            ("id", str_col(&["a", "b", "c"]), false),
            ("kind", Arc::new(kind), false),
            ("source", Arc::new(source), false),
            ("text", str_col(&["x", "y", "z"]), true),
        ],
    );
    let got = drain(&mut reader(vec![p.clone()], OnBad::Error)).unwrap();
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|(_, s)| (s.kind.as_str(), s.source.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("general", "gen"), ("has", "web"), ("general", "gen")]
    );
    assert_eq!(got[2].1.content, Content::Text("z".into()));
    let again = ParquetShard::open(&p).unwrap().read_row(0, 1).unwrap();
    assert_eq!(again, got[1].1);
}
