//! One handler per endpoint: validate, ask the scheduler, shape the answer.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use qwen3guard::{GenOptions, Mode};
use serde_json::{json, Value};

use super::openai::{Moderation, ModerationResult, Native};
use super::openapi::{AppendBody, ErrorBody, GuardBody, ModerationBody, OpenBody};
use super::{AppError, AppState};
use crate::scheduler::{answer, Appended, Command, GenEngine, Opened, SessionView};
use crate::validation;

type Answer = Result<Response, AppError>;

/// The body's bytes; an over-long body is a 413 in the server's error shape.
pub(crate) fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, AppError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::TooLarge(
            "the request body is larger than the server's --max-body-bytes".into(),
        ),
        _ => AppError::Invalid(format!("cannot read the request body: {rejection}")),
    })
}

/// `GET /live`: the process is up.
#[utoipa::path(get, path = "/live", tag = "probes",
    responses((status = 200, description = "The process is up")))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

/// `GET /health`: 200 once the models are loaded and the scheduler (and the remote Gen
/// backend, if any) answers a probe in time, naming the models and the kernels'
/// instruction set; 503 otherwise.
#[utoipa::path(get, path = "/health", tag = "probes", responses(
    (status = 200, description = "Models loaded and the scheduler answers"),
    (status = 503, description = "Loading, stuck or stopped", body = ErrorBody)))]
pub async fn health(State(state): State<AppState>) -> Answer {
    let scheduler = state.scheduler()?;
    let probe = scheduler.call(Command::Probe);
    match tokio::time::timeout(state.config.limits.probe_timeout, probe).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(AppError::Unavailable(
                "the scheduler did not answer the health probe in time".into(),
            ))
        }
    }
    let models = scheduler.models();
    let backend = match &models.gen {
        Some((_, GenEngine::Remote(backend))) => {
            backend.probe().await?;
            Some(backend.url())
        }
        _ => None,
    };
    Ok(Json(json!({
        "status": "ok",
        // The kernels' instruction set: a deployment on an unexpected processor shows here.
        "isa": qwen3guard::isa().name(),
        "models": {
            "gen": models.gen.as_ref().map(|(name, _)| name),
            "stream": models.stream.as_ref().map(|(name, _)| name),
        },
        "gen_backend": backend,
    }))
    .into_response())
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "Prometheus text, names prefixed qwen3guard_")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// A known path with the wrong method.
pub async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::WrongMethod(format!(
        "{} does not accept {method}; see docs/SERVER.md",
        uri.path()
    ))
}

/// Anything else.
pub async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::NoRoute(format!(
        "no endpoint {method} {}; see docs/SERVER.md",
        uri.path()
    ))
}

pub(super) fn gen_name(state: &AppState) -> Result<String, AppError> {
    match &state.scheduler()?.models().gen {
        Some((name, _)) => Ok(name.clone()),
        None => Err(AppError::ModelNotLoaded(
            "no Gen model is loaded (start with --gen-model)".into(),
        )),
    }
}

/// The verdict as `moderate --json` writes it, plus `flagged` under `mode`. An output that
/// did not parse is judged by its label scores, so that a guard never waves it through
/// unread.
pub(crate) fn native(verdict: &qwen3guard::GenVerdict, mode: Mode) -> Native<'_> {
    let label = verdict.safety.unwrap_or_else(|| verdict.scores.best());
    Native {
        verdict,
        flagged: label.is_blocked(mode),
    }
}

/// `POST /v1/moderations`: OpenAI-compatible.
#[utoipa::path(post, path = "/v1/moderations", tag = "gen", request_body = ModerationBody, responses(
    (status = 200, description = "One result per input", body = Moderation),
    (status = 502, description = "The remote Gen backend (--gen-backend) failed or answered badly", body = ErrorBody),
    (status = 504, description = "The remote Gen backend did not answer in time", body = ErrorBody),
    (status = 400, description = "Malformed or invalid body", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Body or input too large", body = ErrorBody), (status = 503, description = "Loading, busy (Retry-After) or shutting down", body = ErrorBody)))]
pub async fn moderations(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let request = validation::moderation(&body(raw)?, state.config.limits.max_moderation_inputs)?;
    let model = request.model.clone().unwrap_or(gen_name(&state)?);
    let scheduler = state.scheduler()?;
    // Every input is queued before any is awaited, so that they share a batch; dropping
    // this handler (the client went away) drops the receivers, which cancels the rest.
    let pending = request
        .inputs
        .into_iter()
        .map(|input| {
            scheduler.submit(|reply| Command::Gen {
                conversation: qwen3guard::Conversation::from_prompt(&input, None),
                options: GenOptions::default(),
                category_scores: true,
                reply,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut outcomes = Vec::with_capacity(pending.len());
    for receiver in pending {
        outcomes.push(answer(receiver).await?);
    }
    let results: Vec<ModerationResult> = outcomes
        .iter()
        .map(|outcome| {
            let native = native(&outcome.verdict, state.config.mode);
            if native.flagged {
                state
                    .metrics
                    .flagged(outcome.verdict.categories.iter().map(String::as_str));
            }
            ModerationResult::new(
                native,
                outcome.category_scores.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    let id = format!("modr-{}", state.counter.fetch_add(1, Ordering::Relaxed));
    Ok(Json(Moderation { id, model, results }).into_response())
}

/// `POST /v1/guard`: the `moderate --json` fields plus `flagged`.
#[utoipa::path(post, path = "/v1/guard", tag = "gen", request_body = GuardBody, responses(
    (status = 200, description = "The moderate --json fields plus flagged", body = Native),
    (status = 502, description = "The remote Gen backend (--gen-backend) failed or answered badly", body = ErrorBody),
    (status = 504, description = "The remote Gen backend did not answer in time", body = ErrorBody),
    (status = 400, description = "Malformed or invalid body", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Body or input too large", body = ErrorBody), (status = 503, description = "Loading, busy (Retry-After) or shutting down", body = ErrorBody)))]
pub async fn guard(State(state): State<AppState>, raw: Result<Bytes, BytesRejection>) -> Answer {
    let request = validation::guard(&body(raw)?)?;
    let defaults = GenOptions::default();
    let options = GenOptions {
        verdict_only: request.verdict_only,
        max_new_tokens: request.max_new_tokens.unwrap_or(defaults.max_new_tokens),
        ..defaults
    };
    let outcome = state
        .scheduler()?
        .call(|reply| Command::Gen {
            conversation: request.conversation,
            options,
            category_scores: false,
            reply,
        })
        .await?;
    let native = native(&outcome.verdict, request.mode.unwrap_or(state.config.mode));
    if native.flagged {
        state
            .metrics
            .flagged(outcome.verdict.categories.iter().map(String::as_str));
    }
    Ok(Json(native).into_response())
}

/// `POST /v1/stream/sessions`.
#[utoipa::path(post, path = "/v1/stream/sessions", tag = "stream", request_body = OpenBody, responses(
    (status = 201, description = "The session and its prompt verdict", body = Opened),
    (status = 429, description = "Too many open sessions", body = ErrorBody),
    (status = 400, description = "Malformed or invalid body", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Body or input too large", body = ErrorBody), (status = 503, description = "Loading, busy (Retry-After) or shutting down", body = ErrorBody)))]
pub async fn open_session(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let request = validation::open(&body(raw)?)?;
    let opened = state
        .scheduler()?
        .call(|reply| Command::Open(request, reply))
        .await?;
    Ok((StatusCode::CREATED, Json(opened)).into_response())
}

/// `POST /v1/stream/sessions/{id}/append`.
#[utoipa::path(post, path = "/v1/stream/sessions/{id}/append", tag = "stream", request_body = AppendBody,
    params(("id" = String, Path, description = "The session id")), responses(
    (status = 200, description = "Verdicts of the tokens this append ran", body = Appended),
    (status = 404, description = "No such open session", body = ErrorBody),
    (status = 409, description = "The offset skips unsent input", body = ErrorBody),
    (status = 400, description = "Malformed or invalid body", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Body or input too large", body = ErrorBody), (status = 503, description = "Loading, busy (Retry-After) or shutting down", body = ErrorBody)))]
pub async fn append(
    State(state): State<AppState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let request = validation::append(&body(raw)?)?;
    let appended = state
        .scheduler()?
        .call(|reply| Command::Append(id, request, reply))
        .await?;
    Ok(Json(appended).into_response())
}

/// `GET /v1/stream/sessions/{id}`.
#[utoipa::path(get, path = "/v1/stream/sessions/{id}", tag = "stream",
    params(("id" = String, Path, description = "The session id")), responses(
    (status = 200, description = "The session's state and verdict", body = SessionView),
    (status = 404, description = "No such open session", body = ErrorBody)))]
pub async fn get_session(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    let view = state
        .scheduler()?
        .call(|reply| Command::Get(id, reply))
        .await?;
    Ok(Json(view).into_response())
}

/// `DELETE /v1/stream/sessions/{id}`: 204, then 404.
#[utoipa::path(delete, path = "/v1/stream/sessions/{id}", tag = "stream",
    params(("id" = String, Path, description = "The session id")), responses(
    (status = 204, description = "Closed"),
    (status = 404, description = "No such open session", body = ErrorBody)))]
pub async fn delete_session(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    state
        .scheduler()?
        .call(|reply| Command::Delete(id, reply))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
