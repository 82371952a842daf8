//! The client of the upstream OpenAI-compatible server (vLLM, SGLang, llama.cpp's
//! `llama-server`, Ollama): chat completions, streamed or whole, and the model list.
//!
//! A streamed answer is read event by event ([`Events`]); dropping it closes the
//! connection, which is how a cut-off or a client that went away stops the upstream's
//! generation. Every failure is an [`UpstreamError`] naming what went wrong, so that the
//! client gets an OpenAI-style error instead of a hang or a truncated stream.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use serde_json::Value;

use super::sse::SseParser;
use super::ProxyConfig;
use crate::http::AppError;

/// Why the upstream gave no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, or it broke before an answer.
    #[error("the upstream {url} could not be reached: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport's reason.
        reason: String,
    },
    /// Nothing arrived for longer than `--upstream-timeout`.
    #[error("the upstream {url} sent nothing for {seconds} s")]
    Timeout {
        /// The URL called.
        url: String,
        /// The limit.
        seconds: u64,
    },
    /// An error status.
    #[error("the upstream answered {status}: {body}")]
    Status {
        /// Its status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// An answer that is not what the protocol says.
    #[error("the upstream sent a malformed answer: {0}")]
    Malformed(String),
    /// The stream ended before the answer did.
    #[error("the upstream closed the stream before the answer was complete")]
    Disconnected,
}

impl From<UpstreamError> for AppError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Timeout { .. } => AppError::UpstreamTimeout(e.to_string()),
            UpstreamError::Status { status, .. } => AppError::UpstreamStatus {
                status,
                message: e.to_string(),
            },
            _ => AppError::Upstream(e.to_string()),
        }
    }
}

/// Request headers never forwarded: hop-by-hop ones, those the client library sets for
/// the new request, and `accept-encoding` (the proxy reads the body, so it must be plain).
const DROPPED_HEADERS: [&str; 12] = [
    super::gen_check::HEADER,
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "accept-encoding",
];

/// A client of one upstream.
#[derive(Clone)]
pub struct Upstream {
    base: String,
    key: Option<String>,
    /// Whether the client's own `Authorization` is the guard's key (not to be forwarded).
    guard_keys: bool,
    idle: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .finish()
    }
}

impl Upstream {
    /// A client of `config.upstream`; `guard_keys` tells whether the server checks keys.
    pub fn new(config: &ProxyConfig, guard_keys: bool) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .build()
            .unwrap_or_default();
        Upstream {
            base: config.upstream.trim_end_matches('/').to_string(),
            key: config.api_key.clone(),
            guard_keys,
            idle: config.timeout,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// The client's headers as the upstream gets them: hop-by-hop ones dropped, the
    /// bearer key replaced by `--upstream-api-key` when given (and dropped when it was the
    /// guard's own key).
    fn headers(&self, client: &HeaderMap) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in client {
            let lower = name.as_str();
            if DROPPED_HEADERS.contains(&lower) {
                continue;
            }
            if lower == "authorization" && (self.key.is_some() || self.guard_keys) {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        if let Some(key) = &self.key {
            if let Ok(value) = format!("Bearer {key}").parse() {
                headers.insert(HeaderName::from_static("authorization"), value);
            }
        }
        headers
    }

    fn unreachable(&self, url: &str, e: &reqwest::Error) -> UpstreamError {
        if e.is_timeout() {
            return UpstreamError::Timeout {
                url: url.to_string(),
                seconds: self.idle.as_secs(),
            };
        }
        // The source chain says why (refused, reset); the top level only "error sending".
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        UpstreamError::Unreachable {
            url: url.to_string(),
            reason,
        }
    }

    /// Sends a request and waits (at most the idle limit) for its status line; an error
    /// status becomes [`UpstreamError::Status`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let response = match tokio::time::timeout(self.idle, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(self.unreachable(url, &e)),
            Err(_) => {
                return Err(UpstreamError::Timeout {
                    url: url.to_string(),
                    seconds: self.idle.as_secs(),
                })
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = tokio::time::timeout(self.idle, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(UpstreamError::Status {
            status: status.as_u16(),
            body: body.chars().take(500).collect(),
        })
    }

    /// `POST /chat/completions` with `body` and the client's headers; the URL and the
    /// answer's status line.
    async fn post_chat(
        &self,
        client: &HeaderMap,
        body: &Value,
        accept: &'static str,
    ) -> Result<(String, reqwest::Response), UpstreamError> {
        let url = self.url("chat/completions");
        let request = self
            .client
            .post(&url)
            .headers(self.headers(client))
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(body.to_string());
        let response = self.send(request, &url).await?;
        Ok((url, response))
    }

    /// `POST /chat/completions` with `body`, answered as a stream of events.
    pub async fn stream(&self, client: &HeaderMap, body: &Value) -> Result<Events, UpstreamError> {
        let (url, response) = self.post_chat(client, body, "text/event-stream").await?;
        Ok(Events {
            response,
            parser: SseParser::default(),
            ready: std::collections::VecDeque::new(),
            finished: false,
            ended: false,
            body_done: false,
            idle: self.idle,
            url,
        })
    }

    /// `POST /chat/completions` with `body`, answered whole.
    pub async fn complete(&self, client: &HeaderMap, body: &Value) -> Result<Value, UpstreamError> {
        let (url, response) = self.post_chat(client, body, "application/json").await?;
        self.json_object(url, response).await
    }

    /// `POST /{path}` with `body` and only the configured key (no client's headers),
    /// answered whole: the remote Gen backend's completions.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, UpstreamError> {
        let url = self.url(path);
        let request = self
            .client
            .post(&url)
            .headers(self.headers(&HeaderMap::new()))
            .header("content-type", "application/json")
            .body(body.to_string());
        let response = self.send(request, &url).await?;
        self.json_object(url, response).await
    }

    /// A whole answer's body, which must be a JSON object.
    async fn json_object(
        &self,
        url: String,
        response: reqwest::Response,
    ) -> Result<Value, UpstreamError> {
        let bytes = match tokio::time::timeout(self.idle, response.bytes()).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Err(self.unreachable(&url, &e)),
            Err(_) => {
                return Err(UpstreamError::Timeout {
                    url,
                    seconds: self.idle.as_secs(),
                })
            }
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(value @ Value::Object(_)) => Ok(value),
            _ => Err(UpstreamError::Malformed(format!(
                "the answer of {url} is not a JSON object"
            ))),
        }
    }

    /// `GET /models`, passed through: the upstream's status and JSON body.
    pub async fn models(&self, client: &HeaderMap) -> Result<(u16, Value), UpstreamError> {
        let url = self.url("models");
        let request = self.client.get(&url).headers(self.headers(client));
        let response = self.send(request, &url).await?;
        let status = response.status().as_u16();
        let bytes = tokio::time::timeout(self.idle, response.bytes())
            .await
            .map_err(|_| UpstreamError::Timeout {
                url: url.clone(),
                seconds: self.idle.as_secs(),
            })?
            .map_err(|e| self.unreachable(&url, &e))?;
        let value = serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| UpstreamError::Malformed(format!("the model list is not JSON: {e}")))?;
        Ok((status, value))
    }
}

/// A streamed completion, one JSON chunk at a time.
pub struct Events {
    response: reqwest::Response,
    parser: SseParser,
    ready: std::collections::VecDeque<String>,
    /// A chunk with a `finish_reason` was seen: an end without `[DONE]` is still whole.
    finished: bool,
    /// `[DONE]` was read or the end reported: nothing more comes.
    ended: bool,
    /// The body has ended; what it held may still be in `ready`.
    body_done: bool,
    idle: Duration,
    url: String,
}

impl Events {
    /// The next chunk if it has already been received (no waiting): a caller that fell
    /// behind takes what is waiting and judges it in one append. `None` also before
    /// `[DONE]`, which [`Self::next`] reports.
    pub fn next_ready(&mut self) -> Option<Result<Value, UpstreamError>> {
        let payload = self.ready.front()?;
        if payload.trim() == "[DONE]" {
            return None;
        }
        let payload = self.ready.pop_front()?;
        Some(self.chunk(&payload))
    }

    /// One event's payload as a chunk.
    fn chunk(&mut self, payload: &str) -> Result<Value, UpstreamError> {
        let chunk = match serde_json::from_str::<Value>(payload) {
            Ok(chunk @ Value::Object(_)) => chunk,
            _ => {
                let start: String = payload.chars().take(80).collect();
                return Err(UpstreamError::Malformed(format!(
                    "an event is not a JSON object: {start:?}"
                )));
            }
        };
        // A stream that reports an error in-band (vLLM, llama.cpp do).
        if let Some(error) = chunk.get("error") {
            return Err(UpstreamError::Malformed(format!(
                "the upstream reported an error mid-stream: {error}"
            )));
        }
        if super::chat::finish_reason(&chunk).is_some() {
            self.finished = true;
        }
        Ok(chunk)
    }

    /// The next chunk, or `None` at the end (`[DONE]`, or the body's end after a finish
    /// reason). A body that ends earlier is [`UpstreamError::Disconnected`].
    pub async fn next(&mut self) -> Result<Option<Value>, UpstreamError> {
        loop {
            if let Some(payload) = self.ready.pop_front() {
                if payload.trim() == "[DONE]" {
                    self.ended = true;
                    return Ok(None);
                }
                return self.chunk(&payload).map(Some);
            }
            if self.ended {
                return Ok(None);
            }
            if self.body_done {
                self.ended = true;
                return match self.finished {
                    true => Ok(None),
                    false => Err(UpstreamError::Disconnected),
                };
            }
            let read = tokio::time::timeout(self.idle, self.response.chunk()).await;
            let bytes = match read {
                Err(_) => {
                    return Err(UpstreamError::Timeout {
                        url: self.url.clone(),
                        seconds: self.idle.as_secs(),
                    })
                }
                Ok(Err(_)) => return Err(UpstreamError::Disconnected),
                Ok(Ok(bytes)) => bytes,
            };
            let malformed = |e: super::sse::SseError| UpstreamError::Malformed(e.to_string());
            match bytes {
                Some(bytes) => self
                    .ready
                    .extend(self.parser.push(&bytes).map_err(malformed)?),
                None => {
                    self.ready.extend(self.parser.finish().map_err(malformed)?);
                    self.body_done = true;
                }
            }
        }
    }
}
