//! Where each token sits: its RoPE position and the document it belongs to. Packed rows
//! restart positions at every document, and no token attends across a document boundary.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::error::{ModelError, Result};

/// Per-token positions and document ids of a batch, `[B, S]` each.
#[derive(Debug, Clone)]
pub struct SequenceLayout {
    pub positions: Tensor<2, Int>,
    pub documents: Tensor<2, Int>,
    /// Largest position in the batch (bounds the rope tables and the config check).
    pub max_position: usize,
    /// `[B × S]`: the first index of each token's document in its row (keys `starts[t]..=t`
    /// are the ones token t sees).
    pub starts: Vec<usize>,
}

impl SequenceLayout {
    /// One document per row, positions `offset..offset + seq_len`.
    pub fn contiguous(batch: usize, seq_len: usize, offset: usize, device: &Device) -> Self {
        let positions: Vec<i64> = (0..batch)
            .flat_map(|_| (offset..offset + seq_len).map(|p| p as i64))
            .collect();
        Self::build(
            positions,
            vec![0; batch * seq_len],
            [batch, seq_len],
            device,
        )
    }

    /// Packed rows given as document lengths per row; every row's lengths must sum to `seq_len`.
    pub fn from_document_lengths(
        rows: &[Vec<usize>],
        seq_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let mut positions = Vec::with_capacity(rows.len() * seq_len);
        let mut documents = Vec::with_capacity(rows.len() * seq_len);
        for (r, lengths) in rows.iter().enumerate() {
            let total: usize = lengths.iter().sum();
            if total != seq_len {
                return Err(ModelError::Input(format!(
                    "row {r}: document lengths sum to {total}, but the row has {seq_len} tokens"
                )));
            }
            for (d, &len) in lengths.iter().enumerate() {
                positions.extend((0..len).map(|p| p as i64));
                documents.extend(std::iter::repeat_n(d as i64, len));
            }
        }
        Ok(Self::build(
            positions,
            documents,
            [rows.len(), seq_len],
            device,
        ))
    }

    /// Per-token positions; a new document starts wherever `pos[t] − pos[t−1] ≠ 1`
    /// (the rule transformers ≥ 4.56 uses to find packed documents).
    pub fn from_positions(rows: &[Vec<i64>], device: &Device) -> Result<Self> {
        let seq_len = rows.first().map_or(0, Vec::len);
        let mut documents = Vec::with_capacity(rows.len() * seq_len);
        for (r, row) in rows.iter().enumerate() {
            if row.len() != seq_len {
                return Err(ModelError::Input(format!(
                    "position row {r} has {} entries, row 0 has {seq_len}",
                    row.len()
                )));
            }
            if let Some(p) = row.iter().find(|&&p| p < 0) {
                return Err(ModelError::Input(format!("row {r}: negative position {p}")));
            }
            let mut doc = 0i64;
            for t in 0..row.len() {
                if t > 0 && row[t] - row[t - 1] != 1 {
                    doc += 1;
                }
                documents.push(doc);
            }
        }
        let positions = rows.iter().flatten().copied().collect();
        Ok(Self::build(
            positions,
            documents,
            [rows.len(), seq_len],
            device,
        ))
    }

    fn build(positions: Vec<i64>, documents: Vec<i64>, shape: [usize; 2], device: &Device) -> Self {
        let max_position = positions.iter().copied().max().unwrap_or(0) as usize;
        let [rows, len] = shape;
        let mut starts = Vec::with_capacity(rows * len);
        for row in documents.chunks(len.max(1)).take(rows) {
            let mut start = 0;
            for t in 0..len {
                if t > 0 && row[t] != row[t - 1] {
                    start = t;
                }
                starts.push(start);
            }
        }
        Self {
            positions: Tensor::from_data(TensorData::new(positions, shape), device),
            documents: Tensor::from_data(TensorData::new(documents, shape), device),
            max_position,
            starts,
        }
    }

    /// The first index any row lets index `t` attend to (the start of t's document,
    /// minimised over rows): blockwise attention skips the key blocks before it.
    pub fn earliest_key(&self, t: usize) -> usize {
        let len = self.dims()[1];
        self.starts
            .iter()
            .skip(t)
            .step_by(len.max(1))
            .copied()
            .min()
            .unwrap_or(t)
    }

    pub fn dims(&self) -> [usize; 2] {
        self.positions.dims()
    }

    /// `[B, 1, S, past + S]`, true where attention is **not** allowed: a key after the query,
    /// or in another document. Keys `0..past` are cached tokens of the same document.
    pub fn attention_mask(&self, past: usize) -> Tensor<4, Bool> {
        let [b, s] = self.dims();
        let device = self.positions.device();
        let q_index =
            Tensor::<1, Int>::arange(past as i64..(past + s) as i64, &device).reshape([1, 1, s, 1]);
        let k_index =
            Tensor::<1, Int>::arange(0..(past + s) as i64, &device).reshape([1, 1, 1, past + s]);
        let future = k_index.greater(q_index);
        let docs = self.documents.clone();
        let key_docs = if past > 0 {
            // Cached keys belong to the first document of the row.
            let first = docs.clone().narrow(1, 0, 1).expand([b, past]);
            Tensor::cat(vec![first, docs.clone()], 1)
        } else {
            docs.clone()
        };
        let other_doc = key_docs
            .reshape([b, 1, 1, past + s])
            .not_equal(docs.reshape([b, 1, s, 1]));
        other_doc.bool_or(future)
    }
}
