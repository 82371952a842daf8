//! The token embedding table, which a tied `lm_head` also reads.

use candle_core::Tensor;

use crate::checkpoint::{FileRows, Weights};
use crate::error::Result;

/// `(vocab, hidden)` embeddings, as a tensor or as rows read from the checkpoint.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// A tensor in the compute dtype (devices other than the CPU).
    Dense(Tensor),
    /// Rows read from the checkpoint file when looked up (the CPU): the table is never
    /// resident as a whole, only the page cache's copy of the rows in use. A tied `lm_head`
    /// packs its own copy for its kernel.
    File(FileRows),
}

impl Embedding {
    /// Loads `name` of shape `(vocab, hidden)`.
    pub fn new(weights: &Weights, name: &str, vocab: usize, hidden: usize) -> Result<Self> {
        if weights.packs_matrices() {
            return Ok(Embedding::File(weights.get_rows(name, vocab, hidden)?));
        }
        Ok(Embedding::Dense(weights.get(name, &[vocab, hidden])?))
    }

    /// `(L,)` ids -> rows `(L, hidden)` of f32; the ids must be in range.
    pub fn lookup_rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        match self {
            Embedding::Dense(table) => Ok(table
                .index_select(&Tensor::new(ids, table.device())?, 0)?
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?),
            Embedding::File(rows) => {
                let mut values = Vec::new();
                rows.extend_rows(ids, &mut values)?;
                Ok(values)
            }
        }
    }
}
