//! One pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.

use candle_core::Tensor;

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::Result;
use crate::model::{Attention, KvCache, Mlp, RmsNorm, Rotary};

/// `model.layers.{i}`.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    /// Loads layer `prefix` (e.g. `model.layers.3`).
    pub fn new(cfg: &Qwen3Config, weights: &Weights, prefix: &str) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::new(weights, &format!("{prefix}.input_layernorm"), h, eps)?,
            self_attn: Attention::new(cfg, weights, &format!("{prefix}.self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                weights,
                &format!("{prefix}.post_attention_layernorm"),
                h,
                eps,
            )?,
            mlp: Mlp::new(cfg, weights, &format!("{prefix}.mlp"))?,
        })
    }

    /// `(1, L, hidden) -> (1, L, hidden)`; appends this layer's keys and values to `cache`.
    pub fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: &mut KvCache,
        index: usize,
    ) -> Result<Tensor> {
        let attn = self.self_attn.forward(
            &self.input_layernorm.forward(x)?,
            rotary,
            cache,
            index,
        )?;
        let x = (x + attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok((x + mlp)?)
    }
}
