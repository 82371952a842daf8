//! Rotary position embeddings (RoPE), non-interleaved as in Qwen3.
//!
//! The tables are computed in f32 exactly as transformers does (inverse frequencies
//! `1 / theta^(2i/d)` in f32, then `cos`/`sin` of position times frequency), then cast to
//! the compute dtype, so that f32 results match the reference to rounding.

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Qwen3Config;
use crate::error::Result;

/// Cosine and sine tables of shape `(max_positions, head_dim / 2)`.
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// Tables for every position up to `max_position_embeddings`.
    pub fn new(cfg: &Qwen3Config, dtype: DType, device: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let theta = cfg.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / cfg.head_dim as f32))
            .collect();
        let positions = cfg.max_position_embeddings;
        let mut angles = Vec::with_capacity(positions * half);
        for p in 0..positions {
            angles.extend(inv_freq.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (positions, half), device)?;
        Ok(Rotary {
            cos: angles.cos()?.to_dtype(dtype)?,
            sin: angles.sin()?.to_dtype(dtype)?,
        })
    }

    /// Rotates `x` of shape `(B, heads, L, head_dim)` whose first position is `offset`.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let len = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, len)?;
        let sin = self.sin.narrow(0, offset, len)?;
        Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
    }
}
