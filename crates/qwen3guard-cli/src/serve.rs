//! `qwen3guard serve`: flags (and `QWEN3GUARD_*` variables) into the server's config.
//!
//! Everything else — routes, validation, scheduling, sessions — is the
//! `qwen3guard-server` crate; this file only parses.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use qwen3guard::{Mode, Precision};
use qwen3guard_server::gen_backend::GenBackendConfig;
use qwen3guard_server::proxy::{parse_intervene, ProxyConfig, Release, DEFAULT_HOLD_BACK};
use qwen3guard_server::reward::RewardKind;
use qwen3guard_server::{Limits, ServerConfig};

/// Arguments of `serve`. Every flag can also be set by the environment variable named in
/// its help.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Gen checkpoint (directory or Hub repo id): `/v1/moderations` and `/v1/guard`.
    #[arg(long, value_name = "DIR|REPO", env = "QWEN3GUARD_GEN_MODEL")]
    gen_model: Option<String>,
    /// Run Gen's forward passes on this OpenAI-compatible completions server (vLLM,
    /// SGLang, llama-server; its base URL, without `/v1`) instead of in-process:
    /// `--gen-model` then only gives the tokenizer, template and config. See
    /// docs/DEPLOY.md.
    #[arg(
        long,
        value_name = "URL",
        requires = "gen_model",
        env = "QWEN3GUARD_GEN_BACKEND"
    )]
    gen_backend: Option<String>,
    /// The `model` field sent to the Gen backend (default: the first of its
    /// `GET /v1/models`).
    #[arg(long, value_name = "NAME", env = "QWEN3GUARD_GEN_BACKEND_MODEL")]
    gen_backend_model: Option<String>,
    /// The bearer key the Gen backend wants.
    #[arg(long, value_name = "KEY", env = "QWEN3GUARD_GEN_BACKEND_API_KEY")]
    gen_backend_api_key: Option<String>,
    /// Seconds the Gen backend may take to connect and to answer each completion
    /// (then 504 upstream_timeout).
    #[arg(
        long,
        default_value_t = 60,
        value_name = "SECS",
        env = "QWEN3GUARD_GEN_BACKEND_TIMEOUT_SECS"
    )]
    gen_backend_timeout_secs: u64,
    /// Stream checkpoint (directory or Hub repo id): `/v1/stream/...`.
    #[arg(long, value_name = "DIR|REPO", env = "QWEN3GUARD_STREAM_MODEL")]
    stream_model: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "QWEN3GUARD_HOST")]
    host: String,
    /// Port to listen on (0 picks a free one, printed at start).
    #[arg(long, default_value_t = 8080, env = "QWEN3GUARD_PORT")]
    port: u16,
    /// Precision the models are loaded in.
    #[arg(
        long,
        default_value = "f32",
        value_name = "f32|bf16|q8",
        env = "QWEN3GUARD_DTYPE"
    )]
    dtype: Precision,
    /// Default policy: strict (Controversial is flagged) or loose; `/v1/guard` requests may
    /// override it.
    #[arg(
        long,
        default_value = "strict",
        value_name = "strict|loose",
        env = "QWEN3GUARD_MODE"
    )]
    mode: Mode,
    /// Accepted bearer key (repeat the flag, or separate keys by commas in the variable);
    /// without one the server is open.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "QWEN3GUARD_API_KEY",
        value_delimiter = ','
    )]
    api_keys: Vec<String>,
    /// The formula of `/get_reward` (OpenRLHF's bodies cannot name one); `/v1/reward`
    /// requests name theirs.
    #[arg(
        long,
        default_value = "guard_only",
        value_name = "guard_only|hybrid",
        env = "QWEN3GUARD_REWARD"
    )]
    reward: RewardKind,
    /// An OpenRLHF-protocol reward server (`POST {"query", "prompts"}` -> `{"rewards"}`)
    /// giving the hybrid reward's helpfulness where a sample has none.
    #[arg(long, value_name = "URL", env = "QWEN3GUARD_HELPFULNESS_URL")]
    helpfulness_url: Option<String>,
    /// An OpenAI-compatible LLM server's `/v1` to guard: adds `POST /v1/chat/completions`
    /// (judged by the Stream model while it streams) and `GET /v1/models`.
    #[arg(long, value_name = "URL", env = "QWEN3GUARD_UPSTREAM")]
    upstream: Option<String>,
    /// The bearer key the upstream wants (else the client's own is forwarded, unless
    /// the server checks keys of its own).
    #[arg(long, value_name = "KEY", env = "QWEN3GUARD_UPSTREAM_API_KEY")]
    upstream_api_key: Option<String>,
    /// Guard replicas judging the proxy's answers instead of a Stream model of its own
    /// (`qwen3guard serve` base URLs, or one router in front of them; repeat the flag or
    /// separate by commas): sessions keep to one replica and are replayed on another when
    /// it is lost.
    #[arg(
        long = "guard-url",
        value_name = "URL",
        env = "QWEN3GUARD_GUARD_URL",
        value_delimiter = ','
    )]
    guard_urls: Vec<String>,
    /// The bearer key the guard replicas want.
    #[arg(long, value_name = "KEY", env = "QWEN3GUARD_GUARD_API_KEY")]
    guard_api_key: Option<String>,
    /// held: text reaches the client once judged, less the hold-back; async: at once,
    /// retracted on a flag.
    #[arg(
        long,
        default_value = "held",
        value_name = "held|async",
        env = "QWEN3GUARD_RELEASE"
    )]
    release: Release,
    /// Judged tokens kept back under held release (1 keeps every token of a flagged pair
    /// from the client).
    #[arg(long, default_value_t = DEFAULT_HOLD_BACK, value_name = "N", env = "QWEN3GUARD_HOLD_BACK")]
    hold_back: usize,
    /// On a flag, roll back and ask the upstream to continue safely, up to R times, then
    /// refuse (`retries=R`).
    #[arg(long, value_name = "retries=R", value_parser = parse_intervene, env = "QWEN3GUARD_INTERVENE")]
    intervene: Option<usize>,
    /// Seconds the proxy waits for the upstream's next bytes.
    #[arg(
        long,
        default_value_t = 120,
        value_name = "SECS",
        env = "QWEN3GUARD_UPSTREAM_TIMEOUT_SECS"
    )]
    upstream_timeout_secs: u64,
    /// Rollouts one reward request may hold at most; more get 400.
    #[arg(long, default_value_t = Limits::default().max_reward_samples, env = "QWEN3GUARD_MAX_REWARD_SAMPLES")]
    max_reward_samples: usize,
    /// Inputs one moderation request may hold; more get 400.
    #[arg(long, default_value_t = Limits::default().max_moderation_inputs, env = "QWEN3GUARD_MAX_MODERATION_INPUTS")]
    max_moderation_inputs: usize,
    /// Requests waiting for the scheduler at most; more get 503 with Retry-After.
    #[arg(long, default_value_t = Limits::default().max_queue, env = "QWEN3GUARD_MAX_QUEUE")]
    max_queue: usize,
    /// Gen requests sharing one batch at most.
    #[arg(long, default_value_t = Limits::default().max_batch, env = "QWEN3GUARD_MAX_BATCH")]
    max_batch: usize,
    /// Open stream sessions at most; more get 429.
    #[arg(long, default_value_t = Limits::default().max_sessions, env = "QWEN3GUARD_MAX_SESSIONS")]
    max_sessions: usize,
    /// Tokens (prompt and response) one session may hold; more get 413.
    #[arg(long, default_value_t = Limits::default().max_session_tokens, env = "QWEN3GUARD_MAX_SESSION_TOKENS")]
    max_session_tokens: usize,
    /// Seconds after which an untouched session is closed.
    #[arg(long, default_value_t = Limits::default().session_idle.as_secs(), env = "QWEN3GUARD_SESSION_IDLE_SECS")]
    session_idle_secs: u64,
    /// Request bodies larger than this get 413.
    #[arg(long, default_value_t = Limits::default().max_body_bytes, env = "QWEN3GUARD_MAX_BODY_BYTES")]
    max_body_bytes: usize,
    /// This replica's name, carried in session ids and the `x-qwen3guard-replica`
    /// header (default: the host name, which is the pod's name on Kubernetes).
    #[arg(long, default_value_t = host_name(), env = "QWEN3GUARD_REPLICA_ID")]
    replica_id: String,
    /// Seconds open stream sessions may go on after SIGTERM (new ones get 503 and
    /// /health turns 503) before the replica stops; it stops sooner once none is open.
    #[arg(long, default_value_t = Limits::default().drain.as_secs(), env = "QWEN3GUARD_DRAIN_SECONDS")]
    drain_seconds: u64,
    /// Seconds shutdown waits for in-flight requests, after the drain.
    #[arg(long, default_value_t = Limits::default().shutdown_grace.as_secs(), env = "QWEN3GUARD_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: u64,
}

impl ServeArgs {
    fn config(&self) -> ServerConfig {
        let defaults = Limits::default();
        ServerConfig {
            gen_model: self.gen_model.clone(),
            gen_backend: self.gen_backend.as_deref().map(|url| GenBackendConfig {
                model: self.gen_backend_model.clone(),
                api_key: self.gen_backend_api_key.clone(),
                timeout: Duration::from_secs(self.gen_backend_timeout_secs),
                ..GenBackendConfig::new(url)
            }),
            stream_model: self.stream_model.clone(),
            host: self.host.clone(),
            port: self.port,
            precision: self.dtype,
            mode: self.mode,
            api_keys: self
                .api_keys
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
            reward: self.reward,
            helpfulness_url: self.helpfulness_url.clone(),
            proxy: self.upstream.as_deref().map(|upstream| ProxyConfig {
                api_key: self.upstream_api_key.clone(),
                release: self.release,
                hold_back: self.hold_back,
                retries: self.intervene,
                timeout: Duration::from_secs(self.upstream_timeout_secs),
                guard_urls: self.guard_urls.clone(),
                guard_api_key: self.guard_api_key.clone(),
                ..ProxyConfig::new(upstream)
            }),
            replica_id: self.replica_id.clone(),
            limits: Limits {
                max_queue: self.max_queue,
                max_batch: self.max_batch,
                max_sessions: self.max_sessions,
                max_session_tokens: self.max_session_tokens,
                session_idle: Duration::from_secs(self.session_idle_secs),
                max_body_bytes: self.max_body_bytes,
                max_reward_samples: self.max_reward_samples,
                max_moderation_inputs: self.max_moderation_inputs,
                drain: Duration::from_secs(self.drain_seconds),
                shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
                ..defaults
            },
        }
    }
}

/// The machine's host name (the pod's name in a Kubernetes pod), or `qwen3guard` where
/// it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "qwen3guard".into())
}

/// Runs `serve` until SIGTERM or Ctrl-C.
pub fn run(args: &ServeArgs) -> Result<()> {
    Ok(qwen3guard_server::serve(args.config())?)
}
