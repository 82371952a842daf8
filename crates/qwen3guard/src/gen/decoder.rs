//! One moderation's decoding as a sequence of steps.
//!
//! Each step says which tokens to run next and how many of their final rows it needs
//! ([`Decoder::step`]); whoever drives it runs them, possibly in one pass with other
//! moderations' steps ([`super::batch`]), and hands the rows back ([`Decoder::finish`]).
//! Keeping the forward passes outside is what lets several requests share them.

use crate::error::Result;
use crate::model::{KvCache, FORWARD_CHUNK};
use crate::policy::Severity;

use super::draft::{Cursor, FormatTrie};
use super::{argmax, GenModel, Scores};

/// Prompt tokens one step runs at most. A longer prompt takes several steps, so that a
/// driver batching it with short requests serves them between its chunks instead of
/// after its whole prefill. The backbone's own chunk: its sums run in the same order
/// whatever the chunk, so a chunked prompt gives the same results as a whole one.
pub(super) const PREFILL_CHUNK: usize = FORWARD_CHUNK;

/// Where a decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Verdict-only: the prompt runs with `Safety:` forced after it; decoding goes on
    /// afterwards only for a label other than Safe, or always with `categories`.
    Verdict { categories: bool },
    /// Greedy decoding, with the answer's fixed words drafted if `drafts` is set.
    Decode,
    /// The answer did not start with `Safety:`, so its label scores are read teacher-forced:
    /// `Safety:` runs after the prompt's cache in one more step. A step like any other, so
    /// that a batch's requests score together instead of one after another at the end.
    Score,
    /// Nothing more to run.
    Done,
}

/// The tokens one step runs and what it needs back.
#[derive(Debug)]
pub(super) struct Step {
    /// Token ids to run after the decoder's cache.
    pub feed: Vec<u32>,
    /// How many final hidden rows (the last ones) the step needs.
    pub rows: usize,
    /// Whether it also needs those rows' logits over the whole vocabulary.
    pub logits: bool,
}

/// One decoding run's state.
pub(super) struct Decoder<'m> {
    model: &'m GenModel,
    /// The sequence's cache; the driver runs each step's feed on it.
    pub cache: KvCache,
    /// Tokens generated so far.
    pub generated: Vec<u32>,
    /// Label scores, once read.
    pub scores: Option<Scores>,
    max_new_tokens: usize,
    /// Decoding passes run (for tests and diagnostics).
    pub steps: usize,
    format: &'m FormatTrie,
    drafts: bool,
    phase: Phase,
    /// Tokens not yet in the cache; the last is the last prompt or generated token.
    pending: Vec<u32>,
    cursor: Cursor,
    /// The step in flight: the cache length before it and the tokens it drafted.
    base: usize,
    draft: Vec<u32>,
    /// The step in flight is a chunk of the prompt (nothing to read back).
    prefilling: bool,
    /// The prompt's length and its ids not in the cache at the start (what a
    /// [`Phase::Score`] step may have to run again before `Safety:`).
    prompt_len: usize,
    prompt_tail: Vec<u32>,
}

impl<'m> Decoder<'m> {
    /// A decoding of up to `max_new_tokens` tokens after `pending` (the prompt's tokens
    /// not in `cache`); `verdict` is `Some(categories)` for verdict-only mode.
    pub fn new(
        model: &'m GenModel,
        cache: KvCache,
        pending: Vec<u32>,
        format: &'m FormatTrie,
        (max_new_tokens, drafts, verdict): (usize, bool, Option<bool>),
    ) -> Self {
        Decoder {
            model,
            generated: Vec::new(),
            scores: None,
            max_new_tokens,
            steps: 0,
            format,
            drafts,
            phase: match verdict {
                Some(categories) => Phase::Verdict { categories },
                None => Phase::Decode,
            },
            cursor: format.root(),
            base: 0,
            draft: Vec::new(),
            prefilling: false,
            prompt_len: cache.len() + pending.len(),
            prompt_tail: pending.clone(),
            cache,
            pending,
        }
    }

    /// The prompt's length in tokens (cached ones included).
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Whether the decoding is over (its next [`Self::step`] is `None`).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The next step to run, or `None` when the decoding is over.
    pub fn step(&mut self) -> Option<Step> {
        let m = self.model;
        let prompt_phase = matches!(self.phase, Phase::Verdict { .. } | Phase::Decode);
        if prompt_phase && self.pending.len() > PREFILL_CHUNK {
            self.prefilling = true;
            return Some(Step {
                feed: self.pending[..PREFILL_CHUNK].to_vec(),
                rows: 0,
                logits: false,
            });
        }
        match self.phase {
            Phase::Done => None,
            Phase::Verdict { .. } => {
                let mut feed = self.pending.clone();
                feed.extend(m.spec.safety_prefix());
                Some(Step {
                    feed,
                    rows: 1,
                    logits: false,
                })
            }
            Phase::Decode => {
                let max = m.backbone.config().max_position_embeddings;
                let used = self.cache.len() + self.pending.len();
                if self.generated.len() >= self.max_new_tokens || used > max {
                    self.end_decoding();
                    return self.step();
                }
                let budget = self.max_new_tokens - self.generated.len();
                self.draft = if self.drafts {
                    self.format.draft(self.cursor, (budget - 1).min(max - used))
                } else {
                    Vec::new()
                };
                self.base = self.cache.len();
                let mut feed = self.pending.clone();
                feed.extend(&self.draft);
                // Logits at the last pending position and at every draft position.
                Some(Step {
                    feed,
                    rows: self.draft.len() + 1,
                    logits: true,
                })
            }
            Phase::Score => {
                // Back to the prompt (whatever part of it is not cached runs first).
                let have = self.cache.len().min(self.prompt_len);
                self.cache.truncate(have);
                let skip = self
                    .prompt_tail
                    .len()
                    .saturating_sub(self.prompt_len - have);
                let mut feed = self.prompt_tail[skip..].to_vec();
                feed.extend(m.spec.safety_prefix());
                Some(Step {
                    feed,
                    rows: 1,
                    logits: false,
                })
            }
        }
    }

    /// Decoding is over: the verdict still needs its label scores unless the answer gave
    /// them (it started with `Safety:`).
    fn end_decoding(&mut self) {
        self.phase = if self.scores.is_some() {
            Phase::Done
        } else {
            Phase::Score
        };
    }

    /// Takes the results of the step [`Self::step`] returned, after its feed ran on the
    /// cache: its final hidden rows, and their logits if the step asked for them.
    pub fn finish(&mut self, hidden: &[Vec<f32>], logits: &[Vec<f32>]) -> Result<()> {
        if std::mem::take(&mut self.prefilling) {
            self.pending.drain(..PREFILL_CHUNK);
            return Ok(());
        }
        match self.phase {
            Phase::Verdict { categories } => self.finish_verdict(hidden, categories),
            Phase::Decode => {
                self.finish_decode(logits);
                Ok(())
            }
            Phase::Score => {
                self.phase = Phase::Done;
                if let Some(last) = hidden.last() {
                    self.scores = Some(self.label_scores_at(last)?);
                }
                Ok(())
            }
            Phase::Done => Ok(()),
        }
    }

    /// The verdict pass: the three label logits alone decide a Safe verdict; the whole
    /// vocabulary is projected only when decoding goes on.
    fn finish_verdict(&mut self, hidden: &[Vec<f32>], categories: bool) -> Result<()> {
        let m = self.model;
        self.phase = Phase::Done;
        let Some(last) = hidden.last() else {
            return Ok(());
        };
        let scores = self.label_scores_at(last)?;
        self.scores = Some(scores);
        if (scores.best() == Severity::Safe && !categories) || self.max_new_tokens == 0 {
            return Ok(());
        }
        self.generated = m.spec.safety_prefix().to_vec();
        let Some(logits) = m.vocabulary_logits([last.as_slice()])?.pop() else {
            return Ok(());
        };
        let next = self.choose(&logits);
        if !m.spec.stop_ids().contains(&next) {
            self.cursor = self
                .generated
                .iter()
                .fold(self.format.root(), |c, &id| self.format.advance(c, id));
            self.pending = vec![next];
            self.phase = Phase::Decode;
        }
        Ok(())
    }

    /// The label scores at the final hidden `row` of `Safety:`: the three label logits
    /// alone (a softmax over the vocabulary renormalised over the labels equals a softmax
    /// over their logits).
    fn label_scores_at(&self, row: &[f32]) -> Result<Scores> {
        let m = self.model;
        let labels = m.lm_head.select(row, &m.spec.label_ids())?;
        Ok(Scores::from_logits([labels[0], labels[1], labels[2]]))
    }

    /// A decoding pass: keeps the drafted tokens greedy decoding confirms.
    fn finish_decode(&mut self, logits: &[Vec<f32>]) {
        let m = self.model;
        self.steps += 1;
        let mut accepted = 0;
        let mut stopped = false;
        let draft = std::mem::take(&mut self.draft);
        let expected = draft.iter().copied().map(Some).chain([None]);
        for (row, expected) in logits.iter().zip(expected) {
            let next = self.choose(row);
            self.cursor = self.format.advance(self.cursor, next);
            if m.spec.stop_ids().contains(&next) || self.generated.len() >= self.max_new_tokens {
                stopped = true;
                break;
            }
            if expected != Some(next) {
                break;
            }
            accepted += 1;
        }
        // Keep the cache entries of the pending tokens and of confirmed drafts only.
        self.cache
            .truncate(self.base + self.pending.len() + accepted);
        if stopped {
            self.end_decoding();
            return;
        }
        self.pending = self
            .generated
            .last()
            .map(|&id| vec![id])
            .unwrap_or_default();
    }

    /// Greedy choice from `logits`, capturing the label scores when the answer so far is
    /// exactly `Safety:`.
    fn choose(&mut self, logits: &[f32]) -> u32 {
        let m = self.model;
        if self.scores.is_none() && self.generated == m.spec.safety_prefix() {
            self.scores = Some(m.label_scores(logits));
        }
        let next = argmax(logits);
        self.generated.push(next);
        next
    }
}
