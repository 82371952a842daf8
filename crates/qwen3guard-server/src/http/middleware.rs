//! What runs around every request: the request id, API-key checks, metrics.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppError, AppState};

/// Paths open without a key (probes and scrapers).
const OPEN_PATHS: [&str; 4] = ["/live", "/health", "/metrics", "/openapi.json"];

/// Echoes or assigns `x-request-id`, checks the bearer key, and counts the request.
pub async fn around(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_string();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string)
        .unwrap_or_else(|| format!("req-{}", state.counter.fetch_add(1, Ordering::Relaxed)));
    let keys = &state.config.api_keys;
    let authorized = keys.is_empty()
        || OPEN_PATHS.contains(&path.as_str())
        || crate::playground::is_open(&path)
        || request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| {
                keys.iter()
                    .any(|k| constant_time_eq(k.as_bytes(), given.as_bytes()))
            });
    let mut response = if state.closing.load(Ordering::Relaxed) && path != "/live" {
        AppError::Unavailable("the server is shutting down".into()).into_response()
    } else if state.draining.load(Ordering::Relaxed) && starts_something(&path) {
        AppError::Draining(match path.as_str() {
            "/health" => "not ready for new traffic",
            _ => "open the session on another replica",
        })
        .into_response()
    } else if authorized {
        next.run(request).await
    } else {
        AppError::Unauthorized.into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    if let Some(replica) = &state.replica {
        response
            .headers_mut()
            .insert("x-qwen3guard-replica", replica.clone());
    }
    state.metrics.request(
        endpoint_label(&path),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Whether a draining replica refuses `path`: readiness, and whatever would start a
/// session that could outlive the drain (a stream session, a WebSocket, a guarded chat).
/// Appends to, reads of and closes of open sessions go on, and so do one-shot Gen calls.
fn starts_something(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/v1/stream/sessions" | "/v1/stream/ws" | "/v1/chat/completions"
    )
}

/// The route a path belongs to, so that session ids do not become metric labels.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/live" => "/live",
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        "/v1/moderations" => "/v1/moderations",
        "/v1/guard" => "/v1/guard",
        "/v1/stream/sessions" => "/v1/stream/sessions",
        "/v1/stream/ws" => "/v1/stream/ws",
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/models" => "/v1/models",
        "/beta/litellm_basic_guardrail_api" => "/beta/litellm_basic_guardrail_api",
        "/" => "/",
        p if p.starts_with("/playground/") => "/playground/{file}",
        p if p.starts_with("/v1/stream/sessions/") && p.ends_with("/append") => {
            "/v1/stream/sessions/{id}/append"
        }
        p if p.starts_with("/v1/stream/sessions/") => "/v1/stream/sessions/{id}",
        _ => "other",
    }
}

/// Compares without an early exit, so that the time taken does not reveal how much of a
/// guessed key was right (the length may show; keys are not secret in length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert_eq!(
            endpoint_label("/v1/stream/sessions/ss_1/append"),
            "/v1/stream/sessions/{id}/append"
        );
    }
}
