//! Turning per-token risk levels into a response verdict (paper §4.4).
//!
//! A single noisy token never flags a response: token `i` counts only if token `i-1` is
//! also risky. Two readings exist and both are kept:
//! - the official evaluation's offline rule: the first pair of consecutive Unsafe tokens,
//!   else the first pair of consecutive Controversial tokens, else Safe;
//! - a live stop rule for a deployment mode: the first pair of consecutive tokens that the
//!   mode blocks (in strict mode an Unsafe next to a Controversial counts too), which is
//!   what a proxy needs to cut a stream at the earliest moment.

use crate::policy::{Mode, Severity};

/// Where a rule fired: the second token of the pair, with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// Index (in the caller's numbering) of the second token of the pair.
    pub position: usize,
    /// That token's level.
    pub severity: Severity,
}

/// Incremental debouncer: feed levels in order, ask for verdicts at any time.
#[derive(Debug, Clone, Default)]
pub struct Debouncer {
    previous: Option<Severity>,
    first_unsafe_pair: Option<usize>,
    first_controversial_pair: Option<usize>,
    first_strict_pair: Option<Trigger>,
    first_loose_pair: Option<Trigger>,
}

impl Debouncer {
    /// A debouncer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the level of token `position` (positions must increase by one per call).
    pub fn push(&mut self, position: usize, level: Severity) {
        if let Some(previous) = self.previous {
            let pair = |a: Severity, b: Severity| previous == a && level == b;
            if pair(Severity::Unsafe, Severity::Unsafe) {
                self.first_unsafe_pair.get_or_insert(position);
            }
            if pair(Severity::Controversial, Severity::Controversial) {
                self.first_controversial_pair.get_or_insert(position);
            }
            let trigger = Trigger {
                position,
                severity: level,
            };
            if previous.is_blocked(Mode::Strict) && level.is_blocked(Mode::Strict) {
                self.first_strict_pair.get_or_insert(trigger);
            }
            if previous.is_blocked(Mode::Loose) && level.is_blocked(Mode::Loose) {
                self.first_loose_pair.get_or_insert(trigger);
            }
        }
        self.previous = Some(level);
    }

    /// The official evaluation's verdict over everything pushed so far.
    pub fn official(&self) -> Option<Trigger> {
        match (self.first_unsafe_pair, self.first_controversial_pair) {
            (Some(position), _) => Some(Trigger {
                position,
                severity: Severity::Unsafe,
            }),
            (None, Some(position)) => Some(Trigger {
                position,
                severity: Severity::Controversial,
            }),
            (None, None) => None,
        }
    }

    /// The first pair that `mode` blocks, if any: where a live stream must stop.
    pub fn stop(&self, mode: Mode) -> Option<Trigger> {
        match mode {
            Mode::Strict => self.first_strict_pair,
            Mode::Loose => self.first_loose_pair,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // One-letter names keep the sequences below readable as timelines.
    #[allow(clippy::unsafe_removed_from_name)]
    use Severity::{Controversial as C, Safe as S, Unsafe as U};

    fn run(levels: &[Severity]) -> Debouncer {
        let mut d = Debouncer::new();
        for (i, &l) in levels.iter().enumerate() {
            d.push(i, l);
        }
        d
    }

    #[test]
    fn a_single_risky_token_does_not_flag() {
        let d = run(&[S, U, S, C, S]);
        assert_eq!(d.official(), None);
        assert_eq!(d.stop(Mode::Strict), None);
    }

    #[test]
    fn unsafe_pair_wins_over_an_earlier_controversial_pair() {
        let d = run(&[C, C, S, U, U]);
        assert_eq!(
            d.official(),
            Some(Trigger {
                position: 4,
                severity: U
            })
        );
        // Live, strict mode stops at the first pair already.
        assert_eq!(d.stop(Mode::Strict).map(|t| t.position), Some(1));
        assert_eq!(d.stop(Mode::Loose).map(|t| t.position), Some(4));
    }

    #[test]
    fn controversial_pair_when_no_unsafe_pair() {
        let d = run(&[S, C, C, U]);
        assert_eq!(
            d.official(),
            Some(Trigger {
                position: 2,
                severity: C
            })
        );
        assert_eq!(d.stop(Mode::Loose), None);
    }

    #[test]
    fn mixed_pair_stops_strict_but_is_not_an_official_pair() {
        let d = run(&[U, C]);
        assert_eq!(d.official(), None);
        assert_eq!(d.stop(Mode::Strict).map(|t| t.position), Some(1));
    }
}
