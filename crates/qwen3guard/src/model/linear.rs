//! The two primitive layers every block uses: a bias-free linear map and RMSNorm, plus the
//! one matrix-product function all of them go through.
//!
//! Weights are either candle tensors (f32, or any dtype on an accelerator) multiplied by
//! candle, or [`PackedMatrix`] formats (bf16, 8-bit) with their own CPU kernels; `Linear`
//! is the one place that chooses.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::checkpoint::Weights;
use crate::error::Result;
use crate::kernels::PackedMatrix;

/// `a @ b` for `a: (..., m, k)` and `b: (..., k, n)`, tensors in the compute dtype.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.matmul(b)?)
}

/// `y = x W^T` with `W: (out, in)` and no bias (Qwen3 has none).
#[derive(Debug, Clone)]
pub enum Linear {
    /// A tensor in the compute dtype, stored transposed `(in, out)` so that the product
    /// needs no per-call transpose.
    Dense(Tensor),
    /// Compact weights with their own kernel (CPU, bf16 or 8-bit precision).
    Packed(Arc<PackedMatrix>),
}

impl Linear {
    /// Wraps a checkpoint weight of shape `(out, in)`.
    pub fn from_weight(weight: &Tensor) -> Result<Self> {
        Ok(Linear::Dense(weight.t()?))
    }

    /// Output features.
    pub fn out_features(&self) -> Result<usize> {
        Ok(match self {
            Linear::Dense(weight_t) => weight_t.dim(1)?,
            Linear::Packed(matrix) => matrix.rows(),
        })
    }

    /// `rows` rows of input features `x (rows, in)` -> `(rows, out)`, row-major f32: the
    /// form the CPU layers pass activations in.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        match self {
            Linear::Packed(matrix) => Ok(matrix.matmul(x, rows)),
            Linear::Dense(weight_t) => {
                let inner = x.len() / rows.max(1);
                let input = Tensor::from_slice(x, (rows, inner), weight_t.device())?;
                let output = matmul(&input.to_dtype(weight_t.dtype())?, weight_t)?;
                Ok(output.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
            }
        }
    }

    /// Output features `ids` for one input row `x`, equal to those of the full product
    /// (`f32::MIN` for an id past the last feature): a few logits without the whole
    /// vocabulary.
    pub fn select(&self, x: &[f32], ids: &[usize]) -> Result<Vec<f32>> {
        match self {
            Linear::Packed(matrix) => Ok(matrix.select(x, ids)),
            Linear::Dense(_) => {
                let all = self.forward_rows(x, 1)?;
                Ok(ids
                    .iter()
                    .map(|&id| all.get(id).copied().unwrap_or(f32::MIN))
                    .collect())
            }
        }
    }

    /// `(..., in) -> (..., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let inner = dims[dims.len() - 1];
        let rows = x.elem_count() / inner.max(1);
        let flat = x.reshape((rows, inner))?;
        let y = match self {
            Linear::Dense(weight_t) => matmul(&flat, weight_t)?,
            Linear::Packed(matrix) => {
                let input: Vec<f32> = flat.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let output = self.forward_rows(&input, rows)?;
                Tensor::from_vec(output, (rows, matrix.rows()), x.device())?.to_dtype(x.dtype())?
            }
        };
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.out_features()?;
        }
        Ok(y.reshape(out_dims)?)
    }
}

/// Loads `{name}.weight` of shape `(out, in)`, packed or as a tensor as the weights.
/// precision says.
pub fn linear(weights: &Weights, name: &str, input: usize, output: usize) -> Result<Linear> {
    let name = format!("{name}.weight");
    if weights.packs_matrices() {
        return Ok(Linear::Packed(Arc::new(
            weights.get_packed(&name, output, input)?,
        )));
    }
    Linear::from_weight(&weights.get(&name, &[output, input])?)
}

/// Loads several `(out_i, in)` matrices `{name}.weight` as one `(sum out_i, in)` map, so
/// that projections reading the same input (q/k/v, gate/up) cost one product.
pub fn stacked_linear(
    weights: &Weights,
    names: &[&str],
    input: usize,
    outputs: &[usize],
) -> Result<Linear> {
    if weights.packs_matrices() {
        let parts = names
            .iter()
            .zip(outputs)
            .map(|(name, &out)| weights.get_packed(&format!("{name}.weight"), out, input))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Linear::Packed(Arc::new(PackedMatrix::stack(parts))));
    }
    let parts = names
        .iter()
        .zip(outputs)
        .map(|(name, &out)| weights.get(&format!("{name}.weight"), &[out, input]))
        .collect::<Result<Vec<_>>>()?;
    Linear::from_weight(&Tensor::cat(&parts, 0)?)
}

/// Root-mean-square normalisation over the last axis: `x / sqrt(mean(x^2) + eps) * w`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// The weight as f32 values.
    values: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// Loads `{name}.weight` of shape `(size,)`.
    pub fn new(weights: &Weights, name: &str, size: usize, eps: f64) -> Result<Self> {
        let weight = weights.get(&format!("{name}.weight"), &[size])?;
        Ok(RmsNorm {
            values: weight.to_dtype(DType::F32)?.to_vec1()?,
            eps: eps as f32,
        })
    }

    /// Normalises one vector `x` (the weight's length) into `out`, in f32 as the
    /// reference computes it: `x * (1 / sqrt(mean(x^2) + eps)) * w`.
    pub fn normalize(&self, x: &[f32], out: &mut [f32]) {
        let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
        let inv = 1.0 / (mean + self.eps).sqrt();
        for ((o, &v), &w) in out.iter_mut().zip(x).zip(&self.values) {
            *o = v * inv * w;
        }
    }

    /// Normalises every row of `x` (rows of the weight's length), rows in parallel.
    pub fn forward_rows(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        let size = self.values.len().max(1);
        out.par_chunks_mut(size)
            .zip(x.par_chunks(size))
            .for_each(|(dst, row)| self.normalize(row, dst));
        out
    }

    /// Normalises the last axis of `x` (the heads' tensors), as [`Self::forward_rows`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let out = Tensor::from_vec(self.forward_rows(&rows), x.dims(), x.device())?;
        Ok(out.to_dtype(x.dtype())?)
    }
}
