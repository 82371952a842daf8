//! One conversation being moderated as it streams.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{BatchItem, HeadOutput, KvCache};
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
        self.check_input(ids)?;
        let first = self.position();
        let hidden = self.model.backbone.forward(ids, &mut self.cache)?;
        let heads = match self.model.response_heads(&hidden) {
            Ok(out) => out,
            Err(e) => {
                self.cache.truncate(first);
                return Err(e);
            }
        };
        Ok(self.record(first, ids, heads))
    }

    /// Refuses `ids` past the model's context or outside its vocabulary, with the
    /// engine's own typed errors (the caller's mistake, not a model fault).
    fn check_input(&self, ids: &[u32]) -> Result<()> {
        let config = self.model.backbone.config();
        let max = config.max_position_embeddings;
        if self.position() + ids.len() > max {
            return Err(Error::ContextTooLong {
                tokens: self.position() + ids.len(),
                max,
            });
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= config.vocab_size) {
            return Err(Error::TokenOutOfVocabulary {
                id,
                vocab_size: config.vocab_size,
            });
        }
        Ok(())
    }

    /// Turns the head outputs of `ids`, run at positions from `first` on, into verdicts.
    fn record(&mut self, first: usize, ids: &[u32], heads: HeadOutput) -> &[TokenVerdict] {
        let HeadOutput { risk, category } = heads;
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
        &self.tokens[before..]
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

/// Appends `ids[i]` to `sessions[i]` for every `i` in one forward pass of `model` (see
/// [`super::StreamGuard::append_batch`]).
pub(crate) fn append_batch(
    model: &Arc<StreamModel>,
    sessions: &mut [&mut StreamSession],
    ids: &[&[u32]],
) -> Result<()> {
    if sessions.len() != ids.len() {
        return Err(Error::BatchShape {
            sessions: sessions.len(),
            lists: ids.len(),
        });
    }
    for session in sessions.iter() {
        if !Arc::ptr_eq(&session.model, model) {
            return Err(Error::ForeignSession);
        }
    }
    // Sessions with nothing to append sit the pass out.
    let mut work: Vec<(&mut StreamSession, &[u32])> = sessions
        .iter_mut()
        .zip(ids)
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(session, ids)| (&mut **session, *ids))
        .collect();
    for (session, ids) in &work {
        session.check_input(ids)?;
    }
    let firsts: Vec<usize> = work.iter().map(|(s, _)| s.position()).collect();
    let mut items: Vec<BatchItem<'_>> = work
        .iter_mut()
        .map(|(session, ids)| BatchItem {
            ids,
            cache: &mut session.cache,
        })
        .collect();
    let hidden = model.backbone.forward_batch(&mut items)?;
    drop(items);
    // Every head output first, so that a failure leaves every session unchanged.
    let heads = hidden
        .iter()
        .map(|h| model.response_heads(h))
        .collect::<Result<Vec<_>>>();
    let heads = match heads {
        Ok(heads) => heads,
        Err(e) => {
            for ((session, _), &first) in work.iter_mut().zip(&firsts) {
                session.cache.truncate(first);
            }
            return Err(e);
        }
    };
    for (((session, ids), first), out) in work.into_iter().zip(firsts).zip(heads) {
        session.record(first, ids, out);
    }
    Ok(())
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
