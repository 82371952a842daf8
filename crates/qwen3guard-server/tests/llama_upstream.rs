//! A real upstream behind the proxy: llama.cpp's `llama-server` serving a GGUF of the Gen
//! fixture (a tiny random Qwen3, so its greedy answers are deterministic gibberish that the
//! constructed Stream checkpoint lets through). Streamed and whole answers through the
//! proxy equal the upstream's own; an upstream killed mid-stream ends the client's stream
//! with an error frame.
//!
//! `.ci/llama-upstream` builds llama-server from the llama-cpp-python sdist on PyPI and
//! writes the GGUF (both cached outside the clone); `.ci/run` names them in
//! `QWEN3GUARD_LLAMA_SERVER` and `QWEN3GUARD_LLAMA_GGUF`. Elsewhere the tests say they are
//! skipped; under CI (`CI` set) a missing build fails them instead.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::llama::{built, Llama};
use common::upstream::{content, parse_frames as frames};
use common::{fixture, TestServer};
use qwen3guard::{Checkpoint, LoadOptions, StreamGuard};
use qwen3guard_server::proxy::ProxyConfig;
use qwen3guard_server::{ready_state, Models, ServerConfig};
use serde_json::{json, Value};

fn proxy_for(llama: &Llama) -> TestServer {
    let checkpoint = Checkpoint::open(&fixture("stream-constructed")).unwrap();
    let guard = StreamGuard::load(&checkpoint, &LoadOptions::default()).unwrap();
    let config = ServerConfig {
        stream_model: Some("stream-constructed".into()),
        proxy: Some(ProxyConfig::new(&format!(
            "http://127.0.0.1:{}/v1",
            llama.port
        ))),
        ..ServerConfig::default()
    };
    let models = Models {
        gen: None,
        stream: Some(("stream-constructed".into(), guard)),
    };
    TestServer::with_state(ready_state(config, models))
}

fn body(stream: bool, max_tokens: usize) -> Value {
    json!({"model": "gen-tied", "stream": stream, "max_tokens": max_tokens, "temperature": 0,
           "seed": 1, "messages": [{"role": "user", "content": "Tell me about your day."}]})
}

fn finish(frames: &[Value]) -> Option<String> {
    frames
        .iter()
        .find_map(|f| {
            f.pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
        })
        .map(str::to_string)
}

#[test]
fn answers_through_the_proxy_are_the_upstreams() {
    let Some((server, gguf)) = built() else {
        return;
    };
    let llama = Llama::start(&server, &gguf);
    let proxy = proxy_for(&llama);
    let post = |addr, body: &Value| {
        common::request(
            addr,
            "POST",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    // Streamed: the same text and end, chunk for chunk.
    let direct = frames(&post(llama.addr(), &body(true, 40)).text());
    let guarded = frames(&post(proxy.addr, &body(true, 40)).text());
    let text = content(&direct);
    assert!(!text.is_empty(), "{direct:?}");
    assert_eq!(content(&guarded), text);
    assert_eq!(finish(&guarded), finish(&direct));
    assert_eq!(guarded.last(), Some(&Value::from("[DONE]")));
    let last = &guarded[guarded.len() - 2];
    assert_eq!(
        last["qwen3guard"]["verdict"]["risk_level"], "Safe",
        "{last}"
    );
    // Whole: the same message and usage.
    let direct = post(llama.addr(), &body(false, 40)).ok();
    let guarded = post(proxy.addr, &body(false, 40)).ok();
    assert_eq!(
        guarded["choices"][0]["message"]["content"],
        direct["choices"][0]["message"]["content"]
    );
    assert_eq!(guarded["choices"][0]["message"]["content"], text.as_str());
    assert_eq!(guarded["usage"], direct["usage"]);
    assert_eq!(guarded["model"], direct["model"]);
    // The model list is the upstream's.
    let models = common::request(proxy.addr, "GET", "/v1/models", &[], b"").ok();
    let upstream = common::request(llama.addr(), "GET", "/v1/models", &[], b"").ok();
    assert_eq!(models["data"], upstream["data"]);
}

#[test]
fn an_upstream_killed_mid_stream_ends_with_an_error_frame() {
    let Some((server, gguf)) = built() else {
        return;
    };
    let mut llama = Llama::start(&server, &gguf);
    let proxy = proxy_for(&llama);
    let mut socket = std::net::TcpStream::connect(proxy.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let request = body(true, 3000).to_string();
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{request}",
        request.len()
    )
    .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("data: ") {
        let n = socket.read(&mut buffer).unwrap();
        assert!(n > 0, "the stream ended before its first chunk");
        received.extend_from_slice(&buffer[..n]);
    }
    // Stopped at once (so that it cannot finish the answer first), then killed.
    let pid = llama.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    llama.child.kill().unwrap();
    llama.child.wait().unwrap();
    socket.read_to_end(&mut received).unwrap();
    let f = frames(&String::from_utf8_lossy(&received));
    let last = f.last().unwrap();
    assert!(last["error"]["message"].is_string(), "{last}");
    assert_eq!(last["error"]["code"], "upstream_error");
    assert!(!f.contains(&Value::from("[DONE]")));
}
