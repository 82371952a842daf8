//! The guarded chat proxy: `POST /v1/chat/completions` in front of an OpenAI-compatible
//! LLM server, judged by the Stream model while it streams (see docs/PROXY.md).
//!
//! - [`chat`]: the request and chunk shapes; [`sse`]: event-stream framing;
//!   [`upstream`]: the client of the LLM server.
//! - [`judge`]: the answer's Stream session, here or on a remote guard ([`remote`]);
//!   [`ledger`]: which received text the client may see.
//! - [`streamed`]: a streamed answer (held or async release, cut-off, rollback and
//!   retries); [`whole`]: a non-streamed one; [`litellm`]: LiteLLM's guardrail API.
//!
//! The prompt is judged first (the Stream query heads, and Gen when asked: [`gen_check`]);
//! a flagged prompt is refused without calling the upstream.

pub mod chat;
pub mod gen_check;
pub mod judge;
pub mod ledger;
pub mod litellm;
pub mod remote;
pub mod sse;
pub mod streamed;
pub mod upstream;
pub mod whole;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::http::openapi::ErrorBody;
use crate::http::{AppError, AppState};
use chat::{chat_request, Identity, REFUSAL};
use judge::Judge;

/// When the client sees text the upstream generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Only once judged, keeping the last `hold_back` judged tokens back: nothing of a
    /// flagged pair ever reaches the client.
    Held,
    /// At once, judged alongside; a flag ends the stream with a retraction of the text
    /// from the flagged pair on.
    Async,
}

impl std::str::FromStr for Release {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "held" => Ok(Release::Held),
            "async" => Ok(Release::Async),
            _ => Err(format!("expected held or async, got {s:?}")),
        }
    }
}

/// The proxy's settings (`--upstream` and the flags beside it).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream's OpenAI-compatible base URL, ending in `/v1`.
    pub upstream: String,
    /// The bearer key the upstream wants; without it the client's own is forwarded
    /// (unless it is the guard's).
    pub api_key: Option<String>,
    /// Held or async release.
    pub release: Release,
    /// Judged tokens kept back under held release.
    pub hold_back: usize,
    /// Retries of the rollback loop (`--intervene retries=R`); `None`: a flag ends the
    /// answer.
    pub retries: Option<usize>,
    /// Longest wait for the upstream's next bytes (and for its connection).
    pub timeout: Duration,
    /// Guard replicas (`qwen3guard serve` base URLs, or one router in front of them) that
    /// judge the answers instead of an in-process Stream model; empty: judge here.
    pub guard_urls: Vec<String>,
    /// The bearer key the guard replicas want.
    pub guard_api_key: Option<String>,
}

/// The default hold-back: one token, the least that keeps the first token of a
/// debounced pair from the client (see docs/PROXY.md).
pub const DEFAULT_HOLD_BACK: usize = 1;

impl ProxyConfig {
    /// The settings for `upstream` with the defaults.
    pub fn new(upstream: &str) -> Self {
        ProxyConfig {
            upstream: upstream.to_string(),
            api_key: None,
            release: Release::Held,
            hold_back: DEFAULT_HOLD_BACK,
            retries: None,
            timeout: Duration::from_secs(120),
            guard_urls: Vec::new(),
            guard_api_key: None,
        }
    }
}

/// Reads `--intervene`'s value: `retries=R`.
pub fn parse_intervene(value: &str) -> Result<usize, String> {
    value
        .strip_prefix("retries=")
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("expected `retries=R` with R a count, got {value:?}"))
}

/// The proxy's settings and client, or 501 when the server has no `--upstream`.
pub(crate) fn configured(
    state: &AppState,
) -> Result<(&ProxyConfig, &upstream::Upstream), AppError> {
    match (&state.config.proxy, &state.upstream) {
        (Some(config), Some(client)) => Ok((config, client)),
        _ => Err(AppError::ModelNotLoaded(
            "this server has no upstream LLM (start it with --upstream URL)".into(),
        )),
    }
}

/// `POST /v1/chat/completions`: the upstream's answer, judged by the Stream model (see
/// docs/PROXY.md). The body is OpenAI's, passed to the upstream unchanged; each answer
/// carries a `qwen3guard` object (`checked_offset`, and the verdict at the end).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "proxy",
    request_body(content = Object, description = "An OpenAI chat-completions request (`n` must be 1)"),
    responses(
    (status = 200, description = "The judged completion, or with `stream` an event stream of judged chunks; `finish_reason` is `content_filter` where the guard stopped it"),
    (status = 501, description = "No --upstream configured", body = ErrorBody),
    (status = 502, description = "The upstream failed or answered a server error", body = ErrorBody),
    (status = 504, description = "The upstream sent nothing for --upstream-timeout-secs", body = ErrorBody),
    (status = 400, description = "Malformed or invalid body", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Body or input too large", body = ErrorBody), (status = 503, description = "Loading, busy (Retry-After) or shutting down", body = ErrorBody)))]
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    configured(&state)?;
    let request = chat_request(&crate::http::body(raw)?)?;
    let gen = gen_check::asked(&state, &headers)?;
    let judge = Judge::open(&state, &request.prompt, None, state.config.mode).await?;
    let mut guard = None;
    if judge.prompt_blocked() {
        guard = Some(json!({"flagged": "prompt", "prompt": chat::as_value(&judge.prompt)}));
    } else if gen {
        match gen_check::blocked(&state, request.prompt.clone()).await {
            Ok(Some(verdict)) => guard = Some(json!({"flagged": "prompt", "gen": verdict})),
            Ok(None) => {}
            Err(e) => {
                judge.close().await;
                return Err(e);
            }
        }
    }
    if let Some(guard) = guard {
        state.metrics.proxy_event("prompt_refused", 1);
        judge.close().await;
        return Ok(refusal(&state, &request, guard));
    }
    if request.stream {
        streamed::respond(state, request, headers, judge).await
    } else {
        let answer = whole::respond(&state, &request, &headers, judge, gen).await;
        answer.map(|value| Json(value).into_response())
    }
}

/// The answer to a refused prompt, in the shape the client asked for.
fn refusal(state: &AppState, request: &chat::ChatRequest, guard: Value) -> Response {
    let identity = Identity::fresh(state, request.body.get("model"));
    if !request.stream {
        let mut completion = identity.completion(REFUSAL, "content_filter");
        completion["qwen3guard"] = guard;
        return Json(completion).into_response();
    }
    // Nothing of an answer was judged: every chunk says so, as streamed answers' do.
    let mut first = identity.chunk(json!({"role": "assistant", "content": REFUSAL}), None);
    first["qwen3guard"] = json!({"checked_offset": 0});
    let mut last = identity.chunk(json!({}), Some("content_filter"));
    last["qwen3guard"] = guard;
    last["qwen3guard"]["checked_offset"] = json!(0);
    let body = [
        sse::frame(&first.to_string()),
        sse::frame(&last.to_string()),
        sse::done(),
    ]
    .concat();
    streamed::event_stream_response(axum::body::Body::from(body))
}

/// `GET /v1/models`: the upstream's list, as it sent it.
#[utoipa::path(get, path = "/v1/models", tag = "proxy", responses(
    (status = 200, description = "The upstream's model list, as it sent it"),
    (status = 501, description = "No --upstream configured", body = ErrorBody),
    (status = 502, description = "The upstream failed", body = ErrorBody)))]
pub async fn models(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (_, client) = configured(&state)?;
    let (status, value) = client.models(&headers).await?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok((status, Json(value)).into_response())
}
