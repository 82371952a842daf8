//! Open stream sessions: id -> session, with caps and idle expiry.
//!
//! The store lives on the scheduler thread (a [`StreamSession`] is used from one thread at
//! a time and sessions never share mutable state), so it needs no lock. Ids carry the
//! replica's identity, so that a replica that does not hold a session can say so.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use qwen3guard::StreamSession;

use crate::retokenize::Retokenizer;

/// One open session and what the server tracks beside the engine's state.
pub struct SessionEntry {
    /// The engine's session (cache and verdicts).
    pub session: StreamSession,
    /// Text received but not yet settled into tokens.
    pub retokenizer: Retokenizer,
    /// Characters of text received so far (the `offset` a text append continues from).
    pub text_chars: usize,
    /// Token ids received so far through `token_ids` appends.
    pub token_count: usize,
    /// Where the response's own tokens start (after the assistant header).
    pub response_start: usize,
    /// Whether `final` was sent: no more appends.
    pub finished: bool,
    last_used: Instant,
}

impl SessionEntry {
    /// A fresh entry for `session`, whose response starts at its current position.
    pub fn new(session: StreamSession) -> Self {
        SessionEntry {
            response_start: session.position(),
            session,
            retokenizer: Retokenizer::default(),
            text_chars: 0,
            token_count: 0,
            finished: false,
            last_used: Instant::now(),
        }
    }
}

/// `replica` with every character a path segment or a header would need escaped made a
/// `-`, so that ids stay usable as they are in URLs, headers and router rules.
pub fn id_safe(replica: &str) -> String {
    replica
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Why a session could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full(pub usize);

/// Every open session of this replica.
pub struct SessionStore {
    entries: HashMap<String, SessionEntry>,
    replica: String,
    next: u64,
    max_sessions: usize,
    idle: Duration,
}

impl SessionStore {
    /// An empty store holding at most `max_sessions`, closing those idle for `idle`, whose
    /// ids name `replica`.
    pub fn new(max_sessions: usize, idle: Duration, replica: &str) -> Self {
        // Distinct per process start, so that ids from a restarted replica (same name, new
        // process) do not collide with those it handed out before.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        SessionStore {
            entries: HashMap::new(),
            replica: format!(
                "{}-{:x}{:x}",
                id_safe(replica),
                std::process::id(),
                nanos & 0xffff_ffff
            ),
            next: 0,
            max_sessions,
            idle,
        }
    }

    /// Adds `entry` and returns its id, unless the cap is reached.
    pub fn insert(&mut self, entry: SessionEntry) -> Result<String, Full> {
        if self.entries.len() >= self.max_sessions {
            return Err(Full(self.max_sessions));
        }
        self.next += 1;
        let id = self.id(self.next);
        self.entries.insert(id.clone(), entry);
        Ok(id)
    }

    /// The id of this replica's `n`-th session.
    fn id(&self, n: u64) -> String {
        format!("ss_{}_{n}", self.replica)
    }

    /// Takes the session out (to run it in a batch); put it back with [`Self::restore`].
    pub fn take(&mut self, id: &str) -> Option<SessionEntry> {
        self.entries.remove(id)
    }

    /// Puts back a session taken with [`Self::take`], marking it used now.
    pub fn restore(&mut self, id: String, mut entry: SessionEntry) {
        entry.last_used = Instant::now();
        self.entries.insert(id, entry);
    }

    /// The session, marked used now.
    pub fn get(&mut self, id: &str) -> Option<&mut SessionEntry> {
        let entry = self.entries.get_mut(id)?;
        entry.last_used = Instant::now();
        Some(entry)
    }

    /// Closes the session; whether it was open.
    pub fn remove(&mut self, id: &str) -> bool {
        self.entries.remove(id).is_some()
    }

    /// Closes every session idle longer than the limit; how many.
    pub fn expire(&mut self) -> usize {
        let before = self.entries.len();
        let idle = self.idle;
        self.entries.retain(|_, e| e.last_used.elapsed() < idle);
        before - self.entries.len()
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_replica_and_stay_url_safe() {
        let store = SessionStore::new(4, Duration::from_secs(60), "guard-7f/b c");
        let id = store.id(12);
        assert!(id.starts_with("ss_guard-7f-b-c-"), "{id}");
        assert!(id.ends_with("_12"), "{id}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)));
    }
}
