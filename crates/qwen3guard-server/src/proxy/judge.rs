//! One answer's Stream session, driven through the scheduler like any client's (or, with
//! `--guard-url`, on a remote guard replica: [`super::remote`]): the prompt verdict at
//! open, then text as it arrives (the server's incremental re-tokenization), and where in
//! the text each judged token begins, which is what the hold-back and the cut-off are
//! measured in.

use qwen3guard::stream::{PromptVerdict, ResponseVerdict};
use qwen3guard::{Conversation, Mode};

use super::remote::RemoteSession;
use crate::http::{AppError, AppState};
use crate::scheduler::{Appended, Command, Scheduler};
use crate::validation::{AppendInput, AppendRequest, OpenRequest};

/// Where the session lives.
enum Backend {
    /// On this server's scheduler.
    Local { scheduler: Scheduler, id: String },
    /// On a replica of the `--guard-url` pool.
    Remote(RemoteSession),
}

/// A session judging one answer.
pub struct Judge {
    backend: Backend,
    mode: Mode,
    /// (position, character offset of its piece) of every token judged by appends.
    starts: Vec<(usize, usize)>,
    /// Characters whose tokens have been judged.
    settled: usize,
    /// The prompt's verdict.
    pub prompt: PromptVerdict,
}

impl Judge {
    /// Opens a session on `prompt`, continuing `partial` (already judged text) if given:
    /// on the `--guard-url` pool when the server has one, else on its own scheduler.
    pub async fn open(
        state: &AppState,
        prompt: &Conversation,
        partial: Option<String>,
        mode: Mode,
    ) -> Result<Self, AppError> {
        let settled = partial.as_deref().map_or(0, |p| p.chars().count());
        let partial = partial.filter(|p| !p.is_empty());
        let (backend, prompt) = match &state.remote_guard {
            Some(remote) => {
                let session = remote.open(prompt, partial).await?;
                let verdict = session.prompt().cloned().ok_or_else(|| {
                    AppError::Upstream("the guard opened a session without a prompt verdict".into())
                })?;
                (Backend::Remote(session), verdict)
            }
            None => {
                let scheduler = state.scheduler()?.clone();
                let request = OpenRequest {
                    prompt: prompt.clone(),
                    partial,
                    thinking: false,
                };
                let opened = scheduler
                    .call(|reply| Command::Open(request, reply))
                    .await?;
                let id = opened.id;
                (Backend::Local { scheduler, id }, opened.prompt)
            }
        };
        Ok(Judge {
            backend,
            mode,
            starts: Vec::new(),
            settled,
            prompt,
        })
    }

    /// Whether the prompt's verdict blocks it under the mode.
    pub fn prompt_blocked(&self) -> bool {
        self.prompt.risk_level.is_blocked(self.mode)
    }

    /// Judges `text` (the next part of the answer); `last` ends the answer, judging what
    /// was held back.
    pub async fn feed(&mut self, text: String, last: bool) -> Result<Appended, AppError> {
        if text.is_empty() && !last {
            return Err(AppError::Invalid("nothing to judge".into()));
        }
        let appended = match &mut self.backend {
            Backend::Remote(session) => session.append(&text, last).await?,
            Backend::Local { scheduler, id } => {
                let input = match text.is_empty() {
                    true => AppendInput::Nothing,
                    false => AppendInput::Text(text),
                };
                let request = AppendRequest {
                    input,
                    offset: None,
                    last,
                };
                let id = id.clone();
                scheduler
                    .call(|reply| Command::Append(id, request, reply))
                    .await?
            }
        };
        self.starts.extend(
            appended
                .tokens
                .iter()
                .map(|t| t.index)
                .zip(appended.text_offsets.iter().copied()),
        );
        self.settled = self.settled.max(appended.checked_offset);
        Ok(appended)
    }

    /// Characters of the answer judged so far.
    pub fn settled(&self) -> usize {
        self.settled
    }

    /// How far text may be released keeping the last `hold_back` judged tokens back, never
    /// below `floor` (text already released).
    pub fn hold_point(&self, hold_back: usize, floor: usize) -> usize {
        let point = match hold_back {
            0 => self.settled,
            n if self.starts.len() >= n => self.starts[self.starts.len() - n].1,
            _ => 0,
        };
        point.min(self.settled).max(floor)
    }

    /// Where the answer must stop for `stop`: the start of the first token of the
    /// flagged pair, so that no token of it reaches the client.
    pub fn cut_point(&self, stop: &ResponseVerdict) -> usize {
        let flagged = stop.flagged_at.unwrap_or(usize::MAX);
        self.starts
            .iter()
            .filter(|(index, _)| *index + 1 >= flagged)
            .map(|&(_, start)| start)
            .min()
            .unwrap_or(self.settled)
    }

    /// Tokens judged whose text begins at or after `at` (what a rollback throws away).
    pub fn tokens_from(&self, at: usize) -> usize {
        self.starts.iter().filter(|(_, s)| *s >= at).count()
    }

    /// The mode the verdicts are read under.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Closes the session (its cache is freed now rather than at idle expiry).
    pub async fn close(self) {
        match self.backend {
            Backend::Remote(session) => session.close().await,
            Backend::Local { scheduler, id } => {
                let _ = scheduler.call(|reply| Command::Delete(id, reply)).await;
            }
        }
    }
}
