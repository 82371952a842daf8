//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use candle_core::Tensor;

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::Result;
use crate::model::{linear, Linear};

/// One layer's MLP (`model.layers.{i}.mlp`).
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    /// Loads `{prefix}.{gate,up,down}_proj.weight`.
    pub fn new(cfg: &Qwen3Config, weights: &Weights, prefix: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_proj: linear(weights, &format!("{prefix}.gate_proj"), h, i)?,
            up_proj: linear(weights, &format!("{prefix}.up_proj"), h, i)?,
            down_proj: linear(weights, &format!("{prefix}.down_proj"), i, h)?,
        })
    }

    /// `(B, L, hidden) -> (B, L, hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?.silu()?;
        let up = self.up_proj.forward(x)?;
        Ok(self.down_proj.forward(&(gate * up)?)?)
    }
}
