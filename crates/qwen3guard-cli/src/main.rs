//! `qwen3guard`: moderate conversations with Qwen3Guard from the command line.
//!
//! Argument parsing and output formatting only; the engine is the `qwen3guard` crate and
//! the metrics are `qwen3guard-eval`.

mod alloc;
mod args;
mod bench;
mod eval;
mod moderate;
mod random;
mod render;
mod reward;
mod serve;
mod stream;
mod verdict;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `--version`: the package version and the instruction set the kernels run on here, the
/// first thing to know about a speed report.
fn version_line() -> &'static str {
    let line = format!(
        "{} (kernels: {})",
        env!("CARGO_PKG_VERSION"),
        qwen3guard::isa()
    );
    Box::leak(line.into_boxed_str())
}

/// Qwen3Guard safety moderation: Gen (a written verdict) and Stream (token by token).
///
/// --model takes a checkpoint directory in the Hugging Face layout or a Hub repo id, which
/// is downloaded into the Hugging Face cache on first use (HF_HOME, HF_ENDPOINT apply).
#[derive(Debug, Parser)]
#[command(name = "qwen3guard", version = version_line(), about, long_about)]
struct Cli {
    /// CPU threads for the kernels (default: every core).
    #[arg(long, global = true, env = "QWEN3GUARD_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Judge the last message with a Gen checkpoint: Safety, Categories, Refusal, scores.
    Moderate(moderate::ModerateArgs),
    /// Judge a prompt and its response token by token with a Stream checkpoint.
    Stream(stream::StreamArgs),
    /// Show the exact text and token ids the model reads.
    Render(render::RenderArgs),
    /// Run a checkpoint over a benchmark dataset and score predictions with the official
    /// metrics.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Measure latency and throughput on a checkpoint (medians).
    Bench(bench::BenchArgs),
    /// Score a file of RL rollouts with the report's guard-only or hybrid safety reward
    /// (resumable).
    Reward(reward::RewardArgs),
    /// Write a checkpoint of a published shape with random weights, for benchmarks.
    MakeRandom(random::RandomArgs),
    /// Serve OpenAI-compatible moderation and streaming sessions over HTTP (docs/SERVER.md).
    // Boxed: its flags make it far larger than the other commands.
    Serve(Box<serve::ServeArgs>),
}

/// Lets a closed standard output end the process quietly, as for any Unix filter.
///
/// Rust ignores SIGPIPE, so a write to a closed pipe (`qwen3guard render --json | head`)
/// becomes an error that `println!` turns into a panic with a backtrace. The default
/// disposition ends the process at that write instead, which is what a reader that has
/// seen enough expects.
fn quiet_on_closed_pipe() {
    // (libc is a dependency on glibc Linux only; elsewhere the panic stays.)
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restores the default disposition of one signal, before any other thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        // The kernels read this on every call; set before any work starts, while the
        // process has a single thread.
        std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
    }
    let result = match &cli.command {
        Command::Moderate(args) => moderate::run(args),
        Command::Stream(args) => stream::run(args),
        Command::Render(args) => render::run(args),
        Command::Eval(cmd) => eval::run(cmd),
        Command::Bench(args) => bench::run(args),
        Command::MakeRandom(args) => random::run(args),
        Command::Reward(args) => reward::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, for people and for scripts that read a single
/// `error:` line. The engine's messages already quote their cause, so a cause whose text
/// is already in the line is not repeated; line breaks inside a message become spaces.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
