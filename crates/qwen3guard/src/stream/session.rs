//! One conversation being moderated as it streams.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{HeadOutput, KvCache};
use crate::policy::{Mode, Severity};
use crate::stream::debounce::{Debouncer, Trigger};
use crate::stream::verdict::{
    PromptVerdict, ResponseVerdict, RiskProbs, StreamReport, TokenVerdict,
};
use crate::stream::StreamModel;

/// A conversation's cache and verdicts. Owns no global state: any number of sessions can
/// share one [`super::StreamGuard`], each used from one thread at a time, and a dropped
/// session frees its cache.
pub struct StreamSession {
    model: Arc<StreamModel>,
    cache: KvCache,
    prompt: PromptVerdict,
    /// Absolute position where the response's own text starts; tokens before it (the
    /// assistant header) are classified but not debounced.
    response_start: usize,
    tokens: Vec<TokenVerdict>,
    debouncer: Debouncer,
}

impl std::fmt::Debug for StreamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSession")
            .field("position", &self.position())
            .field("response_start", &self.response_start)
            .field("prompt", &self.prompt.risk_level)
            .field("verdict", &self.debouncer.official())
            .finish()
    }
}

impl StreamSession {
    /// Runs `prompt_ids` (ending with the user turn's `<|im_end|>`) and reads the query
    /// heads at the last position.
    pub(crate) fn open(model: Arc<StreamModel>, prompt_ids: &[u32]) -> Result<Self> {
        let mut cache = model.backbone.new_cache();
        let hidden = model.backbone.forward(prompt_ids, &mut cache)?;
        let last = prompt_ids.len() - 1;
        let out = model.query_heads(&hidden.narrow(0, last, 1)?)?;
        let (risk_level, risk_probs) = classify(&model.query_risk_rows, &out.risk[0]);
        let (category, category_prob) = best(&out.category[0]);
        let prompt = PromptVerdict {
            risk_level,
            risk_probs,
            category: model.labels.query_category.label(category).to_string(),
            category_prob,
            token_index: last,
            category_probs: out.category[0].clone(),
        };
        Ok(StreamSession {
            model,
            cache,
            prompt,
            response_start: prompt_ids.len(),
            tokens: Vec::new(),
            debouncer: Debouncer::new(),
        })
    }

    /// The prompt verdict.
    pub fn prompt_verdict(&self) -> &PromptVerdict {
        &self.prompt
    }

    /// Positions processed so far (the next token's index).
    pub fn position(&self) -> usize {
        self.cache.len()
    }

    /// Declares where the response's own text starts (default: right after the prompt).
    /// Only tokens from there on count for the response verdict.
    pub fn set_response_start(&mut self, index: usize) {
        self.response_start = index;
    }

    /// Appends the assistant header (see [`super::StreamGuard::assistant_header`]) and
    /// marks the response as starting after it.
    pub fn start_response(&mut self, header: &[u32]) -> Result<&[TokenVerdict]> {
        self.response_start = self.position() + header.len();
        self.append(header)
    }

    /// Runs `ids` as the next positions (one forward for all of them) and returns their
    /// verdicts. On error the session is unchanged.
    pub fn append(&mut self, ids: &[u32]) -> Result<&[TokenVerdict]> {
        if ids.is_empty() {
            return Ok(&[]);
        }
        let max = self.model.backbone.config().max_position_embeddings;
        if self.position() + ids.len() > max {
            return Err(Error::ContextTooLong {
                tokens: self.position() + ids.len(),
                max,
            });
        }
        let first = self.position();
        let hidden = self.model.backbone.forward(ids, &mut self.cache)?;
        let HeadOutput { risk, category } = match self.model.response_heads(&hidden) {
            Ok(out) => out,
            Err(e) => {
                self.cache.truncate(first);
                return Err(e);
            }
        };
        let tokenizer = self.model.prompter.tokenizer();
        let before = self.tokens.len();
        for (k, (&token_id, (risk, category_probs))) in
            ids.iter().zip(risk.into_iter().zip(category)).enumerate()
        {
            let index = first + k;
            let (risk_level, risk_probs) = classify(&self.model.response_risk_rows, &risk);
            let (cat, category_prob) = best(&category_probs);
            if index >= self.response_start {
                self.debouncer.push(index, risk_level);
            }
            self.tokens.push(TokenVerdict {
                index,
                token_id,
                text: tokenizer.token_text(token_id),
                risk_level,
                risk_probs,
                category: self.model.labels.response_category.label(cat).to_string(),
                category_prob,
                category_probs,
            });
        }
        Ok(&self.tokens[before..])
    }

    /// Every token appended so far, in order.
    pub fn tokens(&self) -> &[TokenVerdict] {
        &self.tokens
    }

    /// The official debounced verdict over the response so far.
    pub fn verdict(&self) -> ResponseVerdict {
        match self.debouncer.official() {
            Some(trigger) => self.flagged(trigger),
            None => ResponseVerdict {
                risk_level: Severity::Safe,
                category: None,
                flagged_at: None,
            },
        }
    }

    /// Where a deployment in `mode` must stop the stream, if it must.
    pub fn stop(&self, mode: Mode) -> Option<ResponseVerdict> {
        self.debouncer.stop(mode).map(|t| self.flagged(t))
    }

    /// The whole session as a report: tokens from the response start on.
    pub fn report(&self) -> StreamReport {
        let has_response = self.tokens.iter().any(|t| t.index >= self.response_start);
        StreamReport {
            prompt: self.prompt.clone(),
            response_start_index: has_response.then_some(self.response_start),
            tokens: self
                .tokens
                .iter()
                .filter(|t| t.index >= self.response_start)
                .cloned()
                .collect(),
            response: has_response.then(|| self.verdict()),
        }
    }

    fn flagged(&self, trigger: Trigger) -> ResponseVerdict {
        let category = self
            .tokens
            .iter()
            .find(|t| t.index == trigger.position)
            .map(|t| t.category.clone());
        ResponseVerdict {
            risk_level: trigger.severity,
            category,
            flagged_at: Some(trigger.position),
        }
    }
}

/// Argmax and the three named probabilities of a risk distribution.
fn classify(rows: &[usize; 3], probs: &[f32]) -> (Severity, RiskProbs) {
    let (argmax, _) = best(probs);
    let p = |row: usize| probs.get(row).copied().unwrap_or(0.0);
    (
        StreamModel::severity_of(rows, argmax),
        RiskProbs {
            safe: p(rows[0]),
            unsafe_: p(rows[1]),
            controversial: p(rows[2]),
        },
    )
}

/// Index and value of the largest entry (first on ties, like `torch.argmax`).
fn best(probs: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::MIN);
    for (i, &p) in probs.iter().enumerate() {
        if p > best.1 {
            best = (i, p);
        }
    }
    best
}
