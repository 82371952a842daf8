//! Session commands on the scheduler thread: open (with a partial assistant message),
//! append (offsets, re-tokenized text, caps; every waiting append in one batch), read.

use std::time::Instant;

use qwen3guard::stream::{PromptVerdict, ResponseVerdict, TokenVerdict};
use qwen3guard::{Mode, StreamGuard, StreamSession};
use serde::{Deserialize, Serialize};

use super::{Reply, Worker};
use crate::http::AppError;
use crate::retokenize::Settled;
use crate::sessions::SessionEntry;
use crate::validation::{AppendInput, AppendRequest, OpenRequest};

/// A session just opened.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Opened {
    /// Its id.
    pub id: String,
    /// The query heads' verdict on the prompt.
    pub prompt: PromptVerdict,
    /// Verdicts of a partial assistant message appended at open.
    pub tokens: Vec<TokenVerdict>,
}

/// What an append did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Appended {
    /// Verdicts of the tokens run by this append (absolute indices).
    pub tokens: Vec<TokenVerdict>,
    /// For `text` appends, one per token of `tokens`: the character offset in the text
    /// sent where the token's pre-tokenizer piece (about a word) begins, so that a client
    /// can tell which text a flag covers. Empty for `token_ids` appends.
    pub text_offsets: Vec<usize>,
    /// The debounced response verdict so far.
    pub response: ResponseVerdict,
    /// Where the server's policy mode says to stop the stream, if it does.
    pub stop: Option<ResponseVerdict>,
    /// Where each mode would stop it, so that a client can compare strict with loose
    /// without running the model again.
    pub stops: Stops,
    /// Tokens (for `token_ids`) or characters (for `text`) received and checked.
    pub checked_offset: usize,
    /// Characters received but held back until their tokens are settled.
    pub pending_chars: usize,
    /// Whether the append repeated what was already received (nothing was run).
    pub duplicate: bool,
}

/// A session's state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// Its id.
    pub id: String,
    /// Positions in its cache.
    pub position: usize,
    /// First position of the response.
    pub response_start: usize,
    /// The prompt verdict.
    pub prompt: PromptVerdict,
    /// The debounced response verdict so far.
    pub response: ResponseVerdict,
    /// Where the policy says to stop, if it does.
    pub stop: Option<ResponseVerdict>,
    /// Where each mode would stop.
    pub stops: Stops,
    /// Token ids received through `token_ids`.
    pub token_offset: usize,
    /// Characters received through `text`.
    pub text_offset: usize,
    /// Characters held back.
    pub pending_chars: usize,
    /// Whether `final` was sent.
    pub finished: bool,
}

/// Where each policy mode would stop a stream: the live stop rule read under both.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stops {
    /// Under `strict` (Controversial blocks too).
    pub strict: Option<ResponseVerdict>,
    /// Under `loose` (only Unsafe blocks).
    pub loose: Option<ResponseVerdict>,
}

impl Stops {
    fn of(session: &StreamSession) -> Self {
        Stops {
            strict: session.stop(Mode::Strict),
            loose: session.stop(Mode::Loose),
        }
    }
}

/// One append, validated and turned into ids, waiting for the batch.
pub(super) struct PendingAppend {
    pub(super) id: String,
    entry: SessionEntry,
    ids: Vec<u32>,
    /// Where each id's text starts (text appends only).
    starts: Vec<usize>,
    /// State to put back if the model step fails.
    undo: SessionEntryUndo,
    first: usize,
    text: bool,
    last: bool,
    reply: Reply<Appended>,
}

struct SessionEntryUndo {
    retokenizer: crate::retokenize::Retokenizer,
    text_chars: usize,
    token_count: usize,
}

impl Worker {
    fn stream(&self) -> Result<&StreamGuard, AppError> {
        self.models.stream.as_ref().map(|(_, g)| g).ok_or_else(|| {
            AppError::ModelNotLoaded("no Stream model is loaded (start with --stream-model)".into())
        })
    }

    pub(super) fn open(&mut self, request: OpenRequest) -> Result<Opened, AppError> {
        let guard = self.stream()?.clone();
        // A request too large for any session is refused as such (413) before the
        // transient refusal of a full server (429).
        let exchange = guard.render_exchange(&request.prompt)?;
        let header = guard.assistant_header(request.thinking)?;
        let needed = exchange.user_end() + 1 + header.len();
        self.check_cap(needed)?;
        if self.store.len() >= self.limits.max_sessions {
            return Err(too_many(self.limits.max_sessions));
        }
        let mut session = guard.open_exchange(&exchange)?;
        session.start_response(&header)?;
        let mut entry = SessionEntry::new(session);
        let mut tokens = Vec::new();
        if let Some(partial) = &request.partial {
            let tokenizer = guard.prompter().tokenizer();
            let ids = entry
                .retokenizer
                .push(tokenizer, partial.as_bytes(), false)?;
            self.check_cap(entry.session.position() + ids.len())?;
            tokens = entry.session.append(&ids)?.to_vec();
            entry.text_chars = partial.chars().count();
        }
        self.metrics.tokens(entry.session.position());
        let prompt = entry.session.prompt_verdict().clone();
        let id = self.store.insert(entry).map_err(|full| too_many(full.0))?;
        Ok(Opened { id, prompt, tokens })
    }

    fn check_cap(&self, positions: usize) -> Result<(), AppError> {
        let max = self.limits.max_session_tokens;
        if positions > max {
            return Err(AppError::TooLarge(format!(
                "the session would hold {positions} tokens, over the limit of {max} per session"
            )));
        }
        Ok(())
    }

    pub(super) fn view(&mut self, id: &str) -> Result<SessionView, AppError> {
        let mode = self.mode;
        let entry = self
            .store
            .get(id)
            .ok_or_else(|| AppError::SessionNotFound(id.to_string()))?;
        Ok(SessionView {
            id: id.to_string(),
            position: entry.session.position(),
            response_start: entry.response_start,
            prompt: entry.session.prompt_verdict().clone(),
            response: entry.session.verdict(),
            stop: entry.session.stop(mode),
            stops: Stops::of(&entry.session),
            token_offset: entry.token_count,
            text_offset: entry.text_chars,
            pending_chars: entry.retokenizer.pending_chars(),
            finished: entry.finished,
        })
    }

    /// Resolves an append's offset and turns its input into ids; answers at once (and
    /// returns `None`) for duplicates and errors.
    pub(super) fn prepare_append(
        &mut self,
        id: String,
        request: AppendRequest,
        reply: Reply<Appended>,
    ) -> Option<PendingAppend> {
        let Some(mut entry) = self.store.take(&id) else {
            let _ = reply.send(Err(AppError::SessionNotFound(id)));
            return None;
        };
        let undo = SessionEntryUndo {
            retokenizer: entry.retokenizer.clone(),
            text_chars: entry.text_chars,
            token_count: entry.token_count,
        };
        // A bare `final` reports in the unit the session was fed in.
        let text = match request.input {
            AppendInput::Text(_) => true,
            AppendInput::Tokens(_) => false,
            AppendInput::Nothing => entry.text_chars > 0,
        };
        match self.resolve(&mut entry, &request) {
            Ok(Some(Settled { ids, starts })) => Some(PendingAppend {
                first: entry.session.position(),
                id,
                entry,
                ids,
                starts,
                undo,
                text,
                last: request.last,
                reply,
            }),
            Ok(None) => {
                let _ = reply.send(Ok(self.appended(
                    &entry,
                    Vec::new(),
                    Vec::new(),
                    text,
                    true,
                )));
                self.store.restore(id, entry);
                None
            }
            Err(e) => {
                entry.retokenizer = undo.retokenizer;
                entry.text_chars = undo.text_chars;
                entry.token_count = undo.token_count;
                let _ = reply.send(Err(e));
                self.store.restore(id, entry);
                None
            }
        }
    }

    /// The ids an append feeds (with their text offsets for text), or `None` for a
    /// duplicate.
    fn resolve(
        &self,
        entry: &mut SessionEntry,
        request: &AppendRequest,
    ) -> Result<Option<Settled>, AppError> {
        let guard = self.stream()?;
        let received = match &request.input {
            AppendInput::Tokens(_) => entry.token_count,
            _ => entry.text_chars,
        };
        let offset = request.offset.unwrap_or(received);
        if offset > received {
            return Err(AppError::OffsetGap(format!(
                "`offset` is {offset} but only {received} were received; send the missing part first"
            )));
        }
        let skip = received - offset;
        let fresh = match &request.input {
            AppendInput::Tokens(ids) => skip < ids.len(),
            AppendInput::Text(text) => skip < text.chars().count(),
            AppendInput::Nothing => false,
        };
        if entry.finished && fresh {
            return Err(AppError::Invalid(
                "the session was finished with `final`; open a new one".into(),
            ));
        }
        let settled = match &request.input {
            AppendInput::Tokens(ids) => {
                if skip >= ids.len() && !ids.is_empty() {
                    return Ok(None);
                }
                let new = ids[skip.min(ids.len())..].to_vec();
                entry.token_count += new.len();
                Settled {
                    ids: new,
                    starts: Vec::new(),
                }
            }
            AppendInput::Text(text) => {
                let chars = text.chars().count();
                if skip >= chars && chars > 0 && (!request.last || entry.finished) {
                    return Ok(None);
                }
                let start = text.char_indices().nth(skip).map_or(text.len(), |(b, _)| b);
                let new = &text[start..];
                entry.text_chars += new.chars().count();
                entry.retokenizer.push_located(
                    guard.prompter().tokenizer(),
                    new.as_bytes(),
                    request.last,
                )?
            }
            AppendInput::Nothing => {
                if entry.finished {
                    return Ok(None);
                }
                entry
                    .retokenizer
                    .push_located(guard.prompter().tokenizer(), &[], true)?
            }
        };
        self.check_cap(entry.session.position() + settled.ids.len())?;
        Ok(Some(settled))
    }

    fn appended(
        &self,
        entry: &SessionEntry,
        tokens: Vec<TokenVerdict>,
        text_offsets: Vec<usize>,
        text: bool,
        duplicate: bool,
    ) -> Appended {
        Appended {
            tokens,
            text_offsets,
            response: entry.session.verdict(),
            stop: entry.session.stop(self.mode),
            stops: Stops::of(&entry.session),
            checked_offset: if text {
                entry.retokenizer.settled_chars()
            } else {
                entry.token_count
            },
            pending_chars: entry.retokenizer.pending_chars(),
            duplicate,
        }
    }

    /// Runs the waiting appends in one batch (each alone if the batch fails, so that an
    /// error belongs to the append that caused it) and answers them.
    pub(super) fn flush(&mut self, appends: &mut Vec<PendingAppend>) {
        if appends.is_empty() {
            return;
        }
        let Ok(guard) = self.stream().cloned() else {
            return;
        };
        self.metrics.batch("stream_append", appends.len());
        let ids: Vec<Vec<u32>> = appends
            .iter_mut()
            .map(|a| std::mem::take(&mut a.ids))
            .collect();
        let started = Instant::now();
        let together = {
            let mut sessions: Vec<&mut qwen3guard::StreamSession> =
                appends.iter_mut().map(|a| &mut a.entry.session).collect();
            let lists: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
            guard.append_batch(&mut sessions, &lists)
        };
        self.gather.answered(appends.len(), started.elapsed());
        for (mut pending, ids) in appends.drain(..).zip(ids) {
            // On a batch error every session is unchanged: rerun this one alone.
            let result = match &together {
                Ok(()) => Ok(()),
                Err(_) => pending.entry.session.append(&ids).map(|_| ()),
            };
            match result {
                Ok(()) => {
                    self.metrics.tokens(ids.len());
                    if pending.last {
                        pending.entry.finished = true;
                    }
                    let tokens: Vec<TokenVerdict> = pending
                        .entry
                        .session
                        .tokens()
                        .iter()
                        .filter(|t| t.index >= pending.first)
                        .cloned()
                        .collect();
                    let starts = std::mem::take(&mut pending.starts);
                    let answer = self.appended(&pending.entry, tokens, starts, pending.text, false);
                    let _ = pending.reply.send(Ok(answer));
                }
                Err(e) => {
                    let undo = pending.undo;
                    pending.entry.retokenizer = undo.retokenizer;
                    pending.entry.text_chars = undo.text_chars;
                    pending.entry.token_count = undo.token_count;
                    let _ = pending.reply.send(Err(e.into()));
                }
            }
            self.store.restore(pending.id, pending.entry);
        }
    }
}

fn too_many(max: usize) -> AppError {
    AppError::TooManySessions(format!(
        "{max} stream sessions are open, the most this server allows; close one (DELETE) or retry later"
    ))
}
