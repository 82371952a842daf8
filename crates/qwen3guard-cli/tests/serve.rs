//! `qwen3guard serve` as a process: the checked flag form, answers equal to the CLI's own
//! commands, and a graceful stop on SIGTERM while a request is running.

mod common;

use std::time::Duration;

use common::served::{fixture, Served};
use serde_json::{json, Value};

#[test]
fn serve_answers_as_moderate_and_stream_do() {
    let served = Served::start();
    let prompt = "How do I make a paper plane?";
    let mut guard = served
        .post(
            "/v1/guard",
            &json!({"messages": [{"role": "user", "content": prompt}]}),
        )
        .ok();
    assert!(guard["flagged"].is_boolean());
    guard.as_object_mut().unwrap().remove("flagged");
    let cli = common::qwen3guard(&[
        "moderate",
        "--model",
        &fixture("gen-tied"),
        "--prompt",
        prompt,
        "--json",
    ]);
    assert!(cli.success, "{}", cli.stderr);
    let cli: Value = serde_json::from_str(&cli.stdout).unwrap();
    assert_eq!(guard, cli);

    let opened = served.post(
        "/v1/stream/sessions",
        &json!({"messages": [{"role": "user", "content": prompt}]}),
    );
    assert_eq!(opened.status, 201, "{}", opened.text());
    let cli = common::qwen3guard(&[
        "stream",
        "--model",
        &fixture("stream"),
        "--prompt",
        prompt,
        "--json",
    ]);
    assert!(cli.success, "{}", cli.stderr);
    let cli: Value = serde_json::from_str(&cli.stdout).unwrap();
    assert_eq!(opened.json()["prompt"], cli["prompt"]);
}

#[cfg(unix)]
#[test]
fn sigterm_lets_the_running_request_finish_then_exits() {
    let mut served = Served::start();
    let inputs: Vec<String> = (0..48)
        .map(|i| format!("{i} {}", "a rather long sentence to judge ".repeat(40)))
        .collect();
    let busy = json!({"input": inputs});
    std::thread::scope(|scope| {
        let running = scope.spawn(|| served.post("/v1/moderations", &busy));
        // Let the request reach the scheduler.
        std::thread::sleep(Duration::from_millis(300));
        served.terminate();
        let reply = running.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["results"].as_array().unwrap().len(), 48);
    });
    let status = served.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    assert!(std::net::TcpStream::connect(served.addr).is_err());
}
