//! The guard over HTTP (`--guard-url`): the proxy's Stream sessions on a pool of
//! `qwen3guard serve` replicas instead of an in-process model, so that proxies and guards
//! scale separately.
//!
//! Affinity: each session gets a key of its own, sent as `x-qwen3guard-session` on every
//! call (a router in front of the replicas hashes on it) and used to order the pool by
//! rendezvous hashing, so that a session keeps to one replica and losing a replica moves
//! only its own sessions. Recovery: a call that finds its session gone (connection
//! refused or reset, a timeout, a 5xx such as a draining replica's 503, or a 404
//! `session_not_found`) re-opens the session on the next replica of its order with the
//! conversation and all the text sent so far (the server's replay path: one prefill, after
//! which the verdicts are the lost session's), then sends the call again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qwen3guard::stream::PromptVerdict;
use qwen3guard::{Conversation, Message, Role};
use serde_json::{json, Value};

use crate::http::AppError;
use crate::scheduler::{Appended, Opened};

/// The header routers hash on to keep a session on its replica.
pub const SESSION_HEADER: &str = "x-qwen3guard-session";

/// The pool of guard replicas.
#[derive(Clone)]
pub struct RemoteGuard {
    inner: Arc<Pool>,
}

struct Pool {
    client: reqwest::Client,
    urls: Vec<String>,
    api_key: Option<String>,
    next_key: AtomicU64,
    /// Tells this process's keys from another proxy's behind the same router.
    process: String,
}

/// Why a call did not get its answer.
enum Failure {
    /// The replica is gone, going, or no longer holds the session: replay elsewhere.
    Lost(String),
    /// The request itself was refused (a 4xx other than a lost session): the same call
    /// would fail anywhere.
    Refused(AppError),
}

impl RemoteGuard {
    /// A client of the replicas at `urls` (each the server's base URL, without `/v1`),
    /// sending `api_key` as the bearer key when given, waiting `timeout` per call.
    pub fn new(urls: &[String], api_key: Option<String>, timeout: Duration) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        RemoteGuard {
            inner: Arc::new(Pool {
                client: reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .build()
                    .unwrap_or_default(),
                urls: urls
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect(),
                api_key,
                next_key: AtomicU64::new(0),
                process: format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff),
            }),
        }
    }

    /// Opens a session judging an answer to `prompt`, continuing `partial` (text already
    /// judged) when given.
    pub async fn open(
        &self,
        prompt: &Conversation,
        partial: Option<String>,
    ) -> Result<RemoteSession, AppError> {
        let n = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let key = format!("px-{}-{n}", self.inner.process);
        let mut session = RemoteSession {
            order: rendezvous(&key, &self.inner.urls),
            guard: self.clone(),
            key,
            at: 0,
            id: String::new(),
            prompt: prompt.clone(),
            sent: partial.unwrap_or_default(),
            prompt_verdict: None,
        };
        session.reopen().await?;
        Ok(session)
    }

    /// One call with the session's `key`; a Gateway that keeps sessions by a header value
    /// of its own sends it back in the same header, and `key` takes it from then on.
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        key: &mut String,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut request = self
            .inner
            .client
            .request(method, &url)
            .header(SESSION_HEADER, key.as_str());
        if let Some(api_key) = &self.inner.api_key {
            request = request.bearer_auth(api_key);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Lost(format!("{url}: {e}")))?;
        let status = response.status();
        if let Some(issued) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
        {
            *key = issued.to_string();
        }
        let text = response
            .text()
            .await
            .map_err(|e| Failure::Lost(format!("{url}: {e}")))?;
        let value: Value = match text.is_empty() {
            true => Value::Null,
            false => serde_json::from_str(&text).map_err(|e| {
                Failure::Lost(format!("{url}: answered {status} with no JSON ({e})"))
            })?,
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_string();
        let code = value.pointer("/error/code").and_then(Value::as_str);
        let described = format!("the guard at {url} answered {status}: {message}");
        if status.is_server_error() || code == Some("session_not_found") {
            return Err(Failure::Lost(described));
        }
        Err(Failure::Refused(AppError::UpstreamStatus {
            status: status.as_u16(),
            message: described,
        }))
    }
}

/// The pool's indices, best first, for `key`: each replica scores hash(key, url), so that
/// every proxy orders the same key alike and removing a replica moves only its keys.
fn rendezvous(key: &str, urls: &[String]) -> Vec<usize> {
    let score = |url: &String| {
        let mut hasher = DefaultHasher::new();
        (key, url).hash(&mut hasher);
        hasher.finish()
    };
    let mut order: Vec<usize> = (0..urls.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(score(&urls[i])));
    order
}

/// One answer's session on a replica of the pool.
pub struct RemoteSession {
    guard: RemoteGuard,
    key: String,
    order: Vec<usize>,
    /// Replicas tried so far (the next one is `order[at % len]`).
    at: usize,
    id: String,
    prompt: Conversation,
    /// All text sent so far, what a replay re-opens with.
    sent: String,
    prompt_verdict: Option<PromptVerdict>,
}

impl RemoteSession {
    /// The prompt's verdict (from the first open).
    pub fn prompt(&self) -> Option<&PromptVerdict> {
        self.prompt_verdict.as_ref()
    }

    fn url(&self, path: &str) -> String {
        let urls = &self.guard.inner.urls;
        format!("{}{path}", urls[self.order[self.at % urls.len()]])
    }

    /// Every replica gets two chances before the call fails: one lost session on each,
    /// and one more in case a router in front moved it.
    fn attempts(&self) -> usize {
        2 * self.guard.inner.urls.len() + 1
    }

    /// POSTs `body` to `path` on the session's current replica and reads the answer as a
    /// `what` (an answer of another shape is a fault of that replica: try another).
    async fn post<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        body: &Value,
        what: &str,
    ) -> Result<T, Failure> {
        let url = self.url(path);
        let value = self
            .guard
            .call(
                reqwest::Method::POST,
                url.clone(),
                &mut self.key,
                Some(body.clone()),
            )
            .await?;
        serde_json::from_value(value)
            .map_err(|e| Failure::Lost(format!("{url}: the answer is not {what} ({e})")))
    }

    /// Opens (or re-opens, with everything sent so far) on the next replica that answers.
    async fn reopen(&mut self) -> Result<(), AppError> {
        let mut messages = self.prompt.messages().to_vec();
        if !self.sent.is_empty() {
            messages.push(Message::new(Role::Assistant, self.sent.clone()));
        }
        let body = json!({ "messages": messages });
        let mut last = String::new();
        for _ in 0..self.attempts() {
            let opened = self.post::<Opened>("/v1/stream/sessions", &body, "a session");
            match opened.await {
                Ok(opened) => {
                    self.id = opened.id;
                    self.prompt_verdict.get_or_insert(opened.prompt);
                    return Ok(());
                }
                Err(Failure::Lost(why)) => {
                    last = why;
                    self.at += 1;
                }
                Err(Failure::Refused(e)) => return Err(e),
            }
        }
        Err(AppError::Upstream(format!(
            "no guard replica could open the session (last: {last})"
        )))
    }

    /// Judges `text` (the next part of the answer); `last` ends it.
    pub async fn append(&mut self, text: &str, last: bool) -> Result<Appended, AppError> {
        let body = match text.is_empty() {
            true => json!({"final": last}),
            false => json!({"text": text, "offset": self.sent.chars().count(), "final": last}),
        };
        let mut lost = String::new();
        for _ in 0..self.attempts() {
            let path = format!("/v1/stream/sessions/{}/append", self.id);
            match self
                .post::<Appended>(&path, &body, "an append's verdicts")
                .await
            {
                Ok(appended) => {
                    self.sent.push_str(text);
                    return Ok(appended);
                }
                Err(Failure::Lost(why)) => {
                    lost = why;
                    self.forget();
                    self.at += 1;
                    self.reopen().await?;
                }
                Err(Failure::Refused(e)) => return Err(e),
            }
        }
        Err(AppError::Upstream(format!(
            "the guard lost the session on every replica (last: {lost})"
        )))
    }

    /// Closes the session on its replica, without waiting for the answer.
    fn forget(&self) {
        let (guard, mut key) = (self.guard.clone(), self.key.clone());
        let url = self.url(&format!("/v1/stream/sessions/{}", self.id));
        tokio::spawn(async move {
            let _ = guard
                .call(reqwest::Method::DELETE, url, &mut key, None)
                .await;
        });
    }

    /// Closes the session (its cache is freed now rather than at idle expiry).
    pub async fn close(mut self) {
        let url = self.url(&format!("/v1/stream/sessions/{}", self.id));
        let _ = self
            .guard
            .call(reqwest::Method::DELETE, url, &mut self.key, None)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_orders_every_replica_and_losing_one_moves_only_its_keys() {
        let urls: Vec<String> = (0..4).map(|i| format!("http://10.0.0.{i}:8080")).collect();
        let fewer: Vec<String> = urls[..3].to_vec();
        let mut moved = 0;
        for k in 0..200 {
            let key = format!("key-{k}");
            let order = rendezvous(&key, &urls);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3]);
            assert_eq!(
                order,
                rendezvous(&key, &urls),
                "the same key, the same order"
            );
            let first = order[0];
            let after = rendezvous(&key, &fewer)[0];
            if first == 3 {
                assert_eq!(
                    after, order[1],
                    "a lost replica's keys go to their second choice"
                );
                moved += 1;
            } else {
                assert_eq!(after, first, "other keys stay where they were");
            }
        }
        assert!(
            (20..=80).contains(&moved),
            "about a quarter of keys were on it: {moved}"
        );
    }
}
