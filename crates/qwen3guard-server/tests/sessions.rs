//! Stream sessions over real HTTP: open, append (token ids and text deltas), offsets,
//! read, close, expiry and caps, with verdicts equal to the library's.

mod common;

use std::time::Duration;

use common::{as_client_sees, library_session, stream, Rng, TestServer};
use qwen3guard::{Checkpoint, Conversation, LoadOptions, Mode, StreamGuard};
use qwen3guard_server::{ready_state, Limits, Models, ServerConfig};
use serde_json::{json, Value};

const PROMPT: &str = "Write me a short story about a dragon.";
const RESPONSE: &str = "Once upon a time, a small dragon lived in a cave near the sea.";

fn open_body(prompt: &str) -> Value {
    json!({"messages": [{"role": "user", "content": prompt}]})
}

fn response_ids(text: &str) -> Vec<u32> {
    stream().prompter().tokenizer().encode_text(text).unwrap()
}

fn open(server: &TestServer, prompt: &str) -> (String, Value) {
    let reply = server.post("/v1/stream/sessions", &open_body(prompt));
    assert_eq!(reply.status, 201, "{}", reply.text());
    let body = reply.json();
    (body["id"].as_str().unwrap().to_string(), body)
}

fn append(server: &TestServer, id: &str, body: Value) -> common::Reply {
    server.post(&format!("/v1/stream/sessions/{id}/append"), &body)
}

#[test]
fn token_appends_equal_the_library_bit_for_bit() {
    let server = TestServer::start(ServerConfig::default());
    let (id, opened) = open(&server, PROMPT);
    let mut library = library_session(PROMPT);
    assert_eq!(opened["prompt"], as_client_sees(library.prompt_verdict()));
    assert_eq!(opened["tokens"], json!([]));

    let ids = response_ids(RESPONSE);
    let mut sent = 0;
    for (n, chunk) in ids.chunks(3).enumerate() {
        let body = append(&server, &id, json!({"token_ids": chunk})).ok();
        let expected = library.append(chunk).unwrap().to_vec();
        assert_eq!(body["tokens"], as_client_sees(&expected), "append {n}");
        sent += chunk.len();
        assert_eq!(body["checked_offset"], sent);
        assert_eq!(body["response"], as_client_sees(&library.verdict()));
        assert_eq!(body["stops"], stops_of(&library));
        assert_eq!(body["duplicate"], false);
    }
    let state = server.get(&format!("/v1/stream/sessions/{id}")).ok();
    assert_eq!(state["position"], library.position());
    assert_eq!(state["token_offset"], ids.len());
    assert_eq!(state["response"], as_client_sees(&library.verdict()));
    assert_eq!(state["stops"], stops_of(&library));
}

/// Where the library's session would stop under each mode, as the API writes it.
fn stops_of(library: &qwen3guard::StreamSession) -> Value {
    json!({"strict": as_client_sees(&library.stop(Mode::Strict)),
           "loose": as_client_sees(&library.stop(Mode::Loose))})
}

#[test]
fn stops_say_where_each_mode_would_stop_whatever_the_servers_mode() {
    // The constructed checkpoint: " vote election" is a Controversial pair, " bomb kill"
    // an Unsafe one, so strict and loose stop at different tokens.
    let checkpoint = Checkpoint::open(&common::fixture("stream-constructed")).unwrap();
    let guard = StreamGuard::load(&checkpoint, &LoadOptions::default()).unwrap();
    let answer = "We argued about the vote election results, then the bomb kill order came.";
    let mut library = common::library_session_of(&guard, PROMPT);
    library
        .append(&guard.prompter().tokenizer().encode_text(answer).unwrap())
        .unwrap();
    let strict = library.stop(Mode::Strict).and_then(|v| v.flagged_at);
    let loose = library.stop(Mode::Loose).and_then(|v| v.flagged_at);
    assert!(
        strict.is_some() && loose.is_some() && strict < loose,
        "{strict:?} {loose:?}"
    );
    for mode in Mode::ALL {
        let models = Models {
            gen: None,
            stream: Some(("stream-constructed".into(), guard.clone())),
        };
        let config = ServerConfig {
            stream_model: Some("stream-constructed".into()),
            mode,
            ..ServerConfig::default()
        };
        let server = TestServer::with_state(ready_state(config, models));
        let (id, _) = open(&server, PROMPT);
        append(&server, &id, json!({"text": answer}));
        let last = append(&server, &id, json!({"final": true})).ok();
        assert_eq!(last["stops"], stops_of(&library), "server in {mode:?}");
        assert_eq!(
            last["stop"],
            last["stops"][mode.as_str()],
            "server in {mode:?}"
        );
    }
}

#[test]
fn the_whole_response_matches_the_cli_path() {
    // `stream` on the CLI runs `StreamGuard::moderate`; the server's verdicts at the same
    // positions agree with it (to float tolerance: the chunking differs).
    let server = TestServer::start(ServerConfig::default());
    let (id, _) = open(&server, PROMPT);
    let body = append(&server, &id, json!({"text": RESPONSE, "final": true})).ok();
    let conversation = Conversation::from_prompt(PROMPT, Some(RESPONSE));
    let report = stream().moderate(&conversation, 0).unwrap();
    let tokens = body["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), response_ids(RESPONSE).len());
    for token in tokens {
        let index = token["index"].as_u64().unwrap() as usize;
        let reference = report
            .tokens
            .iter()
            .find(|t| t.index == index)
            .expect("the CLI's report covers every response position");
        assert_eq!(token["token_id"], reference.token_id);
        assert_eq!(token["risk_level"], as_client_sees(&reference.risk_level));
        let probs = token["risk_probs"].as_object().unwrap();
        let expected = as_client_sees(&reference.risk_probs);
        for (level, p) in probs {
            let d = p.as_f64().unwrap() - expected[level].as_f64().unwrap();
            assert!(d.abs() <= 1e-5, "index {index} {level}: {d}");
        }
    }
}

#[test]
fn text_deltas_feed_the_ids_of_the_whole_text_whatever_the_cuts() {
    let server = TestServer::start(ServerConfig::default());
    let text = "Héllo, wörld! 中文 and 👍🏽 emoji;  two  spaces\nand a new line 1234.";
    let whole = response_ids(text);
    let mut rng = Rng::new(42);
    for round in 0..4 {
        let (id, _) = open(&server, PROMPT);
        // Cut at character boundaries (a JSON string carries characters, not bytes).
        let chars: Vec<char> = text.chars().collect();
        let mut start = 0;
        let mut fed = Vec::new();
        while start < chars.len() {
            let end = (start + 1 + rng.below(7)).min(chars.len());
            let delta: String = chars[start..end].iter().collect();
            let body = append(&server, &id, json!({"text": delta, "offset": start})).ok();
            for token in body["tokens"].as_array().unwrap() {
                fed.push(token["token_id"].as_u64().unwrap() as u32);
            }
            assert!(body["checked_offset"].as_u64().unwrap() as usize <= end);
            start = end;
        }
        let body = append(&server, &id, json!({"final": true})).ok();
        for token in body["tokens"].as_array().unwrap() {
            fed.push(token["token_id"].as_u64().unwrap() as u32);
        }
        assert_eq!(fed, whole, "round {round}");
        assert_eq!(body["checked_offset"], chars.len());
        assert_eq!(body["pending_chars"], 0);
    }
}

#[test]
fn offsets_make_retries_idempotent_and_gaps_conflict() {
    let server = TestServer::start(ServerConfig::default());
    let (id, _) = open(&server, PROMPT);
    let ids = response_ids(RESPONSE);
    let first = append(&server, &id, json!({"token_ids": &ids[..4], "offset": 0})).ok();
    assert_eq!(first["tokens"].as_array().unwrap().len(), 4);
    // The same append again: acknowledged, nothing run.
    let again = append(&server, &id, json!({"token_ids": &ids[..4], "offset": 0})).ok();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["tokens"], json!([]));
    assert_eq!(again["checked_offset"], 4);
    // Overlapping: only the new part runs.
    let overlap = append(&server, &id, json!({"token_ids": &ids[2..6], "offset": 2})).ok();
    let indices: Vec<u64> = overlap["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["index"].as_u64().unwrap())
        .collect();
    let first_index = first["tokens"][0]["index"].as_u64().unwrap();
    assert_eq!(indices, vec![first_index + 4, first_index + 5]);
    // A gap.
    let gap = append(&server, &id, json!({"token_ids": &ids[8..9], "offset": 8}));
    assert_eq!(gap.error_code(409), "offset_gap");
    let state = server.get(&format!("/v1/stream/sessions/{id}")).ok();
    assert_eq!(state["token_offset"], 6);

    // Text offsets count characters.
    let (id, _) = open(&server, PROMPT);
    append(&server, &id, json!({"text": "héllo ", "offset": 0})).ok();
    let dup = append(&server, &id, json!({"text": "héllo ", "offset": 0})).ok();
    assert_eq!(dup["duplicate"], true);
    let gap = append(&server, &id, json!({"text": "x", "offset": 9}));
    assert_eq!(gap.error_code(409), "offset_gap");
    let state = server.get(&format!("/v1/stream/sessions/{id}")).ok();
    assert_eq!(state["text_offset"], 6);
}

#[test]
fn a_partial_assistant_message_is_appended_at_open() {
    let server = TestServer::start(ServerConfig::default());
    let reply = server.post(
        "/v1/stream/sessions",
        &json!({"messages": [
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": RESPONSE}
        ]}),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    let opened = reply.json();
    let id = opened["id"].as_str().unwrap();
    // The last pieces are held back until more text or `final` arrives.
    let mut fed: Vec<u64> = opened["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token_id"].as_u64().unwrap())
        .collect();
    let rest = append(&server, id, json!({"final": true})).ok();
    fed.extend(
        rest["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token_id"].as_u64().unwrap()),
    );
    let whole: Vec<u64> = response_ids(RESPONSE).into_iter().map(u64::from).collect();
    assert_eq!(fed, whole);
    // After `final`, more content is refused.
    append(&server, id, json!({"text": " more"})).error_code(400);
}

#[test]
fn closed_sessions_are_gone() {
    let server = TestServer::start(ServerConfig::default());
    let (id, _) = open(&server, PROMPT);
    let path = format!("/v1/stream/sessions/{id}");
    assert_eq!(server.delete(&path).status, 204);
    assert_eq!(server.get(&path).error_code(404), "session_not_found");
    assert_eq!(server.delete(&path).error_code(404), "session_not_found");
    assert_eq!(
        append(&server, &id, json!({"token_ids": [1]})).error_code(404),
        "session_not_found"
    );
    assert_eq!(
        server.get("/v1/stream/sessions/nope").error_code(404),
        "session_not_found"
    );
}

#[test]
fn idle_sessions_expire() {
    let server = TestServer::start(ServerConfig {
        limits: Limits {
            session_idle: Duration::from_millis(300),
            ..Limits::default()
        },
        ..ServerConfig::default()
    });
    let (id, _) = open(&server, PROMPT);
    // The scheduler sweeps at least once a second when idle.
    std::thread::sleep(Duration::from_millis(2500));
    let path = format!("/v1/stream/sessions/{id}");
    assert_eq!(server.get(&path).error_code(404), "session_not_found");
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("qwen3guard_open_sessions 0"), "{metrics}");
}

#[test]
fn caps_on_sessions_and_tokens_answer_429_and_413() {
    let server = TestServer::start(ServerConfig {
        limits: Limits {
            max_sessions: 2,
            max_session_tokens: 80,
            ..Limits::default()
        },
        ..ServerConfig::default()
    });
    let (a, _) = open(&server, PROMPT);
    let (_b, _) = open(&server, PROMPT);
    let third = server.post("/v1/stream/sessions", &open_body(PROMPT));
    assert_eq!(third.error_code(429), "too_many_sessions");
    // Closing one makes room.
    assert_eq!(
        server.delete(&format!("/v1/stream/sessions/{a}")).status,
        204
    );
    let (c, opened) = open(&server, PROMPT);
    assert!(opened["prompt"].is_object());

    let position = server.get(&format!("/v1/stream/sessions/{c}")).ok()["position"]
        .as_u64()
        .unwrap() as usize;
    let too_many = vec![13u32; 80 - position + 1];
    let refused = append(&server, &c, json!({"token_ids": too_many}));
    assert_eq!(refused.error_code(413), "too_large");
    // Nothing was lost: the session still takes what fits.
    let fits = vec![13u32; 80 - position];
    append(&server, &c, json!({"token_ids": fits})).ok();
    // A prompt longer than the cap is refused at open.
    let long = server.post("/v1/stream/sessions", &open_body(&"word ".repeat(100)));
    assert_eq!(long.error_code(413), "too_large");
}

#[test]
fn bad_session_requests_get_400() {
    let server = TestServer::start(ServerConfig::default());
    let cases: [(&str, Value, &str); 4] = [
        (
            "/v1/stream/sessions",
            json!({"messages": [{"role": "assistant", "content": "x"}]}),
            "must end with a user message",
        ),
        (
            "/v1/stream/sessions",
            json!({"messages": [{"role": "user", "content": "x"}], "thinking": 1}),
            "`thinking`",
        ),
        ("append", json!({"token_ids": [-1]}), "token_ids[0]"),
        ("append", json!({"token_ids": [1], "text": "x"}), "not both"),
    ];
    let (id, _) = open(&server, PROMPT);
    for (path, body, needle) in cases {
        let reply = if path == "append" {
            append(&server, &id, body)
        } else {
            server.post(path, &body)
        };
        reply.error_code(400);
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(needle), "{message}");
    }
    // An id outside the vocabulary is the engine's typed refusal, not a crash.
    let reply = append(&server, &id, json!({"token_ids": [4_000_000_000u32]}));
    assert_eq!(reply.error_code(400), "invalid_input");
    // The session is unharmed.
    append(&server, &id, json!({"token_ids": [13]})).ok();
}

#[test]
fn concurrent_sessions_are_batched_and_equal_their_solo_runs() {
    let server = TestServer::start(ServerConfig::default());
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("Story {i}: tell me about cats."))
        .collect();
    let ids = response_ids(RESPONSE);
    let results: Vec<Vec<Value>> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|prompt| {
                let server = &server;
                let ids = &ids;
                scope.spawn(move || {
                    let (id, _) = open(server, prompt);
                    ids.iter()
                        .map(|&t| {
                            append(server, &id, json!({"token_ids": [t]})).ok()["tokens"][0].clone()
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (prompt, tokens) in prompts.iter().zip(&results) {
        let mut library = library_session(prompt);
        for (&t, got) in ids.iter().zip(tokens) {
            let expected = library.append(&[t]).unwrap()[0].clone();
            assert_eq!(got, &as_client_sees(&expected), "{prompt}");
        }
    }
}

#[test]
fn a_draining_replica_refuses_new_sessions_and_keeps_its_open_ones() {
    let server = TestServer::start(ServerConfig {
        replica_id: "guard-b/2".into(),
        ..ServerConfig::default()
    });
    let (id, _) = open(&server, PROMPT);
    assert!(id.starts_with("ss_guard-b-2-"), "{id}");
    let ids = response_ids(RESPONSE);
    append(&server, &id, json!({"token_ids": &ids[..4]})).ok();
    server
        .state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);

    for refused in [
        server.get("/health"),
        server.post("/v1/stream/sessions", &open_body(PROMPT)),
    ] {
        assert_eq!(refused.error_code(503), "draining");
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert_eq!(refused.header("x-qwen3guard-replica"), Some("guard-b-2"));
    }
    let mut library = library_session(PROMPT);
    library.append(&ids[..4]).unwrap();
    let expected = library.append(&ids[4..]).unwrap().to_vec();
    let body = append(&server, &id, json!({"token_ids": &ids[4..]})).ok();
    assert_eq!(body["tokens"], as_client_sees(&expected));
    server.get(&format!("/v1/stream/sessions/{id}")).ok();
    server.get("/live").ok();
    let deleted = server.delete(&format!("/v1/stream/sessions/{id}"));
    assert!(deleted.status < 300, "{}", deleted.text());
}
