//! How long a round waits for the appends that are about to come back.
//!
//! Streaming clients append, wait for the answer, and append again. When a round of `n`
//! appends is answered, those `n` clients send their next appends within moments, but the
//! thread is free at once: if it starts the next round with whatever has arrived, it runs
//! one or two stragglers alone while the rest queue behind them, and a steady load of `n`
//! sessions splits into a batch of `n - 1` and a batch of one, each paying a whole step
//! (measured: 32 sessions ran as 31 + 1, every step; docs/SERVING.md). So a
//! round that holds fewer appends than the last one answered waits a little for the rest,
//! never longer than a fraction of the step it saves, and a lone session never waits.

use std::time::{Duration, Instant};

/// The share of the last append step a round may wait: at most an eighth of a step's
/// latency is added, against a whole step saved when the rest arrive.
const WAIT_SHARE: u32 = 8;
/// The longest wait whatever the step's length.
const MAX_WAIT: Duration = Duration::from_millis(25);

/// What the last append step was: how many it answered and how long it ran.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Gather {
    answered: usize,
    step: Duration,
}

impl Gather {
    /// Records a step that answered `answered` appends in `step`.
    pub(super) fn answered(&mut self, answered: usize, step: Duration) {
        self.answered = answered;
        self.step = step;
    }

    /// The moment a round that already holds `waiting` appends stops waiting for more,
    /// if it waits at all (`started` is when it began gathering).
    pub(super) fn deadline(&self, waiting: usize, started: Instant) -> Option<Instant> {
        if waiting == 0 || waiting >= self.answered {
            return None;
        }
        let wait = (self.step / WAIT_SHARE).min(MAX_WAIT);
        (!wait.is_zero()).then(|| started + wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_for_appends_it_expects_and_briefly() {
        let now = Instant::now();
        let mut gather = Gather::default();
        // Nothing answered yet: nothing to wait for.
        assert_eq!(gather.deadline(1, now), None);
        gather.answered(32, Duration::from_millis(160));
        // A round of 31 after a step of 32 waits an eighth of the step.
        assert_eq!(
            gather.deadline(31, now),
            Some(now + Duration::from_millis(20))
        );
        // All back, or a round with no append at all (Gen only): no wait.
        assert_eq!(gather.deadline(32, now), None);
        assert_eq!(gather.deadline(0, now), None);
        // A long step waits at most MAX_WAIT.
        gather.answered(32, Duration::from_secs(2));
        assert_eq!(gather.deadline(1, now), Some(now + MAX_WAIT));
        // A lone session never waits.
        gather.answered(1, Duration::from_millis(30));
        assert_eq!(gather.deadline(1, now), None);
    }
}
