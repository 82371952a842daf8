//! The Qwen3 decoder stack shared by both variants: embeddings, layers, final norm.

use candle_core::{Device, Tensor};

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::{Error, Result};
use crate::model::rotary::RopeTables;
use crate::model::{DecoderLayer, Embedding, KvCache, KvPrecision, RmsNorm, Rotary};

/// The checkpoint name of the token embeddings (the tensor is `{EMBED_TOKENS}.weight`),
/// which a tied `lm_head` reads too.
pub(crate) const EMBED_TOKENS: &str = "model.embed_tokens";

/// Positions run by one pass through the layers; longer inputs run in chunks of this many.
pub(crate) const FORWARD_CHUNK: usize = 256;

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
        Self::with_embeddings(cfg, weights, Self::load_embeddings(cfg, weights)?)
    }

    /// `model.embed_tokens`, for a caller that needs it before the layers are loaded.
    pub fn load_embeddings(cfg: &Qwen3Config, weights: &Weights) -> Result<Embedding> {
        Embedding::new(
            weights,
            &format!("{EMBED_TOKENS}.weight"),
            cfg.vocab_size,
            cfg.hidden_size,
        )
    }

    /// Loads `model.layers.*` and `model.norm` around `embed_tokens`.
    pub fn with_embeddings(
        cfg: &Qwen3Config,
        weights: &Weights,
        embed_tokens: Embedding,
    ) -> Result<Self> {
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
        self.check(ids, cache)?;
        // Long inputs run in chunks: the results are the same (every row's sums run in
        // the same order whatever the chunk), and the activations held at once stay
        // those of one chunk. On failure the cache is left as it was.
        let offset = cache.len();
        let mut out = Vec::with_capacity(ids.len() * self.cfg.hidden_size);
        for chunk in ids.chunks(FORWARD_CHUNK) {
            let mut item = [BatchItem {
                ids: chunk,
                cache: &mut *cache,
            }];
            match self.forward_rows(&mut item, &[chunk.len()]) {
                Ok(mut rows) => out.append(&mut rows[0]),
                Err(err) => {
                    item[0].cache.truncate(offset);
                    return Err(err);
                }
            }
        }
        Ok(Tensor::from_vec(
            out,
            (ids.len(), self.cfg.hidden_size),
            &self.device,
        )?)
    }

    /// Runs several sequences' new positions in one pass: every weight product takes all
    /// their rows at once (the weights are read once for the batch), attention stays per
    /// sequence. Returns each item's final hidden states `(len, hidden)`, equal to what
    /// [`Self::forward`] gives for it alone. On failure every cache is left as it was.
    ///
    /// Nothing is chunked here: the caller (a scheduler) sizes the batch.
    pub fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Tensor>> {
        let keep: Vec<usize> = items.iter().map(|item| item.ids.len()).collect();
        let hidden = self.cfg.hidden_size;
        self.forward_batch_last(items, &keep)?
            .into_iter()
            .map(|r| {
                let len = r.len() / hidden;
                Ok(Tensor::from_vec(r, (len, hidden), &self.device)?)
            })
            .collect()
    }

    /// Like [`Self::forward_batch`], but returns only the final hidden states of each
    /// item's last `keep[i]` positions, row-major `(keep[i], hidden)`, equal to those rows
    /// of its full result (the last layer skips the other positions, as in
    /// [`Self::forward_last`]). On failure every cache is left as it was.
    pub fn forward_batch_last(
        &self,
        items: &mut [BatchItem<'_>],
        keep: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if keep.len() != items.len() {
            return Err(Error::Session(format!(
                "{} row counts for a batch of {} sequences",
                keep.len(),
                items.len()
            )));
        }
        for item in items.iter() {
            self.check(item.ids, item.cache)?;
        }
        let keep: Vec<usize> = items
            .iter()
            .zip(keep)
            .map(|(item, &k)| k.min(item.ids.len()))
            .collect();
        let offsets: Vec<usize> = items.iter().map(|item| item.cache.len()).collect();
        self.forward_rows(items, &keep).inspect_err(|_| {
            for (item, &offset) in items.iter_mut().zip(&offsets) {
                item.cache.truncate(offset);
            }
        })
    }

    /// Rejects input the model cannot run after `cache`.
    fn check(&self, ids: &[u32], cache: &KvCache) -> Result<()> {
        let (offset, len) = (cache.len(), ids.len());
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
        Ok(())
    }

    /// Like [`Self::forward`], but returns only the final hidden states of the last
    /// `count` positions `(count, hidden)`, equal to those rows of the full result: the
    /// last layer skips the attention output and MLP of the other positions (their keys
    /// and values are cached all the same). A Gen pass needs one row or a few.
    pub fn forward_last(&self, ids: &[u32], cache: &mut KvCache, count: usize) -> Result<Tensor> {
        self.check(ids, cache)?;
        let count = count.min(ids.len());
        let last_chunk = (ids.len() - 1) % FORWARD_CHUNK + 1;
        if count > last_chunk {
            // The rows span two chunks (rare: a long draft right at a chunk's edge).
            let all = self.forward(ids, cache)?;
            return Ok(all.narrow(0, ids.len() - count, count)?);
        }
        let offset = cache.len();
        let chunks = ids.len().div_ceil(FORWARD_CHUNK);
        let mut rows = Vec::new();
        for (i, chunk) in ids.chunks(FORWARD_CHUNK).enumerate() {
            // Only the last chunk's last rows are wanted.
            let keep = if i + 1 == chunks { count } else { 0 };
            let mut item = [BatchItem {
                ids: chunk,
                cache: &mut *cache,
            }];
            match self.forward_rows(&mut item, &[keep]) {
                Ok(mut out) => rows = out.remove(0),
                Err(err) => {
                    item[0].cache.truncate(offset);
                    return Err(err);
                }
            }
        }
        Ok(Tensor::from_vec(
            rows,
            (count, self.cfg.hidden_size),
            &self.device,
        )?)
    }

    /// One pass through the layers for checked items: final hidden states of each item's
    /// last `keep[i]` rows. Caches may hold partial writes past their length on failure.
    fn forward_rows(&self, items: &mut [BatchItem<'_>], keep: &[usize]) -> Result<Vec<Vec<f32>>> {
        // 1. Embed every item's ids: rows (total, hidden), item after item.
        let mut x = Vec::new();
        for item in items.iter() {
            x.extend(self.embed_tokens.lookup_rows(item.ids)?);
        }
        // 2. The layers, each item with the rotations of its own positions.
        let mut segments: Vec<Segment<'_>> = items
            .iter_mut()
            .map(|item| Segment {
                len: item.ids.len(),
                keep: item.ids.len(),
                rope: self.rotary.tables(item.cache.len(), item.ids.len()),
                cache: &mut *item.cache,
            })
            .collect();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            if i == last {
                for (segment, &k) in segments.iter_mut().zip(keep) {
                    segment.keep = k.min(segment.len);
                }
            }
            x = layer.forward(x, &mut segments, i)?;
        }
        for segment in &mut segments {
            segment.cache.advance(segment.len);
        }
        // 3. Final norm, split back per item.
        let hidden = self.cfg.hidden_size;
        let normed = self.norm.forward_rows(&x);
        let mut rest = normed.as_slice();
        Ok(segments
            .iter()
            .map(|segment| {
                let (mine, tail) = rest.split_at(segment.keep * hidden);
                rest = tail;
                mine.to_vec()
            })
            .collect())
    }
}

/// One sequence's share of a batched forward pass: its new token ids and its cache.
#[derive(Debug)]
pub struct BatchItem<'a> {
    /// Token ids to run after the cached positions.
    pub ids: &'a [u32],
    /// The sequence's cache; it grows by `ids.len()`.
    pub cache: &'a mut KvCache,
}

/// An item's rows inside one pass through the layers.
pub(crate) struct Segment<'a> {
    /// Rows (new positions) of this sequence.
    pub len: usize,
    /// Its last rows whose outputs a layer computes (`len` but in a pruned last layer).
    pub keep: usize,
    /// Rotations of those positions.
    pub rope: RopeTables,
    /// The sequence's cache.
    pub cache: &'a mut KvCache,
}
