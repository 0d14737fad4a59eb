//! The training data loader: sources → render/tokenize → mix → pack, with exact resume.
//!
//! Why this shape: every piece of state that decides the next batch is owned here and
//! exported as one small [`LoaderState`] value — per-source cursors (file, row group, row,
//! epoch), the mixing RNG and token counters, and the packer's rows in progress as
//! document references. Restoring it re-opens the shards at the cursors and re-reads the
//! referenced documents, so the continuation is token-identical to an uninterrupted run
//! (trainer-anchors.md §3.2). The state also records what it is valid for (config, data
//! files, tokenizer, rank, world) and [`Loader::resume`] refuses anything else.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chat::{self, ChatOptions};
use crate::error::{DataError, Result};
use crate::mixture::{Mixture, OnExhausted};
use crate::packing::{
    Document, Overlong, PackMode, PackedSequence, Packer, PackerState, PackingConfig,
};
use crate::reader::{
    expand_globs, BadCounts, Cursor, DataParallel, DocRef, OnBad, ParquetShard, ShardUnit,
    SourceReader, SourceSpec,
};
use crate::rng::{fnv1a, mix_seed, Rng};
use crate::schema::{Content, Sample};
use crate::tokenizer::{Encoder, QWEN3_EOT_ID};

/// Version of the [`LoaderState`] layout.
pub const STATE_FORMAT: u32 = 1;

/// A source reads and tokenizes ahead at most `read_batch_rows` documents or this many bytes
/// of content (plus the document that crosses it), whichever comes first.
const READ_AHEAD_BYTES: usize = 8 << 20;

fn default_true() -> bool {
    true
}
fn default_eot() -> u32 {
    QWEN3_EOT_ID
}
fn default_open_bins() -> usize {
    8
}
fn default_batch_rows() -> usize {
    256
}

/// One data source: a set of shards with a token weight and its policies.
///
/// In TOML: `[[data.sources]] name = "fas" paths = ["data/fas/*.parquet"] weight = 0.6`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    /// Glob patterns (or directories, meaning every `*.parquet` below them).
    pub paths: Vec<String>,
    /// Relative share of **tokens** (normalised over the active sources).
    pub weight: f64,
    #[serde(default)]
    pub on_exhausted: OnExhausted,
    #[serde(default)]
    pub overlong: Overlong,
    #[serde(default)]
    pub on_bad: OnBad,
    /// Reshuffle the file order every epoch.
    #[serde(default = "default_true")]
    pub shuffle_files: bool,
    /// Render `messages` keeping the reasoning of every assistant turn
    /// ([`ChatOptions::keep_all_thinking`]).
    #[serde(default)]
    pub keep_all_thinking: bool,
}

/// The loader configuration (the trainer's `[data]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    pub seq_len: usize,
    #[serde(default)]
    pub seed: u64,
    /// Separator appended to every document (Qwen3 `<|endoftext|>`).
    #[serde(default = "default_eot")]
    pub eot_id: u32,
    /// Padding id (defaults to `eot_id`); padding is always masked out of the loss.
    #[serde(default)]
    pub pad_id: Option<u32>,
    #[serde(default)]
    pub packing: PackMode,
    /// Rows kept open by best-fit packing.
    #[serde(default = "default_open_bins")]
    pub open_bins: usize,
    /// Mask the first token of each segment out of the loss.
    #[serde(default = "default_true")]
    pub mask_doc_start: bool,
    /// Drop the last partially filled rows at the end of data instead of padding them.
    #[serde(default)]
    pub drop_last: bool,
    #[serde(default)]
    pub shard_unit: ShardUnit,
    /// Rows decoded at a time (memory bound; does not change the output).
    #[serde(default = "default_batch_rows")]
    pub read_batch_rows: usize,
    /// Mixing look-ahead in tokens (defaults to `seq_len`); see [`crate::mixture`].
    #[serde(default)]
    pub mix_horizon_tokens: Option<u64>,
    pub sources: Vec<SourceConfig>,
}

impl LoaderConfig {
    /// A config with defaults for everything but the sources.
    pub fn new(seq_len: usize, seed: u64, sources: Vec<SourceConfig>) -> Self {
        LoaderConfig {
            seq_len,
            seed,
            eot_id: QWEN3_EOT_ID,
            pad_id: None,
            packing: PackMode::default(),
            open_bins: default_open_bins(),
            mask_doc_start: true,
            drop_last: false,
            shard_unit: ShardUnit::default(),
            read_batch_rows: default_batch_rows(),
            mix_horizon_tokens: None,
            sources,
        }
    }

    /// The packer's parameters.
    pub fn packing_config(&self) -> PackingConfig {
        PackingConfig {
            seq_len: self.seq_len,
            eot_id: self.eot_id,
            pad_id: self.pad_id.unwrap_or(self.eot_id),
            mode: self.packing,
            open_bins: self.open_bins,
            mask_doc_start: self.mask_doc_start,
            drop_last: self.drop_last,
        }
    }

    fn validate(&self) -> Result<()> {
        self.packing_config().validate()?;
        if self.sources.is_empty() {
            return Err(DataError::Config("no data sources".into()));
        }
        for (i, s) in self.sources.iter().enumerate() {
            if self.sources[..i].iter().any(|o| o.name == s.name) {
                return Err(DataError::Config(format!(
                    "duplicate source name `{}`",
                    s.name
                )));
            }
            if s.paths.is_empty() {
                return Err(DataError::Config(format!(
                    "source `{}` has no paths",
                    s.name
                )));
            }
        }
        if self.read_batch_rows == 0 {
            return Err(DataError::Config("read_batch_rows must be >= 1".into()));
        }
        Ok(())
    }

    /// Hash of everything that changes the produced sequences.
    fn hash(&self) -> u64 {
        let mut c = self.clone();
        c.read_batch_rows = 0;
        fnv1a(serde_json::to_string(&c).unwrap_or_default().as_bytes())
    }
}

/// Per-source counters, reported to the trainer and kept across resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SourceStats {
    /// Documents packed (whole or cut).
    pub docs: u64,
    /// Tokens packed (separators included, padding excluded): the mixture's unit.
    pub tokens: u64,
    /// Documents cut by `overlong = "truncate"`.
    pub truncated_docs: u64,
    /// Documents dropped by `overlong = "skip"`.
    pub skipped_overlong: u64,
    /// Tokens lost to truncation and skipping.
    pub tokens_dropped: u64,
    /// Rows skipped at render/tokenize time with `on_bad = "skip"` (e.g. bad messages).
    pub bad_rows: u64,
    /// Epochs completed.
    pub epochs_completed: u64,
    /// `docs` when the current epoch began (an epoch that packs nothing is an error).
    pub docs_at_epoch_start: u64,
}

/// Saved state of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    pub name: String,
    pub cursor: Cursor,
    pub active: bool,
    pub stats: SourceStats,
    /// Bad input skipped by the reader.
    pub bad: BadCounts,
}

/// What a state is valid for; compared on resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Hash of the loader config (hex).
    pub config: String,
    /// Hash of every source's ordered file list with sizes (hex).
    pub data: String,
    /// Tokenizer fingerprint (hex).
    pub tokenizer: String,
    pub rank: u32,
    pub world: u32,
}

/// Everything needed to continue exactly where a loader stopped. Small: no tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub format: u32,
    pub identity: Identity,
    pub rng: Rng,
    pub sources: Vec<SourceState>,
    pub packer: PackerState,
    /// Sequences emitted so far.
    pub sequences: u64,
    pub finished: bool,
}

/// A per-source summary for logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceReport {
    pub name: String,
    /// Normalised configured weight.
    pub weight: f64,
    /// Realised share of packed tokens.
    pub share: f64,
    pub active: bool,
    pub epoch: u64,
    pub stats: SourceStats,
    pub bad: BadCounts,
}

/// Where a source's reader stands: its cursor and bad-input counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReaderPos {
    cursor: Cursor,
    bad: BadCounts,
}

impl ReaderPos {
    fn of(r: &SourceReader) -> Self {
        ReaderPos {
            cursor: r.cursor(),
            bad: r.bad_counts(),
        }
    }
}

/// What [`SourceReader::next_sample`] returned, materialised, in reader order.
enum AheadItem {
    /// A sample rendered and tokenized (or the reason it could not be).
    Doc(DocRef, std::result::Result<Document, String>),
    /// The end of the source's epoch.
    End,
    /// A reader error (the loader fails when it reaches it).
    Failed(DataError),
}

/// Documents of one source read and tokenized ahead, so that tokenization runs in batches
/// ([`Encoder::encode_batch`], parallel for the HF tokenizer). Each item carries the reader's
/// position right after it was read; `taken` is the position after the last item handed to
/// the mixer, which is what [`Loader::state`] saves. The read-ahead therefore changes
/// neither the output nor the state: they are those of reading one sample at a time.
struct ReadAhead {
    queue: VecDeque<(AheadItem, ReaderPos)>,
    taken: ReaderPos,
}

impl ReadAhead {
    fn at(pos: ReaderPos) -> Self {
        ReadAhead {
            queue: VecDeque::new(),
            taken: pos,
        }
    }
}

/// Sources → tokens → mixture → packed rows, for one data-parallel rank.
pub struct Loader {
    cfg: LoaderConfig,
    encoder: Arc<dyn Encoder>,
    identity: Identity,
    readers: Vec<SourceReader>,
    ahead: Vec<ReadAhead>,
    mixture: Mixture,
    rng: Rng,
    packer: Packer,
    stats: Vec<SourceStats>,
    sequences: u64,
    finished: bool,
    failed: bool,
}

impl Loader {
    /// Opens every source (globs are expanded now; shards are opened lazily).
    pub fn open(cfg: LoaderConfig, encoder: Arc<dyn Encoder>, dp: DataParallel) -> Result<Self> {
        cfg.validate()?;
        DataParallel::new(dp.rank, dp.world)?;
        let weights: Vec<f64> = cfg.sources.iter().map(|s| s.weight).collect();
        let horizon = cfg.mix_horizon_tokens.unwrap_or(cfg.seq_len as u64);
        let mixture = Mixture::new(&weights, horizon)?;
        let mut manifest = String::new();
        let mut readers = Vec::with_capacity(cfg.sources.len());
        for (i, s) in cfg.sources.iter().enumerate() {
            let files = expand_globs(&s.name, &s.paths)?;
            manifest.push_str(&format!("source {}\n", s.name));
            for f in &files {
                let size = std::fs::metadata(f).map_err(|e| DataError::io(f, e))?.len();
                manifest.push_str(&format!("{}\t{size}\n", f.display()));
            }
            let spec = SourceSpec {
                name: s.name.clone(),
                index: i as u32,
                files,
                shuffle_seed: s.shuffle_files.then(|| mix_seed(&[cfg.seed, 0x66696c6573])),
                on_bad: s.on_bad,
                unit: cfg.shard_unit,
                batch_rows: cfg.read_batch_rows,
            };
            readers.push(SourceReader::new(
                spec,
                dp,
                Cursor::default(),
                BadCounts::default(),
            ));
        }
        let identity = Identity {
            config: format!("{:016x}", cfg.hash()),
            data: format!("{:016x}", fnv1a(manifest.as_bytes())),
            tokenizer: format!("{:016x}", encoder.fingerprint()),
            rank: dp.rank,
            world: dp.world,
        };
        let rng = Rng::seed_from_u64(mix_seed(&[cfg.seed, dp.rank as u64, dp.world as u64]));
        let packer = Packer::new(cfg.packing_config())?;
        let ahead = readers
            .iter()
            .map(|r| ReadAhead::at(ReaderPos::of(r)))
            .collect();
        Ok(Loader {
            stats: vec![SourceStats::default(); cfg.sources.len()],
            cfg,
            encoder,
            identity,
            readers,
            ahead,
            mixture,
            rng,
            packer,
            sequences: 0,
            finished: false,
            failed: false,
        })
    }

    /// Opens the sources and continues from `state`, exactly.
    pub fn resume(
        cfg: LoaderConfig,
        encoder: Arc<dyn Encoder>,
        dp: DataParallel,
        state: &LoaderState,
    ) -> Result<Self> {
        let mut loader = Loader::open(cfg, encoder, dp)?;
        if state.format != STATE_FORMAT {
            return Err(DataError::Resume(format!(
                "state format {} is not {STATE_FORMAT}",
                state.format
            )));
        }
        let (a, b) = (&loader.identity, &state.identity);
        let mismatch = [
            (a.rank != b.rank || a.world != b.world).then(|| {
                format!(
                    "rank/world {}/{} != saved {}/{}",
                    a.rank, a.world, b.rank, b.world
                )
            }),
            (a.config != b.config)
                .then(|| "the data config changed since the state was saved".to_string()),
            (a.data != b.data).then(|| {
                "the data files (list or sizes) changed since the state was saved".to_string()
            }),
            (a.tokenizer != b.tokenizer)
                .then(|| "the tokenizer changed since the state was saved".to_string()),
        ];
        let mismatch: Vec<String> = mismatch.into_iter().flatten().collect();
        if !mismatch.is_empty() {
            return Err(DataError::Resume(mismatch.join("; ")));
        }
        if state.sources.len() != loader.readers.len() {
            return Err(DataError::Resume("source count differs".into()));
        }
        for (i, s) in state.sources.iter().enumerate() {
            if s.name != loader.cfg.sources[i].name {
                return Err(DataError::Resume(format!(
                    "source {i} is `{}` in the state, `{}` in the config",
                    s.name, loader.cfg.sources[i].name
                )));
            }
            let spec = loader.readers[i].spec().clone();
            loader.readers[i] = SourceReader::new(spec, dp, s.cursor, s.bad);
            loader.ahead[i] = ReadAhead::at(ReaderPos::of(&loader.readers[i]));
            loader.stats[i] = s.stats;
        }
        let tokens: Vec<u64> = state.sources.iter().map(|s| s.stats.tokens).collect();
        let active: Vec<bool> = state.sources.iter().map(|s| s.active).collect();
        loader.mixture.restore(&tokens, &active);
        loader.rng = state.rng.clone();
        let mut fetch =
            |d: &DocRef| loader_fetch(&loader.cfg, &*loader.encoder, &loader.readers, d);
        let packer = Packer::restore(loader.cfg.packing_config(), &state.packer, &mut fetch)?;
        loader.packer = packer;
        loader.sequences = state.sequences;
        loader.finished = state.finished;
        Ok(loader)
    }

    /// The state to save (valid between calls to [`Self::next_sequence`]).
    pub fn state(&self) -> LoaderState {
        LoaderState {
            format: STATE_FORMAT,
            identity: self.identity.clone(),
            rng: self.rng.clone(),
            sources: self
                .ahead
                .iter()
                .enumerate()
                .map(|(i, a)| SourceState {
                    name: self.cfg.sources[i].name.clone(),
                    cursor: a.taken.cursor,
                    active: self.mixture.is_active(i),
                    stats: self.stats[i],
                    bad: a.taken.bad,
                })
                .collect(),
            packer: self.packer.state(),
            sequences: self.sequences,
            finished: self.finished,
        }
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Sequences emitted so far (across resumes).
    pub fn sequences_emitted(&self) -> u64 {
        self.sequences
    }

    /// Per-source counters and realised shares.
    pub fn report(&self) -> Vec<SourceReport> {
        let w_sum: f64 = self.cfg.sources.iter().map(|s| s.weight).sum();
        let shares = self.mixture.shares();
        self.cfg
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| SourceReport {
                name: s.name.clone(),
                weight: s.weight / w_sum,
                share: shares[i],
                active: self.mixture.is_active(i),
                epoch: self.ahead[i].taken.cursor.epoch,
                stats: self.stats[i],
                bad: self.ahead[i].taken.bad,
            })
            .collect()
    }

    /// The next packed row; `None` once every source has stopped or dropped out.
    pub fn next_sequence(&mut self) -> Result<Option<PackedSequence>> {
        if self.failed {
            return Ok(None);
        }
        let out = self.step();
        if out.is_err() {
            self.failed = true;
        }
        out
    }

    /// Up to `n` rows (fewer only at the end of data; empty once done).
    pub fn next_batch(&mut self, n: usize) -> Result<Vec<PackedSequence>> {
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            match self.next_sequence()? {
                Some(seq) => batch.push(seq),
                None => break,
            }
        }
        Ok(batch)
    }

    fn step(&mut self) -> Result<Option<PackedSequence>> {
        loop {
            if let Some(seq) = self.packer.pop() {
                self.sequences += 1;
                return Ok(Some(seq));
            }
            if self.finished {
                return Ok(None);
            }
            let Some(s) = self.mixture.pick(&mut self.rng) else {
                self.finish();
                continue;
            };
            match self.pull(s)? {
                Some(doc) => {
                    let outcome = self.packer.push(doc, self.cfg.sources[s].overlong);
                    let st = &mut self.stats[s];
                    st.tokens_dropped += outcome.dropped;
                    if outcome.skipped {
                        st.skipped_overlong += 1;
                    } else {
                        st.docs += 1;
                        st.tokens += outcome.placed;
                        st.truncated_docs += u64::from(outcome.truncated);
                        self.mixture.record(s, outcome.placed);
                    }
                }
                None => self.exhausted(s)?,
            }
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.packer.finish();
    }

    /// Source `s` has no more rows in this epoch.
    fn exhausted(&mut self, s: usize) -> Result<()> {
        let src = &self.cfg.sources[s];
        match src.on_exhausted {
            OnExhausted::Repeat => {
                let st = &mut self.stats[s];
                if st.docs == st.docs_at_epoch_start {
                    return Err(DataError::Config(format!(
                        "source `{}` has no usable samples for rank {} of {} (an epoch packed \
                         nothing); use on_exhausted = \"drop\" or \"stop\", or more data",
                        src.name, self.identity.rank, self.identity.world
                    )));
                }
                st.epochs_completed += 1;
                st.docs_at_epoch_start = st.docs;
                self.readers[s].start_next_epoch();
                self.ahead[s] = ReadAhead::at(ReaderPos::of(&self.readers[s]));
            }
            OnExhausted::Drop => self.mixture.deactivate(s),
            OnExhausted::Stop => self.finish(),
        }
        Ok(())
    }

    /// The next document of source `s`, or `None` at the end of its epoch.
    fn pull(&mut self, s: usize) -> Result<Option<Document>> {
        loop {
            if self.ahead[s].queue.is_empty() {
                self.read_ahead(s);
            }
            let (item, pos) = self.ahead[s]
                .queue
                .pop_front()
                .expect("read_ahead queues at least one item");
            self.ahead[s].taken = pos;
            let (doc, materialised) = match item {
                AheadItem::Doc(doc, m) => (doc, m),
                AheadItem::End => return Ok(None),
                AheadItem::Failed(e) => return Err(e),
            };
            match materialised {
                Ok(d) => return Ok(Some(d)),
                Err(_) if self.cfg.sources[s].on_bad == OnBad::Skip => {
                    self.stats[s].bad_rows += 1;
                }
                Err(msg) => {
                    return Err(DataError::Row {
                        path: self.readers[s].spec().files[doc.file as usize].clone(),
                        row_group: doc.row_group as usize,
                        row: doc.row,
                        msg,
                    })
                }
            }
        }
    }

    /// Reads the next samples of source `s` (up to `read_batch_rows` of them, or
    /// [`READ_AHEAD_BYTES`] of content, stopping after the end of the epoch or an error) and
    /// materialises them with one [`Encoder::encode_batch`] call.
    fn read_ahead(&mut self, s: usize) {
        let reader = &mut self.readers[s];
        let mut samples = Vec::new();
        let mut tail = None;
        let mut bytes = 0usize;
        while samples.len() < self.cfg.read_batch_rows && bytes < READ_AHEAD_BYTES {
            match reader.next_sample() {
                Ok(Some((doc, sample))) => {
                    bytes += match &sample.content {
                        Content::Text(t) | Content::Messages(t) => t.len(),
                        Content::InputIds(ids) => ids.len() * 4,
                    };
                    samples.push((doc, sample, ReaderPos::of(reader)));
                }
                Ok(None) => {
                    tail = Some((AheadItem::End, ReaderPos::of(reader)));
                    break;
                }
                Err(e) => {
                    tail = Some((AheadItem::Failed(e), ReaderPos::of(reader)));
                    break;
                }
            }
        }
        let (docs, positions): (Vec<_>, Vec<_>) = samples
            .into_iter()
            .map(|(doc, sample, pos)| ((doc, sample), pos))
            .unzip();
        let queue = &mut self.ahead[s].queue;
        for (m, pos) in materialise_batch(&self.cfg, &*self.encoder, docs)
            .into_iter()
            .zip(positions)
        {
            queue.push_back((m, pos));
        }
        queue.extend(tail);
    }
}

impl Iterator for Loader {
    type Item = Result<PackedSequence>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_sequence().transpose()
    }
}

/// A sample on its way to tokens: text to tokenize, ids as stored, or why it is bad.
enum Pending {
    Text(String),
    Ids(Vec<u32>),
    Bad(String),
}

/// Renders and tokenizes samples (one [`Encoder::encode_batch`] call for all their texts),
/// appending the separator to each. The only way samples become documents, so that the
/// loader and [`loader_fetch`] (resume) give the same tokens.
fn materialise_batch(
    cfg: &LoaderConfig,
    encoder: &dyn Encoder,
    samples: Vec<(DocRef, Sample)>,
) -> Vec<AheadItem> {
    let mut pending = Vec::with_capacity(samples.len());
    for (doc, sample) in samples {
        let p = match sample.content {
            Content::Text(t) => Pending::Text(t),
            Content::Messages(m) => {
                let opts = ChatOptions {
                    keep_all_thinking: cfg.sources[doc.source as usize].keep_all_thinking,
                    ..ChatOptions::default()
                };
                match chat::render_json(&m, &opts) {
                    Ok(text) => Pending::Text(text),
                    Err(e) => Pending::Bad(format!("sample `{}`: {e}", sample.id)),
                }
            }
            Content::InputIds(ids) => Pending::Ids(ids),
        };
        pending.push((doc, sample.id, p));
    }
    let texts: Vec<&str> = pending
        .iter()
        .filter_map(|(_, _, p)| match p {
            Pending::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let mut encoded = encoder.encode_batch(&texts).into_iter();
    drop(texts);
    pending
        .into_iter()
        .map(|(doc, id, p)| {
            let tokens = match p {
                Pending::Text(_) => encoded
                    .next()
                    .expect("one encoding per text")
                    .map_err(|e| e.to_string()),
                Pending::Ids(ids) => Ok(ids),
                Pending::Bad(msg) => Err(msg),
            };
            let doc_or_err = tokens.map(|mut tokens| {
                tokens.push(cfg.eot_id);
                Document {
                    doc,
                    sample_id: Arc::from(id.as_str()),
                    tokens,
                }
            });
            AheadItem::Doc(doc, doc_or_err)
        })
        .collect()
}

/// Re-reads and re-tokenizes one referenced document (resume).
fn loader_fetch(
    cfg: &LoaderConfig,
    encoder: &dyn Encoder,
    readers: &[SourceReader],
    d: &DocRef,
) -> Result<Document> {
    let reader = readers
        .get(d.source as usize)
        .ok_or_else(|| DataError::Resume(format!("state names unknown source {}", d.source)))?;
    let path: &Path = reader
        .spec()
        .files
        .get(d.file as usize)
        .ok_or_else(|| DataError::Resume(format!("state names unknown file {}", d.file)))?;
    let sample = ParquetShard::open(path)?.read_row(d.row_group as usize, d.row)?;
    match materialise_batch(cfg, encoder, vec![(*d, sample)]).pop() {
        Some(AheadItem::Doc(_, Ok(doc))) => Ok(doc),
        Some(AheadItem::Doc(_, Err(msg))) => Err(DataError::Row {
            path: path.into(),
            row_group: d.row_group as usize,
            row: d.row,
            msg,
        }),
        _ => unreachable!("materialise_batch returns one document per sample"),
    }
}

#[cfg(test)]
mod tests;
