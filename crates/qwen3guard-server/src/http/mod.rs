//! The HTTP layer: routes, the middleware around them, and the error-to-status map.
//!
//! Handlers validate the body ([`crate::validation`]), send a command to the scheduler and
//! shape its answer; nothing here runs a model.

mod error;
mod handlers;
mod middleware;
mod openai;
pub mod openapi;
mod reward;
mod ws;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};

use axum::routing::{get, post};
use axum::Router;

pub use error::AppError;
pub(crate) use handlers::{body, native};
pub use openai::OPENAI_CATEGORIES;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::playground;
use crate::proxy;
use crate::proxy::remote::RemoteGuard;
use crate::proxy::upstream::Upstream;
use crate::reward::helpfulness::Helpfulness;
use crate::scheduler::Scheduler;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Set once the models are loaded; until then model endpoints answer 503.
    pub scheduler: Arc<OnceLock<Scheduler>>,
    /// The settings.
    pub config: Arc<ServerConfig>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Counter behind generated ids.
    pub counter: Arc<AtomicU64>,
    /// Set on SIGTERM: `/health` turns 503 and new sessions are refused, while open
    /// sessions and other requests go on (see [`crate::serve_until`]).
    pub draining: Arc<AtomicBool>,
    /// Set when the drain is over: requests still arriving get 503 while in-flight ones
    /// finish.
    pub closing: Arc<AtomicBool>,
    /// The client of `--helpfulness-url`, when given.
    pub helpfulness: Option<Helpfulness>,
    /// The client of the proxy's `--upstream`, when given.
    pub upstream: Option<Upstream>,
    /// The proxy's remote guard replicas (`--guard-url`), when given.
    pub remote_guard: Option<RemoteGuard>,
    /// The `x-qwen3guard-replica` header every response carries.
    pub replica: Option<axum::http::HeaderValue>,
}

impl AppState {
    /// A state whose scheduler is not started yet (models loading).
    pub fn new(config: ServerConfig) -> Self {
        AppState {
            helpfulness: config.helpfulness_url.as_deref().map(Helpfulness::new),
            upstream: config
                .proxy
                .as_ref()
                .map(|p| Upstream::new(p, !config.api_keys.is_empty())),
            remote_guard: config
                .proxy
                .as_ref()
                .filter(|p| !p.guard_urls.is_empty())
                .map(|p| RemoteGuard::new(&p.guard_urls, p.guard_api_key.clone(), p.timeout)),
            replica: axum::http::HeaderValue::from_str(&crate::sessions::id_safe(
                &config.replica_id,
            ))
            .ok(),
            scheduler: Arc::new(OnceLock::new()),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            counter: Arc::new(AtomicU64::new(0)),
            draining: Arc::new(AtomicBool::new(false)),
            closing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The scheduler, or 503 while the models load.
    pub fn scheduler(&self) -> Result<&Scheduler, AppError> {
        self.scheduler
            .get()
            .ok_or_else(|| AppError::Unavailable("the models are still loading".into()))
    }
}

/// The router; separate from serving so that tests drive it on any listener.
pub fn app(state: AppState) -> Router {
    let limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/live", get(handlers::live))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/moderations", post(handlers::moderations))
        .route("/v1/guard", post(handlers::guard))
        .route("/v1/reward", post(reward::reward))
        .route("/get_reward", post(reward::get_reward))
        .route("/v1/stream/sessions", post(handlers::open_session))
        .route(
            "/v1/stream/sessions/{id}",
            get(handlers::get_session).delete(handlers::delete_session),
        )
        .route("/v1/stream/sessions/{id}/append", post(handlers::append))
        .route("/v1/stream/ws", get(ws::upgrade))
        .route("/v1/chat/completions", post(proxy::chat_completions))
        .route("/v1/models", get(proxy::models))
        .route(
            "/beta/litellm_basic_guardrail_api",
            post(proxy::litellm::guardrail),
        )
        .route("/openapi.json", get(openapi::serve))
        .route("/", get(playground::index))
        .route("/playground/settings.json", get(playground::settings))
        .route("/playground/{file}", get(playground::asset))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::wrong_method)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::around,
        ))
        .with_state(state)
}
