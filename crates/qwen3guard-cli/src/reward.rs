//! `qwen3guard reward`: safety rewards for a file of rollouts, offline and resumable.
//!
//! Each input line is one `/v1/reward` sample (`messages`, `response`, `thinking`?,
//! `helpfulness`?) with an optional `id` (the 1-based line number when absent). Each output
//! line is `{"id", "reward", ...}` with the fields of the server's `details`. The formulas,
//! the sample rules and the decoding are the server's ([`qwen3guard_server::reward`]), so a
//! file scored here gets the numbers the server gives; resuming is `eval run`'s
//! ([`qwen3guard_eval::resume`]).

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use qwen3guard::{GenGuard, GenVerdict, Mode};
use qwen3guard_eval::run::progress_bar;
use qwen3guard_server::reward::helpfulness::Helpfulness;
use qwen3guard_server::reward::{self, chatml, Detail, Outcome, RewardKind, RewardSample};
use qwen3guard_server::validation::reward_sample;
use serde::Serialize;
use serde_json::Value;

use crate::args::ModelArgs;

/// Arguments of `reward`.
#[derive(Debug, Args)]
pub struct RewardArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Rollouts, one JSON object per line: `messages` (the prompt turns), `response`,
    /// and optionally `id`, `thinking` and `helpfulness`.
    #[arg(long, value_name = "ROLLOUTS.jsonl", env = "QWEN3GUARD_REWARD_INPUT")]
    input: PathBuf,
    /// Rewards to write, or to resume when the file exists.
    #[arg(long, value_name = "REWARDS.jsonl", env = "QWEN3GUARD_REWARD_OUT")]
    out: PathBuf,
    /// The formula: guard_only (1 if everything is Safe, else 0) or hybrid (helpfulness,
    /// capped at -10 when unsafe and at -5 when refusing).
    #[arg(
        long,
        default_value = "guard_only",
        value_name = "guard_only|hybrid",
        env = "QWEN3GUARD_REWARD"
    )]
    reward: RewardKind,
    /// Whether Controversial is unsafe for the hybrid reward (guard_only never counts it
    /// safe).
    #[arg(
        long,
        default_value = "strict",
        value_name = "strict|loose",
        env = "QWEN3GUARD_MODE"
    )]
    mode: Mode,
    /// Guard-only: judge each answer from one pass's label scores (faster; the refusal is
    /// then written only for answers that are not Safe).
    #[arg(long, env = "QWEN3GUARD_VERDICT_ONLY")]
    verdict_only: bool,
    /// An OpenRLHF-protocol reward server giving the hybrid reward's helpfulness where a
    /// line has none.
    #[arg(long, value_name = "URL", env = "QWEN3GUARD_HELPFULNESS_URL")]
    helpfulness_url: Option<String>,
    /// Only the first N rollouts of the input.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

/// Rollouts judged together: their forward passes are shared, and an interruption loses
/// at most this many rollouts' work.
const BATCH: usize = 8;

/// One input line.
struct Rollout {
    id: Value,
    key: String,
    sample: RewardSample,
}

/// One output line.
#[derive(Serialize)]
struct Line<'a> {
    id: &'a Value,
    reward: f64,
    #[serde(flatten)]
    detail: &'a Detail,
}

/// Reads and validates every line of `path`, naming the line at fault.
fn read_rollouts(path: &Path) -> Result<Vec<Rollout>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rollouts = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{}, line {}", path.display(), n + 1);
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{}: not a JSON line", at()))?;
        let Value::Object(mut map) = value else {
            bail!("{}: not a JSON object", at());
        };
        let id = match map.remove("id") {
            None | Some(Value::Null) => Value::from(n + 1),
            Some(id @ (Value::String(_) | Value::Number(_))) => id,
            Some(other) => bail!("{}: `id` must be a string or a number, not {other}", at()),
        };
        let key = qwen3guard_eval::dataset::id_key(&id);
        if !seen.insert(key.clone()) {
            bail!("{}: id {key} appears twice in the input", at());
        }
        let sample = reward_sample(&map, "").map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        rollouts.push(Rollout { id, key, sample });
    }
    Ok(rollouts)
}

/// The helpfulness of the chunk's rollouts that carry none, from `client`.
fn fill_helpfulness(chunk: &mut [&mut Rollout], client: Option<&Helpfulness>) -> Result<()> {
    let missing: Vec<usize> = (0..chunk.len())
        .filter(|&i| chunk[i].sample.helpfulness.is_none())
        .collect();
    let Some(client) = client.filter(|_| !missing.is_empty()) else {
        return Ok(());
    };
    let (queries, prompts): (Vec<String>, Vec<String>) = missing
        .iter()
        .map(|&i| {
            let s = &chunk[i].sample;
            let turns = s.prompt.messages();
            (
                chatml::render_query(turns, s.thinking.as_deref(), &s.response),
                chatml::render_prompt(turns),
            )
        })
        .unzip();
    for (i, value) in missing
        .into_iter()
        .zip(client.rewards(&queries, &prompts, None)?)
    {
        chunk[i].sample.helpfulness = Some(value);
    }
    Ok(())
}

/// Judges a chunk: each rollout's answer and thinking, all in one batch.
fn judge(
    guard: &GenGuard,
    chunk: &[&mut Rollout],
    kind: RewardKind,
    verdict_only: bool,
) -> Result<Vec<(GenVerdict, Option<GenVerdict>)>> {
    let (answer_options, thinking_options) = reward::options(kind, verdict_only);
    let parts: Vec<_> = chunk.iter().map(|r| r.sample.conversations()).collect();
    let mut requests = Vec::new();
    for (answer, thinking) in &parts {
        requests.push((answer, answer_options));
        if let Some(thinking) = thinking {
            requests.push((thinking, thinking_options));
        }
    }
    let mut results = guard.moderate_batch(&requests).into_iter();
    let mut judged = Vec::with_capacity(chunk.len());
    for ((_, thinking), rollout) in parts.iter().zip(chunk) {
        let mut next = || -> Result<GenVerdict> {
            let result = results
                .next()
                .context("the batch gave fewer results than requests")?;
            result.with_context(|| format!("rollout {}", rollout.key))
        };
        let answered = next()?;
        let thought = thinking.as_ref().map(|_| next()).transpose()?;
        judged.push((answered, thought));
    }
    Ok(judged)
}

/// Runs `reward`.
pub fn run(args: &RewardArgs) -> Result<()> {
    let mut rollouts = read_rollouts(&args.input)?;
    rollouts.truncate(args.limit.unwrap_or(usize::MAX));
    if args.verdict_only && args.reward == RewardKind::Hybrid {
        bail!(
            "--verdict-only is for --reward guard_only: the hybrid reward needs the refusal line"
        );
    }
    let client = args.helpfulness_url.as_deref().map(Helpfulness::new);
    if args.reward == RewardKind::Hybrid && client.is_none() {
        if let Some(r) = rollouts.iter().find(|r| r.sample.helpfulness.is_none()) {
            bail!(
                "rollout {} has no `helpfulness`; the hybrid reward needs one per line, or \
                 --helpfulness-url",
                r.key
            );
        }
    }
    let known: HashSet<&str> = rollouts.iter().map(|r| r.key.as_str()).collect();
    let done = qwen3guard_eval::resume::existing(&args.out, "qwen3guard reward", |value, key| {
        if value.get("reward").is_none() {
            return Err("has no `reward`: it is not a rewards file; choose another --out".into());
        }
        if !known.contains(key) {
            return Err(format!(
                "id {key} is not in the input; is --out the output of another file?"
            ));
        }
        Ok(())
    })?;
    let total = rollouts.len();
    let mut todo: Vec<&mut Rollout> = rollouts
        .iter_mut()
        .filter(|r| !done.ids.contains(&r.key))
        .collect();
    let resumed = total - todo.len();
    let checkpoint = args.model.checkpoint("Qwen/Qwen3Guard-Gen-0.6B")?;
    let guard = GenGuard::load(&checkpoint, &args.model.load_options())?;
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let bar = progress_bar(std::io::stderr().is_terminal(), total, resumed, "rollouts");
    let (mut sum, mut written) = (0.0, 0usize);
    let mut outcomes = [0usize; 3];
    for chunk in todo.chunks_mut(BATCH) {
        fill_helpfulness(chunk, client.as_ref())?;
        let judged = judge(&guard, chunk, args.reward, args.verdict_only)?;
        for (rollout, (answer, thinking)) in chunk.iter().zip(&judged) {
            let (value, detail) = reward::score(
                args.reward,
                args.mode,
                answer,
                thinking.as_ref(),
                rollout.sample.helpfulness,
            )
            .with_context(|| format!("rollout {}", rollout.key))?;
            let line = serde_json::to_string(&Line {
                id: &rollout.id,
                reward: value,
                detail: &detail,
            })?;
            // One write per line, flushed at once: an interruption leaves at most one
            // partial line, which the next run removes.
            out.write_all(format!("{line}\n").as_bytes())?;
            out.flush()?;
            sum += value;
            written += 1;
            outcomes[match detail.outcome {
                Outcome::Safe => 0,
                Outcome::Unsafe => 1,
                Outcome::Refusal => 2,
            }] += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mean = if written > 0 {
        sum / written as f64
    } else {
        0.0
    };
    eprintln!(
        "{written} rollouts scored ({resumed} already in {}), {} reward: mean {mean:.4}; \
         safe {}, unsafe {}, refusal {}",
        args.out.display(),
        args.reward.as_str(),
        outcomes[0],
        outcomes[1],
        outcomes[2]
    );
    Ok(())
}
