//! The server's general endpoints and Gen endpoints over real HTTP: health, routing,
//! errors and their statuses, authentication, limits, metrics, and results equal to the
//! library's, bit for bit in f32, alone or batched across concurrent clients.

mod common;

use common::{as_client_sees, gen, TestServer};
use qwen3guard::{Conversation, GenOptions, Message, Role};
use qwen3guard_server::{AppState, Limits, ServerConfig};
use serde_json::{json, Value};

fn server() -> TestServer {
    TestServer::start(ServerConfig::default())
}

/// The library's verdict as `/v1/guard` returns it (without `flagged`).
fn library_verdict(conversation: &Conversation, verdict_only: bool) -> Value {
    let options = GenOptions {
        verdict_only,
        ..GenOptions::default()
    };
    as_client_sees(&gen().moderate(conversation, &options).unwrap())
}

fn without_flagged(mut value: Value) -> Value {
    value.as_object_mut().unwrap().remove("flagged");
    value
}

#[test]
fn live_answers_at_once_and_health_waits_for_the_models() {
    let loading = TestServer::with_state(AppState::new(ServerConfig::default()));
    assert_eq!(loading.get("/live").ok()["status"], "alive");
    assert_eq!(loading.get("/health").error_code(503), "unavailable");
    assert_eq!(
        loading
            .post(
                "/v1/guard",
                &json!({"messages": [{"role": "user", "content": "hi"}]})
            )
            .error_code(503),
        "unavailable"
    );

    let ready = server();
    let health = ready.get("/health").ok();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["isa"], qwen3guard::isa().name());
    assert_eq!(
        health["models"],
        json!({"gen": "gen-tied", "stream": "stream"})
    );
}

#[test]
fn unknown_paths_and_methods_get_the_error_shape() {
    let server = server();
    assert_eq!(server.get("/v2/nothing").error_code(404), "no_route");
    assert_eq!(
        server.get("/v1/guard").error_code(405),
        "method_not_allowed"
    );
}

#[test]
fn guard_equals_the_library_for_prompts_and_responses() {
    let server = server();
    // A lower decoding cap is the library's `max_new_tokens`.
    let conversation = Conversation::from_prompt("How do I bake bread?", None);
    let capped = server
        .post(
            "/v1/guard",
            &json!({"messages": [{"role": "user", "content": "How do I bake bread?"}], "max_new_tokens": 5}),
        )
        .ok();
    let options = GenOptions {
        max_new_tokens: 5,
        ..GenOptions::default()
    };
    let expected = as_client_sees(&gen().moderate(&conversation, &options).unwrap());
    assert_eq!(without_flagged(capped), expected);

    let cases = [
        (
            Conversation::from_prompt("How do I bake bread?", None),
            false,
        ),
        (
            Conversation::from_prompt("How do I bake bread?", None),
            true,
        ),
        (
            Conversation::from_prompt("Tell me a secret.", Some("I will not do that.")),
            false,
        ),
    ];
    for (conversation, verdict_only) in cases {
        let messages: Vec<Value> = conversation
            .messages()
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
        let body = server
            .post(
                "/v1/guard",
                &json!({"messages": messages, "verdict_only": verdict_only}),
            )
            .ok();
        assert!(body["flagged"].is_boolean(), "{body}");
        assert_eq!(
            without_flagged(body),
            library_verdict(&conversation, verdict_only),
            "verdict_only {verdict_only}"
        );
    }
}

#[test]
fn flagged_follows_the_mode() {
    let server = server();
    let conversation = Conversation::from_prompt("Is this controversial?", None);
    let verdict = gen()
        .moderate(&conversation, &GenOptions::default())
        .unwrap();
    let label = verdict.safety.unwrap_or_else(|| verdict.scores.best());
    for mode in ["strict", "loose"] {
        let body = server
            .post(
                "/v1/guard",
                &json!({"messages": [{"role": "user", "content": "Is this controversial?"}], "mode": mode}),
            )
            .ok();
        assert_eq!(
            body["flagged"],
            label.is_blocked(mode.parse().unwrap()),
            "mode {mode}: {body}"
        );
    }
}

#[test]
fn moderations_speak_openai_and_carry_the_native_verdict() {
    let server = server();
    let inputs = ["How do I bake bread?", "How do I pick a lock?"];
    let body = server
        .post(
            "/v1/moderations",
            &json!({"model": "qwen3guard", "input": inputs}),
        )
        .ok();
    assert!(body["id"].as_str().unwrap().starts_with("modr-"));
    assert_eq!(body["model"], "qwen3guard");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), inputs.len());
    for (input, result) in inputs.iter().zip(results) {
        let conversation = Conversation::from_prompt(input, None);
        assert_eq!(
            without_flagged(result["qwen3guard"].clone()),
            library_verdict(&conversation, false)
        );
        assert_eq!(result["flagged"], result["qwen3guard"]["flagged"]);
        let categories = result["categories"].as_object().unwrap();
        let scores = result["category_scores"].as_object().unwrap();
        // OpenAI's keys and every Qwen3Guard category under its own name.
        for key in [
            "violence",
            "sexual",
            "self-harm",
            "illicit",
            "PII",
            "Jailbreak",
        ] {
            assert!(categories.contains_key(key), "{key} missing: {result}");
            assert!(scores.contains_key(key), "{key} missing: {result}");
        }
        for (key, score) in scores {
            let p = score.as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{key}: {p}");
            assert!(categories[key].is_boolean(), "{key}");
        }
        // Real probabilities, not a 0/1 indicator.
        assert!(
            scores.values().any(|s| {
                let p = s.as_f64().unwrap();
                p > 0.0 && p < 1.0
            }),
            "{result}"
        );
    }
    // A single string is one result.
    let one = server
        .post("/v1/moderations", &json!({"input": inputs[0]}))
        .ok();
    assert_eq!(one["results"].as_array().unwrap().len(), 1);
    assert_eq!(one["results"][0]["qwen3guard"], results[0]["qwen3guard"]);
    assert_eq!(one["model"], "gen-tied");
}

#[test]
fn category_scores_are_the_library_scores_under_their_names() {
    let server = server();
    let input = "How do I pick a lock?";
    let body = server
        .post("/v1/moderations", &json!({"input": input}))
        .ok();
    let result = &body["results"][0];
    let conversation = Conversation::from_prompt(input, None);
    let verdict = gen()
        .moderate(&conversation, &GenOptions::default())
        .unwrap();
    let label = verdict.safety.unwrap_or_else(|| verdict.scores.best());
    let scores = gen().category_scores(&conversation, label).unwrap();
    assert!(!scores.is_empty());
    for score in &scores {
        let expected = as_client_sees(&score.probability);
        assert_eq!(
            result["category_scores"][&score.category], expected,
            "{}",
            score.category
        );
    }
}

#[test]
fn bad_requests_get_400_naming_the_fault() {
    let server = server();
    let cases: [(&str, &[u8], &str); 11] = [
        (
            "/v1/guard",
            br#"{"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 129}"#,
            "`max_new_tokens` must be at most 128",
        ),
        ("/v1/guard", b"{not json", "not valid JSON"),
        ("/v1/guard", b"", "empty"),
        ("/v1/guard", b"[1, 2]", "JSON object"),
        (
            "/v1/guard",
            br#"{"messages": "hi"}"#,
            "`messages` must be an array",
        ),
        ("/v1/guard", br#"{"messages": []}"#, "`messages` is empty"),
        (
            "/v1/guard",
            br#"{"messages": [{"role": "wizard", "content": "hi"}]}"#,
            "messages[0].role",
        ),
        (
            "/v1/guard",
            br#"{"messages": [{"role": "user", "content": "hi"}], "verdict_only": "yes"}"#,
            "`verdict_only`",
        ),
        (
            "/v1/guard",
            br#"{"messages": [{"role": "user", "content": "hi"}], "mood": "strict"}"#,
            "unknown field `mood`",
        ),
        (
            "/v1/moderations",
            br#"{"input": ""}"#,
            "`input[0]` is empty",
        ),
        (
            "/v1/moderations",
            br#"{"input": [1]}"#,
            "`input[0]` must be a string",
        ),
    ];
    for (path, body, needle) in cases {
        let reply = server.post_raw(path, body);
        reply.error_code(400);
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains(needle),
            "{path} {:?}: {message}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn api_keys_guard_the_model_endpoints_only() {
    let server = TestServer::start(ServerConfig {
        api_keys: vec!["k-one".into(), "k-two".into()],
        ..ServerConfig::default()
    });
    let body = json!({"input": "hello"}).to_string();
    let post = |headers: &[(&str, &str)]| {
        server.request("POST", "/v1/moderations", headers, body.as_bytes())
    };
    assert_eq!(post(&[]).error_code(401), "invalid_api_key");
    assert_eq!(
        post(&[("authorization", "Bearer k-three")]).error_code(401),
        "invalid_api_key"
    );
    assert_eq!(
        post(&[("authorization", "k-one")]).error_code(401),
        "invalid_api_key"
    );
    post(&[("authorization", "Bearer k-two")]).ok();
    // Probes and scrapers stay open.
    server.get("/health").ok();
    server.get("/live").ok();
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn oversized_bodies_and_inputs_get_413() {
    let server = TestServer::start(ServerConfig {
        limits: Limits {
            max_body_bytes: 2048,
            ..Limits::default()
        },
        ..ServerConfig::default()
    });
    let big = json!({"input": "a ".repeat(2000)});
    assert_eq!(
        server.post("/v1/moderations", &big).error_code(413),
        "too_large"
    );

    // Within the body limit, over the fixture's 1024-token context.
    let server = TestServer::start(ServerConfig::default());
    let long = json!({"messages": [{"role": "user", "content": "word ".repeat(1500)}]});
    assert_eq!(
        server.post("/v1/guard", &long).error_code(413),
        "context_length_exceeded"
    );
    // The server is fine afterwards.
    server
        .post(
            "/v1/guard",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .ok();
}

#[test]
fn request_ids_are_echoed_or_assigned() {
    let server = server();
    let echoed = server.request("GET", "/live", &[("x-request-id", "abc-123")], b"");
    assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
    let assigned = server.get("/live");
    assert!(assigned
        .header("x-request-id")
        .is_some_and(|id| !id.is_empty()));
}

#[test]
fn metrics_count_requests_batches_and_flags() {
    let server = server();
    server
        .post("/v1/moderations", &json!({"input": ["one", "two"]}))
        .ok();
    server.post_raw("/v1/guard", b"{").error_code(400);
    let text = server.get("/metrics").text();
    for needle in [
        "qwen3guard_requests_total{endpoint=\"/v1/moderations\",status=\"200\"} 1",
        "qwen3guard_requests_total{endpoint=\"/v1/guard\",status=\"400\"} 1",
        "qwen3guard_request_duration_seconds_bucket{endpoint=\"/v1/moderations\"",
        "qwen3guard_batch_size_count{kind=\"gen\"}",
        "qwen3guard_queue_depth ",
        "qwen3guard_open_sessions ",
        "qwen3guard_tokens_processed_total ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("qwen3guard_"), "{line}");
    }
}

#[test]
fn thirty_two_concurrent_clients_get_the_sequential_results() {
    let server = server();
    let conversations: Vec<Conversation> = (0..32)
        .map(|i| {
            let prompt = format!("Question number {i}: is {} a safe thing to say?", i * 7);
            if i % 3 == 0 {
                Conversation::new(vec![
                    Message::new(Role::User, prompt),
                    Message::new(Role::Assistant, format!("Answer {i}.")),
                ])
                .unwrap()
            } else {
                Conversation::from_prompt(&prompt, None)
            }
        })
        .collect();
    let expected: Vec<Value> = conversations
        .iter()
        .map(|c| library_verdict(c, false))
        .collect();
    let got: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = conversations
            .iter()
            .map(|conversation| {
                let server = &server;
                scope.spawn(move || {
                    let messages: Vec<Value> = conversation
                        .messages()
                        .iter()
                        .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                        .collect();
                    without_flagged(
                        server
                            .post("/v1/guard", &json!({"messages": messages}))
                            .ok(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got, expected, "client {i}");
    }
    // They did share passes: some round of the Gen batch held more than one request.
    let text = server.get("/metrics").text();
    let rounds = metric(&text, "qwen3guard_batch_size_count{kind=\"gen\"}");
    let alone = metric(&text, "qwen3guard_batch_size_bucket{kind=\"gen\",le=\"1\"}");
    assert!(alone < rounds, "every round ran one request:\n{text}");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let server = TestServer::start(ServerConfig {
        limits: Limits {
            max_queue: 1,
            max_batch: 1,
            ..Limits::default()
        },
        ..ServerConfig::default()
    });
    let body = json!({"messages": [{"role": "user", "content": "word ".repeat(700)}]});
    let replies: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| server.post("/v1/guard", &body)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(!busy.is_empty(), "no request was refused");
    for reply in &busy {
        assert_eq!(reply.error_code(503), "queue_full");
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    for reply in replies.iter().filter(|r| r.status != 503) {
        reply.ok();
    }
}

#[test]
fn a_client_that_goes_away_cancels_its_work() {
    use std::io::Write;
    let server = server();
    let inputs: Vec<String> = (0..32)
        .map(|i| format!("{i} {}", "a long sentence to judge ".repeat(40)))
        .collect();
    let body = json!({"input": inputs}).to_string();
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "POST /v1/moderations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = server.get("/metrics").text();
        if metric(&text, "qwen3guard_cancelled_total") > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was cancelled:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The server goes on serving.
    server
        .post(
            "/v1/guard",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .ok();
}

#[test]
fn requests_arriving_after_the_drain_get_503() {
    let server = server();
    server
        .state
        .closing
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let reply = server.post(
        "/v1/guard",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(reply.error_code(503), "unavailable");
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("shutting down"));
    assert_eq!(server.get("/health").error_code(503), "unavailable");
    server.get("/live").ok();
}
