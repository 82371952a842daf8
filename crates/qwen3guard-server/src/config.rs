//! The server's settings: which models, where to listen, and the limits it enforces.
//!
//! The CLI parses flags (and `QWEN3GUARD_*` variables) into [`ServerConfig`]; nothing here
//! reads the environment, so tests build configs directly.

use std::time::Duration;

use qwen3guard::{Mode, Precision};

use crate::gen_backend::GenBackendConfig;
use crate::proxy::ProxyConfig;
use crate::reward::RewardKind;

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Gen checkpoint (directory or Hub repo id), for `/v1/moderations` and `/v1/guard`.
    pub gen_model: Option<String>,
    /// A remote completions server running Gen's forward passes (`--gen-backend`);
    /// `gen_model` then names the checkpoint whose tokenizer and template are used.
    pub gen_backend: Option<GenBackendConfig>,
    /// Stream checkpoint, for `/v1/stream/...`.
    pub stream_model: Option<String>,
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Precision the models are loaded in.
    pub precision: Precision,
    /// Default policy mode (requests may override it on `/v1/guard`).
    pub mode: Mode,
    /// Accepted bearer keys; empty means no authentication.
    pub api_keys: Vec<String>,
    /// The formula of `/get_reward`, whose OpenRLHF bodies cannot name one.
    pub reward: RewardKind,
    /// An OpenRLHF-protocol reward server giving the hybrid reward's helpfulness where a
    /// sample has none.
    pub helpfulness_url: Option<String>,
    /// The guarded chat proxy's upstream and release settings (`--upstream`).
    pub proxy: Option<ProxyConfig>,
    /// This replica's name, carried in its session ids and its `x-qwen3guard-replica`
    /// header so that routers and clients can tell replicas apart.
    pub replica_id: String,
    /// Queue, session and body limits.
    pub limits: Limits,
}

/// Limits that keep one client from exhausting the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Commands waiting for the scheduler at most; more get 503 with `Retry-After`.
    pub max_queue: usize,
    /// Gen requests run in one batch at most.
    pub max_batch: usize,
    /// Open stream sessions at most; more get 429.
    pub max_sessions: usize,
    /// Positions (prompt and response tokens) one session may hold; more get 413.
    pub max_session_tokens: usize,
    /// A session untouched this long is closed.
    pub session_idle: Duration,
    /// Request bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// Rollouts one reward request may hold at most; more get 400. Each takes one or two
    /// places in the queue (the answer, and the thinking when there is one).
    pub max_reward_samples: usize,
    /// Inputs one `/v1/moderations` request may hold at most; more get 400. Each takes a
    /// place in the queue, so a request larger than `max_queue` could never be accepted.
    pub max_moderation_inputs: usize,
    /// How long `/health` waits for the scheduler to answer its probe.
    pub probe_timeout: Duration,
    /// How long, after SIGTERM, open stream sessions may go on (new ones are refused)
    /// before the replica stops; it stops sooner once none is open.
    pub drain: Duration,
    /// How long shutdown waits for in-flight requests, after the drain.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queue: 1024,
            max_batch: 32,
            max_sessions: 1024,
            max_session_tokens: 32_768,
            session_idle: Duration::from_secs(600),
            max_body_bytes: 4 << 20,
            max_reward_samples: 256,
            max_moderation_inputs: 256,
            probe_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            gen_model: None,
            gen_backend: None,
            stream_model: None,
            host: "127.0.0.1".into(),
            port: 8080,
            precision: Precision::F32,
            mode: Mode::Strict,
            api_keys: Vec::new(),
            reward: RewardKind::GuardOnly,
            helpfulness_url: None,
            proxy: None,
            replica_id: "local".into(),
            limits: Limits::default(),
        }
    }
}
