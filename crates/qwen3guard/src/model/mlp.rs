//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use candle_core::{Tensor, D};

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::Result;
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

    /// `(B, L, hidden) -> (B, L, hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        let gate = gate_up.narrow(D::Minus1, 0, self.intermediate)?.silu()?;
        let up = gate_up.narrow(D::Minus1, self.intermediate, self.intermediate)?;
        self.down_proj.forward(&(gate * up)?)
    }
}
