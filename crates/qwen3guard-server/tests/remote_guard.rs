//! The chat proxy judging through guard replicas over HTTP (`--guard-url`) instead of a
//! Stream model of its own: its answers equal, frame for frame, those of a proxy judging
//! in-process, even when replicas are unreachable or lose sessions in the middle of an
//! answer (the proxy replays them on another replica). The replicas serve the constructed
//! Stream checkpoint (" bomb", " kill" Unsafe, " vote", " election" Controversial), so
//! that cut-offs and verdicts are meaningful.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::upstream::{parse_frames, pieces, router, Ending, Script, Step};
use common::{fixture, TestServer};
use qwen3guard::{Checkpoint, LoadOptions, StreamGuard};
use qwen3guard_server::proxy::ProxyConfig;
use qwen3guard_server::{ready_state, Models, ServerConfig};
use serde_json::{json, Value};

const PROMPT: &str = "Tell me about your day.";
const ANSWERS: [&str; 3] = [
    "It was calm. Then came the bomb kill order, and we left at dawn.",
    "It was calm: tea, a long walk, a vote on the plan, and a good dinner with friends.",
    "We argued about the vote election results until late, then slept.",
];

fn constructed() -> Models {
    let checkpoint = Checkpoint::open(&fixture("stream-constructed")).unwrap();
    let guard = StreamGuard::load(&checkpoint, &LoadOptions::default()).unwrap();
    Models {
        gen: None,
        stream: Some(("stream-constructed".into(), guard)),
    }
}

fn guard_replica(name: &str) -> TestServer {
    let config = ServerConfig {
        stream_model: Some("stream-constructed".into()),
        replica_id: name.into(),
        ..ServerConfig::default()
    };
    TestServer::with_state(ready_state(config, constructed()))
}

/// A replica that loses each session it holds after forwarding `keep` of its appends
/// (as if it had restarted): later appends to that session get 404 `session_not_found`.
/// Closes still reach the replica behind, so that the test can see every session closed.
/// Like a Gateway that keeps sessions by a value of its own, it answers each open with
/// `x-qwen3guard-session: gw-<key>` and records the header of every append.
#[derive(Clone)]
struct Lossy {
    target: String,
    keep: usize,
    client: reqwest::Client,
    appends: Arc<Mutex<HashMap<String, usize>>>,
    lost: Arc<AtomicUsize>,
    append_keys: Arc<Mutex<Vec<String>>>,
}

async fn lossy(
    State(front): State<Lossy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let key = headers
        .get("x-qwen3guard-session")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if path.ends_with("/append") {
        front.append_keys.lock().unwrap().push(key.clone());
    }
    if let Some(id) = path
        .strip_prefix("/v1/stream/sessions/")
        .and_then(|rest| rest.strip_suffix("/append"))
    {
        let mut appends = front.appends.lock().unwrap();
        let seen = appends.entry(id.to_string()).or_default();
        if *seen >= front.keep {
            front.lost.fetch_add(1, Ordering::Relaxed);
            let body = json!({"error": {"message": "gone", "type": "not_found_error",
                                        "code": "session_not_found"}});
            return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
        }
        *seen += 1;
    }
    let mut request = front
        .client
        .request(method, format!("{}{path}", front.target))
        .body(body);
    for name in ["content-type", "x-qwen3guard-session", "authorization"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let mut response = (status, answer.bytes().await.unwrap()).into_response();
    if path == "/v1/stream/sessions" {
        let issued = match key.starts_with("gw-") {
            true => key,
            false => format!("gw-{key}"),
        };
        response
            .headers_mut()
            .insert("x-qwen3guard-session", issued.parse().unwrap());
    }
    response
}

/// An address nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A proxy in front of a scripted upstream, judging with `guard_urls` (or in-process
/// when empty).
fn proxy(
    steps: Vec<Step>,
    guard_urls: Vec<String>,
    retries: Option<usize>,
) -> (TestServer, TestServer) {
    let upstream = TestServer::with_router(router(Script::new(steps)));
    let mut proxy = ProxyConfig::new(&format!("http://{}/v1", upstream.addr));
    proxy.retries = retries;
    let local = guard_urls.is_empty();
    proxy.guard_urls = guard_urls;
    let config = ServerConfig {
        stream_model: local.then(|| "stream-constructed".into()),
        proxy: Some(proxy),
        ..ServerConfig::default()
    };
    let models = match local {
        true => constructed(),
        false => Models {
            gen: None,
            stream: None,
        },
    };
    (
        TestServer::with_state(ready_state(config, models)),
        upstream,
    )
}

fn chat(proxy: &TestServer, stream: bool) -> Value {
    let body = json!({"model": "scripted", "stream": stream,
                      "messages": [{"role": "user", "content": PROMPT}]});
    let reply = proxy.post("/v1/chat/completions", &body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    match stream {
        true => Value::from(parse_frames(&reply.text())),
        false => {
            let mut whole = reply.json();
            // The proxy names its own completion; the rest must match.
            whole["id"] = Value::Null;
            whole["created"] = Value::Null;
            whole
        }
    }
}

#[test]
fn remote_guards_judge_as_the_in_process_model_through_lost_replicas() {
    let (g1, g2) = (guard_replica("g1"), guard_replica("g2"));
    let front = Lossy {
        target: format!("http://{}", g1.addr),
        keep: 2,
        client: reqwest::Client::new(),
        appends: Arc::default(),
        lost: Arc::default(),
        append_keys: Arc::default(),
    };
    let (lost, append_keys) = (front.lost.clone(), front.append_keys.clone());
    let front = TestServer::with_router(Router::new().fallback(lossy).with_state(front));
    let urls = vec![
        dead_url(),
        format!("http://{}", front.addr),
        format!("http://{}", g2.addr),
    ];
    let mut compared = 0;
    for answer in ANSWERS {
        for size in [1, 3, 7] {
            for stream in [true, false] {
                let steps = || vec![Step::Stream(pieces(answer, size), Ending::Finish)];
                let (local, _u1) = proxy(steps(), Vec::new(), None);
                let (remote, _u2) = proxy(steps(), urls.clone(), None);
                assert_eq!(
                    chat(&remote, stream),
                    chat(&local, stream),
                    "{answer:?} in pieces of {size}, stream {stream}"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 18);
    assert!(
        lost.load(Ordering::Relaxed) > 0,
        "some sessions were lost on the lossy replica and replayed"
    );
    let keys = append_keys.lock().unwrap().clone();
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.starts_with("gw-px-")),
        "appends carry the value the open's answer issued: {keys:?}"
    );
    // The rollback loop re-opens sessions too: through the pool, its answer is the same.
    let steps = || {
        vec![
            Step::Stream(pieces(ANSWERS[0], 4), Ending::Finish),
            Step::Stream(pieces(" we stayed home and read.", 4), Ending::Finish),
        ]
    };
    let (local, _u1) = proxy(steps(), Vec::new(), Some(1));
    let (remote, _u2) = proxy(steps(), urls.clone(), Some(1));
    assert_eq!(chat(&remote, true), chat(&local, true), "with a rollback");
    // Every session the proxies opened on the replicas was closed again.
    // (A replayed session's old copy is closed without waiting: give it a moment.)
    for replica in [&g1, &g2] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !replica
            .get("/metrics")
            .text()
            .contains("qwen3guard_open_sessions 0")
        {
            assert!(std::time::Instant::now() < deadline, "sessions left open");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[test]
fn a_pool_with_no_replica_answering_is_a_clear_502() {
    let (remote, _upstream) = proxy(
        vec![Step::Stream(pieces(ANSWERS[1], 5), Ending::Finish)],
        vec![dead_url(), dead_url()],
        None,
    );
    let body = json!({"model": "scripted", "stream": true,
                      "messages": [{"role": "user", "content": PROMPT}]});
    let reply = remote.post("/v1/chat/completions", &body);
    assert_eq!(reply.error_code(502), "upstream_error");
    assert!(
        reply
            .text()
            .contains("no guard replica could open the session"),
        "{}",
        reply.text()
    );
}
