//! Running the built binary in tests, isolated from this environment's settings.
#![allow(dead_code)]

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

/// [`qwen3guard`] with the environment variables `env` set on top.
pub fn qwen3guard_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qwen3guard"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("QWEN3GUARD_") || name.starts_with("HF_") {
            command.env_remove(&name);
        }
    }
    // Tests run side by side; one kernel thread each keeps them from fighting for cores.
    let output = command
        .env("RAYON_NUM_THREADS", "1")
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
