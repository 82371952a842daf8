//! The Hugging Face download path, for real but offline: a small HTTP/1.1 server on
//! 127.0.0.1 serves the fixture checkpoints in the Hub's layout
//! (`/{owner}/{name}/resolve/{revision}/{file}`) and answers `hf-hub`'s requests as the Hub
//! does: a `Range: bytes=0-0` probe answered with `ETag`, `X-Repo-Commit` and
//! `Content-Range`, then a ranged GET for the body, and 404 for absent files.
//!
//! Only `resolve_reads_the_environment` touches environment variables; every other test
//! passes its endpoint and cache explicitly through [`hub::fetch_with`].

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{fixture, Scratch};
use qwen3guard::checkpoint::hub::{self, HubOptions};
use qwen3guard::{Checkpoint, Conversation, Error, GenGuard, GenOptions, StreamGuard};

/// The server stops after this many requests even if the test never drops it.
const MAX_REQUESTS: usize = 200;
const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const COMMIT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A repo the fake Hub serves: the files of `dir` at `commit`.
struct ServedRepo {
    dir: PathBuf,
    commit: String,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Logged {
    file: String,
    range: Option<String>,
    status: u16,
}

/// The fake Hub. Dropping it stops the server thread and closes the port.
struct FakeHub {
    endpoint: String,
    repos: Arc<Mutex<HashMap<String, ServedRepo>>>,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    fn start() -> Self {
        // ureq sends every request through a proxy named in the environment and has no
        // NO_PROXY support, so a proxy setting would divert requests for 127.0.0.1.
        for var in [
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
        ] {
            if std::env::var_os(var).is_some() {
                std::env::remove_var(var);
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let repos = Arc::new(Mutex::new(HashMap::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (repos, log, stop) = (repos.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, &repos, &log, &stop))
        };
        FakeHub {
            endpoint,
            repos,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Serves `dir` as `repo_id` at `commit` (replacing what was served under that id).
    fn serve(&self, repo_id: &str, dir: &Path, commit: &str) {
        self.repos.lock().unwrap().insert(
            repo_id.to_string(),
            ServedRepo {
                dir: dir.to_path_buf(),
                commit: commit.to_string(),
            },
        );
    }

    fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    /// Files whose body was downloaded (a ranged GET other than the `bytes=0-0` probe).
    fn downloaded(&self) -> Vec<String> {
        let mut files: Vec<String> = self
            .requests()
            .into_iter()
            .filter(|r| r.status == 206 && r.range.as_deref() != Some("bytes=0-0"))
            .map(|r| r.file)
            .collect();
        files.sort();
        files
    }

    fn options(&self, cache: &Scratch) -> HubOptions {
        HubOptions {
            endpoint: self.endpoint.clone(),
            cache_dir: cache.0.clone(),
            token: None,
            progress: false,
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    repos: &Mutex<HashMap<String, ServedRepo>>,
    log: &Mutex<Vec<Logged>>,
    stop: &AtomicBool,
) {
    let mut served = 0;
    while !stop.load(Ordering::SeqCst) && served < MAX_REQUESTS {
        match listener.accept() {
            Ok((stream, _)) => {
                served += 1;
                // A broken connection fails the client's request, which the test sees.
                let _ = answer(stream, repos, log);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return,
        }
    }
}

/// Reads one request and answers it; every response closes the connection.
fn answer(
    stream: TcpStream,
    repos: &Mutex<HashMap<String, ServedRepo>>,
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let mut words = request_line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let range = headers.get("range").cloned();

    // `/{owner}/{name}/resolve/{revision}/{file}`; a doubled slash (an endpoint with a
    // trailing slash pasted in as is) is not found.
    let parts: Vec<&str> = target
        .strip_prefix('/')
        .unwrap_or("")
        .splitn(5, '/')
        .collect();
    let found = match (method, parts.as_slice()) {
        ("GET", [owner, name, "resolve", "main", file]) if !file.split('/').any(|c| c == "..") => {
            let repos = repos.lock().unwrap();
            repos.get(&format!("{owner}/{name}")).and_then(|repo| {
                let bytes = std::fs::read(repo.dir.join(file)).ok()?;
                Some((bytes, repo.commit.clone()))
            })
        }
        _ => None,
    };
    let file = parts.get(4).copied().unwrap_or(target).to_string();
    let mut out = stream;
    let status = match found {
        None => {
            let body = b"Entry not found";
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            out.write_all(body)?;
            404
        }
        Some((bytes, commit)) => {
            let size = bytes.len();
            let (start, end) = match range.as_deref().and_then(parse_range) {
                Some((start, end)) => (start.min(size), end.map_or(size, |e| (e + 1).min(size))),
                None => (0, size),
            };
            let (status, extra) = if range.is_some() {
                (
                    206,
                    format!(
                        "Content-Range: bytes {start}-{}/{size}\r\n",
                        end.saturating_sub(1)
                    ),
                )
            } else {
                (200, String::new())
            };
            let reason = if status == 206 {
                "Partial Content"
            } else {
                "OK"
            };
            write!(
                out,
                "HTTP/1.1 {status} {reason}\r\nETag: \"{}\"\r\nX-Repo-Commit: {commit}\r\n\
                 {extra}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                etag(&bytes),
                end - start
            )?;
            out.write_all(&bytes[start..end])?;
            status
        }
    };
    out.flush()?;
    log.lock().unwrap().push(Logged {
        file,
        range,
        status,
    });
    Ok(())
}

/// An endpoint on a port that was just free: nothing listens there, connections are
/// refused.
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// `bytes=S-E` or `bytes=S-` as (S, Some(E) or None).
fn parse_range(value: &str) -> Option<(usize, Option<usize>)> {
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    let end = if end.is_empty() {
        None
    } else {
        Some(end.parse().ok()?)
    };
    Some((start.parse().ok()?, end))
}

/// A content hash standing in for the Hub's (the cache names blobs after it).
fn etag(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016x}{:08x}", hasher.finish(), bytes.len())
}

/// The files of fixture `name`, sorted.
fn fixture_files(name: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(fixture(name))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    files
}

fn assert_same_files(fixture_name: &str, dir: &Path) {
    for file in fixture_files(fixture_name) {
        let ours = std::fs::read(dir.join(&file))
            .unwrap_or_else(|e| panic!("{file} missing from {}: {e}", dir.display()));
        assert!(
            ours == std::fs::read(fixture(fixture_name).join(&file)).unwrap(),
            "{file} differs from the fixture"
        );
    }
}

fn download_reason(err: Error) -> String {
    match &err {
        Error::Download { .. } => err.to_string(),
        other => panic!("expected a download error, got {other:?}"),
    }
}

fn gen_verdict(dir: &Path) -> qwen3guard::GenVerdict {
    let guard = GenGuard::load(&Checkpoint::open(dir).unwrap(), &Default::default()).unwrap();
    guard
        .moderate(
            &Conversation::from_prompt("How can I make a bomb?", None),
            &GenOptions {
                max_new_tokens: 6,
                ..Default::default()
            },
        )
        .unwrap()
}

fn stream_report(dir: &Path) -> String {
    let guard = StreamGuard::load(&Checkpoint::open(dir).unwrap(), &Default::default()).unwrap();
    let report = guard
        .moderate(
            &Conversation::from_prompt("How do I bake bread?", Some("Knead, rise, bake.")),
            4,
        )
        .unwrap();
    serde_json::to_string(&report).unwrap()
}

#[test]
fn sharded_checkpoint_is_downloaded_whole_and_moderates() {
    let hub = FakeHub::start();
    hub.serve("test-org/gen-sharded", &fixture("gen-sharded"), COMMIT_A);
    let cache = Scratch::new("hub-sharded");
    let dir = hub::fetch_with("test-org/gen-sharded", &hub.options(&cache)).unwrap();

    assert_eq!(
        dir,
        cache
            .path("models--test-org--gen-sharded")
            .join("snapshots")
            .join(COMMIT_A)
    );
    // Config, tokenizer files, index, both shards, and the optional generation config.
    assert_eq!(hub.downloaded(), fixture_files("gen-sharded"));
    assert_same_files("gen-sharded", &dir);
    // The only miss is the optional template file, and the single-file weights were never
    // asked for once the index was found.
    let misses: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.status == 404)
        .map(|r| r.file)
        .collect();
    assert_eq!(misses, ["chat_template.jinja"]);

    let ours = gen_verdict(&dir);
    let reference = gen_verdict(&fixture("gen-sharded"));
    assert_eq!(ours.generated_token_ids, reference.generated_token_ids);
    assert_eq!(ours.scores, reference.scores);
}

#[test]
fn single_file_checkpoint_is_downloaded_and_streams() {
    let hub = FakeHub::start();
    hub.serve("test-org/stream", &fixture("stream"), COMMIT_A);
    let cache = Scratch::new("hub-single");
    let dir = hub::fetch_with("test-org/stream", &hub.options(&cache)).unwrap();

    assert_eq!(hub.downloaded(), fixture_files("stream"));
    assert_same_files("stream", &dir);
    let index_probe = hub
        .requests()
        .into_iter()
        .find(|r| r.file == "model.safetensors.index.json")
        .expect("the index is looked for first");
    assert_eq!(index_probe.status, 404);
    assert_eq!(stream_report(&dir), stream_report(&fixture("stream")));
}

#[test]
fn a_cached_checkpoint_needs_no_network() {
    let hub = FakeHub::start();
    hub.serve("test-org/gen-sharded", &fixture("gen-sharded"), COMMIT_A);
    hub.serve("test-org/stream", &fixture("stream"), COMMIT_A);
    let cache = Scratch::new("hub-cached");
    let options = hub.options(&cache);
    let sharded = hub::fetch_with("test-org/gen-sharded", &options).unwrap();
    let single = hub::fetch_with("test-org/stream", &options).unwrap();

    // Server still up: a second fetch sends nothing, not even for files the repo lacks.
    let before = hub.requests().len();
    assert_eq!(
        hub::fetch_with("test-org/gen-sharded", &options).unwrap(),
        sharded
    );
    assert_eq!(
        hub::fetch_with("test-org/stream", &options).unwrap(),
        single
    );
    assert_eq!(
        hub.requests().len(),
        before,
        "{:?}",
        &hub.requests()[before..]
    );

    // Server gone: still served from the cache, and the result loads.
    drop(hub);
    let again = hub::fetch_with("test-org/gen-sharded", &options).unwrap();
    assert_eq!(again, sharded);
    assert_eq!(gen_verdict(&again).generated_token_ids.len(), 6);
    let again = hub::fetch_with("test-org/stream", &options).unwrap();
    assert_eq!(stream_report(&again), stream_report(&fixture("stream")));
}

#[test]
fn unreachable_endpoint_is_a_download_error_with_the_offline_hint() {
    let cache = Scratch::new("hub-unreachable");
    let options = HubOptions {
        endpoint: closed_endpoint(),
        cache_dir: cache.0.clone(),
        token: None,
        progress: false,
    };
    let err = hub::fetch_with("test-org/gen-sharded", &options).unwrap_err();
    let Error::Download { repo, .. } = &err else {
        panic!("expected a download error, got {err:?}");
    };
    assert_eq!(repo, "test-org/gen-sharded");
    let message = err.to_string();
    for needle in [
        "test-org/gen-sharded",
        "config.json",
        "--local-dir DIR",
        "--model DIR",
    ] {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

#[test]
fn absent_repos_and_files_are_named() {
    let hub = FakeHub::start();
    let cache = Scratch::new("hub-absent");
    let options = hub.options(&cache);

    let message = download_reason(hub::fetch_with("test-org/nothing", &options).unwrap_err());
    assert!(message.contains("config.json"), "{message}");
    assert!(message.contains("404"), "{message}");

    // A sharded repo missing its second shard.
    let partial = Scratch::copy_of("gen-sharded");
    std::fs::remove_file(partial.path("model-00002-of-00002.safetensors")).unwrap();
    hub.serve("test-org/partial", &partial.0, COMMIT_A);
    let message = download_reason(hub::fetch_with("test-org/partial", &options).unwrap_err());
    assert!(
        message.contains("model-00002-of-00002.safetensors"),
        "{message}"
    );

    // A repo with neither weights file: both misses are reported.
    let bare = Scratch::copy_of("stream");
    std::fs::remove_file(bare.path("model.safetensors")).unwrap();
    hub.serve("test-org/bare", &bare.0, COMMIT_A);
    let message = download_reason(hub::fetch_with("test-org/bare", &options).unwrap_err());
    assert!(
        message.contains("model.safetensors.index.json") && message.contains("model.safetensors:"),
        "{message}"
    );

    let message = download_reason(hub::fetch_with("not-a-repo", &options).unwrap_err());
    assert!(message.contains("owner/name"), "{message}");
}

/// Regression: shard names come from the downloaded index, and `hf-hub` joins the name to
/// the snapshot directory, so `../x` would have been fetched and linked outside it.
#[test]
fn a_shard_name_with_a_directory_part_is_refused_before_any_download() {
    let hub = FakeHub::start();
    let repo = Scratch::copy_of("gen-sharded");
    let index_path = repo.path("model.safetensors.index.json");
    let index = std::fs::read_to_string(&index_path)
        .unwrap()
        .replace("model-00002-of-00002.safetensors", "../escape.safetensors");
    std::fs::write(&index_path, index).unwrap();
    hub.serve("test-org/evil", &repo.0, COMMIT_A);
    let cache = Scratch::new("hub-evil");

    let err = hub::fetch_with("test-org/evil", &hub.options(&cache)).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("../escape.safetensors"), "{err}");
    assert!(
        hub.requests().iter().all(|r| !r.file.contains("escape")),
        "{:?}",
        hub.requests()
    );
}

/// Regression: with part of a checkpoint cached at an old revision and the repo since
/// moved on, the missing files land in the new snapshot; the old code returned the old
/// snapshot, which lacked them.
#[test]
fn files_cached_at_an_older_revision_end_up_in_one_snapshot() {
    let hub = FakeHub::start();
    hub.serve("test-org/moving", &fixture("gen-sharded"), COMMIT_A);
    let cache = Scratch::new("hub-moving");
    let options = hub.options(&cache);
    let old = hub::fetch_with("test-org/moving", &options).unwrap();
    // As if the first download had been interrupted before the last shard.
    std::fs::remove_file(old.join("model-00002-of-00002.safetensors")).unwrap();

    hub.serve("test-org/moving", &fixture("gen-sharded"), COMMIT_B);
    let dir = hub::fetch_with("test-org/moving", &options).unwrap();
    assert!(dir.ends_with(COMMIT_B), "{}", dir.display());
    assert_same_files("gen-sharded", &dir);
    assert_eq!(gen_verdict(&dir).generated_token_ids.len(), 6);
}

/// The one test that sets `HF_ENDPOINT` and `HF_HOME`, through the public entry point the
/// command-line tool uses. The trailing slash on the endpoint is ignored.
#[test]
fn resolve_reads_the_environment() {
    let hub = FakeHub::start();
    hub.serve("test-org/stream", &fixture("stream"), COMMIT_A);
    let home = Scratch::new("hub-env");
    std::env::set_var("HF_ENDPOINT", format!("{}/", hub.endpoint));
    std::env::set_var("HF_HOME", &home.0);
    std::env::remove_var("HF_HUB_CACHE");
    std::env::remove_var("HF_TOKEN");

    let checkpoint = Checkpoint::resolve("test-org/stream", false).unwrap();
    assert_eq!(
        checkpoint.dir(),
        home.path("hub/models--test-org--stream/snapshots")
            .join(COMMIT_A)
    );
    assert_eq!(
        stream_report(checkpoint.dir()),
        stream_report(&fixture("stream"))
    );

    std::env::set_var("HF_ENDPOINT", closed_endpoint());
    let err = Checkpoint::resolve("test-org/other", false).unwrap_err();
    assert!(download_reason(err).contains("--model DIR"));
}
