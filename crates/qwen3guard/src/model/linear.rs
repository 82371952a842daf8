//! The two primitive layers every block uses: a bias-free linear map and RMSNorm, plus the
//! one matrix-product function all of them go through.
//!
//! Keeping the product in one function is deliberate: it is the single place that decides
//! how a dtype is multiplied on the current device (candle's CPU backend has no bf16
//! matmul; there the operands are widened to f32, which is also how a bf16 reference
//! accumulates, and the result is rounded back).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Weights;
use crate::error::Result;
use crate::model::Bf16Matrix;

/// `a @ b` for `a: (..., m, k)` and `b: (..., k, n)`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dtype = a.dtype();
    if dtype == DType::BF16 && matches!(a.device(), Device::Cpu) {
        let product = a.to_dtype(DType::F32)?.matmul(&b.to_dtype(DType::F32)?)?;
        return Ok(product.to_dtype(dtype)?);
    }
    Ok(a.matmul(b)?)
}

/// `y = x W^T` with `W: (out, in)` and no bias (Qwen3 has none).
#[derive(Debug, Clone)]
pub enum Linear {
    /// A tensor in the compute dtype, stored transposed `(in, out)` so that the product
    /// needs no per-call transpose.
    Dense(Tensor),
    /// bf16 weights multiplied by the native bf16 kernel (CPU, bf16 precision).
    Bf16(Arc<Bf16Matrix>),
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
            Linear::Bf16(matrix) => matrix.rows(),
        })
    }

    /// `(..., in) -> (..., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let inner = dims[dims.len() - 1];
        let rows = x.elem_count() / inner.max(1);
        let flat = x.reshape((rows, inner))?;
        let y = match self {
            Linear::Dense(weight_t) => matmul(&flat, weight_t)?,
            Linear::Bf16(matrix) => {
                let input: Vec<f32> = flat.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let output = matrix.matmul(&input, rows);
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

/// Loads `{name}.weight` of shape `(out, in)`, as bf16 matrix or tensor as the weights'
/// precision says.
pub fn linear(weights: &Weights, name: &str, input: usize, output: usize) -> Result<Linear> {
    let name = format!("{name}.weight");
    if weights.bf16_matrices() {
        return Ok(Linear::Bf16(Arc::new(
            weights.get_bf16(&name, output, input)?,
        )));
    }
    Linear::from_weight(&weights.get(&name, &[output, input])?)
}

/// Root-mean-square normalisation over the last axis: `x / sqrt(mean(x^2) + eps) * w`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// Loads `{name}.weight` of shape `(size,)`.
    pub fn new(weights: &Weights, name: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: weights.get(&format!("{name}.weight"), &[size])?,
            eps: eps as f32,
        })
    }

    /// Normalises the last axis of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}
