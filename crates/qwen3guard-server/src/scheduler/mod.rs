//! The scheduler: one OS thread owning the models and the sessions.
//!
//! Handlers never run a model. They send a [`Command`] over a bounded channel and await a
//! one-shot reply. The thread loops: it takes whatever commands are waiting, runs the
//! session operations among them (every waiting append in one
//! [`qwen3guard::StreamGuard::append_batch`]), then one round of the running Gen batch
//! ([`gen`]: continuous batching, requests join between rounds), and answers what is
//! done. A full queue is refused at once (503 with `Retry-After`) instead of growing
//! without bound; a request whose client went away is dropped, before it runs or between
//! two of its rounds.
//!
//! With a remote Gen backend (`--gen-backend`, [`crate::gen_backend`]) Gen commands never
//! reach the thread: [`Scheduler::submit`] hands them to the backend's client on the
//! runtime, since they only wait on the network.
//!
//! - [`gen`]: the Gen lane (admission, cancellation, verdicts and category scores).
//! - [`stream`]: session commands (open, append with offsets and re-tokenization, read).
//! - [`gather`]: how long a round waits for the appends about to come back.

mod gather;
mod gen;
mod stream;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qwen3guard::{Conversation, GenGuard, GenOptions, Mode, StreamGuard};
use tokio::sync::oneshot;

use crate::config::{Limits, ServerConfig};
use crate::gen_backend::GenBackend;
use crate::http::AppError;
use crate::metrics::Metrics;
use crate::sessions::SessionStore;
use crate::validation::{AppendRequest, OpenRequest};

pub use gen::GenOutcome;
pub use stream::{Appended, Opened, SessionView, Stops};

use gather::Gather;
use gen::{GenJob, GenLane};
use stream::PendingAppend;

/// Where Gen runs: in this process, or on a remote completions server.
#[derive(Clone, Debug)]
pub enum GenEngine {
    /// Loaded here; requests run on the scheduler thread's continuous batch.
    Local(GenGuard),
    /// `--gen-backend`: requests bypass the scheduler thread (nothing runs here but
    /// rendering and parsing) and run concurrently on the backend.
    Remote(GenBackend),
}

impl From<GenGuard> for GenEngine {
    fn from(guard: GenGuard) -> Self {
        GenEngine::Local(guard)
    }
}

impl GenEngine {
    /// The in-process model, if Gen runs here.
    pub fn local(&self) -> Option<&GenGuard> {
        match self {
            GenEngine::Local(guard) => Some(guard),
            GenEngine::Remote(_) => None,
        }
    }
}

/// The loaded models and the names they were loaded from.
#[derive(Clone, Default)]
pub struct Models {
    /// The Gen model, if loaded.
    pub gen: Option<(String, GenEngine)>,
    /// The Stream model, if loaded.
    pub stream: Option<(String, StreamGuard)>,
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
    /// Starts the thread owning `models`, with the limits, default mode and replica id of
    /// `config`.
    pub fn start(models: Models, config: &ServerConfig, metrics: Arc<Metrics>) -> Self {
        let limits = &config.limits;
        let (tx, rx) = mpsc::sync_channel(limits.max_queue.max(1));
        let worker = Worker {
            models: models.clone(),
            store: SessionStore::new(limits.max_sessions, limits.session_idle, &config.replica_id),
            limits: limits.clone(),
            mode: config.mode,
            metrics: metrics.clone(),
            gather: Gather::default(),
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
    /// has not run yet. With a remote Gen backend, Gen commands go to it at once instead.
    pub fn submit<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<oneshot::Receiver<Result<T, AppError>>, AppError> {
        let (reply, answer) = oneshot::channel();
        let command = make(reply);
        let command = match (&self.models.gen, command) {
            (
                Some((_, GenEngine::Remote(backend))),
                Command::Gen {
                    conversation,
                    options,
                    category_scores,
                    reply,
                },
            ) => {
                remote(
                    backend.clone(),
                    conversation,
                    options,
                    category_scores,
                    reply,
                )?;
                return Ok(answer);
            }
            (_, command) => command,
        };
        let depth = self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(command) {
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

/// Runs a Gen request on the remote backend, on the runtime the handler runs on; a
/// client that goes away (the receiver dropped) stops it.
fn remote(
    backend: GenBackend,
    conversation: Conversation,
    options: GenOptions,
    category_scores: bool,
    mut reply: Reply<GenOutcome>,
) -> Result<(), AppError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| AppError::Unavailable("the Gen backend needs the server's runtime".into()))?;
    runtime.spawn(async move {
        let work = backend.outcome(&conversation, &options, category_scores);
        let outcome = tokio::select! {
            outcome = work => Some(outcome),
            () = reply.closed() => None,
        };
        if let Some(outcome) = outcome {
            let _ = reply.send(outcome);
        }
    });
    Ok(())
}

/// Awaits a submitted command's answer.
pub async fn answer<T>(receiver: oneshot::Receiver<Result<T, AppError>>) -> Result<T, AppError> {
    receiver
        .await
        .map_err(|_| AppError::Unavailable("the scheduler dropped the request".into()))?
}

/// The thread's state.
struct Worker {
    models: Models,
    store: SessionStore,
    limits: Limits,
    mode: Mode,
    metrics: Arc<Metrics>,
    /// The last append step, which says how long a round waits for the rest of its
    /// sessions.
    gather: Gather,
}

/// When the worker hands freed memory back to the system.
///
/// Each request's activations, caches and replies are freed when it ends, but glibc keeps
/// freed memory in its arenas (the CLI raises its trim threshold so that forward passes
/// reuse buffers instead of faulting in fresh pages), so after a burst the resident size
/// stays at the burst's peak, and under long load every arena drifts up to its own peak.
/// The worker releases it when a second passes with no work after some work, and at most
/// every [`Trim::BUSY_PERIOD`] while work never stops.
struct Trim {
    worked: bool,
    idle: bool,
    last: Instant,
}

impl Trim {
    const BUSY_PERIOD: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Trim {
            worked: false,
            idle: false,
            last: Instant::now(),
        }
    }

    /// Records whether this turn of the loop had work.
    fn note(&mut self, work: bool) {
        self.worked |= work;
        self.idle = !work;
    }

    fn maybe_release(&mut self) {
        if self.worked && (self.idle || self.last.elapsed() >= Self::BUSY_PERIOD) {
            qwen3guard::device::release_freed_memory();
            self.worked = false;
            self.last = Instant::now();
        }
    }
}

fn is_append(command: &Command) -> bool {
    matches!(command, Command::Append(..))
}

impl Worker {
    fn run(mut self, rx: Receiver<Command>) {
        // The lane borrows this clone of the Gen model, not the worker.
        let gen = self.models.gen.clone();
        let local = gen.as_ref().and_then(|(_, engine)| engine.local());
        let mut lane = local.map(|guard| GenLane::new(guard, self.limits.max_batch));
        let mut connected = true;
        let mut trim = Trim::new();
        while connected || lane.as_ref().is_some_and(GenLane::busy) {
            let busy = lane.as_ref().is_some_and(GenLane::busy);
            let mut commands = Vec::new();
            if connected {
                // With Gen work running, take what is waiting and go on; idle, wait.
                let first = if busy {
                    rx.try_recv().map_err(|e| e == TryRecvError::Disconnected)
                } else {
                    rx.recv_timeout(Duration::from_secs(1))
                        .map_err(|e| e == RecvTimeoutError::Disconnected)
                };
                match first {
                    Ok(command) => commands.push(command),
                    Err(disconnected) => connected = !disconnected,
                }
                trim.note(!commands.is_empty() || busy);
            }
            // Everything already waiting joins this round, up to a bound that keeps one
            // round's latency in check, and the appends of sessions just answered get a
            // moment to come back (see `gather`).
            let bound = self.limits.max_batch.max(1) * 4;
            let started = Instant::now();
            let mut appends = commands.iter().filter(|c| is_append(c)).count();
            while !commands.is_empty() && commands.len() < bound {
                let next = match self.gather.deadline(appends, started) {
                    None => rx.try_recv().ok(),
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        rx.recv_timeout(left).ok()
                    }
                };
                let Some(command) = next else { break };
                appends += usize::from(is_append(&command));
                commands.push(command);
            }
            self.metrics
                .queue_depth
                .fetch_sub(commands.len(), Ordering::Relaxed);
            // A panic in a round (a bug, never an input: inputs get typed errors) must not
            // take the thread and every later request with it. The round's requests lose
            // their replies (their clients get 503) and the Gen batch starts afresh.
            let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.round(commands, lane.as_mut());
                if let Some(lane) = lane.as_mut() {
                    lane.step(&self.metrics);
                }
            }));
            if round.is_err() {
                eprintln!(
                    "qwen3guard serve: a scheduler round panicked; its requests were dropped"
                );
                lane = local.map(|guard| GenLane::new(guard, self.limits.max_batch));
            }
            self.housekeeping();
            trim.maybe_release();
        }
    }

    fn housekeeping(&mut self) {
        self.store.expire();
        self.metrics
            .open_sessions
            .store(self.store.len(), Ordering::Relaxed);
    }

    /// Runs the session commands among `commands` and queues the Gen ones on `lane`.
    fn round(&mut self, commands: Vec<Command>, mut lane: Option<&mut GenLane<'_>>) {
        let mut appends: Vec<PendingAppend> = Vec::new();
        for command in commands {
            match command {
                Command::Gen {
                    conversation,
                    options,
                    category_scores,
                    reply,
                } => match lane.as_deref_mut() {
                    Some(lane) => lane.push(GenJob {
                        conversation,
                        options,
                        category_scores,
                        reply,
                    }),
                    None => {
                        let _ = reply.send(Err(AppError::ModelNotLoaded(
                            "no Gen model is loaded (start with --gen-model)".into(),
                        )));
                    }
                },
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
    }
}
