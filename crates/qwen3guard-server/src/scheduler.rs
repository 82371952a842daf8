//! The scheduler: one OS thread owning the models and the sessions.
//!
//! Handlers never run a model. They send a [`Command`] over a bounded channel and await a
//! one-shot reply; the thread takes whatever is waiting, runs every waiting Gen request
//! through one [`GenGuard::moderate_batch`] (shared forward passes and LM-head products)
//! and every waiting session append through one [`StreamGuard::append_batch`], and
//! answers. A full queue is refused at once (503 with `Retry-After`) instead of growing
//! without bound; a request whose client went away is dropped before it runs.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use qwen3guard::gen::CategoryScore;
use qwen3guard::stream::{PromptVerdict, ResponseVerdict, TokenVerdict};
use qwen3guard::{Conversation, GenGuard, GenOptions, GenVerdict, Mode, StreamGuard};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::Limits;
use crate::http::AppError;
use crate::metrics::Metrics;
use crate::sessions::{SessionEntry, SessionStore};
use crate::validation::{AppendInput, AppendRequest, OpenRequest};

/// The loaded models and the names they were loaded from.
#[derive(Clone, Default)]
pub struct Models {
    /// The Gen model, if loaded.
    pub gen: Option<(String, GenGuard)>,
    /// The Stream model, if loaded.
    pub stream: Option<(String, StreamGuard)>,
}

/// A Gen result, with category scores when they were asked for.
#[derive(Debug, Clone)]
pub struct GenOutcome {
    /// The verdict, as the library gives it.
    pub verdict: GenVerdict,
    /// Per-category first-token probabilities after the verdict's label.
    pub category_scores: Option<Vec<CategoryScore>>,
}

/// A session just opened.
#[derive(Debug, Clone, Serialize)]
pub struct Opened {
    /// Its id.
    pub id: String,
    /// The query heads' verdict on the prompt.
    pub prompt: PromptVerdict,
    /// Verdicts of a partial assistant message appended at open.
    pub tokens: Vec<TokenVerdict>,
}

/// What an append did.
#[derive(Debug, Clone, Serialize)]
pub struct Appended {
    /// Verdicts of the tokens run by this append (absolute indices).
    pub tokens: Vec<TokenVerdict>,
    /// The debounced response verdict so far.
    pub response: ResponseVerdict,
    /// Where the server's policy mode says to stop the stream, if it does.
    pub stop: Option<ResponseVerdict>,
    /// Tokens (for `token_ids`) or characters (for `text`) received and checked.
    pub checked_offset: usize,
    /// Characters received but held back until their tokens are settled.
    pub pending_chars: usize,
    /// Whether the append repeated what was already received (nothing was run).
    pub duplicate: bool,
}

/// A session's state.
#[derive(Debug, Clone, Serialize)]
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
    /// Token ids received through `token_ids`.
    pub token_offset: usize,
    /// Characters received through `text`.
    pub text_offset: usize,
    /// Characters held back.
    pub pending_chars: usize,
    /// Whether `final` was sent.
    pub finished: bool,
}

/// Where the scheduler sends a command's answer.
pub type Reply<T> = oneshot::Sender<Result<T, AppError>>;

/// A request to the scheduler.
pub enum Command {
    /// Moderate with Gen.
    Gen {
        /// The conversation.
        conversation: Conversation,
        /// Decoding options.
        options: GenOptions,
        /// Also compute category scores.
        category_scores: bool,
        /// Where the answer goes.
        reply: Reply<GenOutcome>,
    },
    /// Open a stream session.
    Open(OpenRequest, Reply<Opened>),
    /// Append to a session.
    Append(String, AppendRequest, Reply<Appended>),
    /// Read a session.
    Get(String, Reply<SessionView>),
    /// Close a session.
    Delete(String, Reply<()>),
    /// Answer at once (health probe).
    Probe(Reply<()>),
}

/// The handlers' side: a cloneable sender.
#[derive(Clone)]
pub struct Scheduler {
    tx: SyncSender<Command>,
    metrics: Arc<Metrics>,
    models: Models,
}

impl Scheduler {
    /// Starts the thread owning `models`.
    pub fn start(models: Models, limits: &Limits, mode: Mode, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::sync_channel(limits.max_queue.max(1));
        let worker = Worker {
            models: models.clone(),
            store: SessionStore::new(limits.max_sessions, limits.session_idle),
            limits: limits.clone(),
            mode,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("qwen3guard-scheduler".into())
            .spawn(move || worker.run(rx))
            .map_or_else(
                // Without the thread every send fails, and /health says so.
                |e| eprintln!("cannot start the scheduler thread: {e}"),
                |_| (),
            );
        Scheduler {
            tx,
            metrics,
            models,
        }
    }

    /// The loaded models.
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// Queues a command built around a fresh reply channel; the receiver yields the
    /// answer. Dropping the receiver (a client that went away) cancels the command if it
    /// has not run yet.
    pub fn submit<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<oneshot::Receiver<Result<T, AppError>>, AppError> {
        let (reply, answer) = oneshot::channel();
        let depth = self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(make(reply)) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(AppError::Overloaded(depth))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(AppError::Unavailable("the scheduler has stopped".into()))
            }
        }
    }

    /// [`Scheduler::submit`], then the answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, AppError> {
        answer(self.submit(make)?).await
    }
}

/// Awaits a submitted command's answer.
pub async fn answer<T>(receiver: oneshot::Receiver<Result<T, AppError>>) -> Result<T, AppError> {
    receiver
        .await
        .map_err(|_| AppError::Unavailable("the scheduler dropped the request".into()))?
}

/// One append, validated and turned into ids, waiting for the batch.
struct PendingAppend {
    id: String,
    entry: SessionEntry,
    ids: Vec<u32>,
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

/// The thread's state.
struct Worker {
    models: Models,
    store: SessionStore,
    limits: Limits,
    mode: Mode,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Command>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut commands = vec![first];
            // Everything already waiting joins this round, up to a bound that keeps one
            // round's latency in check.
            while commands.len() < self.limits.max_batch.max(1) * 4 {
                match rx.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            self.metrics
                .queue_depth
                .fetch_sub(commands.len(), Ordering::Relaxed);
            self.round(commands);
            self.housekeeping();
        }
    }

    fn housekeeping(&mut self) {
        self.store.expire();
        self.metrics
            .open_sessions
            .store(self.store.len(), Ordering::Relaxed);
    }

    fn round(&mut self, commands: Vec<Command>) {
        let mut gens = Vec::new();
        let mut appends: Vec<PendingAppend> = Vec::new();
        for command in commands {
            match command {
                Command::Gen {
                    conversation,
                    options,
                    category_scores,
                    reply,
                } => gens.push((conversation, options, category_scores, reply)),
                Command::Append(id, request, reply) => {
                    // One append per session per batch: a second one waits for the first.
                    if appends.iter().any(|a| a.id == id) {
                        self.flush(&mut appends);
                    }
                    if let Some(pending) = self.prepare_append(id, request, reply) {
                        appends.push(pending);
                    }
                }
                Command::Get(id, reply) => {
                    if appends.iter().any(|a| a.id == id) {
                        self.flush(&mut appends);
                    }
                    let _ = reply.send(self.view(&id));
                }
                Command::Delete(id, reply) => {
                    if appends.iter().any(|a| a.id == id) {
                        self.flush(&mut appends);
                    }
                    let result = match self.store.remove(&id) {
                        true => Ok(()),
                        false => Err(AppError::SessionNotFound(id)),
                    };
                    let _ = reply.send(result);
                }
                Command::Open(request, reply) => {
                    if !reply.is_closed() {
                        let _ = reply.send(self.open(request));
                    }
                }
                Command::Probe(reply) => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        self.flush(&mut appends);
        self.run_gen(gens);
    }

    fn stream(&self) -> Result<&StreamGuard, AppError> {
        self.models.stream.as_ref().map(|(_, g)| g).ok_or_else(|| {
            AppError::ModelNotLoaded("no Stream model is loaded (start with --stream-model)".into())
        })
    }

    fn run_gen(&mut self, gens: Vec<(Conversation, GenOptions, bool, Reply<GenOutcome>)>) {
        // A client that went away needs no answer.
        let mut gens: Vec<_> = gens.into_iter().filter(|g| !g.3.is_closed()).collect();
        if gens.is_empty() {
            return;
        }
        let Some((_, guard)) = &self.models.gen else {
            for (.., reply) in gens {
                let _ = reply.send(Err(AppError::ModelNotLoaded(
                    "no Gen model is loaded (start with --gen-model)".into(),
                )));
            }
            return;
        };
        while !gens.is_empty() {
            let rest = gens.split_off(gens.len().min(self.limits.max_batch.max(1)));
            let chunk = std::mem::replace(&mut gens, rest);
            self.metrics.batch("gen", chunk.len());
            let requests: Vec<(&Conversation, GenOptions)> =
                chunk.iter().map(|(c, o, ..)| (c, *o)).collect();
            let results = guard.moderate_batch(&requests);
            for ((conversation, _, scores, reply), result) in chunk.into_iter().zip(results) {
                let outcome = result.map_err(AppError::from).and_then(|verdict| {
                    self.metrics
                        .tokens(verdict.prompt_tokens + verdict.generated_token_ids.len());
                    let category_scores = if scores {
                        let label = verdict.safety.unwrap_or_else(|| verdict.scores.best());
                        Some(guard.category_scores(&conversation, label)?)
                    } else {
                        None
                    };
                    Ok(GenOutcome {
                        verdict,
                        category_scores,
                    })
                });
                let _ = reply.send(outcome);
            }
        }
    }

    fn open(&mut self, request: OpenRequest) -> Result<Opened, AppError> {
        let guard = self.stream()?.clone();
        // A request too large for any session is refused as such (413) before the
        // transient refusal of a full server (429).
        let exchange = guard.render_exchange(&request.prompt)?;
        let header = guard.assistant_header(request.thinking)?;
        let needed = exchange.user_end + 1 + header.len();
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

    fn view(&mut self, id: &str) -> Result<SessionView, AppError> {
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
            token_offset: entry.token_count,
            text_offset: entry.text_chars,
            pending_chars: entry.retokenizer.pending_chars(),
            finished: entry.finished,
        })
    }

    /// Resolves an append's offset and turns its input into ids; answers at once (and
    /// returns `None`) for duplicates and errors.
    fn prepare_append(
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
            Ok(Some(ids)) => Some(PendingAppend {
                first: entry.session.position(),
                id,
                entry,
                ids,
                undo,
                text,
                last: request.last,
                reply,
            }),
            Ok(None) => {
                let _ = reply.send(Ok(self.appended(&entry, Vec::new(), text, true)));
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

    /// The ids an append feeds, or `None` for a duplicate.
    fn resolve(
        &self,
        entry: &mut SessionEntry,
        request: &AppendRequest,
    ) -> Result<Option<Vec<u32>>, AppError> {
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
        let ids = match &request.input {
            AppendInput::Tokens(ids) => {
                if skip >= ids.len() && !ids.is_empty() {
                    return Ok(None);
                }
                let new = ids[skip.min(ids.len())..].to_vec();
                entry.token_count += new.len();
                new
            }
            AppendInput::Text(text) => {
                let chars = text.chars().count();
                if skip >= chars && chars > 0 && !(request.last && !entry.finished) {
                    return Ok(None);
                }
                let start = text.char_indices().nth(skip).map_or(text.len(), |(b, _)| b);
                let new = &text[start..];
                entry.text_chars += new.chars().count();
                entry.retokenizer.push(
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
                    .push(guard.prompter().tokenizer(), &[], true)?
            }
        };
        self.check_cap(entry.session.position() + ids.len())?;
        Ok(Some(ids))
    }

    fn appended(
        &self,
        entry: &SessionEntry,
        tokens: Vec<TokenVerdict>,
        text: bool,
        duplicate: bool,
    ) -> Appended {
        Appended {
            tokens,
            response: entry.session.verdict(),
            stop: entry.session.stop(self.mode),
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
    fn flush(&mut self, appends: &mut Vec<PendingAppend>) {
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
        let together = {
            let mut sessions: Vec<&mut qwen3guard::StreamSession> =
                appends.iter_mut().map(|a| &mut a.entry.session).collect();
            let lists: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
            guard.append_batch(&mut sessions, &lists)
        };
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
                    let answer = self.appended(&pending.entry, tokens, pending.text, false);
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
