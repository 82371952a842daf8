//! The Qwen3Guard guard server: OpenAI-compatible moderation (Gen) and stateful streaming
//! sessions (Stream) over HTTP.
//!
//! - [`http`]: axum routes, middleware and the one error-to-status map ([`AppError`]);
//!   [`app`] builds the router, separately from serving, so tests drive it directly.
//! - [`validation`]: raw JSON bodies into validated request types.
//! - [`scheduler`]: one OS thread owning the models and sessions, batching whatever is
//!   waiting; handlers talk to it over a bounded channel with one-shot replies.
//! - [`sessions`], [`retokenize`]: open sessions, and text deltas into settled tokens.
//! - [`proxy`]: the guarded chat proxy in front of an OpenAI-compatible LLM server
//!   (`--upstream`), and LiteLLM's guardrail API.
//! - [`gen_backend`]: Gen's forward passes on a remote completions server
//!   (`--gen-backend`), rendering, parsing and scores kept here.
//! - [`reward`]: safety rewards for RL from Gen verdicts (`/v1/reward`, `/get_reward`,
//!   and `qwen3guard reward` offline).
//! - [`metrics`], [`config`].
//!
//! [`serve`] loads the models on a thread of their own while the listener already
//! answers (`/health` is 503 until they are ready), then serves until SIGTERM or Ctrl-C.

#![deny(missing_docs)]

pub mod config;
pub mod gen_backend;
pub mod http;
pub mod metrics;
pub mod playground;
pub mod proxy;
pub mod retokenize;
pub mod reward;
pub mod scheduler;
pub mod sessions;
pub mod validation;

pub use config::{Limits, ServerConfig};
pub use http::{app, AppError, AppState};
pub use scheduler::{GenEngine, Models, Scheduler};

use gen_backend::GenBackend;
use qwen3guard::gen::GenSpec;
use qwen3guard::{Checkpoint, GenGuard, LoadOptions, StreamGuard};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `--gen-backend` without the checkpoint whose tokenizer and template it needs.
    #[error("--gen-backend needs --gen-model DIR: its tokenizer, template and config render the prompts")]
    BackendWithoutModel,
    /// Neither model was given (nor, for a proxy, guard replicas to judge with).
    #[error("give --gen-model, --stream-model or both (or --upstream with --guard-url)")]
    NoModel,
    /// `/get_reward` would need helpfulness values nobody can give.
    #[error("--reward hybrid needs --helpfulness-url: /get_reward bodies carry no helpfulness")]
    HybridWithoutHelpfulness,
    /// The proxy's flags do not fit together.
    #[error("{0}")]
    Proxy(String),
    /// A model failed to load.
    #[error("cannot load {model}: {source}")]
    Load {
        /// The model spec.
        model: String,
        /// The engine's reason.
        source: qwen3guard::Error,
    },
    /// The remote Gen backend does not answer, or lists no model.
    #[error("the Gen backend {url} is not usable: {source}")]
    GenBackend {
        /// Its URL.
        url: String,
        /// Why.
        source: proxy::upstream::UpstreamError,
    },
    /// The address could not be bound or serving failed.
    #[error("cannot serve on {address}: {source}")]
    Io {
        /// host:port.
        address: String,
        /// The reason.
        source: std::io::Error,
    },
}

/// Refuses proxy settings that cannot work together.
pub fn check_proxy(config: &ServerConfig) -> Result<(), ServeError> {
    let Some(proxy) = &config.proxy else {
        return Ok(());
    };
    let url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
    let problem = if config.stream_model.is_none() && proxy.guard_urls.is_empty() {
        Some("--upstream needs --stream-model or --guard-url: the proxy judges answers with a Stream model, here or on guard replicas")
    } else if !proxy.guard_urls.iter().all(|u| url(u)) {
        Some("--guard-url must be http:// or https:// URLs (guard replicas, or a router in front of them)")
    } else if proxy.retries.is_some() && proxy.release == proxy::Release::Async {
        Some("--intervene needs --release held: text already sent cannot be rolled back")
    } else if proxy.retries.is_some() && proxy.hold_back == 0 {
        Some("--intervene needs --hold-back 1 or more, so that no flagged token is sent before the rollback")
    } else if !url(&proxy.upstream) {
        Some("--upstream must be an http:// or https:// URL (the upstream's /v1)")
    } else {
        None
    };
    match problem {
        Some(p) => Err(ServeError::Proxy(p.into())),
        None => Ok(()),
    }
}

/// Loads the models `config` names (blocking).
pub fn load_models(config: &ServerConfig) -> Result<Models, ServeError> {
    if config.gen_backend.is_some() && config.gen_model.is_none() {
        return Err(ServeError::BackendWithoutModel);
    }
    let options = LoadOptions {
        precision: config.precision,
    };
    let load_err = |model: &str| {
        let model = model.to_string();
        move |source| ServeError::Load { model, source }
    };
    let gen = match (&config.gen_model, &config.gen_backend) {
        (Some(spec), Some(backend)) => {
            // Only the tokenizer, template and config: the weights are the backend's.
            let gen_spec = Checkpoint::resolve(spec, false)
                .and_then(|c| GenSpec::load(&c))
                .map_err(load_err(spec))?;
            let remote =
                GenBackend::connect(backend, gen_spec, &config.limits).map_err(|source| {
                    ServeError::GenBackend {
                        url: backend.url.clone(),
                        source,
                    }
                })?;
            Some((spec.clone(), GenEngine::Remote(remote)))
        }
        (Some(spec), None) => {
            let guard = Checkpoint::resolve(spec, false)
                .and_then(|c| GenGuard::load(&c, &options))
                .map_err(load_err(spec))?;
            guard.warm_up();
            Some((spec.clone(), GenEngine::Local(guard)))
        }
        (None, _) => None,
    };
    let stream = match &config.stream_model {
        Some(spec) => Some((
            spec.clone(),
            Checkpoint::resolve(spec, false)
                .and_then(|c| StreamGuard::load(&c, &options))
                .map_err(load_err(spec))?,
        )),
        None => None,
    };
    Ok(Models { gen, stream })
}

/// A state with the scheduler started on `models` (for tests and embedding).
pub fn ready_state(config: ServerConfig, models: Models) -> AppState {
    let state = AppState::new(config);
    let scheduler = Scheduler::start(models, &state.config, state.metrics.clone());
    let _ = state.scheduler.set(scheduler);
    state
}

/// Serves until SIGTERM or Ctrl-C: binds first, loads the models in the background.
pub fn serve(config: ServerConfig) -> Result<(), ServeError> {
    serve_until(config, shutdown_signal())
}

/// [`serve`], stopping when `stop` resolves instead of on a signal (for embedding).
///
/// Once `stop` resolves the replica drains (see `drain_then_close`); then requests still
/// arriving get 503, the listener closes, and the requests in flight get up to
/// `limits.shutdown_grace` to finish.
pub fn serve_until(
    config: ServerConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let remote_guard = config
        .proxy
        .as_ref()
        .is_some_and(|p| !p.guard_urls.is_empty());
    if config.gen_model.is_none() && config.stream_model.is_none() && !remote_guard {
        return Err(ServeError::NoModel);
    }
    if config.reward == reward::RewardKind::Hybrid && config.helpfulness_url.is_none() {
        return Err(ServeError::HybridWithoutHelpfulness);
    }
    check_proxy(&config)?;
    let address = format!("{}:{}", config.host, config.port);
    let io = |source| ServeError::Io {
        address: address.clone(),
        source,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(io)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&address).await.map_err(io)?;
        let local = listener.local_addr().map_err(io)?;
        let state = AppState::new(config);
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
        let loader_state = state.clone();
        std::thread::spawn(move || {
            let result = load_models(&loader_state.config).map(|models| {
                let scheduler =
                    Scheduler::start(models, &loader_state.config, loader_state.metrics.clone());
                let _ = loader_state.scheduler.set(scheduler);
            });
            let _ = loaded_tx.send(result);
        });
        eprintln!("qwen3guard serve: listening on http://{local} (loading models)");
        let grace = state.config.limits.shutdown_grace;
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = drain_then_close(state.clone(), stop, stopped_tx);
        let server = axum::serve(listener, app(state)).with_graceful_shutdown(shutdown);
        let loading = async {
            match loaded_rx.await {
                Ok(Ok(())) => {
                    eprintln!("qwen3guard serve: models loaded, ready");
                    std::future::pending::<Result<(), ServeError>>().await
                }
                Ok(Err(e)) => Err(e),
                Err(_) => std::future::pending().await,
            }
        };
        // In-flight requests get `grace` after the stop; then the runtime is dropped.
        let deadline = async {
            match stopped_rx.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            served = server => served.map_err(io),
            failed = loading => failed,
            () = deadline => {
                eprintln!("qwen3guard serve: grace period over, closing the remaining requests");
                Ok(())
            }
        }
    })
}

/// Waits for `stop`, then drains: `/health` turns 503 and new sessions are refused while
/// open sessions go on, until none is open or `limits.drain` has passed; then requests
/// still arriving get 503, `stopped` is told (the grace for in-flight requests starts),
/// and the listener closes. Draining first is what lets a scaled-down replica lose no
/// session: a router stops sending it new ones as soon as readiness fails.
async fn drain_then_close(
    state: AppState,
    stop: impl std::future::Future<Output = ()>,
    stopped: tokio::sync::oneshot::Sender<()>,
) {
    use std::sync::atomic::Ordering;
    stop.await;
    let drain = state.config.limits.drain;
    eprintln!(
        "qwen3guard serve: draining: new sessions refused, open ones have up to {}s",
        drain.as_secs()
    );
    state.draining.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + drain;
    while state.metrics.open_sessions.load(Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left = state.metrics.open_sessions.load(Ordering::Relaxed);
    eprintln!("qwen3guard serve: shutting down ({left} sessions still open), finishing in-flight requests");
    state.closing.store(true, Ordering::Relaxed);
    let _ = stopped.send(());
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Re-exported for the CLI's flag types.
pub use qwen3guard::{Mode, Precision};
