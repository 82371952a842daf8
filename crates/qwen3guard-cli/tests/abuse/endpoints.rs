//! The corpus through the server's other doors (a module of tests/abuse.rs): every case
//! also goes to `/v1/moderations` (its user contents as inputs), to `/v1/reward` (where
//! it ends with an answer), back into a second stream session as the token ids the text
//! append gave (a token-id append must judge exactly what the text did), and through
//! `GET /v1/stream/ws` as frames (the same open and append, answered as over HTTP). Each
//! one must judge or refuse cleanly; where two doors judge the same thing, their verdicts
//! must agree.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use super::common::client::Reply;
use super::{
    contents_delta, outcome, within_budget, Bench, Case, Expect, Input, Streamed,
    MAX_MODERATION_INPUTS,
};

/// Probabilities from two requests may differ in the last bits (they can share a batch
/// with other work); verdicts further apart than this are not the same verdict.
const TOLERANCE: f64 = 1e-4;

/// What the other doors did with a case, for the summary (`-`: not sent there).
pub struct Others {
    pub moderation: String,
    pub reward: String,
    pub replay: String,
    pub socket: String,
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

impl Bench {
    /// Sends the case through the other doors; `guard`, `session` and `streamed` are the
    /// HTTP answers the case already had, which the others must agree with.
    pub(super) fn other_endpoints(
        &self,
        case: &Case,
        guard: &Reply,
        session: &Reply,
        streamed: &Streamed,
        slowest: &mut Duration,
    ) -> Others {
        Others {
            moderation: self.check_moderation(case, guard, slowest),
            reward: self.check_reward(case, guard, slowest),
            replay: self.check_replay(case, streamed, slowest),
            socket: self.check_socket(case, session, streamed, slowest),
        }
    }

    /// `/v1/moderations` with the case's user contents as `input`; a messages file goes
    /// as the value of `input`, and must be refused.
    fn check_moderation(&self, case: &Case, guard: &Reply, slowest: &mut Duration) -> String {
        let (body, inputs) = match &case.input {
            Input::Messages(messages) => {
                let inputs: Vec<&str> = messages
                    .iter()
                    .filter(|m| m["role"] == "user")
                    .filter_map(|m| m["content"].as_str())
                    .filter(|c| !c.is_empty())
                    .collect();
                if inputs.is_empty() {
                    return "-".into();
                }
                (
                    json!({ "input": inputs }).to_string().into_bytes(),
                    inputs.len(),
                )
            }
            Input::File(path) => (spliced(b"{\"input\": ", path), 0),
            Input::Body(_) => return "-".into(),
        };
        let reply = self.call("POST", "/v1/moderations", &body, slowest);
        match (&case.expect, reply.status) {
            (Expect::RefusedFile { .. }, _) => {
                assert_eq!(reply.error_code(400), "invalid_request");
            }
            // Each input takes a place in the queue: a request of more than the server
            // takes is refused at once, not answered 503 (busy) forever.
            (_, _) if inputs > MAX_MODERATION_INPUTS => {
                assert_eq!(reply.error_code(400), "invalid_request");
                let message = reply.json()["error"]["message"].to_string();
                assert!(message.contains("split the batch"), "{message}");
            }
            (_, 200) => {
                let results = reply.json()["results"].as_array().unwrap().clone();
                assert_eq!(results.len(), inputs, "one result per input");
                for result in &results {
                    assert!(result["flagged"].is_boolean(), "{result}");
                    for (name, score) in result["category_scores"].as_object().unwrap() {
                        let p = score.as_f64().unwrap();
                        assert!((0.0..=1.0).contains(&p), "{name}: {p}");
                    }
                }
                // A lone user message is the same prompt moderation as /v1/guard's.
                if let Input::Messages(messages) = &case.input {
                    if messages.len() == 1 && guard.status == 200 {
                        same_verdict(&results[0]["qwen3guard"], &guard.json(), "moderation");
                    }
                }
            }
            (Expect::Judged, status) => {
                assert_eq!(reply.error_code(status), "context_length_exceeded");
            }
            (_, status) => {
                reply.error_code(status);
            }
        }
        outcome(&reply)
    }

    /// `/v1/reward` (guard-only) on a case that ends with an answer: the prompt turns as
    /// `messages`, the last content as `response`. Its verdict is `/v1/guard`'s on the
    /// same conversation, unless the answer holds reasoning markers (the reward judges
    /// the thinking apart only when it is given apart; here all of it is the response).
    fn check_reward(&self, case: &Case, guard: &Reply, slowest: &mut Duration) -> String {
        let Input::Messages(messages) = &case.input else {
            return "-".into();
        };
        let Some((last, prompt)) = messages.split_last() else {
            return "-".into();
        };
        let Some(response) = last["content"]
            .as_str()
            .filter(|_| last["role"] == "assistant")
        else {
            return "-".into();
        };
        let body = json!({
            "samples": [{"messages": prompt, "response": response}],
            "reward": "guard_only",
        });
        let reply = self.call("POST", "/v1/reward", body.to_string().as_bytes(), slowest);
        let after_user = prompt.last().is_some_and(|m| m["role"] == "user");
        match (&case.expect, reply.status) {
            // The reward's prompt is what the policy answered: it ends with the user.
            (Expect::Judged, _) if !after_user => {
                assert_eq!(reply.error_code(400), "invalid_request");
                let message = reply.json()["error"]["message"].to_string();
                assert!(
                    message.contains("must end with the user's turn"),
                    "{message}"
                );
            }
            (_, 200) => {
                let answer = reply.json();
                let reward = answer["rewards"][0].as_f64().unwrap();
                assert!(reward == 0.0 || reward == 1.0, "guard-only reward {reward}");
                let detail = &answer["details"][0];
                let marked = messages
                    .iter()
                    .any(|m| m["content"].as_str().is_some_and(|c| c.contains("think>")));
                if guard.status == 200 && !marked {
                    let verdict = guard.json();
                    assert_eq!(detail["response_safety"], verdict["safety"], "reward");
                    assert_close(&detail["scores"]["response"], &verdict["scores"], "reward");
                    assert_eq!(reward == 1.0, verdict["safety"] == "Safe", "reward value");
                }
            }
            (Expect::Judged, status) => {
                assert_eq!(reply.error_code(status), "context_length_exceeded");
            }
            (_, status) => {
                reply.error_code(status);
            }
        }
        outcome(&reply)
    }

    /// The ids the text append gave, appended to a second session on the same messages
    /// as `token_ids`: the per-token verdicts must be the text append's.
    fn check_replay(&self, case: &Case, streamed: &Streamed, slowest: &mut Duration) -> String {
        let (Input::Messages(messages), Some(text_append)) = (&case.input, &streamed.append) else {
            return "-".into();
        };
        if text_append.status != 200 {
            return "-".into();
        }
        let tokens = &text_append.json()["tokens"];
        let ids: Vec<u64> = tokens
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token_id"].as_u64().unwrap())
            .collect();
        let opened = self.call(
            "POST",
            "/v1/stream/sessions",
            json!({ "messages": messages }).to_string().as_bytes(),
            slowest,
        );
        let path = format!(
            "/v1/stream/sessions/{}",
            opened.ok()["id"].as_str().unwrap()
        );
        let body = json!({"token_ids": ids, "final": true}).to_string();
        let reply = self.call("POST", &format!("{path}/append"), body.as_bytes(), slowest);
        assert_close(&reply.ok()["tokens"], tokens, "token-id replay");
        assert_eq!(self.call("DELETE", &path, b"", slowest).status, 204);
        outcome(&reply)
    }

    /// The session's open and append as WebSocket frames (a messages file's bytes as the
    /// value of `messages`, in a binary frame, since they need not be UTF-8): each reply
    /// frame carries what the HTTP endpoint answered, or its error with the same status
    /// and code.
    fn check_socket(
        &self,
        case: &Case,
        session: &Reply,
        streamed: &Streamed,
        slowest: &mut Duration,
    ) -> String {
        let open = match &case.input {
            Input::Messages(messages) => json!({"op": "open", "messages": messages})
                .to_string()
                .into_bytes(),
            Input::File(path) => spliced(b"{\"op\": \"open\", \"messages\": ", path),
            Input::Body(_) => return "-".into(),
        };
        let started = Instant::now();
        let (mut socket, _) =
            tungstenite::connect(format!("ws://{}/v1/stream/ws", self.served.addr))
                .expect("the WebSocket upgrade");
        let opened = exchange(&mut socket, Message::binary(open));
        // An error frame carries the HTTP status it stands for.
        let mut seen = match opened.get("error") {
            None => "open".to_owned(),
            Some(_) => format!("{}", opened["status"]),
        };
        if session.status == 201 {
            assert_eq!(opened["op"], "open", "{opened}");
            assert_close(
                &opened["prompt"],
                &session.json()["prompt"],
                "WebSocket open",
            );
            if let (Input::Messages(messages), Some(http)) = (&case.input, &streamed.append) {
                let mut frame = contents_delta(messages);
                frame["op"] = json!("append");
                let appended = exchange(&mut socket, Message::text(frame.to_string()));
                if http.status == 200 {
                    assert_eq!(appended["op"], "append", "{}", short(&appended));
                    assert_close(
                        &appended["tokens"],
                        &http.json()["tokens"],
                        "WebSocket append",
                    );
                    seen.push_str(", append");
                } else {
                    same_failure(&appended, http, "WebSocket append");
                    seen = format!("{seen}, {}", appended["status"]);
                }
            }
            let closed = exchange(
                &mut socket,
                Message::text(json!({"op": "close"}).to_string()),
            );
            assert_eq!(closed["closed"], true, "{closed}");
        } else {
            same_failure(&opened, session, "WebSocket open");
        }
        let _ = socket.close(None);
        within_budget(started, slowest, "/v1/stream/ws");
        seen
    }
}

/// `prefix`, a file's bytes, then `}`: the file as the value of a field.
fn spliced(prefix: &[u8], path: &std::path::Path) -> Vec<u8> {
    [prefix, &std::fs::read(path).unwrap(), b"}"].concat()
}

/// Sends a frame and reads its reply frame as JSON.
fn exchange(socket: &mut Socket, frame: Message) -> Value {
    socket.send(frame).expect("the frame is sent");
    loop {
        match socket.read().expect("a reply frame") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// An error frame with the status and error code the HTTP endpoint answered.
fn same_failure(frame: &Value, http: &Reply, what: &str) {
    assert_eq!(
        frame["status"],
        json!(http.status),
        "{what}: {}",
        short(frame)
    );
    let code = http.error_code(http.status);
    assert_eq!(
        frame["error"]["code"],
        json!(code),
        "{what}: {}",
        short(frame)
    );
    assert!(frame["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

/// The same Gen verdict: label and categories equal, probabilities within tolerance.
fn same_verdict(a: &Value, b: &Value, what: &str) {
    assert_eq!(a["safety"], b["safety"], "{what}");
    assert_eq!(a["categories"], b["categories"], "{what}");
    assert_close(&a["scores"], &b["scores"], what);
}

/// Equal JSON, but for numbers, which may differ by [`TOLERANCE`].
fn assert_close(a: &Value, b: &Value, what: &str) {
    assert!(
        close(a, b),
        "{what}: {} differs from {}",
        short(a),
        short(b)
    );
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            // `<=` is false for a NaN, which JSON cannot hold anyway.
            (Some(x), Some(y)) => (x - y).abs() <= TOLERANCE,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// A value's JSON, cut to a readable length for a failure message.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

#[test]
fn closeness_fails_where_it_should() {
    let a = json!({"p": [0.5, 0.25], "label": "Safe"});
    assert!(close(&a, &json!({"p": [0.50001, 0.25], "label": "Safe"})));
    assert!(!close(&a, &json!({"p": [0.51, 0.25], "label": "Safe"})));
    assert!(!close(&a, &json!({"p": [0.5], "label": "Safe"})));
    assert!(!close(&a, &json!({"p": [0.5, 0.25], "label": "Unsafe"})));
    assert!(!close(&a, &json!({"p": [0.5, 0.25]})));
}
