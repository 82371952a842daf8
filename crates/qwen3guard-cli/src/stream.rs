//! `qwen3guard stream`: Stream's token-by-token verdicts on a prompt and its response.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use clap::Args;
use qwen3guard::stream::{StreamReport, TokenVerdict};
use qwen3guard::{Severity, StreamGuard};

use crate::args::{InputArgs, ModelArgs};

/// The Stream checkpoint used when `--model` is not given.
pub const DEFAULT_STREAM_MODEL: &str = "Qwen/Qwen3Guard-Stream-0.6B";

/// Arguments of `stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    /// Tokens appended per forward step (the verdicts do not depend on it).
    #[arg(long, default_value_t = 1, value_name = "K", env = "QWEN3GUARD_CHUNK")]
    chunk: usize,
    /// Print the per-token report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `stream`.
pub fn run(args: &StreamArgs) -> Result<()> {
    anyhow::ensure!(args.chunk > 0, "--chunk must be at least 1");
    let conversation = args.input.conversation()?;
    let checkpoint = args.model.checkpoint(DEFAULT_STREAM_MODEL)?;
    let guard = StreamGuard::load(&checkpoint, &args.model.load_options())?;
    if args.json {
        let report = guard.moderate(&conversation, args.chunk)?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let exchange = guard.render_exchange(&conversation)?;
    let mut session = guard.open_exchange(&exchange)?;
    let p = session.prompt_verdict();
    println!(
        "prompt: {} (P unsafe {:.3}, controversial {:.3}; category {} {:.2})",
        p.risk_level.as_str(),
        p.risk_probs.unsafe_,
        p.risk_probs.controversial,
        p.category,
        p.category_prob
    );
    let Some(start) = exchange.response_start() else {
        return Ok(());
    };
    let color = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    for piece in exchange.response_ids().chunks(args.chunk) {
        for token in session.append(piece)? {
            // The closing control tokens are part of the verdicts, not of the text.
            let control = token.text.starts_with("<|") && token.text.ends_with("|>");
            if token.index >= start && !control {
                write!(out, "{}", highlight(token, color))?;
            }
        }
        out.flush()?;
    }
    writeln!(out)?;
    summarize(&mut out, &session.report())?;
    Ok(())
}

/// Unsafe tokens in red, Controversial in yellow (brackets when not on a terminal).
fn highlight(token: &TokenVerdict, color: bool) -> String {
    let text = &token.text;
    match (token.risk_level, color) {
        (Severity::Safe, _) => text.clone(),
        (Severity::Unsafe, true) => format!("\x1b[41;97m{text}\x1b[0m"),
        (Severity::Controversial, true) => format!("\x1b[43;30m{text}\x1b[0m"),
        (Severity::Unsafe, false) => format!("[U:{text}]"),
        (Severity::Controversial, false) => format!("[C:{text}]"),
    }
}

fn summarize(out: &mut impl Write, report: &StreamReport) -> Result<()> {
    if let Some(verdict) = &report.response {
        match verdict.flagged_at {
            Some(at) => writeln!(
                out,
                "response: {} at token {at} ({})",
                verdict.risk_level.as_str(),
                verdict.category.as_deref().unwrap_or("?")
            )?,
            None => writeln!(out, "response: Safe")?,
        }
    }
    Ok(())
}
