//! The injection and abuse corpus (`crates/qwen3guard-cli/tests/abuse/conversations.jsonl`,
//! described in docs/RELIABILITY.md) through the guarded chat proxy, against a scripted
//! upstream, on the Gen and Stream fixtures: each conversation is sent as a chat
//! completion, streamed and whole, and the upstream answers with the conversation's last
//! answer (or, for one that ends with the user, every content of it: an LLM can write
//! marker text too), in pieces of three characters. Twice: with the random Gen and
//! Stream fixtures, which refuse some prompts and flag most answers, and with the
//! constructed Stream checkpoint alone, which flags only a few words, so that most
//! answers must come back whole.
//!
//! Every request must end in a clean 4xx or a 200 whose answer is the upstream's, whole
//! or cut (a flag), never changed: nothing of the text is lost, doubled or rewritten by
//! the hold-back and re-tokenization, whatever the markers, confusables and invisible
//! characters in it. The upstream must get the client's messages unchanged, and none at
//! all when the prompt is refused. Never a 5xx.

mod common;

use common::upstream::{content, parse_frames, pieces, router, Ending, Script, Step};
use common::{fixture, models, Reply, TestServer};
use qwen3guard::{Checkpoint, LoadOptions, StreamGuard};
use qwen3guard_server::proxy::ProxyConfig;
use qwen3guard_server::{ready_state, Models, ServerConfig};
use serde_json::{json, Value};

fn corpus() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../qwen3guard-cli/tests/abuse/conversations.jsonl");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// What the client sends and what the upstream answers for one case.
fn exchange(messages: &[Value]) -> (Vec<Value>, String) {
    match messages.split_last() {
        Some((last, before)) if last["role"] == "assistant" && last["content"].is_string() => (
            before.to_vec(),
            last["content"].as_str().unwrap().to_owned(),
        ),
        _ => {
            let text: Vec<&str> = messages
                .iter()
                .filter_map(|m| m["content"].as_str())
                .collect();
            (messages.to_vec(), text.join("\n"))
        }
    }
}

/// The answer the client got, whether it was cut (`content_filter`), and whether the
/// prompt was refused.
fn answered(reply: &Reply, stream: bool) -> (String, bool, bool) {
    let body = if stream {
        let frames = parse_frames(&reply.text());
        assert_eq!(frames.last(), Some(&Value::from("[DONE]")), "{frames:?}");
        let finish = frames
            .iter()
            .rev()
            .find_map(|f| {
                f.pointer("/choices/0/finish_reason")
                    .and_then(Value::as_str)
            })
            .map(str::to_owned);
        let guard = frames
            .iter()
            .rev()
            .find_map(|f| f.get("qwen3guard"))
            .cloned()
            .unwrap_or(Value::Null);
        let text = content(&frames);
        return (
            text,
            finish.as_deref() == Some("content_filter"),
            guard["flagged"] == "prompt",
        );
    } else {
        reply.json()
    };
    let choice = &body["choices"][0];
    (
        choice["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        choice["finish_reason"] == "content_filter",
        body["qwen3guard"]["flagged"] == "prompt",
    )
}

/// The constructed Stream checkpoint (" bomb", " kill", " poison" Unsafe, " vote" and
/// " election" Controversial, everything else Safe) and no Gen model.
fn constructed() -> Models {
    let checkpoint = Checkpoint::open(&fixture("stream-constructed")).unwrap();
    let guard = StreamGuard::load(&checkpoint, &LoadOptions::default()).unwrap();
    Models {
        gen: None,
        stream: Some(("stream-constructed".into(), guard)),
    }
}

#[test]
fn every_conversation_through_the_proxy_is_answered_unchanged_or_cut_or_refused() {
    through_the_proxy(models());
}

#[test]
fn with_a_guard_that_flags_few_words_the_answers_come_back_whole() {
    let counts = through_the_proxy(constructed());
    let whole = counts
        .iter()
        .filter(|(what, _)| what.ends_with("answer whole"))
        .map(|(_, n)| n)
        .sum::<usize>();
    // Of 66 conversations judged, the ones whose answers hold a flagged word are cut.
    assert!(whole >= 100, "{counts:?}");
}

/// Sends every case, whole and streamed; returns how many had each outcome.
fn through_the_proxy(models: Models) -> std::collections::BTreeMap<String, usize> {
    let cases = corpus();
    assert!(cases.len() >= 40, "conversations.jsonl lost cases");
    let mut failures = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let (messages, answer) = exchange(case["messages"].as_array().unwrap());
        for stream in [false, true] {
            let script = Script::new(vec![Step::Stream(pieces(&answer, 3), Ending::Finish)]);
            let upstream = TestServer::with_router(router(script.clone()));
            let config = ServerConfig {
                gen_model: models.gen.as_ref().map(|(name, _)| name.clone()),
                stream_model: models.stream.as_ref().map(|(name, _)| name.clone()),
                proxy: Some(ProxyConfig::new(&format!("http://{}/v1", upstream.addr))),
                ..ServerConfig::default()
            };
            let proxy = TestServer::with_state(ready_state(config, models.clone()));
            let body = json!({"model": "scripted", "stream": stream, "messages": messages});
            let reply = proxy.post("/v1/chat/completions", &body);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                assert!(reply.status < 500, "{} {}", reply.status, reply.text());
                if reply.status != 200 {
                    return format!("{} {}", reply.status, reply.error_code(reply.status));
                }
                let (text, cut, prompt_refused) = answered(&reply, stream);
                let calls = script.requests.lock().unwrap().clone();
                if prompt_refused {
                    assert!(calls.is_empty(), "a refused prompt reached the upstream");
                    return "prompt refused".into();
                }
                assert_eq!(calls.len(), 1, "the upstream is called once");
                assert_eq!(calls[0]["messages"], json!(messages), "messages changed");
                if cut {
                    assert!(answer.starts_with(&text), "a cut answer is a prefix");
                    "answer cut".into()
                } else {
                    assert!(text == answer, "the answer changed: {text:?} vs {answer:?}");
                    "answer whole".into()
                }
            }));
            match outcome {
                Ok(what) => {
                    *counts
                        .entry(format!("stream {stream}: {what}"))
                        .or_default() += 1
                }
                Err(panic) => failures.push(format!(
                    "{name:?} (stream {stream}): {}",
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            }
        }
    }
    println!("{} cases: {counts:?}", cases.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    counts
}
