//! `qwen3guard eval`: scoring prediction files with the official Qwen3Guard metrics.
//!
//! Flag parsing and printing only; every rule lives in the `qwen3guard-eval` crate, where it
//! is tested.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use qwen3guard_eval::{score_file, Kind};

/// Evaluation commands.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Re-score a predictions file written in one of the official output formats.
    ///
    /// Reports precision, recall and F1 of the Unsafe class in strict mode (Controversial
    /// counts as Unsafe) and loose mode (Controversial counts as Safe; not for Gen, whose
    /// official rule is strict), plus detection latency for Stream response files that carry
    /// unsafe spans (the `_loc` splits of Qwen3GuardTest).
    Score(ScoreArgs),
}

/// Arguments of `qwen3guard eval score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Format of the predictions file.
    #[arg(long, value_enum, env = "QWEN3GUARD_EVAL_KIND")]
    pub kind: KindArg,

    /// Predictions file: one JSON object per line, as the official evaluation scripts write.
    #[arg(long, value_name = "PREDICTIONS.jsonl", env = "QWEN3GUARD_EVAL_INPUT")]
    pub input: PathBuf,

    /// Print the scores as JSON instead of a table.
    #[arg(
        long,
        env = "QWEN3GUARD_EVAL_JSON",
        action = ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub json: bool,
}

/// The `--kind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Qwen3Guard-Gen output: `label` and `guard_predict` (the generated text).
    Gen,
    /// Qwen3Guard-Stream on responses: `label`, `pred_risk_levels` from the split index on,
    /// `split_idx_eval`, and optionally `unsafe_start_index` / `unsafe_end_index`.
    StreamResponse,
    /// Qwen3Guard-Stream on prompts: `label` and `pred_risk_levels` over the user turn.
    StreamPrompt,
}

impl From<KindArg> for Kind {
    fn from(kind: KindArg) -> Kind {
        match kind {
            KindArg::Gen => Kind::Gen,
            KindArg::StreamResponse => Kind::StreamResponse,
            KindArg::StreamPrompt => Kind::StreamPrompt,
        }
    }
}

/// Runs an evaluation command.
pub fn run(cmd: &EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Score(args) => score(args),
    }
}

fn score(args: &ScoreArgs) -> anyhow::Result<()> {
    let kind = Kind::from(args.kind);
    // Line-level errors name the line and field but not the file; add it here.
    let report = score_file(kind, &args.input)
        .with_context(|| format!("scoring {} as {kind} predictions", args.input.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
