//! One pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.

use rayon::prelude::*;

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::Result;
use crate::model::backbone::Segment;
use crate::model::{Attention, Mlp, RmsNorm};

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

    /// Runs the rows `x (rows, hidden)` (row-major, updated in place) of one or more
    /// sequences, `segments` saying whose rows they are in order; appends this layer's
    /// keys and values to each sequence's cache.
    ///
    /// Only each segment's last `keep` rows come out (all of them unless the caller needs
    /// fewer, as for the last layer of a Gen pass): the others' keys and values are
    /// cached, but their attention output and MLP are skipped.
    pub(crate) fn forward(
        &self,
        x: Vec<f32>,
        segments: &mut [Segment<'_>],
        index: usize,
    ) -> Result<Vec<f32>> {
        let normed = self.input_layernorm.forward_rows(&x);
        let attn = self.self_attn.forward(&normed, segments, index)?;
        let mut x = kept_rows(x, segments);
        add_assign(&mut x, &attn);
        let normed = self.post_attention_layernorm.forward_rows(&x);
        let rows = segments.iter().map(|s| s.keep).sum();
        let mlp = self.mlp.forward(&normed, rows)?;
        add_assign(&mut x, &mlp);
        Ok(x)
    }
}

/// The rows of `x` that each segment keeps (its last `keep`), in order.
fn kept_rows(x: Vec<f32>, segments: &[Segment<'_>]) -> Vec<f32> {
    if segments.iter().all(|s| s.keep == s.len) {
        return x;
    }
    let width = x.len() / segments.iter().map(|s| s.len).sum::<usize>().max(1);
    let mut kept = Vec::with_capacity(segments.iter().map(|s| s.keep).sum::<usize>() * width);
    let mut first = 0;
    for s in segments {
        kept.extend_from_slice(&x[(first + s.len - s.keep) * width..(first + s.len) * width]);
        first += s.len;
    }
    kept
}

/// `x += y`, the residual connections (in parallel blocks: a prompt's rows are megabytes).
fn add_assign(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}
