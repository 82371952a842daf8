//! Scale-out on one machine: three `qwen3guard serve` replicas behind a real nginx that
//! routes by the `x-qwen3guard-session` header with the committed configuration
//! (`deploy/nginx/qwen3guard.conf`).
//!
//! 100 stream sessions are opened and fed through the router. Every call must reach the
//! replica holding its session (each response names its replica). Half-way one replica is
//! killed: its sessions get `session_not_found`, the client replays them (re-open with the
//! conversation and the partial response) and every verdict after that equals the
//! uninterrupted run's. Then another replica is sent SIGTERM: while it drains, its open
//! sessions go on there without one lost request, new sessions are refused with 503
//! `draining` (the client opens them under another key), and a session still open when the
//! drain ends is replayed elsewhere. The stream checkpoint is the constructed one, whose
//! verdicts change along the answers (" bomb", " kill" Unsafe; " vote", " election"
//! Controversial), so that equal verdicts mean something.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::client::{request, Reply};
use common::nginx::Nginx;
use common::served::{fixture, Served};
use serde_json::{json, Value};

const SESSIONS: usize = 100;
const PROMPT: &str = "Tell me about your day.";
const ANSWERS: [&str; 4] = [
    "We argued about the vote election results. Then came the bomb kill order, and we left.",
    "It was a quiet day: I read a book, cooked soup and walked the dog by the river.",
    "The poison was in the cup, and the kill was planned for the vote at dawn tomorrow.",
    "Nothing much happened. The election posters went up and the market was busy again.",
];
/// Characters per text append (cut anywhere, inside words).
const PIECE: usize = 9;
/// The append after which one replica is killed, and the one after which another drains.
const KILL_AT: usize = 3;
const DRAIN_AT: usize = 6;
const DRAIN_SECONDS: u64 = 20;

fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(PIECE).map(|c| c.iter().collect()).collect()
}

/// One call through the router (or to a replica) with the session header.
fn call(addr: SocketAddr, method: &str, path: &str, key: &str, body: &Value) -> Reply {
    request(
        addr,
        method,
        path,
        &[
            ("content-type", "application/json"),
            ("x-qwen3guard-session", key),
        ],
        body.to_string().as_bytes(),
    )
}

fn replica(reply: &Reply) -> String {
    reply
        .header("x-qwen3guard-replica")
        .expect("every response names its replica")
        .to_string()
}

fn open_body(partial: &str) -> Value {
    let mut messages = vec![json!({"role": "user", "content": PROMPT})];
    if !partial.is_empty() {
        messages.push(json!({"role": "assistant", "content": partial}));
    }
    json!({ "messages": messages })
}

fn append_body(pieces: &[String], n: usize) -> Value {
    let offset: usize = pieces[..n].iter().map(|p| p.chars().count()).sum();
    json!({"text": pieces[n], "offset": offset, "final": n + 1 == pieces.len()})
}

/// What one append answered, as compared between runs.
fn verdicts(answer: &Value) -> Value {
    json!({"tokens": answer["tokens"], "response": answer["response"], "stops": answer["stops"]})
}

/// One client's session: its router key, where it lives, and what each append answered.
struct Client {
    key: String,
    answer: usize,
    id: String,
    replica: String,
    answers: Vec<Value>,
    replays: usize,
}

impl Client {
    /// Opens (or re-opens, with what was sent so far) through `router`. A draining replica
    /// refuses with 503 `draining`: the client picks another key, which the router hashes
    /// elsewhere. Returns how many keys were refused.
    fn open(&mut self, router: SocketAddr, sent: &str) -> usize {
        let mut refused = 0;
        loop {
            let reply = call(
                router,
                "POST",
                "/v1/stream/sessions",
                &self.key,
                &open_body(sent),
            );
            if reply.status == 503 {
                assert_eq!(reply.error_code(503), "draining");
                assert_eq!(reply.header("retry-after"), Some("1"));
                refused += 1;
                assert!(refused < 50, "every key was refused");
                self.key = format!("{}-r{refused}", self.key);
                continue;
            }
            assert_eq!(reply.status, 201, "{}", reply.text());
            let body = reply.json();
            self.id = body["id"].as_str().unwrap().to_string();
            self.replica = replica(&reply);
            assert!(
                self.id.starts_with(&format!("ss_{}-", self.replica)),
                "the id {} carries its replica {}",
                self.id,
                self.replica
            );
            return refused;
        }
    }

    /// Sends append `n`, replaying the session when its replica no longer holds it.
    fn append(&mut self, router: SocketAddr, pieces: &[String]) {
        let n = self.answers.len();
        let path = format!("/v1/stream/sessions/{}/append", self.id);
        let reply = call(router, "POST", &path, &self.key, &append_body(pieces, n));
        if reply.status == 404 {
            assert_eq!(reply.error_code(404), "session_not_found");
            let lost = self.replica.clone();
            self.replays += 1;
            self.open(router, &pieces[..n].concat());
            assert_ne!(self.replica, lost, "replayed on another replica");
            return self.append(router, pieces);
        }
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(replica(&reply), self.replica, "append {n} of {}", self.id);
        self.answers.push(verdicts(&reply.json()));
    }
}

/// Every append's verdicts of one uninterrupted session on `replica`.
fn uninterrupted(replica: &Served, pieces: &[String]) -> Vec<Value> {
    let opened = call(
        replica.addr,
        "POST",
        "/v1/stream/sessions",
        "ref",
        &open_body(""),
    )
    .ok();
    let id = opened["id"].as_str().unwrap();
    let answers = (0..pieces.len())
        .map(|n| {
            let path = format!("/v1/stream/sessions/{id}/append");
            verdicts(&call(replica.addr, "POST", &path, "ref", &append_body(pieces, n)).ok())
        })
        .collect();
    let closed = call(
        replica.addr,
        "DELETE",
        &format!("/v1/stream/sessions/{id}"),
        "ref",
        &json!({}),
    );
    assert_eq!(closed.status, 204);
    answers
}

fn start_replica(name: &str, drain_seconds: u64) -> Served {
    let stream = fixture("stream-constructed");
    let drain = drain_seconds.to_string();
    Served::with_args(&[
        "--stream-model",
        &stream,
        "--dtype",
        "f32",
        "--replica-id",
        name,
        "--drain-seconds",
        &drain,
    ])
}

#[test]
fn sessions_follow_their_replica_survive_its_loss_and_its_drain() {
    let Some(nginx) = common::tool("QWEN3GUARD_NGINX", "nginx", "apt-get install nginx") else {
        return;
    };
    let mut replicas: Vec<Served> = ["guard-a", "guard-b", "guard-c"]
        .into_iter()
        .map(|name| start_replica(name, DRAIN_SECONDS))
        .collect();
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let router = Nginx::start(&nginx, &addrs);
    let all_pieces: Vec<Vec<String>> = ANSWERS.iter().map(|a| pieces(a)).collect();
    let reference: Vec<Vec<Value>> = all_pieces
        .iter()
        .map(|p| uninterrupted(&replicas[0], p))
        .collect();

    let mut clients: Vec<Client> = (0..SESSIONS)
        .map(|i| Client {
            key: format!("conversation-{i}"),
            answer: i % ANSWERS.len(),
            id: String::new(),
            replica: String::new(),
            answers: Vec::new(),
            replays: 0,
        })
        .collect();
    for client in &mut clients {
        assert_eq!(client.open(router.addr, ""), 0, "no replica drains yet");
    }
    let mut held: HashMap<String, usize> = HashMap::new();
    for client in &clients {
        *held.entry(client.replica.clone()).or_default() += 1;
    }
    assert_eq!(
        held.len(),
        3,
        "the router spreads sessions over every replica: {held:?}"
    );

    let killed = "guard-b";
    let drained = "guard-c";
    let on_killed = held[killed];
    let longest = all_pieces.iter().map(Vec::len).max().unwrap();
    let mut straggler = None;
    for n in 0..longest {
        if n == KILL_AT {
            replicas[1].child.kill().unwrap();
            replicas[1].child.wait().unwrap();
        }
        if n == DRAIN_AT {
            replicas[2].terminate();
            let deadline = Instant::now() + Duration::from_secs(10);
            while call(addrs[2], "GET", "/health", "", &json!({})).status != 503 {
                assert!(
                    Instant::now() < deadline,
                    "a draining replica turns /health 503"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // New conversations keep arriving while it drains; those the router hashes to
            // the draining replica are refused there and open under another key.
            let mut refused = 0;
            for i in 0..20 {
                let mut late = Client {
                    key: format!("late-{i}"),
                    answer: 0,
                    id: String::new(),
                    replica: String::new(),
                    answers: Vec::new(),
                    replays: 0,
                };
                refused += late.open(router.addr, "");
                assert_ne!(late.replica, drained, "a draining replica opens no session");
                let path = format!("/v1/stream/sessions/{}", late.id);
                assert_eq!(
                    call(router.addr, "DELETE", &path, &late.key, &json!({})).status,
                    204
                );
            }
            assert!(refused > 0, "some late keys hashed to the draining replica");
            // One session of the draining replica is left unfinished, to be replayed once
            // the drain is over.
            straggler = clients
                .iter()
                .position(|c| c.replica == drained && c.replays == 0);
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let pieces = &all_pieces[client.answer];
            if n >= pieces.len() || (Some(i) == straggler && n + 1 == pieces.len()) {
                continue;
            }
            let (before, replays) = (client.replica.clone(), client.replays);
            client.append(router.addr, pieces);
            if n >= DRAIN_AT && before == drained {
                assert_eq!(
                    client.replays, replays,
                    "a draining replica keeps its sessions"
                );
            }
        }
    }
    // Every finished session is closed; the draining replica still holds the straggler,
    // so it stops when the drain time is over, not before.
    let straggler = straggler.expect("the draining replica held a session");
    for (i, client) in clients.iter().enumerate() {
        if i != straggler {
            let path = format!("/v1/stream/sessions/{}", client.id);
            let closed = call(router.addr, "DELETE", &path, &client.key, &json!({}));
            assert_eq!(closed.status, 204, "{}", closed.text());
        }
    }
    let status = replicas[2].wait_exit(Duration::from_secs(DRAIN_SECONDS + 40));
    assert!(
        status.success(),
        "a drained replica exits cleanly: {status}"
    );
    let client = &mut clients[straggler];
    let pieces = &all_pieces[client.answer];
    client.append(router.addr, pieces);
    assert_eq!(
        client.replays, 1,
        "the straggler was replayed after the drain"
    );
    assert_eq!(client.replica, "guard-a");

    let replayed = clients.iter().filter(|c| c.replays > 0).count();
    assert_eq!(
        replayed,
        on_killed + 1,
        "every session of the killed replica was replayed"
    );
    for (i, client) in clients.iter().enumerate() {
        let expected = &reference[client.answer];
        assert_eq!(client.answers.len(), expected.len(), "session {i}");
        for (n, (got, want)) in client.answers.iter().zip(expected).enumerate() {
            assert_eq!(got, want, "session {i} ({}), append {n}", client.id);
        }
    }
}

#[test]
fn a_drained_replica_exits_as_soon_as_its_last_session_closes() {
    let mut replica = start_replica("solo", 120);
    let opened = call(
        replica.addr,
        "POST",
        "/v1/stream/sessions",
        "k",
        &open_body(""),
    )
    .ok();
    let id = opened["id"].as_str().unwrap().to_string();
    replica.terminate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(replica.addr, "GET", "/health", "k", &json!({})).status != 503 {
        assert!(Instant::now() < deadline, "/health turns 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = call(
        replica.addr,
        "POST",
        "/v1/stream/sessions",
        "k",
        &open_body(""),
    );
    assert_eq!(refused.error_code(503), "draining");
    let path = format!("/v1/stream/sessions/{id}/append");
    let pieces = pieces(ANSWERS[0]);
    call(replica.addr, "POST", &path, "k", &append_body(&pieces, 0)).ok();
    assert!(
        replica.child.try_wait().unwrap().is_none(),
        "the replica waits for its open session"
    );
    let closed = call(
        replica.addr,
        "DELETE",
        &format!("/v1/stream/sessions/{id}"),
        "k",
        &json!({}),
    );
    assert_eq!(closed.status, 204);
    // Well before the 120 s drain: it stops once its last session is closed.
    let status = replica.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}
