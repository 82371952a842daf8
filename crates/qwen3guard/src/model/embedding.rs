//! The token embedding table, which a tied `lm_head` also reads.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::checkpoint::Weights;
use crate::error::Result;
use crate::model::{Bf16Matrix, Linear};

/// `(vocab, hidden)` embeddings, as a tensor or as bf16 rows.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// A tensor in the compute dtype.
    Dense(Tensor),
    /// bf16 rows, widened to f32 when looked up.
    Bf16(Arc<Bf16Matrix>),
}

impl Embedding {
    /// Loads `name` of shape `(vocab, hidden)`.
    pub fn new(weights: &Weights, name: &str, vocab: usize, hidden: usize) -> Result<Self> {
        if weights.bf16_matrices() {
            return Ok(Embedding::Bf16(Arc::new(
                weights.get_bf16(name, vocab, hidden)?,
            )));
        }
        Ok(Embedding::Dense(weights.get(name, &[vocab, hidden])?))
    }

    /// `(L,)` ids -> `(L, hidden)`; the ids must be in range.
    pub fn lookup(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            Embedding::Dense(table) => Ok(table.index_select(&Tensor::new(ids, device)?, 0)?),
            Embedding::Bf16(matrix) => {
                let values: Vec<f32> = ids
                    .iter()
                    .flat_map(|&id| matrix.row_f32(id as usize))
                    .collect();
                Ok(Tensor::from_vec(
                    values,
                    (ids.len(), matrix.cols()),
                    device,
                )?)
            }
        }
    }

    /// The same table as an output projection `(hidden -> vocab)`.
    pub fn as_linear(&self) -> Result<Linear> {
        match self {
            Embedding::Dense(table) => Linear::from_weight(table),
            Embedding::Bf16(matrix) => Ok(Linear::Bf16(matrix.clone())),
        }
    }
}
