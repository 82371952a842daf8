//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use rayon::prelude::*;

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::Result;
use crate::kernels::math::silu_mul;
use crate::model::{linear, stacked_linear, Linear};

/// One layer's MLP (`model.layers.{i}.mlp`).
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `gate_proj` and `up_proj` stacked: one product for both.
    gate_up: Linear,
    down_proj: Linear,
    intermediate: usize,
}

impl Mlp {
    /// Loads `{prefix}.{gate,up,down}_proj.weight`.
    pub fn new(cfg: &Qwen3Config, weights: &Weights, prefix: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (gate, up) = (format!("{prefix}.gate_proj"), format!("{prefix}.up_proj"));
        Ok(Mlp {
            gate_up: stacked_linear(weights, &[&gate, &up], h, &[i, i])?,
            down_proj: linear(weights, &format!("{prefix}.down_proj"), i, h)?,
            intermediate: i,
        })
    }

    /// `(L, hidden) -> (L, hidden)`, row-major.
    pub fn forward(&self, x: &[f32], len: usize) -> Result<Vec<f32>> {
        let i = self.intermediate;
        let gate_up = self.gate_up.forward_rows(x, len)?;
        let mut hidden = vec![0f32; len * i];
        hidden
            .par_chunks_mut(i)
            .zip(gate_up.par_chunks(2 * i))
            .for_each(|(out, row)| silu_mul(&row[..i], &row[i..], out));
        self.down_proj.forward_rows(&hidden, len)
    }
}
