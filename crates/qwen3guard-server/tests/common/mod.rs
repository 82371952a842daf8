//! Serving the committed fixtures on 127.0.0.1 and talking to them over real HTTP.
//!
//! The client ([`client`]) is a few lines over `std::net::TcpStream`, so the tests see
//! exactly the bytes a client would, with no client library between.
#![allow(dead_code)]

pub mod client;
pub mod llama;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use client::{request, Reply};

use qwen3guard::{
    Checkpoint, Conversation, GenGuard, LoadOptions, Precision, StreamGuard, StreamSession,
};
use qwen3guard_server::{app, ready_state, AppState, GenEngine, Models, ServerConfig};
use serde_json::Value;

/// `crates/qwen3guard/tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../qwen3guard/tests/fixtures")
        .join(name)
}

/// The fixture models, loaded once per test binary (f32, the reference precision).
pub fn models() -> Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            let options = LoadOptions {
                precision: Precision::F32,
            };
            let open =
                |name: &str| Checkpoint::resolve(fixture(name).to_str().unwrap(), false).unwrap();
            Models {
                gen: Some((
                    "gen-tied".into(),
                    GenGuard::load(&open("gen-tied"), &options).unwrap().into(),
                )),
                stream: Some((
                    "stream".into(),
                    StreamGuard::load(&open("stream"), &options).unwrap(),
                )),
            }
        })
        .clone()
}

/// The Gen fixture.
pub fn gen() -> GenGuard {
    match models().gen.unwrap().1 {
        GenEngine::Local(guard) => guard,
        GenEngine::Remote(_) => unreachable!("the fixtures run in-process"),
    }
}

/// The Stream fixture.
pub fn stream() -> StreamGuard {
    models().stream.unwrap().1
}

/// A server on an ephemeral port; stopped (gracefully) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Serves the fixture models under `config`.
    pub fn start(config: ServerConfig) -> Self {
        Self::with_state(ready_state(config, models()))
    }

    /// Serves `state` as it is (for example with no scheduler yet: models loading).
    pub fn with_state(state: AppState) -> Self {
        let router = app(state.clone());
        Self::serving(router, state)
    }

    /// Serves another router (a fake of a server ours calls); `state` is unused.
    pub fn with_router(router: axum::Router) -> Self {
        Self::serving(router, AppState::new(ServerConfig::default()))
    }

    fn serving(router: axum::Router, state: AppState) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        TestServer {
            addr: addr_rx.recv().unwrap(),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// One request; `headers` are added to Host, Content-Length and Connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        request(self.addr, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, body.to_string().as_bytes())
    }

    pub fn post_raw(&self, path: &str, body: &[u8]) -> Reply {
        self.request("POST", path, &[("content-type", "application/json")], body)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A value through JSON text and back, as a client sees it (f32 scores are written in
/// their shortest form, so comparisons must go through the same text).
pub fn as_client_sees<T: serde::Serialize>(value: &T) -> Value {
    serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
}

/// The library's session on `prompt` after the assistant header: what the server holds
/// right after opening a session on the same prompt.
pub fn library_session(prompt: &str) -> StreamSession {
    library_session_of(&stream(), prompt)
}

/// [`library_session`] on another Stream model.
pub fn library_session_of(guard: &StreamGuard, prompt: &str) -> StreamSession {
    let exchange = guard
        .render_exchange(&Conversation::from_prompt(prompt, None))
        .unwrap();
    let mut session = guard.open_exchange(&exchange).unwrap();
    session
        .start_response(&guard.assistant_header(false).unwrap())
        .unwrap();
    session
}

/// A small deterministic generator (xorshift64*), so that a failing case replays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}
