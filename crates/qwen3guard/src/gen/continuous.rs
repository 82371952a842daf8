//! Continuous batching: Gen requests join and leave a running batch between rounds.
//!
//! [`GenGuard::moderate_batch`] runs a fixed set of requests to completion; a server
//! cannot wait for that, since requests arrive while others are decoding. A [`GenBatch`]
//! takes requests at any time ([`GenBatch::add`]), runs one round of every request's
//! next step in shared passes ([`GenBatch::step`]) and hands back those that finished,
//! so a new request waits one round, not a whole batch. Long prompts advance one chunk a
//! round, so they do not hold up the short requests beside them. A request's result does
//! not depend on what else is in the batch or when it joined: every row's sums run in
//! the same order as alone.

use crate::error::{Error, Result};
use crate::prompt::Conversation;

use super::batch::run_round;
use super::decoder::Decoder;
use super::{GenGuard, GenOptions, GenVerdict};

/// Names one request of a [`GenBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// What a running request keeps beside its decoder.
struct Request {
    ticket: Ticket,
    options: GenOptions,
}

/// A running batch of Gen requests (see the module documentation).
pub struct GenBatch<'g> {
    guard: &'g GenGuard,
    requests: Vec<Request>,
    decoders: Vec<Decoder<'g>>,
    errors: Vec<Option<Error>>,
    next: u64,
}

impl GenGuard {
    /// An empty running batch on this model.
    pub fn batch(&self) -> GenBatch<'_> {
        GenBatch {
            guard: self,
            requests: Vec::new(),
            decoders: Vec::new(),
            errors: Vec::new(),
            next: 0,
        }
    }
}

impl<'g> GenBatch<'g> {
    /// Adds a request; it runs from the next [`Self::step`] on. A request that cannot run
    /// (too long for the context, say) is refused here and the batch is unchanged.
    pub fn add(&mut self, conversation: &Conversation, options: &GenOptions) -> Result<Ticket> {
        let decoder = self.guard.prepare(conversation, options)?;
        let ticket = Ticket(self.next);
        self.next += 1;
        self.requests.push(Request {
            ticket,
            options: *options,
        });
        self.decoders.push(decoder);
        self.errors.push(None);
        Ok(ticket)
    }

    /// Requests in the batch, finished ones not yet handed back included.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether the batch holds no request.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Drops a request (its client went away); `false` if the batch does not hold it.
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        match self.requests.iter().position(|r| r.ticket == ticket) {
            Some(i) => {
                self.remove(i);
                true
            }
            None => false,
        }
    }

    /// Runs one round (the next step of every request, in shared passes) and returns the
    /// requests that are over, with their verdicts or errors, in the order they were
    /// added. Once every request is over, a call runs nothing and returns the rest.
    pub fn step(&mut self) -> Vec<(Ticket, Result<GenVerdict>)> {
        let model = &*self.guard.model;
        run_round(model, &mut self.decoders, &mut self.errors);
        let mut over = Vec::new();
        let mut i = 0;
        while i < self.requests.len() {
            if self.errors[i].is_some() || self.decoders[i].is_done() {
                let (request, decoder, error) = self.remove(i);
                let result = match error {
                    Some(err) => Err(err),
                    None => model.conclude(decoder, &request.options),
                };
                over.push((request.ticket, result));
            } else {
                i += 1;
            }
        }
        over
    }

    fn remove(&mut self, i: usize) -> (Request, Decoder<'g>, Option<Error>) {
        (
            self.requests.remove(i),
            self.decoders.remove(i),
            self.errors.remove(i),
        )
    }
}
