//! `qwen3guard serve` as a process: the checked flag form, answers equal to the CLI's own
//! commands, and a graceful stop on SIGTERM while a request is running.

#[path = "../../qwen3guard-server/tests/common/client.rs"]
mod client;
mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{request, Reply};
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    format!(
        "{}/../qwen3guard/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A running `qwen3guard serve`, killed if a test fails before stopping it.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Served {
    /// Starts `serve` in exactly the documented form and waits until `/health` is 200.
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_qwen3guard"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("QWEN3GUARD_") {
                command.env_remove(name);
            }
        }
        let (gen, stream) = (fixture("gen-tied"), fixture("stream"));
        let port_text = port.to_string();
        let child = command
            .env("RAYON_NUM_THREADS", "1")
            .args([
                "serve",
                "--gen-model",
                &gen,
                "--stream-model",
                &stream,
                "--host",
                "127.0.0.1",
                "--port",
                &port_text,
                "--dtype",
                "f32",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let mut served = Served {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            assert!(
                served.child.try_wait().unwrap().is_none(),
                "serve exited before it was ready"
            );
            if std::net::TcpStream::connect(served.addr).is_ok()
                && served.get("/health").status == 200
            {
                return served;
            }
            assert!(Instant::now() < deadline, "serve was not ready in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], b"")
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        request(
            self.addr,
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(std::net::TcpStream::connect(served.addr).is_err());
}
