//! A `qwen3guard serve` process on a free port of 127.0.0.1, for the tests that drive the
//! real binary over HTTP.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{request, Reply};

/// A committed fixture checkpoint of the library crate.
pub fn fixture(name: &str) -> String {
    format!(
        "{}/../qwen3guard/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A running `qwen3guard serve`, killed if a test fails before stopping it.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    /// Sent as the bearer key with every request, when set.
    pub key: Option<String>,
}

impl Served {
    /// Starts `serve` in exactly the documented form (the Gen and Stream fixtures, f32).
    pub fn start() -> Self {
        let (gen, stream) = (fixture("gen-tied"), fixture("stream"));
        Self::with_args(&[
            "--gen-model",
            &gen,
            "--stream-model",
            &stream,
            "--dtype",
            "f32",
        ])
    }

    /// Starts `serve ARGS --host 127.0.0.1 --port P` with no `QWEN3GUARD_*` variables from
    /// this environment, and waits until `/health` is 200.
    pub fn with_args(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let port_text = port.to_string();
        let child = super::command()
            .arg("serve")
            .args(args)
            .args(["--host", "127.0.0.1", "--port", &port_text])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let mut served = Served {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            key: None,
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

    /// Waits for the process to exit by itself (after a signal, say), failing the test
    /// when it has not within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not exit in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn send(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let bearer = self.key.as_ref().map(|k| format!("Bearer {k}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer));
        }
        request(self.addr, method, path, &headers, body)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, b"")
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.send("POST", path, body.to_string().as_bytes())
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
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
