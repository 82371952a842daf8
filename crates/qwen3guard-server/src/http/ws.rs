//! `GET /v1/stream/ws`: the session operations as JSON frames over one WebSocket, for the
//! lowest latency (no request set-up per token).
//!
//! Each text frame is an object with `op` (`open`, `append`, `get`, `close`), an optional
//! `seq` echoed back, and the fields of the matching HTTP body; `append`, `get` and
//! `close` take an `id`, defaulting to the session last opened on this socket. Each frame
//! gets one reply frame: the HTTP answer's fields plus `op` (and `seq`), or `error` (the
//! HTTP error body) with the `status` the HTTP endpoint would have returned. Frames run in
//! order; sessions opened on a socket are closed when it closes, so a dropped connection
//! leaks nothing (a client that wants to resume elsewhere reopens with its partial
//! message, as over HTTP).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{AppError, AppState};
use crate::scheduler::Command;
use crate::validation;

/// `GET /v1/stream/ws`.
#[utoipa::path(get, path = "/v1/stream/ws", tag = "stream", responses(
    (status = 101, description = "Upgraded: session operations as JSON frames (docs/SERVER.md)"),
    (status = 400, description = "Not a WebSocket upgrade", body = super::openapi::ErrorBody)))]
pub async fn upgrade(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return AppError::Invalid(format!(
                "/v1/stream/ws takes a WebSocket upgrade: {rejection}"
            ))
            .into_response()
        }
    };
    let limit = state.config.limits.max_body_bytes;
    upgrade
        .max_message_size(limit)
        .on_upgrade(move |socket| serve_socket(state, socket))
}

/// A reply frame: the answer's own fields with `op` and `seq` beside them.
#[derive(Serialize)]
struct Reply<'a, T: Serialize> {
    op: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<&'a Value>,
    #[serde(flatten)]
    body: T,
}

/// An error frame's body.
#[derive(Serialize)]
struct Failure {
    status: u16,
    error: Value,
}

/// A closed session's confirmation.
#[derive(Serialize)]
struct Closed {
    id: String,
    closed: bool,
}

async fn serve_socket(state: AppState, mut socket: WebSocket) {
    let mut opened: Vec<String> = Vec::new();
    while let Some(Ok(message)) = socket.recv().await {
        let bytes = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes.as_ref(),
            Message::Close(_) => break,
            // Pings are answered by axum; pongs need nothing.
            _ => continue,
        };
        let reply = frame(&state, &mut opened, bytes).await;
        if socket.send(Message::Text(reply.into())).await.is_err() {
            break;
        }
    }
    if let Ok(scheduler) = state.scheduler() {
        for id in opened {
            let _ = scheduler.call(|reply| Command::Delete(id, reply)).await;
        }
    }
}

/// Runs one frame and writes its reply.
async fn frame(state: &AppState, opened: &mut Vec<String>, bytes: &[u8]) -> String {
    let mut map = match validation::object(bytes) {
        Ok(map) => map,
        Err(e) => return failure("error", None, e),
    };
    let seq = map.remove("seq");
    let op = match map.remove("op") {
        Some(Value::String(op)) => op,
        _ => {
            let e = AppError::Invalid("each frame needs `op`: open, append, get or close".into());
            return failure("error", seq.as_ref(), e);
        }
    };
    match run(state, opened, &op, seq.as_ref(), map).await {
        Ok(text) => text,
        Err(e) => failure(&op, seq.as_ref(), e),
    }
}

/// The reply frame for `body`.
fn reply<T: Serialize>(op: &str, seq: Option<&Value>, body: T) -> String {
    serde_json::to_string(&Reply { op, seq, body }).unwrap_or_else(|e| {
        failure(
            op,
            seq,
            AppError::Engine(qwen3guard::Error::Internal(e.to_string())),
        )
    })
}

/// What a frame asks for.
#[derive(Clone, Copy)]
enum Op {
    Open,
    Append,
    Get,
    Close,
}

impl Op {
    fn parse(op: &str) -> Result<Op, AppError> {
        match op {
            "open" => Ok(Op::Open),
            "append" => Ok(Op::Append),
            "get" => Ok(Op::Get),
            "close" => Ok(Op::Close),
            other => Err(AppError::Invalid(format!(
                "unknown `op` {other:?}: open, append, get or close"
            ))),
        }
    }
}

async fn run(
    state: &AppState,
    opened: &mut Vec<String>,
    name: &str,
    seq: Option<&Value>,
    mut map: Map<String, Value>,
) -> Result<String, AppError> {
    let op = Op::parse(name)?;
    let scheduler = state.scheduler()?;
    // `append`, `get` and `close` name a session, by default the last one opened here.
    let mut target = || match map.remove("id") {
        Some(Value::String(id)) => Ok(id),
        None => opened.last().cloned().ok_or_else(|| {
            AppError::Invalid("no session is open on this socket; send `open` or give `id`".into())
        }),
        Some(_) => Err(AppError::Invalid("`id` must be a string".into())),
    };
    match op {
        Op::Open => {
            let request = validation::open_fields(&map)?;
            let session = scheduler
                .call(|reply| Command::Open(request, reply))
                .await?;
            opened.push(session.id.clone());
            Ok(reply(name, seq, session))
        }
        Op::Append => {
            let id = target()?;
            let request = validation::append_fields(&map)?;
            let appended = scheduler
                .call(|reply| Command::Append(id, request, reply))
                .await?;
            Ok(reply(name, seq, appended))
        }
        Op::Get => {
            let id = target()?;
            let view = scheduler.call(|reply| Command::Get(id, reply)).await?;
            Ok(reply(name, seq, view))
        }
        Op::Close => {
            let id = target()?;
            scheduler
                .call(|reply| Command::Delete(id.clone(), reply))
                .await?;
            opened.retain(|o| *o != id);
            Ok(reply(name, seq, Closed { id, closed: true }))
        }
    }
}

fn failure(op: &str, seq: Option<&Value>, error: AppError) -> String {
    let status = error.status().0.as_u16();
    let body = Failure {
        status,
        error: error.body(),
    };
    serde_json::to_string(&Reply { op, seq, body }).unwrap_or_default()
}
