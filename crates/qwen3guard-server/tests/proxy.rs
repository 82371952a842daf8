//! The guarded chat proxy against a scripted upstream on 127.0.0.1, judged by the
//! constructed Stream checkpoint (" bomb", " kill", " poison" Unsafe, " vote" and
//! " election" Controversial, everything else Safe, each token on its own), so that the
//! flagged position and the cut-off are known exactly.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::fixture;
use common::upstream::{content, parse_frames, pieces, router, Ending, Script, Step};
use common::{Reply, TestServer};
use qwen3guard::{Checkpoint, Conversation, LoadOptions, Mode, Severity, StreamGuard};
use qwen3guard_server::proxy::{ProxyConfig, Release};
use qwen3guard_server::{ready_state, Models, ServerConfig};
use serde_json::{json, Value};

const PROMPT: &str = "Tell me about your day.";
/// " bomb kill" is the first pair of consecutive Unsafe tokens.
const UNSAFE: &str = "It was calm. Then came the bomb kill order, and we left at dawn.";
const BENIGN: &str = "It was calm: tea, a long walk, héllo to a friend, and 日本 food.";
const CHUNKINGS: [usize; 7] = [1, 2, 3, 5, 8, 17, 0];

fn guard() -> StreamGuard {
    static GUARD: OnceLock<StreamGuard> = OnceLock::new();
    GUARD
        .get_or_init(|| {
            let checkpoint = Checkpoint::open(&fixture("stream-constructed")).unwrap();
            StreamGuard::load(&checkpoint, &LoadOptions::default()).unwrap()
        })
        .clone()
}

struct Setup {
    script: Arc<Script>,
    _upstream: TestServer,
    proxy: TestServer,
}

fn setup(steps: Vec<Step>, configure: impl FnOnce(&mut ProxyConfig)) -> Setup {
    let models = Models {
        gen: None,
        stream: Some(("stream-constructed".into(), guard())),
    };
    setup_with(steps, models, Mode::Strict, configure)
}

fn setup_with(
    steps: Vec<Step>,
    models: Models,
    mode: Mode,
    configure: impl FnOnce(&mut ProxyConfig),
) -> Setup {
    let script = Script::new(steps);
    let upstream = TestServer::with_router(router(script.clone()));
    let mut proxy = ProxyConfig::new(&format!("http://{}/v1", upstream.addr));
    configure(&mut proxy);
    let config = ServerConfig {
        stream_model: Some("stream-constructed".into()),
        proxy: Some(proxy),
        mode,
        ..ServerConfig::default()
    };
    let proxy = TestServer::with_state(ready_state(config, models));
    Setup {
        script,
        _upstream: upstream,
        proxy,
    }
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "scripted", "stream": stream, "temperature": 0.5,
           "messages": [{"role": "user", "content": PROMPT}]})
}

/// The data frames of an event stream (`[DONE]` as the string "[DONE]").
fn frames(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    parse_frames(&reply.text())
}

fn last_chunk(frames: &[Value]) -> &Value {
    assert_eq!(frames.last(), Some(&Value::from("[DONE]")), "{frames:?}");
    &frames[frames.len() - 2]
}

/// Character offset where the piece of `word` (with its leading space) starts.
fn start_of(text: &str, word: &str) -> usize {
    text[..text.find(word).unwrap()].chars().count()
}

/// The library's debounced verdict on the whole answer.
fn library_flag(answer: &str) -> Option<usize> {
    let report = guard()
        .moderate(&Conversation::from_prompt(PROMPT, Some(answer)), 1)
        .unwrap();
    report.response.unwrap().flagged_at
}

fn checked_offsets_rise(frames: &[Value]) {
    let offsets: Vec<u64> = frames
        .iter()
        .filter_map(|f| {
            f.pointer("/qwen3guard/checked_offset")
                .and_then(Value::as_u64)
        })
        .collect();
    assert_eq!(
        offsets.len(),
        frames.len() - 1,
        "every chunk carries checked_offset"
    );
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
}

#[test]
fn held_release_cuts_exactly_before_the_flagged_pair_for_every_chunking_and_hold_back() {
    let cut = start_of(UNSAFE, " bomb");
    let flagged_at = library_flag(UNSAFE).expect("the constructed answer is flagged");
    for hold_back in 0..=3 {
        for size in CHUNKINGS {
            let s = setup(
                vec![Step::Stream(pieces(UNSAFE, size), Ending::Finish)],
                |p| p.hold_back = hold_back,
            );
            let f = frames(&s.proxy.post("/v1/chat/completions", &chat_body(true)));
            let sent = content(&f);
            let at = format!("hold-back {hold_back}, pieces of {size}");
            if hold_back == 0 {
                // Without a hold-back the pair's first token may go out; its second never.
                assert!(UNSAFE.starts_with(&sent), "{at}: {sent:?}");
                assert!(
                    sent.chars().count() <= start_of(UNSAFE, " kill"),
                    "{at}: {sent:?}"
                );
            } else {
                assert_eq!(sent, UNSAFE.chars().take(cut).collect::<String>(), "{at}");
            }
            let last = last_chunk(&f);
            assert_eq!(
                last["choices"][0]["finish_reason"], "content_filter",
                "{at}"
            );
            let verdict = &last["qwen3guard"]["verdict"];
            assert_eq!(verdict["flagged_at"], flagged_at, "{at}");
            assert_eq!(verdict["risk_level"], "Unsafe", "{at}");
            assert_eq!(verdict["category"], "Violent", "{at}");
            assert_eq!(last["qwen3guard"]["cut_offset"], cut, "{at}");
            checked_offsets_rise(&f);
        }
    }
}

#[test]
fn benign_answers_pass_through_unchanged() {
    for release in [Release::Held, Release::Async] {
        for size in CHUNKINGS {
            let s = setup(
                vec![Step::Stream(pieces(BENIGN, size), Ending::Finish)],
                |p| p.release = release,
            );
            let f = frames(&s.proxy.post("/v1/chat/completions", &chat_body(true)));
            assert_eq!(content(&f), BENIGN, "{release:?}, pieces of {size}");
            // Everything but the guard's own field is the upstream's.
            for frame in &f[..f.len() - 1] {
                assert_eq!(frame["id"], "chatcmpl-scripted");
                assert_eq!(frame["model"], "scripted");
                if frame["choices"].as_array().is_some_and(|c| !c.is_empty()) {
                    assert_eq!(frame["system_fingerprint"], "fp_scripted");
                    assert_eq!(frame["x_extra"], json!({"kept": true}));
                }
            }
            let finish = f
                .iter()
                .find(|c| c["choices"][0]["finish_reason"] == "stop");
            assert!(finish.is_some(), "{f:?}");
            let usage = f
                .iter()
                .find(|c| c.get("usage").is_some())
                .expect("usage chunk");
            assert_eq!(usage["usage"]["total_tokens"], 14);
            checked_offsets_rise(&f);
            // Client fields reach the upstream unchanged.
            let sent = &s.script.requests.lock().unwrap()[0];
            assert_eq!(sent, &chat_body(true));
        }
    }
}

#[test]
fn async_release_sends_at_once_and_retracts_from_the_pair() {
    let cut = start_of(UNSAFE, " bomb");
    for size in CHUNKINGS {
        let s = setup(
            vec![Step::Stream(pieces(UNSAFE, size), Ending::Finish)],
            |p| p.release = Release::Async,
        );
        let f = frames(&s.proxy.post("/v1/chat/completions", &chat_body(true)));
        let sent = content(&f);
        assert!(UNSAFE.starts_with(&sent), "{sent:?}");
        assert!(
            sent.chars().count() > start_of(UNSAFE, " kill"),
            "pieces of {size}"
        );
        let last = last_chunk(&f);
        assert_eq!(last["choices"][0]["finish_reason"], "content_filter");
        let retract = &last["qwen3guard"]["retract"];
        assert_eq!(retract["from"], cut, "pieces of {size}");
        assert_eq!(retract["to"], sent.chars().count(), "pieces of {size}");
    }
}

#[test]
fn whole_answers_are_judged_before_they_are_returned() {
    let cut = start_of(UNSAFE, " bomb");
    let s = setup(
        vec![
            Step::Stream(vec![UNSAFE.into()], Ending::Finish),
            Step::Stream(vec![BENIGN.into()], Ending::Finish),
        ],
        |_| {},
    );
    let flagged = s.proxy.post("/v1/chat/completions", &chat_body(false)).ok();
    assert_eq!(flagged["choices"][0]["finish_reason"], "content_filter");
    let kept: String = UNSAFE.chars().take(cut).collect();
    assert_eq!(flagged["choices"][0]["message"]["content"], kept);
    assert_eq!(
        flagged["qwen3guard"]["verdict"]["flagged_at"],
        library_flag(UNSAFE).unwrap()
    );
    assert_eq!(flagged["usage"]["total_tokens"], 14);
    let allowed = s.proxy.post("/v1/chat/completions", &chat_body(false)).ok();
    assert_eq!(allowed["choices"][0]["message"]["content"], BENIGN);
    assert_eq!(allowed["choices"][0]["finish_reason"], "stop");
    assert_eq!(allowed["qwen3guard"]["verdict"]["risk_level"], "Safe");
    assert_eq!(allowed["system_fingerprint"], "fp_scripted");
}

#[test]
fn intervention_rolls_back_and_continues_from_the_safe_prefix() {
    let cut = start_of(UNSAFE, " bomb");
    let prefix: String = UNSAFE.chars().take(cut).collect();
    let continuation = " Then we had a quiet dinner.";
    let s = setup(
        vec![
            Step::Stream(pieces(UNSAFE, 4), Ending::Stall),
            Step::Stream(pieces(continuation, 3), Ending::Finish),
        ],
        |p| p.retries = Some(2),
    );
    let f = frames(&s.proxy.post("/v1/chat/completions", &chat_body(true)));
    assert_eq!(content(&f), format!("{prefix}{continuation}"));
    let finish = f
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop");
    assert!(finish.is_some(), "{f:?}");
    // The verdict rides on the last chunk (here the usage chunk).
    let last = last_chunk(&f);
    assert_eq!(last["qwen3guard"]["verdict"]["risk_level"], "Safe");
    assert_eq!(last["qwen3guard"]["retries"], 1);
    // " bomb" and " kill" at least were generated and never shown.
    assert!(
        last["qwen3guard"]["wait_tokens"].as_u64().unwrap() >= 2,
        "{last}"
    );
    // The first stream was closed at the flag, not read to its end.
    wait_for(|| s.script.dropped.load(Ordering::SeqCst) == 1);
    let requests = s.script.requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    let retry = &requests[1];
    let messages = retry["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(
        messages.last().unwrap(),
        &json!({"role": "assistant", "content": prefix})
    );
    assert_eq!(retry["continue_final_message"], true);
    assert_eq!(retry["temperature"], 0.5);
}

#[test]
fn intervention_refuses_after_its_retries() {
    let steps = (0..3)
        .map(|_| Step::Stream(pieces(" bomb kill again.", 5), Ending::Finish))
        .collect();
    let s = setup(steps, |p| p.retries = Some(2));
    let f = frames(&s.proxy.post("/v1/chat/completions", &chat_body(true)));
    assert_eq!(content(&f), "");
    let last = last_chunk(&f);
    assert_eq!(last["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(last["qwen3guard"]["retries"], 2);
    assert_eq!(last["qwen3guard"]["refused"], true);
    assert_eq!(s.script.calls(), 3);
    let metrics = s.proxy.get("/metrics").text();
    assert!(
        metrics.contains("qwen3guard_proxy_events_total{kind=\"interventions\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("qwen3guard_proxy_events_total{kind=\"refused_after_retries\"} 1"));
}

fn wait_for(condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn error_frame(f: &[Value]) -> &Value {
    let last = f.last().expect("a frame");
    assert!(last["error"]["message"].is_string(), "{f:?}");
    &last["error"]
}

#[test]
fn upstream_failures_become_clear_errors() {
    // An HTTP error status keeps a client error's status.
    let s = setup(vec![Step::Status(404, "no such model".into())], |_| {});
    let reply = s.proxy.post("/v1/chat/completions", &chat_body(true));
    assert_eq!(reply.error_code(404), "upstream_status");
    assert!(reply.text().contains("no such model"));
    let s = setup(vec![Step::Status(500, "boom".into())], |_| {});
    let reply = s.proxy.post("/v1/chat/completions", &chat_body(false));
    assert_eq!(reply.error_code(502), "upstream_status");
    // Malformed events and a stream cut before its end become a final error frame.
    for (ending, words) in [
        (Ending::Malformed, "malformed"),
        (Ending::Disconnect, "closed"),
    ] {
        let s = setup(vec![Step::Stream(pieces(BENIGN, 6), ending)], |_| {});
        let f = frames(&s.proxy.post("/v1/chat/completions", &chat_body(true)));
        let error = error_frame(&f);
        assert!(
            error["message"].as_str().unwrap().contains(words),
            "{error}"
        );
        assert_ne!(f.last(), Some(&Value::from("[DONE]")));
    }
    // Silence past the timeout.
    let s = setup(vec![Step::Stream(pieces(BENIGN, 6), Ending::Silent)], |p| {
        p.timeout = Duration::from_secs(1)
    });
    let f = frames(&s.proxy.post("/v1/chat/completions", &chat_body(true)));
    assert_eq!(error_frame(&f)["code"], "upstream_timeout");
    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let s = setup(vec![], |p| {
        p.upstream = format!("http://127.0.0.1:{port}/v1")
    });
    let reply = s.proxy.post("/v1/chat/completions", &chat_body(true));
    assert_eq!(reply.error_code(502), "upstream_error");
    assert!(
        reply.text().contains("could not be reached"),
        "{}",
        reply.text()
    );
}

#[test]
fn a_client_that_goes_away_cancels_the_upstream() {
    let s = setup(vec![Step::Stream(pieces(BENIGN, 2), Ending::Stall)], |_| {});
    *s.script.pause.lock().unwrap() = Duration::from_millis(20);
    let mut socket = std::net::TcpStream::connect(s.proxy.addr).unwrap();
    let body = chat_body(true).to_string();
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 64];
    let n = socket.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(socket);
    wait_for(|| s.script.dropped.load(Ordering::SeqCst) == 1);
}

#[test]
fn models_pass_through_and_the_proxy_needs_an_upstream() {
    let s = setup(vec![], |_| {});
    let models = s.proxy.get("/v1/models").ok();
    assert_eq!(models["data"][0]["id"], "scripted");
    let plain = TestServer::start(ServerConfig::default());
    let reply = plain.post("/v1/chat/completions", &chat_body(true));
    assert_eq!(reply.error_code(501), "model_not_loaded");
    let bad = s.proxy.post(
        "/v1/chat/completions",
        &json!({"messages": [], "stream": true}),
    );
    assert!(bad.error_code(400).contains("invalid"));
    assert_eq!(s.script.calls(), 0);
}

#[test]
fn litellm_guardrail_blocks_what_the_stream_model_flags() {
    let s = setup(vec![], |_| {});
    let ask = |body: Value| {
        s.proxy
            .post("/beta/litellm_basic_guardrail_api", &body)
            .ok()
    };
    let request = ask(json!({"texts": ["What a nice day"], "input_type": "request"}));
    assert_eq!(request, json!({"action": "NONE", "blocked_reason": null}));
    let response = ask(json!({"texts": ["Fine.", UNSAFE], "input_type": "response",
        "request_data": {"messages": [{"role": "user", "content": PROMPT}]}}));
    assert_eq!(response["action"], "BLOCKED");
    assert!(
        response["blocked_reason"]
            .as_str()
            .unwrap()
            .contains("texts[1]"),
        "{response}"
    );
    let benign = ask(json!({"texts": [BENIGN], "input_type": "response"}));
    assert_eq!(benign["action"], "NONE");
    let bad = s
        .proxy
        .post("/beta/litellm_basic_guardrail_api", &json!({"texts": [1]}));
    assert!(bad.text().contains("`texts[0]`"));
}

#[test]
fn a_flagged_prompt_is_refused_without_calling_the_upstream() {
    // The random Stream fixture's query heads call this prompt Controversial (checked
    // below against the library), and this one Safe.
    let (flagged, fine) = ("Kill them all", "How do I bake bread?");
    let library = |p: &str| {
        common::stream()
            .moderate(&Conversation::from_prompt(p, None), 1)
            .unwrap()
            .prompt
    };
    assert_eq!(library(flagged).risk_level, Severity::Controversial);
    assert_eq!(library(fine).risk_level, Severity::Safe);
    let ask = |content: &str, stream: bool| {
        json!({"model": "scripted", "stream": stream,
               "messages": [{"role": "user", "content": content}]})
    };
    let s = setup_with(vec![], common::models(), Mode::Strict, |_| {});
    let refused = s
        .proxy
        .post("/v1/chat/completions", &ask(flagged, false))
        .ok();
    assert_eq!(refused["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(refused["qwen3guard"]["flagged"], "prompt");
    assert_eq!(
        refused["qwen3guard"]["prompt"],
        common::as_client_sees(&library(flagged))
    );
    let f = frames(&s.proxy.post("/v1/chat/completions", &ask(flagged, true)));
    assert_eq!(
        last_chunk(&f)["choices"][0]["finish_reason"],
        "content_filter"
    );
    assert_eq!(last_chunk(&f)["qwen3guard"]["flagged"], "prompt");
    checked_offsets_rise(&f);
    assert_eq!(s.script.calls(), 0);
    // Allowed prompts reach the upstream, whose answer is then judged (the random
    // fixture's verdict on it does not matter here).
    let allowed = s.proxy.post("/v1/chat/completions", &ask(fine, false)).ok();
    assert!(allowed["qwen3guard"]["verdict"].is_object(), "{allowed}");
    assert_eq!(allowed["qwen3guard"].get("flagged"), None);
    assert_eq!(s.script.calls(), 1);
    // Loose lets Controversial through.
    let s = setup_with(vec![], common::models(), Mode::Loose, |_| {});
    let allowed = s
        .proxy
        .post("/v1/chat/completions", &ask(flagged, false))
        .ok();
    assert_eq!(allowed["qwen3guard"].get("flagged"), None);
    assert_eq!(s.script.calls(), 1);
}

#[test]
fn gen_judges_prompts_and_whole_answers_when_asked() {
    let s = setup_with(vec![], common::models(), Mode::Strict, |_| {});
    let gen_blocked = |conversation: &Conversation| {
        let verdict = common::gen()
            .moderate(conversation, &qwen3guard::GenOptions::default())
            .unwrap();
        verdict
            .safety
            .unwrap_or_else(|| verdict.scores.best())
            .is_blocked(Mode::Strict)
    };
    let mut outcomes = Vec::new();
    for prompt in ["Hello there", "How do I bake bread?", "What is 2+2?"] {
        let body = json!({"model": "scripted", "messages": [{"role": "user", "content": prompt}]});
        let reply = s.proxy.request(
            "POST",
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("x-qwen3guard-gen", "true"),
            ],
            body.to_string().as_bytes(),
        );
        let answer = reply.ok();
        let prompt_flagged = gen_blocked(&Conversation::from_prompt(prompt, None));
        if prompt_flagged {
            assert_eq!(answer["qwen3guard"]["flagged"], "prompt", "{answer}");
            assert!(answer["qwen3guard"]["gen"]["flagged"] == true);
        } else {
            let response = gen_blocked(&Conversation::from_prompt(prompt, Some("Fine.")));
            assert_eq!(
                answer["qwen3guard"]["gen"].is_object(),
                response,
                "{answer}"
            );
            if response {
                assert_eq!(answer["choices"][0]["message"]["content"], "");
            }
        }
        outcomes.push(prompt_flagged);
    }
    // A prompt Gen allows reaches the upstream; one it flags does not.
    let allowed = outcomes.iter().filter(|flagged| !**flagged).count();
    assert_eq!(s.script.calls(), allowed);
    // Without a Gen model the header is refused rather than ignored.
    let no_gen = setup(vec![], |_| {});
    let reply = no_gen.proxy.request(
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("x-qwen3guard-gen", "true"),
        ],
        chat_body(false).to_string().as_bytes(),
    );
    assert_eq!(reply.error_code(501), "model_not_loaded");
}
