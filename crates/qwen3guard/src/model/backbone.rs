//! The Qwen3 decoder stack shared by both variants: embeddings, layers, final norm.

use candle_core::{Device, Tensor};

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::{Error, Result};
use crate::model::{DecoderLayer, Embedding, KvCache, KvPrecision, RmsNorm, Rotary};

/// Positions run by one pass through the layers; longer inputs run in chunks of this many.
const FORWARD_CHUNK: usize = 256;

/// `model.*` of a Qwen3 checkpoint. Immutable once loaded: per-sequence state lives in the
/// caller's [`KvCache`], so one backbone serves many sequences at once.
#[derive(Debug, Clone)]
pub struct Backbone {
    embed_tokens: Embedding,
    device: Device,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rotary: Rotary,
    kv_precision: KvPrecision,
    cfg: Qwen3Config,
}

impl Backbone {
    /// Loads `model.embed_tokens`, `model.layers.*` and `model.norm`.
    pub fn new(cfg: &Qwen3Config, weights: &Weights) -> Result<Self> {
        let embed_tokens = Embedding::new(
            weights,
            "model.embed_tokens.weight",
            cfg.vocab_size,
            cfg.hidden_size,
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, weights, &format!("model.layers.{i}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Backbone {
            embed_tokens,
            device: weights.device().clone(),
            layers,
            norm: RmsNorm::new(weights, "model.norm", cfg.hidden_size, cfg.rms_norm_eps)?,
            rotary: Rotary::new(cfg),
            kv_precision: weights.kv_precision(),
            cfg: cfg.clone(),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Qwen3Config {
        &self.cfg
    }

    /// The embedding table; a tied `lm_head` reuses it.
    pub fn embeddings(&self) -> &Embedding {
        &self.embed_tokens
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        let cfg = &self.cfg;
        KvCache::new(
            self.layers.len(),
            cfg.num_key_value_heads,
            cfg.head_dim,
            self.kv_precision,
        )
    }

    /// Runs `ids` as the positions after those already in `cache` and returns the final
    /// hidden states `(len, hidden)` (after `model.norm`). The cache grows by `ids.len()`.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let offset = cache.len();
        let len = ids.len();
        if len == 0 {
            return Err(Error::Session("no tokens to process".into()));
        }
        let max = self.cfg.max_position_embeddings;
        if offset + len > max {
            return Err(Error::ContextTooLong {
                tokens: offset + len,
                max,
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        // Long inputs run in chunks: the results are the same (every row's sums run in
        // the same order whatever the chunk), and the activations held at once stay
        // those of one chunk. On failure the cache is left as it was.
        let hidden = self.cfg.hidden_size;
        let mut out = Vec::with_capacity(len * hidden);
        for chunk in ids.chunks(FORWARD_CHUNK) {
            match self.forward_chunk(chunk, cache) {
                Ok(rows) => out.extend(rows),
                Err(err) => {
                    cache.truncate(offset);
                    return Err(err);
                }
            }
        }
        Ok(Tensor::from_vec(out, (len, hidden), &self.device)?)
    }

    /// One chunk of [`Self::forward`]: final hidden states as rows `(len, hidden)`.
    fn forward_chunk(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let (offset, len) = (cache.len(), ids.len());
        // 1. Embed: (L, hidden) rows.
        let mut x = self.embed_tokens.lookup_rows(ids)?;
        // 2. The layers, with the rotations of the new positions.
        let rope = self.rotary.tables(offset, len);
        for (i, layer) in self.layers.iter().enumerate() {
            layer.forward(&mut x, len, &rope, cache, i)?;
        }
        cache.advance(len);
        // 3. Final norm.
        Ok(self.norm.forward_rows(&x))
    }
}
