//! Streaming reader of sample shards: files from globs, one row group at a time, bounded
//! memory, resumable at row granularity, sharded across data-parallel ranks.
//!
//! Why row granularity: resuming at row-group granularity replays or loses up to a whole
//! row group (nanochat PR #361); restarting at the first shard wastes the run (entrenar #294).
//! A [`Cursor`] names the next unread row exactly, and every yielded sample carries a
//! [`DocRef`] that can be re-read later (the packer stores refs instead of tokens).
//!
//! Memory: a [`SourceReader`] holds one open footer and one row-group decoder that yields
//! record batches of `batch_rows` rows, so it holds at most one batch of decoded rows plus
//! the pages being decoded, whatever the shard size.
//!
//! Data-parallel sharding: rank `r` of `w` owns row `j` of file `f` (in sorted file order)
//! iff `(f + j) % w == r` ([`ShardUnit::Row`]), or owns row group `g` of file `f` iff
//! `(f + g) % w == r` ([`ShardUnit::RowGroup`]). Either way every row belongs to exactly one
//! rank, independently of epochs and shuffling.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, FieldRef, Schema};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::{mix_seed, Rng};
use crate::schema::{columns, Content, Sample};

/// Which rank this loader is, out of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataParallel {
    pub rank: u32,
    pub world: u32,
}

impl DataParallel {
    /// A single process.
    pub const SINGLE: DataParallel = DataParallel { rank: 0, world: 1 };

    pub fn new(rank: u32, world: u32) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(DataError::Config(format!(
                "rank {rank} is not in a world of {world}"
            )));
        }
        Ok(DataParallel { rank, world })
    }
}

/// The unit that is dealt out to ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardUnit {
    /// Rows are dealt round-robin: balanced for any shard layout; every rank decodes the
    /// pages of every row group (cheap next to training).
    #[default]
    Row,
    /// Row groups are dealt round-robin: each rank decodes only its own row groups, but a
    /// source needs many more row groups than ranks to stay balanced.
    RowGroup,
}

/// What to do with bad input (unreadable files, undecodable row groups, invalid rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBad {
    /// Stop with an error naming the file, row group and row.
    #[default]
    Error,
    /// Skip the bad file / rest of the row group / row, and count it.
    Skip,
}

/// Where a document lives: enough to read it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DocRef {
    /// Index of the source in the loader config.
    pub source: u32,
    /// Index of the file in the source's sorted file list.
    pub file: u32,
    pub row_group: u32,
    /// Row index within the row group.
    pub row: u64,
}

/// The next unread position of a source (in its current epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    /// Position in the epoch's file order (not the file index).
    pub file_pos: u32,
    pub row_group: u32,
    /// Next row to consider within the row group.
    pub row: u64,
    /// Samples yielded so far in this epoch (detects sources with nothing for this rank).
    pub yielded_in_epoch: u64,
}

/// Counters of skipped bad input (`on_bad = skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BadCounts {
    pub files: u64,
    pub row_groups: u64,
    pub rows: u64,
}

/// Expands glob patterns to a sorted, de-duplicated list of files. A pattern naming a
/// directory means every `*.parquet` below it.
pub fn expand_globs(source_name: &str, patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for pattern in patterns {
        let pattern = if Path::new(pattern).is_dir() {
            format!("{}/**/*.parquet", pattern.trim_end_matches('/'))
        } else {
            pattern.clone()
        };
        let paths = glob::glob(&pattern).map_err(|e| DataError::BadGlob {
            pattern: pattern.clone(),
            msg: e.to_string(),
        })?;
        for entry in paths {
            let path = entry.map_err(|e| {
                let path = e.path().to_path_buf();
                DataError::io(path, e.into())
            })?;
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(DataError::EmptyGlob {
            source_name: source_name.into(),
            patterns: patterns.to_vec(),
        });
    }
    Ok(files)
}

/// Which columns a shard has, checked once at open.
#[derive(Debug, Clone)]
struct Layout {
    has_text: bool,
    has_messages: bool,
    has_input_ids: bool,
    has_meta: bool,
}

/// One opened shard: footer, schema check and projection.
pub struct ParquetShard {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    layout: Layout,
    projection: ProjectionMask,
    /// Rows before each row group (for row ownership), plus the total at the end.
    row_starts: Vec<u64>,
}

fn is_string_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

fn is_ids_type(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) => matches!(
            f.data_type(),
            DataType::Int32 | DataType::Int64 | DataType::UInt32
        ),
        _ => false,
    }
}

/// Reads dictionary-typed string columns (pandas and polars categoricals, pyarrow
/// `dictionary_encode`: the Arrow schema stored in the file says `Dictionary<K, Utf8>`) as
/// their plain string type, which is all the reader needs. Other columns keep their types.
fn without_string_dictionaries(
    meta: ArrowReaderMetadata,
) -> parquet::errors::Result<ArrowReaderMetadata> {
    let is_dict_string =
        |t: &DataType| matches!(t, DataType::Dictionary(_, v) if is_string_type(v));
    let schema = meta.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| is_dict_string(f.data_type()))
    {
        return Ok(meta);
    }
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) if is_string_type(v) => {
                Arc::new(f.as_ref().clone().with_data_type(v.as_ref().clone()))
            }
            _ => f.clone(),
        })
        .collect();
    let plain = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    ArrowReaderMetadata::try_new(
        meta.metadata().clone(),
        ArrowReaderOptions::new().with_schema(plain),
    )
}

impl ParquetShard {
    /// Opens a shard and checks its schema against the sample schema.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .and_then(without_string_dictionaries)
            .map_err(|e| DataError::NotParquet {
                path: path.into(),
                msg: e.to_string(),
            })?;
        let schema = meta.schema().clone();
        let found: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let field = |name: &str| schema.field_with_name(name).ok();
        let mut roots = Vec::new();
        let check =
            |name: &str, required: bool, ok: fn(&DataType) -> bool, want: &str| match field(name) {
                None if required => Err(DataError::schema(
                    path,
                    format!("missing column `{name}` (found columns {found:?})"),
                )),
                None => Ok(false),
                Some(f) if ok(f.data_type()) => Ok(true),
                Some(f) => Err(DataError::schema(
                    path,
                    format!(
                        "column `{name}` has type {}, expected {want}",
                        f.data_type()
                    ),
                )),
            };
        const STR: &str = "a string (Utf8)";
        const IDS: &str = "list<int32>";
        check(columns::ID, true, is_string_type, STR)?;
        check(columns::KIND, true, is_string_type, STR)?;
        check(columns::SOURCE, true, is_string_type, STR)?;
        let layout = Layout {
            has_text: check(columns::TEXT, false, is_string_type, STR)?,
            has_messages: check(columns::MESSAGES, false, is_string_type, STR)?,
            has_input_ids: check(columns::INPUT_IDS, false, is_ids_type, IDS)?,
            has_meta: check(columns::META, false, is_string_type, STR)?,
        };
        if !(layout.has_text || layout.has_messages || layout.has_input_ids) {
            return Err(DataError::schema(
                path,
                format!(
                    "no content column: expected at least one of {:?} (found columns {found:?})",
                    columns::CONTENT
                ),
            ));
        }
        for name in [
            columns::ID,
            columns::KIND,
            columns::SOURCE,
            columns::TEXT,
            columns::MESSAGES,
            columns::INPUT_IDS,
            columns::META,
        ] {
            if let Ok(i) = schema.index_of(name) {
                roots.push(i);
            }
        }
        let projection = ProjectionMask::roots(meta.parquet_schema(), roots);
        let mut row_starts = vec![0u64];
        for rg in meta.metadata().row_groups() {
            let last = *row_starts.last().unwrap_or(&0);
            row_starts.push(last + rg.num_rows().max(0) as u64);
        }
        Ok(ParquetShard {
            path: path.into(),
            meta,
            layout,
            projection,
            row_starts,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn num_row_groups(&self) -> usize {
        self.row_starts.len() - 1
    }

    /// Rows in row group `rg`.
    pub fn rows_in(&self, rg: usize) -> u64 {
        self.row_starts[rg + 1] - self.row_starts[rg]
    }

    /// Total rows in the shard.
    pub fn num_rows(&self) -> u64 {
        *self.row_starts.last().unwrap_or(&0)
    }

    /// A decoder over the given rows (sorted, within the row group) of row group `rg`.
    fn read_rows(
        &self,
        rg: usize,
        rows: &[u64],
        batch_rows: usize,
    ) -> Result<ParquetRecordBatchReader> {
        let mut selectors = Vec::new();
        let mut next = 0u64;
        for &r in rows {
            if r > next {
                selectors.push(RowSelector::skip((r - next) as usize));
            }
            match selectors.last_mut() {
                Some(s) if !s.skip && r == next => s.row_count += 1,
                _ => selectors.push(RowSelector::select(1)),
            }
            next = r + 1;
        }
        let total = self.rows_in(rg);
        if total > next {
            selectors.push(RowSelector::skip((total - next) as usize));
        }
        let file = File::open(&self.path).map_err(|e| DataError::io(&self.path, e))?;
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_projection(self.projection.clone())
            .with_row_groups(vec![rg])
            .with_row_selection(RowSelection::from(selectors))
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|e| DataError::RowGroup {
                path: self.path.clone(),
                row_group: rg,
                msg: e.to_string(),
            })
    }

    /// Reads one row (used to re-materialise packed documents on resume).
    pub fn read_row(&self, rg: usize, row: u64) -> Result<Sample> {
        if rg >= self.num_row_groups() || row >= self.rows_in(rg) {
            return Err(DataError::Resume(format!(
                "{}: row group {rg}, row {row} does not exist (did the data change?)",
                self.path.display()
            )));
        }
        let mut reader = self.read_rows(rg, &[row], 1)?;
        let batch = reader
            .next()
            .ok_or_else(|| DataError::RowGroup {
                path: self.path.clone(),
                row_group: rg,
                msg: format!("row {row} not returned"),
            })?
            .map_err(|e| DataError::RowGroup {
                path: self.path.clone(),
                row_group: rg,
                msg: e.to_string(),
            })?;
        decode_row(&batch, 0, &self.layout).map_err(|msg| DataError::Row {
            path: self.path.clone(),
            row_group: rg,
            row,
            msg,
        })
    }
}

/// A string-like column of a batch.
enum StrCol<'a> {
    Utf8(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
    Bin(&'a arrow_array::BinaryArray),
    LargeBin(&'a arrow_array::LargeBinaryArray),
    BinView(&'a arrow_array::BinaryViewArray),
}

impl<'a> StrCol<'a> {
    fn of(batch: &'a RecordBatch, name: &str) -> Result<Option<Self>, String> {
        let Some(a) = batch.column_by_name(name) else {
            return Ok(None);
        };
        let col = if let Some(x) = a.as_string_opt::<i32>() {
            StrCol::Utf8(x)
        } else if let Some(x) = a.as_string_opt::<i64>() {
            StrCol::Large(x)
        } else if let Some(x) = a.as_string_view_opt() {
            StrCol::View(x)
        } else if let Some(x) = a.as_binary_opt::<i32>() {
            StrCol::Bin(x)
        } else if let Some(x) = a.as_binary_opt::<i64>() {
            StrCol::LargeBin(x)
        } else if let Some(x) = a.as_binary_view_opt() {
            StrCol::BinView(x)
        } else {
            return Err(format!("column `{name}` has type {}", a.data_type()));
        };
        Ok(Some(col))
    }

    fn get(&self, i: usize, name: &str) -> Result<Option<&'a str>, String> {
        let bytes = |b: &'a [u8]| {
            std::str::from_utf8(b).map_err(|e| format!("column `{name}`: invalid UTF-8: {e}"))
        };
        Ok(match self {
            StrCol::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Large(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::View(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Bin(a) => a.is_valid(i).then(|| bytes(a.value(i))).transpose()?,
            StrCol::LargeBin(a) => a.is_valid(i).then(|| bytes(a.value(i))).transpose()?,
            StrCol::BinView(a) => a.is_valid(i).then(|| bytes(a.value(i))).transpose()?,
        })
    }
}

/// Reads `input_ids` of row `i` (List or LargeList of Int32 / Int64 / UInt32).
fn get_ids(col: &ArrayRef, i: usize) -> Result<Option<Vec<u32>>, String> {
    if col.is_null(i) {
        return Ok(None);
    }
    let values: ArrayRef = if let Some(l) = col.as_list_opt::<i32>() {
        l.value(i)
    } else if let Some(l) = col.as_list_opt::<i64>() {
        l.value(i)
    } else {
        return Err(format!("column `input_ids` has type {}", col.data_type()));
    };
    if values.null_count() > 0 {
        return Err("`input_ids` contains null ids".into());
    }
    let out_of_range = |v: i64| format!("`input_ids` contains {v}, outside 0..=2^31-1");
    if let Some(v) = values.as_primitive_opt::<Int32Type>() {
        v.values()
            .iter()
            .map(|&x| u32::try_from(x).map_err(|_| out_of_range(x as i64)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    } else if let Some(v) = values.as_primitive_opt::<Int64Type>() {
        v.values()
            .iter()
            .map(|&x| {
                u32::try_from(x)
                    .ok()
                    .filter(|&t| t <= i32::MAX as u32)
                    .ok_or_else(|| out_of_range(x))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    } else if let Some(v) = values.as_primitive_opt::<UInt32Type>() {
        Ok(Some(v.values().to_vec()))
    } else {
        Err(format!(
            "`input_ids` items have type {}",
            values.data_type()
        ))
    }
}

/// Turns row `i` of a projected batch into a [`Sample`].
fn decode_row(batch: &RecordBatch, i: usize, layout: &Layout) -> Result<Sample, String> {
    let req = |name: &str| -> Result<String, String> {
        StrCol::of(batch, name)?
            .ok_or_else(|| format!("missing column `{name}`"))?
            .get(i, name)?
            .map(str::to_owned)
            .ok_or_else(|| format!("`{name}` is null"))
    };
    let id = req(columns::ID)?;
    let kind = req(columns::KIND)?;
    let source = req(columns::SOURCE)?;
    let opt = |name: &str, present: bool| -> Result<Option<String>, String> {
        if !present {
            return Ok(None);
        }
        Ok(StrCol::of(batch, name)?
            .and_then(|c| c.get(i, name).transpose())
            .transpose()?
            .map(str::to_owned))
    };
    let text = opt(columns::TEXT, layout.has_text)?;
    let messages = opt(columns::MESSAGES, layout.has_messages)?;
    let ids = match (
        layout.has_input_ids,
        batch.column_by_name(columns::INPUT_IDS),
    ) {
        (true, Some(col)) => get_ids(col, i)?,
        _ => None,
    };
    let meta = opt(columns::META, layout.has_meta)?;
    let content = match (text, messages, ids) {
        (Some(t), None, None) => Content::Text(t),
        (None, Some(m), None) => Content::Messages(m),
        (None, None, Some(ids)) => Content::InputIds(ids),
        (None, None, None) => {
            return Err(format!(
                "sample `{id}`: no content (all of {:?} are null)",
                columns::CONTENT
            ))
        }
        _ => {
            return Err(format!(
                "sample `{id}`: more than one of {:?} is set",
                columns::CONTENT
            ))
        }
    };
    Ok(Sample {
        id,
        kind,
        source,
        content,
        meta,
    })
}

/// Static description of one source for the reader.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    /// Index of the source in the loader (stored in [`DocRef::source`]).
    pub index: u32,
    pub files: Vec<PathBuf>,
    /// Shuffle the file order per epoch with this seed (`None`: sorted order every epoch).
    pub shuffle_seed: Option<u64>,
    pub on_bad: OnBad,
    pub unit: ShardUnit,
    pub batch_rows: usize,
}

/// The row group being decoded: owned rows not yet decoded, and decoded rows not yet yielded.
struct RowGroupStream {
    file: u32,
    row_group: u32,
    reader: ParquetRecordBatchReader,
    undecoded: VecDeque<u64>,
    decoded: VecDeque<(u64, Result<Sample, String>)>,
}

/// A resumable stream of one source's samples for one rank.
pub struct SourceReader {
    spec: SourceSpec,
    dp: DataParallel,
    order: Vec<u32>,
    cursor: Cursor,
    shard: Option<(u32, ParquetShard)>,
    stream: Option<RowGroupStream>,
    bad: BadCounts,
}

impl SourceReader {
    /// A reader positioned at `cursor` (use `Cursor::default()` to start).
    pub fn new(spec: SourceSpec, dp: DataParallel, cursor: Cursor, bad: BadCounts) -> Self {
        let order = epoch_order(&spec, cursor.epoch);
        SourceReader {
            spec,
            dp,
            order,
            cursor,
            shard: None,
            stream: None,
            bad,
        }
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    pub fn bad_counts(&self) -> BadCounts {
        self.bad
    }

    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// Starts the next epoch (new file order when shuffling).
    pub fn start_next_epoch(&mut self) {
        self.cursor = Cursor {
            epoch: self.cursor.epoch + 1,
            ..Cursor::default()
        };
        self.order = epoch_order(&self.spec, self.cursor.epoch);
        self.stream = None;
    }

    fn owns(&self, file: u32, unit_index: u64) -> bool {
        (file as u64 + unit_index) % self.dp.world as u64 == self.dp.rank as u64
    }

    /// Opens the shard with index `file`, unless it is the open one.
    fn ensure_shard(&mut self, file: u32) -> Result<()> {
        if self.shard.as_ref().map(|(f, _)| *f) != Some(file) {
            self.shard = None;
            let shard = ParquetShard::open(&self.spec.files[file as usize])?;
            self.shard = Some((file, shard));
        }
        Ok(())
    }

    fn advance_file(&mut self) {
        self.cursor.file_pos += 1;
        self.cursor.row_group = 0;
        self.cursor.row = 0;
    }

    fn advance_row_group(&mut self) {
        self.cursor.row_group += 1;
        self.cursor.row = 0;
    }

    /// The next sample of this epoch with its location, `None` when the epoch is done.
    pub fn next_sample(&mut self) -> Result<Option<(DocRef, Sample)>> {
        loop {
            if let Some(st) = &mut self.stream {
                if let Some((row, decoded)) = st.decoded.pop_front() {
                    let (file, row_group) = (st.file, st.row_group);
                    self.cursor.row = row + 1;
                    let doc = DocRef {
                        source: self.spec.index,
                        file,
                        row_group,
                        row,
                    };
                    match decoded {
                        Ok(sample) => {
                            self.cursor.yielded_in_epoch += 1;
                            return Ok(Some((doc, sample)));
                        }
                        Err(_) if self.spec.on_bad == OnBad::Skip => {
                            self.bad.rows += 1;
                            continue;
                        }
                        Err(msg) => {
                            return Err(DataError::Row {
                                path: self.spec.files[file as usize].clone(),
                                row_group: row_group as usize,
                                row,
                                msg,
                            })
                        }
                    }
                }
                match st.reader.next() {
                    Some(Ok(batch)) => {
                        let layout = &self.shard.as_ref().expect("shard open").1.layout;
                        for i in 0..batch.num_rows() {
                            let row = st.undecoded.pop_front().unwrap_or(u64::MAX);
                            st.decoded.push_back((row, decode_row(&batch, i, layout)));
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        let (file, rg) = (st.file, st.row_group);
                        self.stream = None;
                        if self.spec.on_bad == OnBad::Skip {
                            self.bad.row_groups += 1;
                            self.advance_row_group();
                            continue;
                        }
                        return Err(DataError::RowGroup {
                            path: self.spec.files[file as usize].clone(),
                            row_group: rg as usize,
                            msg: e.to_string(),
                        });
                    }
                    None => {
                        self.stream = None;
                        self.advance_row_group();
                        continue;
                    }
                }
            }
            // No row group in flight: open the one under the cursor.
            let Some(&file) = self.order.get(self.cursor.file_pos as usize) else {
                return Ok(None);
            };
            let (rg, start) = (self.cursor.row_group, self.cursor.row);
            let batch_rows = self.spec.batch_rows;
            let unit = self.spec.unit;
            if let Err(e) = self.ensure_shard(file) {
                if self.spec.on_bad == OnBad::Skip {
                    self.bad.files += 1;
                    self.advance_file();
                    continue;
                }
                return Err(e);
            }
            let shard = &self.shard.as_ref().expect("shard open").1;
            if rg as usize >= shard.num_row_groups() {
                self.advance_file();
                continue;
            }
            let n = shard.rows_in(rg as usize);
            let first = shard.row_starts[rg as usize];
            let rows: Vec<u64> = match unit {
                ShardUnit::RowGroup if !self.owns(file, rg as u64) => Vec::new(),
                ShardUnit::RowGroup => (start..n).collect(),
                ShardUnit::Row => (start..n).filter(|&r| self.owns(file, first + r)).collect(),
            };
            if rows.is_empty() {
                self.advance_row_group();
                continue;
            }
            let shard = &self.shard.as_ref().expect("shard open").1;
            match shard.read_rows(rg as usize, &rows, batch_rows) {
                Ok(reader) => {
                    self.stream = Some(RowGroupStream {
                        file,
                        row_group: rg,
                        reader,
                        undecoded: rows.into(),
                        decoded: VecDeque::new(),
                    })
                }
                Err(_) if self.spec.on_bad == OnBad::Skip => {
                    self.bad.row_groups += 1;
                    self.advance_row_group();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The file order of an epoch: sorted, or a seeded permutation per epoch.
fn epoch_order(spec: &SourceSpec, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..spec.files.len() as u32).collect();
    if let Some(seed) = spec.shuffle_seed {
        Rng::seed_from_u64(mix_seed(&[seed, spec.index as u64, epoch])).shuffle(&mut order);
    }
    order
}

/// Reads every sample of the files matched by `patterns`, in order, as a plain iterator
/// (for inspection commands; training uses [`SourceReader`]).
pub fn read_all(patterns: &[String]) -> Result<impl Iterator<Item = Result<(DocRef, Sample)>>> {
    let files = expand_globs("read_all", patterns)?;
    let spec = SourceSpec {
        name: "read_all".into(),
        index: 0,
        files,
        shuffle_seed: None,
        on_bad: OnBad::Error,
        unit: ShardUnit::Row,
        batch_rows: 256,
    };
    let mut reader = SourceReader::new(
        spec,
        DataParallel::SINGLE,
        Cursor::default(),
        BadCounts::default(),
    );
    let mut done = false;
    Ok(std::iter::from_fn(move || {
        if done {
            return None;
        }
        match reader.next_sample() {
            Ok(Some(x)) => Some(Ok(x)),
            Ok(None) => {
                done = true;
                None
            }
            Err(e) => {
                done = true;
                Some(Err(e))
            }
        }
    }))
}

#[cfg(test)]
mod tests;
