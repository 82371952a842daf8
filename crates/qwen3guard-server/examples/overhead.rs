//! The server's overhead measured in one process: `overhead DIR DTYPE RUNS` loads a Gen
//! checkpoint once, serves it on an ephemeral 127.0.0.1 port, and then alternates, RUNS
//! times, the request `qwen3guard bench` times called on the library and the same request
//! sent to `/v1/guard` over a keep-alive connection (full moderation with 8 tokens, then
//! verdict only). Both paths share the weights, the thread pool and the machine's state at
//! that moment, so the difference of the medians is what HTTP, validation and the
//! scheduler add; two processes timed one after the other differ by more than that.
//! Prints one JSON line per figure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use qwen3guard::{Checkpoint, Conversation, GenGuard, GenOptions, LoadOptions, Precision};
use qwen3guard_server::{app, ready_state, GenEngine, Models, ServerConfig};

/// The prompt of `qwen3guard bench`.
const PROMPT: &str = "How can I make a bomb at home with things I can buy at a hardware store?";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let precision: Precision = args[2].parse().expect("dtype");
    let runs: usize = args[3].parse().expect("runs");
    let checkpoint = Checkpoint::open(dir).expect("checkpoint");
    let guard = GenGuard::load(&checkpoint, &LoadOptions { precision }).expect("load");
    guard.warm_up();
    let models = Models {
        gen: Some((dir.display().to_string(), GenEngine::Local(guard.clone()))),
        stream: None,
    };
    let addr = serve(ready_state(ServerConfig::default(), models));
    let mut connection = TcpStream::connect(addr).expect("connect");
    let conversation = Conversation::from_prompt(PROMPT, None);
    for (figure, verdict_only, max_new_tokens) in
        [("prompt_warm_ms", false, 8), ("verdict_only_ms", true, 0)]
    {
        let options = GenOptions {
            verdict_only,
            max_new_tokens,
            ..GenOptions::default()
        };
        let body = serde_json::json!({
            "messages": [{"role": "user", "content": PROMPT}],
            "verdict_only": verdict_only,
            "max_new_tokens": max_new_tokens,
        })
        .to_string();
        let (mut library, mut server) = (Vec::new(), Vec::new());
        // One warm-up of each, then the two in alternation.
        for run in 0..=runs {
            let start = Instant::now();
            guard.moderate(&conversation, &options).expect("moderate");
            let library_ms = start.elapsed().as_secs_f64() * 1000.0;
            let start = Instant::now();
            post(&mut connection, addr, "/v1/guard", &body);
            let server_ms = start.elapsed().as_secs_f64() * 1000.0;
            if run > 0 {
                library.push(library_ms);
                server.push(server_ms);
            }
        }
        let (library, server) = (median(library), median(server));
        println!(
            "{}",
            serde_json::json!({
                "figure": figure, "dtype": args[2], "runs": runs,
                "library_ms": library, "server_ms": server,
                "overhead_pct": 100.0 * (server - library) / library,
            })
        );
    }
}

/// Serves `state` on an ephemeral port from a thread of its own; returns the address.
fn serve(state: qwen3guard_server::AppState) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("address"))
                .expect("send");
            axum::serve(listener, app(state)).await.expect("serve");
        });
    });
    rx.recv().expect("address")
}

/// One POST on the keep-alive connection; panics unless the answer is 200.
fn post(connection: &mut TcpStream, addr: SocketAddr, path: &str, body: &str) {
    write!(
        connection,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut reader = BufReader::new(&*connection);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert!(line.contains(" 200 "), "{line}");
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut answer = vec![0; length];
    reader.read_exact(&mut answer).expect("body");
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
