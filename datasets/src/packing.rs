//! Packing tokenized documents into fixed-length rows with document boundaries.
//!
//! Why boundaries: packed documents must not attend to each other (trainer-anchors.md §4,
//! qwen3.md §7). Every row therefore carries its segments (lengths, source, sample id),
//! position ids that restart at 0 in every segment (what HF ≥4.56 uses to infer a
//! block-diagonal mask, and what document-masked attention needs), and a loss mask.
//!
//! Each document is its tokens followed by the separator (`<|endoftext|>`, 151643 for
//! Qwen3). Two placement modes:
//! - [`PackMode::Concat`]: documents are concatenated and cut every `seq_len` tokens; a
//!   document may continue in the next row (as a new segment). No padding, but documents are
//!   cut — bad for long agent trajectories.
//! - [`PackMode::BestFit`]: a document that fits is never cut. It goes into the open row
//!   with the least room that still fits it; with no such row, a new row is opened, and when
//!   `open_bins` rows are already open the fullest one is emitted (padded). Padding is a
//!   segment without a source, masked out of the loss.
//!
//! Documents longer than `seq_len` follow the source's [`Overlong`] policy.
//!
//! The packer's state for exact resume is a list of [`PieceRef`]s (document location plus
//! token range), not tokens: it stays small even with 128K-token rows, and the loader
//! re-reads and re-tokenizes those documents on resume.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::reader::DocRef;

/// What to do with a document longer than `seq_len` (separator included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlong {
    /// Cut into `seq_len` pieces, each its own segment (positions restart).
    #[default]
    Split,
    /// Keep the first `seq_len` tokens (the separator is lost), drop the rest (counted).
    Truncate,
    /// Drop the document (counted).
    Skip,
}

/// How documents are placed into rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackMode {
    /// Stream concatenation, cut at row boundaries.
    Concat,
    /// Never cut a document that fits; pad rows (see module docs).
    #[default]
    BestFit,
}

/// Packing parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackingConfig {
    pub seq_len: usize,
    /// Appended after every document.
    pub eot_id: u32,
    /// Fills the rest of a padded row.
    pub pad_id: u32,
    pub mode: PackMode,
    /// Rows kept open by [`PackMode::BestFit`] (1 = close a row as soon as a document does
    /// not fit).
    pub open_bins: usize,
    /// Mask out the first token of every segment: its prediction would come from the
    /// previous document (qwen3.md §7).
    pub mask_doc_start: bool,
    /// At the end of data, drop partially filled rows instead of emitting them padded.
    pub drop_last: bool,
}

impl PackingConfig {
    pub fn validate(&self) -> Result<()> {
        if self.seq_len < 2 {
            return Err(DataError::Config(format!(
                "seq_len must be >= 2, got {}",
                self.seq_len
            )));
        }
        if self.seq_len > u32::MAX as usize {
            return Err(DataError::Config("seq_len must fit u32".into()));
        }
        if self.open_bins == 0 {
            return Err(DataError::Config("open_bins must be >= 1".into()));
        }
        Ok(())
    }
}

/// A tokenized document, separator included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub doc: DocRef,
    pub sample_id: Arc<str>,
    pub tokens: Vec<u32>,
}

/// A contiguous range of one document placed in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    doc: DocRef,
    sample_id: Arc<str>,
    start: u32,
    tokens: Vec<u32>,
}

/// What a packer state stores for a piece: where the document is and which tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRef {
    pub doc: DocRef,
    pub start: u32,
    pub len: u32,
}

/// The packer's resumable state (rows in progress and rows ready to emit).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PackerState {
    pub open: Vec<Vec<PieceRef>>,
    pub ready: Vec<Vec<PieceRef>>,
}

/// One segment of a packed row: a document piece, or padding (`source == None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub len: u32,
    /// Index of the source in the loader config; `None` for padding.
    pub source: Option<u32>,
    pub sample_id: Option<Arc<str>>,
    /// Where the document lives (for tracing); `None` for padding.
    pub doc: Option<DocRef>,
    /// Offset of this piece within its document's tokens (0 unless the document was cut).
    pub doc_offset: u32,
}

/// One packed training row.
///
/// # Shapes
/// - `input_ids`, `position_ids`, `loss_mask`: `[seq_len]`.
/// - `segments`: `[n_segments]`, with `Σ len == seq_len` (padding included).
///
/// `loss_mask[t] == 1` means token `t` is a training target, in the unshifted convention
/// of HF `labels` (the model predicts token `t` at position `t − 1`); see [`Self::labels`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedSequence {
    pub input_ids: Vec<u32>,
    pub position_ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
    pub segments: Vec<Segment>,
}

impl PackedSequence {
    /// Segment lengths (padding included).
    pub fn doc_lens(&self) -> Vec<u32> {
        self.segments.iter().map(|s| s.len).collect()
    }

    /// Source index per segment (`None` for padding).
    pub fn doc_sources(&self) -> Vec<Option<u32>> {
        self.segments.iter().map(|s| s.source).collect()
    }

    /// Cumulative segment starts, `[n_segments + 1]`, for varlen attention kernels.
    pub fn cu_seqlens(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.segments.len() + 1);
        let mut acc = 0u32;
        out.push(0);
        for s in &self.segments {
            acc += s.len;
            out.push(acc);
        }
        out
    }

    /// Segment index per token, `[seq_len]`, for document-id attention masks.
    pub fn document_ids(&self) -> Vec<u32> {
        self.segments
            .iter()
            .enumerate()
            .flat_map(|(i, s)| std::iter::repeat_n(i as u32, s.len as usize))
            .collect()
    }

    /// HF-style unshifted labels: the token id where `loss_mask` is 1, else −100.
    pub fn labels(&self) -> Vec<i64> {
        self.input_ids
            .iter()
            .zip(&self.loss_mask)
            .map(|(&t, &m)| if m == 1 { t as i64 } else { -100 })
            .collect()
    }

    /// Real (non-padding) tokens per source index.
    pub fn tokens_per_source(&self) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = Vec::new();
        for s in &self.segments {
            if let Some(src) = s.source {
                match out.iter_mut().find(|(i, _)| *i == src) {
                    Some(e) => e.1 += s.len as u64,
                    None => out.push((src, s.len as u64)),
                }
            }
        }
        out
    }
}

/// What happened to a pushed document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushOutcome {
    /// Tokens placed into rows.
    pub placed: u64,
    /// Tokens dropped by truncation or skipping.
    pub dropped: u64,
    /// The document was skipped as overlong.
    pub skipped: bool,
    /// The document was cut by truncation.
    pub truncated: bool,
}

#[derive(Debug, Clone, Default)]
struct Bin {
    pieces: Vec<Piece>,
    used: usize,
}

impl Bin {
    fn add(&mut self, piece: Piece) {
        self.used += piece.tokens.len();
        self.pieces.push(piece);
    }
}

/// Packs documents into rows (see module docs).
pub struct Packer {
    cfg: PackingConfig,
    open: Vec<Bin>,
    ready: VecDeque<Bin>,
}

impl Packer {
    pub fn new(cfg: PackingConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Packer {
            cfg,
            open: Vec::new(),
            ready: VecDeque::new(),
        })
    }

    pub fn config(&self) -> &PackingConfig {
        &self.cfg
    }

    /// Adds a document (separator already appended).
    pub fn push(&mut self, doc: Document, overlong: Overlong) -> PushOutcome {
        let s = self.cfg.seq_len;
        let mut out = PushOutcome::default();
        let Document {
            doc,
            sample_id,
            mut tokens,
        } = doc;
        if tokens.len() > s {
            match overlong {
                Overlong::Skip => {
                    out.skipped = true;
                    out.dropped = tokens.len() as u64;
                    return out;
                }
                Overlong::Truncate => {
                    out.truncated = true;
                    out.dropped = (tokens.len() - s) as u64;
                    tokens.truncate(s);
                }
                Overlong::Split => {}
            }
        }
        out.placed = tokens.len() as u64;
        let piece = |start: usize, t: &[u32]| Piece {
            doc,
            sample_id: sample_id.clone(),
            start: start as u32,
            tokens: t.to_vec(),
        };
        match self.cfg.mode {
            PackMode::Concat => {
                let mut start = 0;
                while start < tokens.len() {
                    if self.open.is_empty() {
                        self.open.push(Bin::default());
                    }
                    let take = (s - self.open[0].used).min(tokens.len() - start);
                    self.open[0].add(piece(start, &tokens[start..start + take]));
                    start += take;
                    if self.open[0].used == s {
                        let full = self.open.remove(0);
                        self.ready.push_back(full);
                    }
                }
            }
            PackMode::BestFit => {
                let mut start = 0;
                while tokens.len() - start >= s {
                    let mut row = Bin::default();
                    row.add(piece(start, &tokens[start..start + s]));
                    self.ready.push_back(row);
                    start += s;
                }
                if start < tokens.len() {
                    self.best_fit(piece(start, &tokens[start..]));
                }
            }
        }
        out
    }

    fn best_fit(&mut self, piece: Piece) {
        let s = self.cfg.seq_len;
        let len = piece.tokens.len();
        let fit = self
            .open
            .iter()
            .enumerate()
            .filter(|(_, b)| s - b.used >= len)
            .min_by_key(|(i, b)| (s - b.used, *i))
            .map(|(i, _)| i);
        let idx = match fit {
            Some(i) => i,
            None => {
                if self.open.len() >= self.cfg.open_bins {
                    let fullest = self
                        .open
                        .iter()
                        .enumerate()
                        .max_by_key(|(i, b)| (b.used, std::cmp::Reverse(*i)))
                        .map(|(i, _)| i)
                        .expect("open_bins >= 1");
                    let row = self.open.remove(fullest);
                    self.ready.push_back(row);
                }
                self.open.push(Bin::default());
                self.open.len() - 1
            }
        };
        self.open[idx].add(piece);
        if self.open[idx].used == s {
            let row = self.open.remove(idx);
            self.ready.push_back(row);
        }
    }

    /// End of data: queue the partially filled rows (padded), or drop them if `drop_last`.
    pub fn finish(&mut self) {
        let open = std::mem::take(&mut self.open);
        if !self.cfg.drop_last {
            self.ready
                .extend(open.into_iter().filter(|b| !b.pieces.is_empty()));
        }
    }

    /// Rows ready to be emitted.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// The next complete row, if any.
    pub fn pop(&mut self) -> Option<PackedSequence> {
        self.ready.pop_front().map(|b| self.build(b))
    }

    fn build(&self, bin: Bin) -> PackedSequence {
        let s = self.cfg.seq_len;
        let mut seq = PackedSequence {
            input_ids: Vec::with_capacity(s),
            position_ids: Vec::with_capacity(s),
            loss_mask: Vec::with_capacity(s),
            segments: Vec::with_capacity(bin.pieces.len() + 1),
        };
        for p in bin.pieces {
            let n = p.tokens.len();
            seq.input_ids.extend_from_slice(&p.tokens);
            seq.position_ids.extend(0..n as u32);
            seq.loss_mask.push(u8::from(!self.cfg.mask_doc_start));
            seq.loss_mask.extend(std::iter::repeat_n(1u8, n - 1));
            seq.segments.push(Segment {
                len: n as u32,
                source: Some(p.doc.source),
                sample_id: Some(p.sample_id),
                doc: Some(p.doc),
                doc_offset: p.start,
            });
        }
        let pad = s - seq.input_ids.len();
        if pad > 0 {
            seq.input_ids
                .extend(std::iter::repeat_n(self.cfg.pad_id, pad));
            seq.position_ids.extend(0..pad as u32);
            seq.loss_mask.extend(std::iter::repeat_n(0u8, pad));
            seq.segments.push(Segment {
                len: pad as u32,
                source: None,
                sample_id: None,
                doc: None,
                doc_offset: 0,
            });
        }
        seq
    }

    /// The resumable state (references only, no tokens).
    pub fn state(&self) -> PackerState {
        let refs = |b: &Bin| {
            b.pieces
                .iter()
                .map(|p| PieceRef {
                    doc: p.doc,
                    start: p.start,
                    len: p.tokens.len() as u32,
                })
                .collect::<Vec<_>>()
        };
        PackerState {
            open: self.open.iter().map(refs).collect(),
            ready: self.ready.iter().map(refs).collect(),
        }
    }

    /// Rebuilds a packer from its state; `fetch` re-materialises a document (it must return
    /// exactly the tokens it had, separator included).
    pub fn restore(
        cfg: PackingConfig,
        state: &PackerState,
        fetch: &mut dyn FnMut(&DocRef) -> Result<Document>,
    ) -> Result<Self> {
        let mut packer = Packer::new(cfg)?;
        let mut cache: HashMap<DocRef, Document> = HashMap::new();
        let mut rebuild = |rows: &[Vec<PieceRef>]| -> Result<Vec<Bin>> {
            let mut bins = Vec::with_capacity(rows.len());
            for row in rows {
                let mut bin = Bin::default();
                for r in row {
                    let d = match cache.entry(r.doc) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(v) => v.insert(fetch(&r.doc)?),
                    };
                    let (a, b) = (r.start as usize, r.start as usize + r.len as usize);
                    if b > d.tokens.len() || r.len == 0 {
                        return Err(DataError::Resume(format!(
                            "document {:?} (`{}`) has {} tokens, the state needs {a}..{b} \
                             (did the data or tokenizer change?)",
                            r.doc,
                            d.sample_id,
                            d.tokens.len()
                        )));
                    }
                    bin.add(Piece {
                        doc: r.doc,
                        sample_id: d.sample_id.clone(),
                        start: r.start,
                        tokens: d.tokens[a..b].to_vec(),
                    });
                }
                if bin.used > cfg.seq_len {
                    return Err(DataError::Resume(format!(
                        "a packed row in the state holds {} tokens > seq_len {}",
                        bin.used, cfg.seq_len
                    )));
                }
                bins.push(bin);
            }
            Ok(bins)
        };
        packer.open = rebuild(&state.open)?;
        packer.ready = rebuild(&state.ready)?.into();
        Ok(packer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: PackMode, seq_len: usize, open_bins: usize) -> PackingConfig {
        PackingConfig {
            seq_len,
            eot_id: 0,
            pad_id: 9999,
            mode,
            open_bins,
            mask_doc_start: true,
            drop_last: false,
        }
    }

    fn doc(i: u64, len: usize) -> Document {
        let mut tokens: Vec<u32> = (1..len as u32).map(|t| t + 100 * i as u32).collect();
        tokens.push(0);
        Document {
            doc: DocRef {
                source: (i % 2) as u32,
                file: 0,
                row_group: 0,
                row: i,
            },
            sample_id: format!("d{i}").into(),
            tokens,
        }
    }

    fn drain(p: &mut Packer) -> Vec<PackedSequence> {
        std::iter::from_fn(|| p.pop()).collect()
    }

    fn check_row(seq: &PackedSequence, seq_len: usize) {
        assert_eq!(seq.input_ids.len(), seq_len);
        assert_eq!(seq.position_ids.len(), seq_len);
        assert_eq!(seq.loss_mask.len(), seq_len);
        assert_eq!(seq.doc_lens().iter().sum::<u32>() as usize, seq_len);
        let mut t = 0;
        for s in &seq.segments {
            let pos: Vec<u32> = seq.position_ids[t..t + s.len as usize].to_vec();
            assert_eq!(pos, (0..s.len).collect::<Vec<_>>());
            assert_eq!(seq.loss_mask[t], 0, "segment start is masked");
            if s.source.is_none() {
                assert!(seq.loss_mask[t..t + s.len as usize].iter().all(|&m| m == 0));
            } else {
                assert!(seq.loss_mask[t + 1..t + s.len as usize]
                    .iter()
                    .all(|&m| m == 1));
            }
            t += s.len as usize;
        }
    }

    #[test]
    fn best_fit_never_cuts_fitting_documents() {
        let mut p = Packer::new(cfg(PackMode::BestFit, 16, 2)).unwrap();
        for (i, len) in [10, 7, 5, 6, 16, 3].into_iter().enumerate() {
            p.push(doc(i as u64, len), Overlong::Split);
        }
        p.finish();
        let rows = drain(&mut p);
        for r in &rows {
            check_row(r, 16);
            for s in r.segments.iter().filter(|s| s.source.is_some()) {
                assert_eq!(s.doc_offset, 0);
            }
        }
        // Every document appears exactly once, whole.
        let mut ids: Vec<_> = rows
            .iter()
            .flat_map(|r| r.segments.iter().filter_map(|s| s.sample_id.clone()))
            .collect();
        ids.sort();
        assert_eq!(ids.len(), 6);
        ids.dedup();
        assert_eq!(ids.len(), 6);
        // [10,5] and [7,6,3] fill; 16 is a row of its own.
        assert_eq!(
            rows.len(),
            3,
            "{:?}",
            rows.iter().map(|r| r.doc_lens()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn concat_cuts_and_continues() {
        let mut p = Packer::new(cfg(PackMode::Concat, 8, 1)).unwrap();
        p.push(doc(1, 5), Overlong::Split);
        p.push(doc(2, 6), Overlong::Split);
        p.push(doc(3, 13), Overlong::Split);
        p.finish();
        let rows = drain(&mut p);
        assert_eq!(rows.len(), 3);
        for r in &rows {
            check_row(r, 8);
        }
        assert_eq!(rows[0].doc_lens(), vec![5, 3]);
        assert_eq!(rows[1].doc_lens(), vec![3, 5]);
        assert_eq!(rows[1].segments[0].doc_offset, 3);
        assert_eq!(rows[2].doc_lens(), vec![8]);
        assert_eq!(rows[2].segments[0].doc_offset, 5);
        // All 24 tokens in 5 segments, nothing padded.
        assert_eq!(rows.iter().map(|r| r.segments.len()).sum::<usize>(), 5);
        assert!(rows
            .iter()
            .all(|r| r.segments.iter().all(|s| s.source.is_some())));
    }

    #[test]
    fn overlong_policies() {
        let mut p = Packer::new(cfg(PackMode::BestFit, 8, 1)).unwrap();
        let o = p.push(doc(1, 20), Overlong::Split);
        assert_eq!((o.placed, o.dropped), (20, 0));
        assert_eq!(p.ready_len(), 2); // two full pieces; the 4-token tail waits
        let o = p.push(doc(2, 20), Overlong::Truncate);
        assert!(o.truncated);
        assert_eq!((o.placed, o.dropped), (8, 12));
        let o = p.push(doc(3, 9), Overlong::Skip);
        assert!(o.skipped);
        p.finish();
        let rows = drain(&mut p);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].segments[0].doc_offset, 0);
        assert_eq!(rows[1].segments[0].doc_offset, 8);
        let tail = rows
            .iter()
            .find(|r| r.segments[0].doc_offset == 16)
            .unwrap();
        assert_eq!(tail.doc_lens(), vec![4, 4]);
        assert_eq!(*tail.input_ids.last().unwrap(), 9999);
        for r in &rows {
            check_row(r, 8);
        }
    }

    #[test]
    fn labels_and_cu_seqlens() {
        let mut p = Packer::new(cfg(PackMode::BestFit, 8, 1)).unwrap();
        p.push(doc(1, 3), Overlong::Split);
        p.push(doc(2, 2), Overlong::Split);
        p.finish();
        let r = p.pop().unwrap();
        assert_eq!(r.cu_seqlens(), vec![0, 3, 5, 8]);
        assert_eq!(r.document_ids(), vec![0, 0, 0, 1, 1, 2, 2, 2]);
        assert_eq!(r.labels(), vec![-100, 102, 0, -100, 0, -100, -100, -100]);
        assert_eq!(r.position_ids, vec![0, 1, 2, 0, 1, 0, 1, 2]);
        assert_eq!(r.tokens_per_source(), vec![(1, 3), (0, 2)]);
    }

    #[test]
    fn state_restore_reproduces_rows() {
        for mode in [PackMode::BestFit, PackMode::Concat] {
            let docs: Vec<Document> = (0..40).map(|i| doc(i, 3 + (i as usize * 7) % 23)).collect();
            let run = |split_at: Option<usize>| {
                let c = cfg(mode, 16, 3);
                let mut p = Packer::new(c).unwrap();
                let mut rows = Vec::new();
                for (k, d) in docs.iter().enumerate() {
                    if Some(k) == split_at {
                        let st: PackerState =
                            serde_json::from_str(&serde_json::to_string(&p.state()).unwrap())
                                .unwrap();
                        let mut fetch = |r: &DocRef| Ok(docs[r.row as usize].clone());
                        p = Packer::restore(c, &st, &mut fetch).unwrap();
                    }
                    p.push(d.clone(), Overlong::Split);
                    if k % 3 == 0 {
                        rows.extend(p.pop());
                    }
                }
                p.finish();
                rows.extend(drain(&mut p));
                rows
            };
            let straight = run(None);
            for k in [1, 7, 20, 39] {
                assert_eq!(run(Some(k)), straight, "{mode:?} split at {k}");
            }
        }
    }
}
