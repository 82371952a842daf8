//! The token embedding table, which a tied `lm_head` also reads.

use std::sync::Arc;

use candle_core::Tensor;

use crate::checkpoint::Weights;
use crate::error::Result;
use crate::model::{Linear, PackedMatrix};

/// `(vocab, hidden)` embeddings, as a tensor or as packed rows.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// A tensor in the compute dtype.
    Dense(Tensor),
    /// Compact rows, widened to f32 when looked up.
    Packed(Arc<PackedMatrix>),
}

impl Embedding {
    /// Loads `name` of shape `(vocab, hidden)`.
    pub fn new(weights: &Weights, name: &str, vocab: usize, hidden: usize) -> Result<Self> {
        if weights.packs_matrices() {
            return Ok(Embedding::Packed(Arc::new(
                weights.get_packed(name, vocab, hidden)?,
            )));
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
            Embedding::Packed(matrix) => {
                let mut values = Vec::with_capacity(ids.len() * matrix.cols());
                for &id in ids {
                    matrix.extend_row(id as usize, &mut values);
                }
                Ok(values)
            }
        }
    }

    /// The same table as an output projection `(hidden -> vocab)`.
    pub fn as_linear(&self) -> Result<Linear> {
        match self {
            Embedding::Dense(table) => Linear::from_weight(table),
            Embedding::Packed(matrix) => Ok(Linear::Packed(matrix.clone())),
        }
    }
}
