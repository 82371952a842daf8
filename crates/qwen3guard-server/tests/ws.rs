//! `GET /v1/stream/ws`: the session operations as JSON frames, with the same verdicts as
//! the HTTP endpoints and the library, errors as frames, and cleanup when a socket closes.

mod common;

use std::time::{Duration, Instant};

use common::{as_client_sees, library_session, stream, TestServer};
use qwen3guard_server::ServerConfig;
use serde_json::{json, Value};
use tungstenite::Message;

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

fn connect(server: &TestServer) -> Socket {
    let (socket, response) =
        tungstenite::connect(format!("ws://{}/v1/stream/ws", server.addr)).expect("upgrade");
    assert_eq!(response.status().as_u16(), 101);
    socket
}

/// Sends a frame and reads its reply.
fn exchange(socket: &mut Socket, frame: Value) -> Value {
    socket.send(Message::text(frame.to_string())).unwrap();
    loop {
        match socket.read().unwrap() {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

const PROMPT: &str = "Tell me about the moon.";

#[test]
fn frames_carry_the_session_operations_with_the_library_verdicts() {
    let server = TestServer::start(ServerConfig::default());
    let mut socket = connect(&server);
    let opened = exchange(
        &mut socket,
        json!({"op": "open", "seq": 1, "messages": [{"role": "user", "content": PROMPT}]}),
    );
    assert_eq!(opened["op"], "open");
    assert_eq!(opened["seq"], 1);
    let id = opened["id"].as_str().unwrap().to_string();

    let guard = stream();
    let mut library = library_session(PROMPT);
    assert_eq!(opened["prompt"], as_client_sees(library.prompt_verdict()));

    let ids = guard
        .prompter()
        .tokenizer()
        .encode_text("The moon is Earth's only natural satellite.")
        .unwrap();
    for (n, &token) in ids.iter().enumerate() {
        // `id` defaults to the session opened on this socket.
        let reply = exchange(
            &mut socket,
            json!({"op": "append", "seq": n + 2, "token_ids": [token]}),
        );
        assert_eq!(reply["op"], "append");
        assert_eq!(reply["seq"], n + 2);
        let expected = library.append(&[token]).unwrap().to_vec();
        assert_eq!(reply["tokens"], as_client_sees(&expected), "token {n}");
        assert_eq!(reply["checked_offset"], n + 1);
    }
    let state = exchange(&mut socket, json!({"op": "get", "id": id}));
    assert_eq!(state["position"], library.position());
    // The same session is reachable over HTTP.
    let over_http = server.get(&format!("/v1/stream/sessions/{id}")).ok();
    assert_eq!(over_http["position"], state["position"]);

    let closed = exchange(&mut socket, json!({"op": "close"}));
    assert_eq!(closed["closed"], true);
    let gone = exchange(
        &mut socket,
        json!({"op": "append", "id": id, "token_ids": [13]}),
    );
    assert_eq!(gone["status"], 404);
    assert_eq!(gone["error"]["code"], "session_not_found");
}

#[test]
fn bad_frames_get_error_frames_and_the_socket_stays_usable() {
    let server = TestServer::start(ServerConfig::default());
    let mut socket = connect(&server);
    socket.send(Message::text("{not json")).unwrap();
    let Message::Text(text) = socket.read().unwrap() else {
        panic!("expected a text frame")
    };
    let reply: Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(reply["status"], 400);
    assert_eq!(reply["error"]["code"], "invalid_request");

    let cases = [
        (json!({"seq": 5}), "`op`"),
        (json!({"op": "fly"}), "unknown `op`"),
        (
            json!({"op": "append", "token_ids": [1]}),
            "no session is open",
        ),
        (json!({"op": "open", "messages": []}), "`messages` is empty"),
    ];
    for (frame, needle) in cases {
        let reply = exchange(&mut socket, frame.clone());
        assert_eq!(reply["status"], 400, "{frame}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{frame}: {message}");
    }
    let opened = exchange(
        &mut socket,
        json!({"op": "open", "messages": [{"role": "user", "content": PROMPT}]}),
    );
    assert!(opened["id"].is_string(), "{opened}");
}

#[test]
fn sessions_opened_on_a_socket_close_with_it() {
    let server = TestServer::start(ServerConfig::default());
    let mut socket = connect(&server);
    let opened = exchange(
        &mut socket,
        json!({"op": "open", "messages": [{"role": "user", "content": PROMPT}]}),
    );
    let path = format!("/v1/stream/sessions/{}", opened["id"].as_str().unwrap());
    server.get(&path).ok();
    socket.close(None).unwrap();
    let _ = socket.read();
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get(&path).status != 404 {
        assert!(Instant::now() < deadline, "the session outlived its socket");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_plain_get_is_told_to_upgrade() {
    let server = TestServer::start(ServerConfig::default());
    let reply = server.get("/v1/stream/ws");
    assert_eq!(reply.error_code(400), "invalid_request");
}
