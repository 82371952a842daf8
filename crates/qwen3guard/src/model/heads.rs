//! What reads the backbone's hidden states: Gen's `lm_head` and Stream's classifier heads.

use candle_core::{DType, Tensor};

use crate::checkpoint::{GuardHeadsConfig, Qwen3Config, Weights};
use crate::error::Result;
use crate::model::backbone::EMBED_TOKENS;
use crate::model::{linear, Embedding, Linear, RmsNorm};

/// Gen's output projection to the vocabulary (tied to the embeddings or its own).
#[derive(Debug, Clone)]
pub struct LmHead {
    proj: Linear,
}

impl LmHead {
    /// `lm_head.weight`, or the `embeddings` when `tie_word_embeddings` is set.
    pub fn new(cfg: &Qwen3Config, weights: &Weights, embeddings: &Embedding) -> Result<Self> {
        let (hidden, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let proj = match (cfg.tie_word_embeddings, embeddings) {
            (true, Embedding::Dense(table)) => Linear::from_weight(table)?,
            // The lookups read rows from the file; the product needs the whole table packed.
            (true, Embedding::File(_)) => linear(weights, EMBED_TOKENS, hidden, vocab)?,
            (false, _) => linear(weights, "lm_head", hidden, vocab)?,
        };
        Ok(LmHead { proj })
    }

    /// The logits of tokens `ids` only, for one final hidden state `hidden`, equal to the
    /// full projection's (`f32::MIN` for an id outside the vocabulary).
    pub fn select(&self, hidden: &[f32], ids: &[u32]) -> Result<Vec<f32>> {
        let ids: Vec<usize> = ids.iter().map(|&id| id as usize).collect();
        self.proj.select(hidden, &ids)
    }

    /// `(n, hidden) -> (n, vocab)` logits in f32.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.proj.forward(hidden)?.to_dtype(DType::F32)?)
    }
}

/// Per-position probabilities from one classifier pair.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// `(n, risk levels)`, each row a distribution.
    pub risk: Vec<Vec<f32>>,
    /// `(n, categories)`, each row a distribution.
    pub category: Vec<Vec<f32>>,
}

/// One classifier pair (paper Eq. 3): `x = RMSNorm(W_pre h)`, `risk = softmax(W_risk x)`,
/// `category = softmax(W_cat x)`.
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    pre: Linear,
    norm: RmsNorm,
    risk: Linear,
    category: Linear,
}

impl ClassifierHead {
    /// Loads `{prefix}risk_level_category_pre`, `..._layernorm`, and the two output heads
    /// `{prefix}risk_level_head` and `spec.category_head`.
    fn new(
        weights: &Weights,
        spec: HeadSpec<'_>,
        hidden: usize,
        inner: usize,
        eps: f64,
    ) -> Result<Self> {
        let HeadSpec {
            prefix,
            category_head: category_name,
            risk_levels,
            categories,
        } = spec;
        Ok(ClassifierHead {
            pre: linear(
                weights,
                &format!("{prefix}risk_level_category_pre"),
                hidden,
                inner,
            )?,
            norm: RmsNorm::new(
                weights,
                &format!("{prefix}risk_level_category_layernorm"),
                inner,
                eps,
            )?,
            risk: linear(
                weights,
                &format!("{prefix}risk_level_head"),
                inner,
                risk_levels,
            )?,
            category: linear(weights, category_name, inner, categories)?,
        })
    }

    /// `(n, hidden)` hidden states -> per-position distributions.
    pub fn forward(&self, hidden: &Tensor) -> Result<HeadOutput> {
        let x = self.norm.forward(&self.pre.forward(hidden)?)?;
        let probs = |head: &Linear| -> Result<Vec<Vec<f32>>> {
            let logits = head.forward(&x)?.to_dtype(DType::F32)?;
            Ok(candle_nn::ops::softmax_last_dim(&logits)?.to_vec2()?)
        };
        Ok(HeadOutput {
            risk: probs(&self.risk)?,
            category: probs(&self.category)?,
        })
    }
}

/// Names and sizes of one classifier pair.
struct HeadSpec<'a> {
    prefix: &'a str,
    category_head: &'a str,
    risk_levels: usize,
    categories: usize,
}

/// Stream's two classifier pairs: one for response tokens, one for the prompt.
#[derive(Debug, Clone)]
pub struct GuardHeads {
    /// Reads assistant tokens.
    pub response: ClassifierHead,
    /// Reads the `<|im_end|>` closing the user turn.
    pub query: ClassifierHead,
}

impl GuardHeads {
    /// Loads both pairs with the sizes from the config.
    pub fn new(cfg: &Qwen3Config, heads: &GuardHeadsConfig, weights: &Weights) -> Result<Self> {
        let (hidden, inner, eps) = (cfg.hidden_size, heads.guard_inner_size, cfg.rms_norm_eps);
        Ok(GuardHeads {
            response: ClassifierHead::new(
                weights,
                HeadSpec {
                    prefix: "",
                    category_head: "category_head",
                    risk_levels: heads.response_risk.len(),
                    categories: heads.response_category.len(),
                },
                hidden,
                inner,
                eps,
            )?,
            query: ClassifierHead::new(
                weights,
                HeadSpec {
                    prefix: "query_",
                    category_head: "query_category_head",
                    risk_levels: heads.query_risk.len(),
                    categories: heads.query_category.len(),
                },
                hidden,
                inner,
                eps,
            )?,
        })
    }
}
