//! What a Stream session reports: per-token verdicts, the prompt verdict, the debounced
//! response verdict.

use serde::{Deserialize, Serialize};

use crate::policy::{Severity, SeverityProbs};

/// The three risk probabilities.
pub type RiskProbs = SeverityProbs;

/// The verdict of the response heads at one position.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenVerdict {
    /// Position in the whole rendered conversation.
    pub index: usize,
    /// The token at that position.
    pub token_id: u32,
    /// The token's text (lossy where a token splits a character).
    pub text: String,
    /// Most probable risk level.
    pub risk_level: Severity,
    /// All three risk probabilities.
    pub risk_probs: RiskProbs,
    /// Most probable category (whatever the risk level; meaningful when not Safe).
    pub category: String,
    /// Its probability.
    pub category_prob: f32,
    /// The full category distribution, in the config's label order.
    #[serde(skip)]
    pub category_probs: Vec<f32>,
}

/// The query heads' verdict on the prompt, read at the `<|im_end|>` closing the user turn.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptVerdict {
    /// Most probable risk level.
    pub risk_level: Severity,
    /// All three risk probabilities.
    pub risk_probs: RiskProbs,
    /// Most probable category.
    pub category: String,
    /// Its probability.
    pub category_prob: f32,
    /// Position of that `<|im_end|>`.
    pub token_index: usize,
    /// The full category distribution, in the config's label order.
    #[serde(skip)]
    pub category_probs: Vec<f32>,
}

/// The debounced verdict on the response so far (the official evaluation's rule).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseVerdict {
    /// Unsafe if a pair of consecutive Unsafe tokens occurred, else Controversial if a
    /// pair of consecutive Controversial tokens did, else Safe.
    pub risk_level: Severity,
    /// The category at the flagged token; `None` when Safe.
    pub category: Option<String>,
    /// Position of the second token of the pair; `None` when Safe.
    pub flagged_at: Option<usize>,
}

/// A whole conversation moderated as a stream (the `stream --json` document).
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Verdict on the last user turn.
    pub prompt: PromptVerdict,
    /// First position of the assistant's own text; `None` without a response.
    pub response_start_index: Option<usize>,
    /// Every position from `response_start_index` to the end.
    pub tokens: Vec<TokenVerdict>,
    /// The debounced verdict over `tokens`; `None` without a response.
    pub response: Option<ResponseVerdict>,
}
