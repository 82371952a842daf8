//! A streamed answer: the upstream's chunks judged as they arrive and released to the
//! client held (after judging, less the hold-back) or async (at once), until the end or a
//! debounced flag. A flag cuts the answer at the first token of the flagged pair; with
//! `--intervene retries=R` it rolls back to the text before it instead and asks the
//! upstream to continue from there (CARE's detect, roll back, intervene), up to R times.
//!
//! The pump runs on its own task and writes frames into a bounded channel that the
//! response body reads. When the client goes away the channel closes, the pump stops at
//! once (it waits on the upstream and on the channel together) and dropping the upstream
//! stream closes its connection.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use qwen3guard::stream::ResponseVerdict;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::chat::{ChatRequest, Identity};
use super::judge::Judge;
use super::ledger::Ledger;
use super::upstream::{Events, Upstream};
use super::{configured, sse, ProxyConfig, Release};
use crate::http::{AppError, AppState};

/// The instruction added to the system turn when the upstream is asked to continue a
/// rolled-back answer.
pub const INTERVENTION: &str = "Continue the answer so that it stays safe: give nothing harmful, \
dangerous, illegal or unethical, and if the request cannot be answered safely, decline it briefly.";

/// A `text/event-stream` response over `body`.
pub fn event_stream_response(body: Body) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Calls the upstream and answers with the judged stream; an upstream that fails before
/// its first byte is an ordinary error response.
pub async fn respond(
    state: AppState,
    request: ChatRequest,
    headers: HeaderMap,
    judge: Judge,
) -> Result<Response, AppError> {
    let (config, client) = configured(&state)?;
    let (config, client) = (config.clone(), client.clone());
    let body = Value::Object(request.body.clone());
    let events = match client.stream(&headers, &body).await {
        Ok(events) => events,
        Err(e) => {
            judge.close().await;
            return Err(e.into());
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let pump = Pump {
        state,
        request,
        headers,
        config,
        client,
        judge,
        events,
        ledger: Ledger::new(),
        identity: None,
        checked: 0,
        tx,
    };
    tokio::spawn(pump.run());
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok(event_stream_response(Body::from_stream(frames)))
}

/// Why the pump stopped early.
enum End {
    /// The client went away.
    Gone,
    /// Something failed: the client gets an error frame.
    Failed(AppError),
}

impl From<AppError> for End {
    fn from(e: AppError) -> Self {
        End::Failed(e)
    }
}

/// The upstream body that continues `prefix` (an intervention's retry): the instruction
/// in the system turn, the prefix as a trailing assistant message to continue (vLLM's
/// `continue_final_message`; a server that ignores the field may answer afresh after
/// it).
pub fn continuation(body: &Map<String, Value>, prefix: &str) -> Value {
    let mut body = body.clone();
    let mut messages = match body.get("messages") {
        Some(Value::Array(m)) => m.clone(),
        _ => Vec::new(),
    };
    let first_is_system = messages.first().is_some_and(|m| {
        m.get("role").and_then(Value::as_str) == Some("system")
            && m.get("content").is_some_and(Value::is_string)
    });
    if first_is_system {
        let content = messages[0]["content"].as_str().unwrap_or_default();
        messages[0]["content"] = Value::from(format!("{content}\n\n{INTERVENTION}"));
    } else {
        messages.insert(0, json!({"role": "system", "content": INTERVENTION}));
    }
    if !prefix.is_empty() {
        messages.push(json!({"role": "assistant", "content": prefix}));
        body.insert("continue_final_message".into(), Value::Bool(true));
        body.insert("add_generation_prompt".into(), Value::Bool(false));
    }
    body.insert("messages".into(), Value::Array(messages));
    Value::Object(body)
}

struct Pump {
    state: AppState,
    request: ChatRequest,
    headers: HeaderMap,
    config: ProxyConfig,
    client: Upstream,
    judge: Judge,
    events: Events,
    ledger: Ledger,
    identity: Option<Identity>,
    /// The largest `checked_offset` sent (it never goes back, even after a rollback).
    checked: usize,
    tx: mpsc::Sender<Bytes>,
}

impl Pump {
    async fn run(mut self) {
        match self.pump().await {
            Ok(()) => {}
            Err(End::Gone) => {
                self.state
                    .metrics
                    .cancelled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(End::Failed(e)) => {
                let frame = sse::frame(&json!({"error": e.body()}).to_string());
                let _ = self.tx.send(frame).await;
            }
        }
        self.judge.close().await;
    }

    fn held(&self) -> bool {
        self.config.release == Release::Held
    }

    async fn pump(&mut self) -> Result<(), End> {
        let mut floor = 0;
        let mut attempts = 0;
        let mut wait_tokens = 0;
        loop {
            let next = tokio::select! {
                biased;
                () = self.tx.closed() => return Err(End::Gone),
                next = self.events.next() => next.map_err(AppError::from)?,
            };
            let (appended, done) = match next {
                None => (self.judge.feed(String::new(), true).await?, true),
                Some(chunk) => {
                    if self.identity.is_none() {
                        self.identity = Some(Identity::of(&chunk));
                    }
                    let mut text = self.ledger.push(chunk);
                    // Behind the upstream (the guard is busy), judge everything already
                    // received in one append instead of one chunk per step.
                    while let Some(more) = self.events.next_ready() {
                        text.push_str(&self.ledger.push(more.map_err(AppError::from)?));
                    }
                    if !self.held() {
                        let everything = self.ledger.release(self.ledger.end());
                        self.send(everything, None).await?;
                    }
                    if text.is_empty() {
                        self.release(floor).await?;
                        continue;
                    }
                    (self.judge.feed(text, false).await?, false)
                }
            };
            self.checked = self.checked.max(self.judge.settled());
            if let Some(stop) = appended.stop {
                let cut = self.judge.cut_point(&stop);
                let retries = self.config.retries.unwrap_or(0);
                if self.held() && attempts < retries {
                    attempts += 1;
                    wait_tokens += self.judge.tokens_from(cut);
                    floor = cut;
                    self.rollback(cut).await?;
                    continue;
                }
                return self.stop(stop, cut, attempts, wait_tokens).await;
            }
            if done {
                let rest = self.ledger.finish();
                let mut guard = json!({"verdict": appended.response});
                if attempts > 0 {
                    guard["retries"] = json!(attempts);
                    guard["wait_tokens"] = json!(wait_tokens);
                }
                self.send(rest, Some(guard)).await?;
                self.frame(sse::done()).await?;
                return Ok(());
            }
            self.release(floor).await?;
        }
    }

    /// Held release: everything judged but the hold-back.
    async fn release(&mut self, floor: usize) -> Result<(), End> {
        if !self.held() {
            return Ok(());
        }
        let point = self.judge.hold_point(self.config.hold_back, floor);
        let chunks = self.ledger.release(point);
        self.send(chunks, None).await
    }

    /// Sends the judged text before `cut`, forgets the rest, and asks the upstream to
    /// continue from there with a fresh session replaying the kept text.
    async fn rollback(&mut self, cut: usize) -> Result<(), End> {
        self.state.metrics.proxy_event("interventions", 1);
        let kept = self.ledger.rollback(cut);
        self.send(kept, None).await?;
        let prefix = self.ledger.judged_before(cut);
        let content = self.ledger.field_before(cut, true);
        let mode = self.judge.mode();
        let fresh = Judge::open(&self.state, &self.request.prompt, Some(prefix), mode).await?;
        std::mem::replace(&mut self.judge, fresh).close().await;
        let body = continuation(&self.request.body, &content);
        self.events = tokio::select! {
            biased;
            () = self.tx.closed() => return Err(End::Gone),
            events = self.client.stream(&self.headers, &body) => events.map_err(AppError::from)?,
        };
        Ok(())
    }

    /// Ends the answer on a flag: the text before the cut (held) or a retraction of what
    /// was sent from it on (async), then a `content_filter` chunk with the verdict.
    async fn stop(
        &mut self,
        stop: ResponseVerdict,
        cut: usize,
        attempts: usize,
        wait_tokens: usize,
    ) -> Result<(), End> {
        let metrics = &self.state.metrics;
        metrics.flagged(stop.category.iter().map(String::as_str));
        metrics.proxy_event(if self.held() { "cut_off" } else { "retracted" }, 1);
        if attempts > 0 {
            metrics.proxy_event("refused_after_retries", 1);
        }
        metrics.proxy_event("wait_tokens", wait_tokens);
        let mut guard = json!({"verdict": stop, "cut_offset": cut});
        if self.held() {
            let before = self.ledger.cut(cut);
            self.send(before, None).await?;
        } else if self.ledger.released() > cut {
            guard["retract"] = json!({"from": cut, "to": self.ledger.released()});
        }
        if self.config.retries.is_some() {
            guard["retries"] = json!(attempts);
            guard["wait_tokens"] = json!(wait_tokens);
            guard["refused"] = json!(true);
        }
        let identity = match &self.identity {
            Some(identity) => identity.clone(),
            None => Identity::fresh(&self.state, self.request.body.get("model")),
        };
        let last = identity.chunk(json!({}), Some("content_filter"));
        self.send(vec![last], Some(guard)).await?;
        self.frame(sse::done()).await
    }

    /// Sends chunks, each with the checked offset; `last` (verdict fields) goes on the
    /// last of them.
    async fn send(&mut self, chunks: Vec<Value>, last: Option<Value>) -> Result<(), End> {
        let count = chunks.len();
        for (i, mut chunk) in chunks.into_iter().enumerate() {
            let mut guard = json!({"checked_offset": self.checked});
            if i + 1 == count {
                if let (Some(Value::Object(extra)), Some(g)) = (&last, guard.as_object_mut()) {
                    g.extend(extra.clone());
                }
            }
            if let Some(object) = chunk.as_object_mut() {
                object.insert("qwen3guard".into(), guard);
            }
            self.frame(sse::frame(&chunk.to_string())).await?;
        }
        Ok(())
    }

    async fn frame(&self, bytes: Bytes) -> Result<(), End> {
        self.tx.send(bytes).await.map_err(|_| End::Gone)
    }
}
