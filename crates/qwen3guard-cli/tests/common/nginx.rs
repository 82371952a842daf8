//! A real nginx (Debian's package) on a free port of 127.0.0.1 in front of `qwen3guard
//! serve` replicas, routing with the committed configuration `deploy/nginx/qwen3guard.conf`.
//!
//! The committed file is the `http`-context part a deployment includes; the test wraps it
//! in a minimal main configuration (its own prefix, pid and temp folders, so that it needs
//! nothing of the system's nginx set-up) and puts the replicas' addresses and the port in
//! place of the file's examples.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Scratch;

/// The committed routing configuration.
pub fn committed_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/qwen3guard.conf")
}

/// A running nginx, stopped when dropped.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: Scratch,
}

impl Nginx {
    /// Starts `executable` routing to `replicas` with the committed configuration.
    pub fn start(executable: &Path, replicas: &[SocketAddr]) -> Nginx {
        let dir = Scratch::new("nginx");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let committed = std::fs::read_to_string(committed_config()).expect("the nginx config");
        let routing = localize(&committed, replicas, port);
        std::fs::write(dir.path().join("qwen3guard.conf"), routing).unwrap();
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let main = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
             uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
             include {d}/qwen3guard.conf;\n}}\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let mut command = Command::new(executable);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("nginx starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let log =
                    std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap_or_default();
                panic!("nginx exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen in time");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            addr,
            _dir: dir,
        }
    }
}

/// `config` with its upstream's example `server` lines replaced by `replicas` and its
/// `listen` line by `port` on 127.0.0.1; the routing rules stay as committed.
fn localize(config: &str, replicas: &[SocketAddr], port: u16) -> String {
    let mut out = String::new();
    let mut in_upstream = false;
    let mut placed = false;
    for line in config.lines() {
        let code = line.trim_start();
        if code.starts_with("upstream ") {
            in_upstream = true;
        }
        if in_upstream && code.starts_with("server ") {
            if !placed {
                for replica in replicas {
                    // One failed connection takes a replica out of the ring for a while,
                    // as the committed file does with its own numbers.
                    out.push_str(&format!(
                        "    server {replica} max_fails=1 fail_timeout=600s;\n"
                    ));
                }
                placed = true;
            }
            continue;
        }
        if in_upstream && code.starts_with('}') {
            in_upstream = false;
        }
        if code.starts_with("listen ") {
            out.push_str(&format!("    listen 127.0.0.1:{port};\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        placed,
        "the committed nginx config has no upstream server lines"
    );
    out
}

impl Drop for Nginx {
    /// SIGTERM, nginx's fast shutdown, in which the master stops its workers; SIGKILL
    /// would end the master alone and leave the workers running.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
