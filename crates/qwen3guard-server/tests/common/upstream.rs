//! A scripted OpenAI-compatible upstream for the proxy's tests: each chat call takes the
//! next step of its script (text streamed in chosen pieces, or a chosen failure) and every
//! request it gets is recorded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// How a streamed step ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    /// A finish chunk, a usage chunk and `[DONE]`.
    Finish,
    /// An event that is not JSON.
    Malformed,
    /// The body ends with no finish reason.
    Disconnect,
    /// Keep-alive comments forever (the stream stays open and busy).
    Stall,
    /// Nothing more at all, the stream open.
    Silent,
}

/// One answer of the upstream.
#[derive(Clone, Debug)]
pub enum Step {
    /// The text in these pieces (one chunk each), then the ending.
    Stream(Vec<String>, Ending),
    /// This status and body.
    Status(u16, String),
}

/// `text` cut into pieces of `size` characters (0: whole).
pub fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if size == 0 {
        return vec![text.to_string()];
    }
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// The script and what was received.
#[derive(Default)]
pub struct Script {
    steps: Mutex<VecDeque<Step>>,
    /// Bodies received on `/chat/completions`.
    pub requests: Mutex<Vec<Value>>,
    /// Their headers.
    pub headers: Mutex<Vec<HeaderMap>>,
    /// Streamed bodies dropped before their end (the proxy closed the connection).
    pub dropped: AtomicUsize,
    /// Pause between chunks.
    pub pause: Mutex<Duration>,
}

impl Script {
    /// A script of these steps.
    pub fn new(steps: Vec<Step>) -> Arc<Self> {
        Arc::new(Script {
            steps: Mutex::new(steps.into()),
            ..Default::default()
        })
    }

    /// Requests received so far.
    pub fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// The router of the scripted upstream, under `/v1`.
pub fn router(script: Arc<Script>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route(
            "/v1/models",
            get(|| async {
                Json(json!({"object": "list", "data": [{"id": "scripted", "object": "model"}]}))
            }),
        )
        .with_state(script)
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 7,
           "model": "scripted", "system_fingerprint": "fp_scripted", "x_extra": {"kept": true},
           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
}

/// Sets `dropped` if the body is dropped before it ended.
struct Watch {
    script: Arc<Script>,
    ended: bool,
}

impl Watch {
    fn finish(&mut self) {
        self.ended = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.ended {
            self.script.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn chat(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    script.requests.lock().unwrap().push(body.clone());
    script.headers.lock().unwrap().push(headers);
    let step = script
        .steps
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Step::Stream(vec!["Fine.".into()], Ending::Finish));
    let (texts, ending) = match step {
        Step::Status(status, text) => {
            return (StatusCode::from_u16(status).unwrap(), text).into_response();
        }
        Step::Stream(texts, ending) => (texts, ending),
    };
    if body["stream"] != json!(true) {
        let completion = json!({"id": "chatcmpl-scripted", "object": "chat.completion",
            "created": 7, "model": "scripted", "system_fingerprint": "fp_scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": texts.concat()},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}});
        return Json(completion).into_response();
    }
    let mut frames: Vec<String> =
        vec![chunk(json!({"role": "assistant", "content": ""}), None).to_string()];
    frames.extend(
        texts
            .iter()
            .map(|t| chunk(json!({"content": t}), None).to_string()),
    );
    match ending {
        Ending::Finish => {
            frames.push(chunk(json!({}), Some("stop")).to_string());
            frames.push(
                json!({"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                "created": 7, "model": "scripted", "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}})
                .to_string(),
            );
            frames.push("[DONE]".into());
        }
        Ending::Malformed => frames.push("{not json".into()),
        Ending::Disconnect | Ending::Stall | Ending::Silent => {}
    }
    let pause = *script.pause.lock().unwrap();
    let stall = ending == Ending::Stall;
    let silent = ending == Ending::Silent;
    let watch = Watch {
        script: script.clone(),
        ended: false,
    };
    let state = (frames.into_iter(), watch);
    let stream = futures_util::stream::unfold(state, move |(mut frames, mut watch)| async move {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        match frames.next() {
            Some(f) => Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {f}\n\n"))),
                (frames, watch),
            )),
            None if silent => {
                std::future::pending::<()>().await;
                None
            }
            None if stall => {
                // Keep-alive comments forever: the proxy must close the connection.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Ok(Bytes::from_static(b": waiting\n\n")), (frames, watch)))
            }
            None => {
                watch.finish();
                None
            }
        }
    });
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The data frames of an event-stream body, in order (`[DONE]` as the string "[DONE]").
pub fn parse_frames(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|f| f.find("data: ").map(|i| &f[i + 6..]))
        .map(|d| serde_json::from_str(d.trim()).unwrap_or_else(|_| Value::from(d.trim())))
        .collect()
}

/// The content the frames carry, joined.
pub fn content(frames: &[Value]) -> String {
    frames
        .iter()
        .filter_map(|f| {
            f.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}
