//! llama.cpp's `llama-server` for the tests that need a real OpenAI-compatible server:
//! where the build is (`.ci/llama-upstream`, named by `QWEN3GUARD_LLAMA_*`), and a running
//! server killed when dropped.
//!
//! Outside CI a missing build skips the test (it says so); under CI (`CI` set) it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The paths named by the variables `names`, if all are set and exist; `None` (the test
/// is skipped) otherwise, a panic under CI.
pub fn paths<const N: usize>(names: [&str; N]) -> Option<[PathBuf; N]> {
    let found: Option<Vec<PathBuf>> = names
        .iter()
        .map(|n| {
            std::env::var_os(n)
                .map(PathBuf::from)
                .filter(|p| p.exists())
        })
        .collect();
    let found = found.and_then(|f| <[PathBuf; N]>::try_from(f).ok());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI, .ci/run must build llama-server and its GGUFs ({names:?})"
        );
        eprintln!("skipped: {names:?} not set (run .ci/llama-upstream and set them)");
    }
    found
}

/// llama-server and the GGUF of the Gen fixture `gen-tied`.
pub fn built() -> Option<(PathBuf, PathBuf)> {
    paths(["QWEN3GUARD_LLAMA_SERVER", "QWEN3GUARD_LLAMA_GGUF"]).map(|[s, g]| (s, g))
}

/// A running llama-server, killed when dropped.
pub struct Llama {
    pub child: Child,
    pub port: u16,
}

impl Llama {
    /// Starts llama-server on a free port and waits until `/health` answers 200.
    ///
    /// The port is picked by binding port 0 and letting it go, so another process (the
    /// other llama test runs in parallel) can take it before llama-server binds it; then
    /// the child exits, and it is started again on a new port.
    pub fn start(server: &Path, gguf: &Path) -> Self {
        for _ in 0..3 {
            if let Some(llama) = Self::try_start(server, gguf) {
                return llama;
            }
        }
        panic!("llama-server exited on start three times (see .ci/llama-upstream)");
    }

    /// One start; `None` if the child exited before it was ready.
    fn try_start(server: &Path, gguf: &Path) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(server)
            .args(["-m", gguf.to_str().unwrap(), "--host", "127.0.0.1"])
            .args([
                "--port",
                &port.to_string(),
                "-c",
                "4096",
                "-t",
                "2",
                "-np",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("llama-server starts");
        let mut llama = Llama { child, port };
        let start = Instant::now();
        let addr = llama.addr();
        // While it loads, a connection can be refused or reset: not ready yet.
        let ready = || {
            super::client::try_request(addr, "GET", "/health", &[], b"")
                .is_some_and(|reply| reply.status == 200)
        };
        while !ready() {
            if llama.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "llama-server not ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Ready, and the answer came from this child, not from a server that took its
        // port first.
        (llama.child.try_wait().ok().flatten().is_none()).then_some(llama)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
