//! The playground page at `GET /` in headless Chromium, against a real `qwen3guard serve`
//! on the constructed checkpoints (Stream: " bomb", " kill", " poison" Unsafe, " vote" and
//! " election" Controversial, everything else Safe), with a key required and a scripted
//! upstream behind the proxy. The test types and clicks as a person would, and compares
//! what the page shows with the API's own answers to the same requests.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use browser::{chromium, Browser};
use common::served::{fixture, Served};
use common::{constructed_checkpoint, Scratch};
use serde_json::{json, Value};

const KEY: &str = "playground-key";
const PROMPT: &str = "Tell me about your day.";
/// " vote election" is a Controversial pair (strict stops there), " bomb kill" an Unsafe
/// pair (loose stops there).
const ANSWER: &str = "We argued about the vote election results. Then came the bomb kill order, and we left at dawn.";
/// What the scripted upstream streams back to any chat request.
const UPSTREAM_ANSWER: &str = "It was calm. Then came the bomb kill order, and we left.";

/// An OpenAI-compatible upstream on 127.0.0.1 that streams [`UPSTREAM_ANSWER`] a few
/// characters per chunk, and lists one model.
fn scripted_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    addr
}

fn answer(stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let mut stream = reader.into_inner();
    if request_line.starts_with("GET /v1/models") {
        let body = json!({"object": "list", "data": [{"id": "scripted", "object": "model"}]});
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.to_string().len()
        );
        return;
    }
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    );
    let chars: Vec<char> = UPSTREAM_ANSWER.chars().collect();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
               "model": "scripted", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    for piece in chars.chunks(5) {
        let text: String = piece.iter().collect();
        let frame = chunk(json!({"content": text}), Value::Null);
        if write!(stream, "data: {frame}\n\n").is_err() {
            return; // the proxy cut the answer off and hung up
        }
        let _ = stream.flush();
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = write!(
        stream,
        "data: {}\n\ndata: [DONE]\n\n",
        chunk(json!({}), json!("stop"))
    );
}

/// The session verdicts the API gives for [`ANSWER`] sent whole.
fn api_stream(served: &Served) -> (Vec<Value>, Value) {
    let opened = served.post(
        "/v1/stream/sessions",
        &json!({"messages": [{"role": "user", "content": PROMPT}]}),
    );
    assert_eq!(opened.status, 201, "{}", opened.text());
    let id = opened.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/stream/sessions/{id}/append");
    let first = served.post(&path, &json!({"text": ANSWER}));
    let last = served.post(&path, &json!({"final": true}));
    assert_eq!(last.status, 200, "{}", last.text());
    let last = last.json();
    let mut tokens: Vec<Value> = first.json()["tokens"].as_array().unwrap().clone();
    tokens.extend(last["tokens"].as_array().unwrap().iter().cloned());
    (tokens, last["stops"].clone())
}

/// The proxy's streamed answer to `message`, as any client receives it: the content and
/// the finish reason.
fn api_chat(served: &Served, message: &str) -> (String, String) {
    let reply = served.post(
        "/v1/chat/completions",
        &json!({"model": "scripted", "stream": true, "messages": [{"role": "user", "content": message}]}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (mut content, mut finish) = (String::new(), String::new());
    for line in reply.text().lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let choice = &chunk["choices"][0];
        content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = reason.to_string();
        }
    }
    (content, finish)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn count(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

#[test]
fn the_page_shows_what_the_api_answers() {
    let Some(executable) = chromium() else { return };
    let dir = Scratch::new("playground");
    let gen = constructed_checkpoint(&dir, "gen", None);
    let upstream = format!("http://{}/v1", scripted_upstream());
    let mut served = Served::with_args(&[
        "--gen-model",
        gen.to_str().unwrap(),
        "--stream-model",
        &fixture("stream-constructed"),
        "--dtype",
        "f32",
        "--api-key",
        KEY,
        "--upstream",
        &upstream,
    ]);
    // The page and its files load without a key; the API does not answer without one.
    assert_eq!(served.get("/").status, 200);
    assert_eq!(served.get("/playground/app.js").status, 200);
    assert_eq!(served.get("/v1/models").status, 401);
    served.key = Some(KEY.into());

    let mut page = Browser::launch(&executable, 1280, 900);
    page.goto(&format!("{}/", served.url()));
    let ready = page.wait_for("document.body.dataset.ready", 60, "the page to start");
    assert_eq!(
        ready,
        "true",
        "{}",
        page.eval("document.querySelector('#error').textContent")
    );
    assert_eq!(
        page.eval("document.querySelector('#key-field').hidden"),
        false
    );
    assert_eq!(
        page.eval("document.querySelector('#proxy-panel').hidden"),
        false
    );

    // The conversation, typed into the editor's two turns.
    page.type_into("#turns li:nth-child(1) textarea", PROMPT);
    page.type_into("#turns li:nth-child(2) textarea", ANSWER);

    // Without the key: the server's 401, said in the page.
    page.click("#run-gen");
    page.wait_for(
        "document.querySelector('#gen-panel').dataset.state === 'error'",
        60,
        "the 401",
    );
    assert_eq!(
        page.eval("document.querySelector('#error').dataset.status"),
        "401"
    );
    let said = text(&page.eval("document.querySelector('#error').textContent"));
    assert!(said.contains("API key"), "{said}");

    // With it: Gen's verdict as /v1/guard gives it.
    page.type_into("#api-key", KEY);
    page.click("#run-gen");
    page.wait_for(
        "document.querySelector('#gen-panel').dataset.state === 'done'",
        120,
        "Gen",
    );
    assert_eq!(page.eval("document.querySelector('#error').hidden"), true);
    let guard = served.post(
        "/v1/guard",
        &json!({"messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": ANSWER}]}),
    );
    let guard = guard.json();
    assert_eq!(
        page.eval("document.querySelector('#gen-label').dataset.label"),
        guard["safety"]
    );
    let categories = text(&page.eval("document.querySelector('#gen-categories').textContent"));
    for category in guard["categories"].as_array().unwrap() {
        assert!(
            categories.contains(category.as_str().unwrap()),
            "{categories}"
        );
    }

    // Stream: the answer typed out to a session, every token coloured as the API judged it.
    page.click("#run-stream");
    page.wait_for(
        "document.querySelector('#stream-panel').dataset.state === 'done'",
        300,
        "Stream",
    );
    let (tokens, stops) = api_stream(&served);
    let of_level = |level: &str| tokens.iter().filter(|t| t["risk_level"] == level).count() as u64;
    assert_eq!(
        of_level("Unsafe"),
        2,
        "the constructed answer has two Unsafe tokens"
    );
    let unsafe_spans = page.eval("document.querySelectorAll('#tokens .tok.unsafe').length");
    assert_eq!(count(&unsafe_spans), of_level("Unsafe"));
    assert_eq!(
        count(&page.eval("document.querySelectorAll('#tokens .tok.controversial').length")),
        of_level("Controversial")
    );
    let shown: String =
        text(&page.eval(
            "[...document.querySelectorAll('#tokens .tok')].map((e) => e.textContent).join('')",
        ));
    let judged: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(shown, judged);
    assert_eq!(shown, ANSWER);
    let flag = "document.querySelector('#tokens .tok.flag')?.dataset.index";
    let strict_at = stops["strict"]["flagged_at"].clone();
    let loose_at = stops["loose"]["flagged_at"].clone();
    assert_ne!(
        strict_at, loose_at,
        "strict stops at the Controversial pair, loose later"
    );
    assert_eq!(page.eval(flag), Value::from(strict_at.to_string()));
    let blocked = "document.querySelectorAll('#tokens .tok.blocked').length";
    assert_eq!(
        count(&page.eval(blocked)),
        of_level("Unsafe") + of_level("Controversial")
    );

    // The switch moves the marker and re-colours, with no request to the server.
    let requests = "performance.getEntriesByType('resource').length";
    let before = page.eval(requests);
    page.click("input[name=mode][value=loose]");
    let moved = format!("document.querySelector('#stream-summary').dataset.flag !== '{strict_at}'");
    page.wait_for(&moved, 10, "the loose marker");
    assert_eq!(page.eval(flag), Value::from(loose_at.to_string()));
    assert_eq!(count(&page.eval(blocked)), of_level("Unsafe"));
    assert_eq!(page.eval(requests), before, "the switch ran nothing again");

    // The keyboard reaches every token's details.
    page.eval("document.querySelector('#tokens').focus()");
    page.press("Home");
    page.press("ArrowRight");
    let detail = text(&page.eval("document.querySelector('#token-detail').textContent"));
    let second = &tokens[1];
    assert!(
        detail.contains(&format!("token id {}", second["token_id"])),
        "{detail}"
    );

    // The proxy: the answer as a client of /v1/chat/completions receives it, cut off.
    page.type_into("#chat-input", PROMPT);
    page.click("#run-chat");
    page.wait_for(
        "document.querySelector('#proxy-panel').dataset.state === 'done'",
        120,
        "the chat",
    );
    let (content, finish) = api_chat(&served, PROMPT);
    assert_eq!(finish, "content_filter");
    assert_eq!(
        page.eval("document.querySelector('#chat-answer').textContent"),
        content
    );
    assert_eq!(
        page.eval("document.querySelector('#chat-answer').dataset.finish"),
        finish
    );
    assert!(
        UPSTREAM_ANSWER.starts_with(&content) && !content.contains("bomb"),
        "{content}"
    );
    let log = text(&page.eval("document.querySelector('#chat-events').textContent"));
    assert!(log.contains("Cut off: Unsafe"), "{log}");

    // A screenshot for docs/SERVER.md (written there with QWEN3GUARD_BLESS=1), strict.
    page.click("input[name=mode][value=strict]");
    page.eval("document.querySelector('#tokens').focus()");
    page.press("End");
    let png = page.screenshot();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("playground.png");
    std::fs::write(&out, &png).unwrap();
    if std::env::var_os("QWEN3GUARD_BLESS").is_some() {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/playground.png");
        std::fs::write(docs, &png).unwrap();
    }
}
