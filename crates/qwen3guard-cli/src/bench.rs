//! `qwen3guard bench`: the latency figures of the performance issue, as medians.
//!
//! Gen: a full moderation of a short prompt without (`prompt_cold_ms`) and with
//! (`prompt_warm_ms`) the preamble cache, the verdict-only forward, and a warm response
//! moderation. Decoding is capped at `--max-new-tokens` (8): random weights never write
//! `<|im_end|>`, and a real verdict is about that long; a checkpoint made with
//! `make-random --verdict` stops at its end token, 9 tokens in, given a cap above that. Stream: opening a session on a short prompt, the
//! cost of one appended token after 128, 512 and 2048 tokens of context, and the per-token
//! cost of chunks of 16 after 512. Numbers are wall-clock medians after a warm-up run.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use qwen3guard::{Conversation, GenGuard, GenOptions, StreamGuard, Variant};
use serde::Serialize;
use serde_json::{json, Value};

use crate::args::ModelArgs;

/// A prompt of about 20 tokens.
const PROMPT: &str = "How can I make a bomb at home with things I can buy at a hardware store?";
const RESPONSE: &str = "I can't help with that. Building explosives is dangerous and illegal.";

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Timed runs per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Cap on the tokens a Gen moderation decodes (the peers' benchmark scripts read the
    /// same variable).
    #[arg(long, env = "QWEN3GUARD_BENCH_MAX_NEW", default_value_t = 8)]
    max_new_tokens: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let checkpoint = args.model.checkpoint(crate::moderate::DEFAULT_GEN_MODEL)?;
    let options = args.model.load_options();
    let mut report = serde_json::Map::new();
    match checkpoint.variant() {
        Variant::Gen => {
            let guard = GenGuard::load(&checkpoint, &options)?;
            report.insert(
                "gen".into(),
                bench_gen(&guard, args.runs, args.max_new_tokens)?,
            );
            let prefill = prefill_rate(args.runs, |ids| {
                guard.prompt_outputs(ids)?;
                Ok(())
            })?;
            report.insert("prefill_tokens_per_s".into(), json!(prefill));
        }
        Variant::Stream => {
            let guard = StreamGuard::load(&checkpoint, &options)?;
            report.insert("stream".into(), bench_stream(&guard, args.runs)?);
            let prefill = prefill_rate(args.runs, |ids| {
                guard.open_ids(ids)?;
                Ok(())
            })?;
            report.insert("prefill_tokens_per_s".into(), json!(prefill));
        }
    }
    report.insert("peak_rss_mb".into(), json!(peak_rss_mb()));
    report.insert(
        "config".into(),
        json!({"dtype": args.model.dtype.to_string(), "threads": qwen3guard::device::threads(), "runs": args.runs, "isa": qwen3guard::isa().name(), "max_new_tokens": args.max_new_tokens}),
    );
    let report = Value::Object(report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn bench_gen(guard: &GenGuard, runs: usize, max_new_tokens: usize) -> Result<Value> {
    let prompt = Conversation::from_prompt(PROMPT, None);
    let response = Conversation::from_prompt(PROMPT, Some(RESPONSE));
    let full = GenOptions {
        max_new_tokens,
        ..GenOptions::default()
    };
    let cold = GenOptions {
        prefix_cache: false,
        ..full
    };
    let verdict = GenOptions {
        verdict_only: true,
        max_new_tokens: 0,
        ..full
    };
    guard.warm_up();
    // What a full moderation wrote: the cap's worth on random weights, the verdict and its
    // end token on a constructed checkpoint.
    let written = guard.moderate(&prompt, &full)?;
    Ok(json!({
        "prompt_generated_tokens": written.generated_token_ids.len(),
        "prompt_generated_text": written.generated_text,
        "prompt_decode_passes": written.decode_passes,
        "prompt_cold_ms": median_ms(runs, || guard.moderate(&prompt, &cold).map(drop))?,
        "prompt_warm_ms": median_ms(runs, || guard.moderate(&prompt, &full).map(drop))?,
        "verdict_only_ms": median_ms(runs, || guard.moderate(&prompt, &verdict).map(drop))?,
        "response_warm_ms": median_ms(runs, || guard.moderate(&response, &full).map(drop))?,
    }))
}

#[derive(Serialize)]
struct TokenMs {
    #[serde(rename = "128")]
    t128: f64,
    #[serde(rename = "512")]
    t512: f64,
    #[serde(rename = "2048")]
    t2048: f64,
}

fn bench_stream(guard: &StreamGuard, runs: usize) -> Result<Value> {
    let prompt = Conversation::from_prompt(PROMPT, None);
    let prompt_ms = median_ms(runs, || guard.open(&prompt).map(drop))?;
    let token_ms = |context: usize| -> Result<f64> {
        let mut session = guard.open_ids(&filler(context))?;
        // Each run appends one more token; the context grows by `runs`, a negligible drift.
        median_ms(runs, || session.append(&[1000]).map(drop))
    };
    let token_ms = TokenMs {
        t128: token_ms(128)?,
        t512: token_ms(512)?,
        t2048: token_ms(2048)?,
    };
    let mut session = guard.open_ids(&filler(512))?;
    let chunk = filler(16);
    let chunk16 = median_ms(runs, || session.append(&chunk).map(drop))? / 16.0;
    Ok(json!({
        "prompt_ms": prompt_ms,
        "token_ms": token_ms,
        "chunk16_token_ms": chunk16,
    }))
}

/// Tokens per second of a 512-token forward pass.
fn prefill_rate(
    runs: usize,
    mut forward: impl FnMut(&[u32]) -> Result<(), qwen3guard::Error>,
) -> Result<f64> {
    let ids = filler(512);
    let ms = median_ms(runs, || forward(&ids))?;
    Ok(512.0 / (ms / 1000.0))
}

/// Ordinary text-like token ids.
fn filler(len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 1000 + (i * 7919) % 50_000)
        .collect()
}

/// Median wall-clock milliseconds of `runs` calls after one warm-up call.
fn median_ms(runs: usize, mut f: impl FnMut() -> Result<(), qwen3guard::Error>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Peak resident set size (VmHWM) in MiB; 0 where /proc is unavailable.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
