//! The Gen lane: Gen requests on one continuous batch ([`qwen3guard::gen::GenBatch`]).
//!
//! Requests wait in arrival order until the batch has room (`--max-batch`), join it
//! between rounds, and leave it when their verdict is ready; a request whose client went
//! away is cancelled before its next round. Category scores (for `/v1/moderations`) are
//! one more pass over the finished request's prompt and label.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use qwen3guard::gen::{CategoryScore, GenBatch, Ticket};
use qwen3guard::{Conversation, GenGuard, GenOptions, GenVerdict};

use super::Reply;
use crate::http::AppError;
use crate::metrics::Metrics;

/// A Gen result, with category scores when they were asked for.
#[derive(Debug, Clone)]
pub struct GenOutcome {
    /// The verdict, as the library gives it.
    pub verdict: GenVerdict,
    /// Per-category first-token probabilities after the verdict's label.
    pub category_scores: Option<Vec<CategoryScore>>,
}

/// One Gen request on the scheduler thread.
pub(super) struct GenJob {
    pub conversation: Conversation,
    pub options: GenOptions,
    pub category_scores: bool,
    pub reply: Reply<GenOutcome>,
}

/// The running batch and the requests waiting to join it.
pub(super) struct GenLane<'g> {
    guard: &'g GenGuard,
    batch: GenBatch<'g>,
    running: HashMap<Ticket, GenJob>,
    waiting: VecDeque<GenJob>,
    max_batch: usize,
}

impl<'g> GenLane<'g> {
    pub fn new(guard: &'g GenGuard, max_batch: usize) -> Self {
        GenLane {
            guard,
            batch: guard.batch(),
            running: HashMap::new(),
            waiting: VecDeque::new(),
            max_batch: max_batch.max(1),
        }
    }

    /// Whether any request is running or waiting.
    pub fn busy(&self) -> bool {
        !self.batch.is_empty() || !self.waiting.is_empty()
    }

    /// Queues a request; it joins the batch at the next round with room.
    pub fn push(&mut self, job: GenJob) {
        self.waiting.push_back(job);
    }

    /// Drops the requests nobody waits for, admits waiting ones, runs one round and
    /// answers the requests it finished.
    pub fn step(&mut self, metrics: &Metrics) {
        let batch = &mut self.batch;
        let before = self.running.len() + self.waiting.len();
        self.running.retain(|ticket, job| {
            let wanted = !job.reply.is_closed();
            if !wanted {
                batch.cancel(*ticket);
            }
            wanted
        });
        self.waiting.retain(|job| !job.reply.is_closed());
        let dropped = before - self.running.len() - self.waiting.len();
        metrics.cancelled.fetch_add(dropped, Ordering::Relaxed);
        while self.batch.len() < self.max_batch {
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            match self.batch.add(&job.conversation, &job.options) {
                Ok(ticket) => {
                    self.running.insert(ticket, job);
                }
                Err(e) => {
                    let _ = job.reply.send(Err(e.into()));
                }
            }
        }
        if self.batch.is_empty() {
            return;
        }
        metrics.batch("gen", self.batch.len());
        for (ticket, result) in self.batch.step() {
            let Some(job) = self.running.remove(&ticket) else {
                continue;
            };
            let outcome = result
                .map_err(AppError::from)
                .and_then(|verdict| self.outcome(&job, verdict, metrics));
            let _ = job.reply.send(outcome);
        }
    }

    fn outcome(
        &self,
        job: &GenJob,
        verdict: GenVerdict,
        metrics: &Metrics,
    ) -> Result<GenOutcome, AppError> {
        metrics.tokens(verdict.prompt_tokens + verdict.generated_token_ids.len());
        let category_scores = if job.category_scores {
            let label = verdict.safety.unwrap_or_else(|| verdict.scores.best());
            Some(self.guard.category_scores(&job.conversation, label)?)
        } else {
            None
        };
        Ok(GenOutcome {
            verdict,
            category_scores,
        })
    }
}
