//! Running the built binary in tests, isolated from this environment's settings.
#![allow(dead_code)]

#[path = "../../../qwen3guard-server/tests/common/client.rs"]
pub mod client;
pub mod killed;
pub mod nginx;
pub mod served;

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one run of the binary produced.
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `qwen3guard ARGS` with no configuration from this environment: the flags'
/// environment variables and the Hugging Face settings are cleared, so only `args` count.
pub fn qwen3guard(args: &[&str]) -> Output {
    qwen3guard_with(args, &[])
}

/// The binary as a command with no configuration from this environment (the flags'
/// variables and the Hugging Face settings cleared) and one kernel thread: tests run side
/// by side, and one thread each keeps them from fighting for cores.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qwen3guard"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("QWEN3GUARD_") || name.starts_with("HF_") {
            command.env_remove(&name);
        }
    }
    command.env("RAYON_NUM_THREADS", "1");
    command
}

/// [`qwen3guard`] with the environment variables `env` set on top.
pub fn qwen3guard_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = command()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("the binary runs");
    Output {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// A third-party program a test drives: the path in the variable `var`, else `name` on
/// the `PATH` or in `/usr/sbin` (where Debian puts daemons). Without one the test says it
/// is skipped; under CI (`CI` set) a missing program fails it instead, since `.ci/run`
/// installs them all.
pub fn tool(var: &str, name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/sbin")])
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI, .ci/run must install {name} (or set {var})"
        );
        eprintln!("skipped: no {name} ({install}, or set {var})");
    }
    found
}

/// A fresh scratch folder for one test, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("qwen3guard-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside the folder, as an argument.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small shape (the real head layout, a narrow hidden state, two layers) so that a
/// constructed checkpoint is quick to write and run in a debug build.
pub const TINY_SHAPES: &str = r#"{"tiny": {"hidden_size": 128, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 16, "tie_word_embeddings": true}}"#;

/// `make-random --verdict` of the tiny shape in `dir/name`: a Gen checkpoint that writes
/// `verdict` (the default one when `None`) on every prompt.
pub fn constructed_checkpoint(dir: &Scratch, name: &str, verdict: Option<&str>) -> PathBuf {
    let shapes = dir.path().join("shapes.json");
    std::fs::write(&shapes, TINY_SHAPES).expect("shapes written");
    let model = dir.path().join(name);
    let mut args = vec![
        "make-random",
        "--variant",
        "gen",
        "--size",
        "tiny",
        "--shapes",
        shapes.to_str().unwrap(),
        "--verdict",
        "--out",
        model.to_str().unwrap(),
    ];
    if let Some(verdict) = verdict {
        args.extend(["--verdict-text", verdict]);
    }
    let made = qwen3guard(&args);
    assert!(made.success, "make-random failed: {}", made.stderr);
    model
}
