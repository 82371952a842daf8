//! `qwen3guard eval`: running checkpoints over benchmark datasets and scoring prediction
//! files with the official Qwen3Guard metrics.
//!
//! Flag parsing and printing only; datasets, the run loop, every metric rule and the
//! reports live in the `qwen3guard-eval` crate, where they are tested.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use qwen3guard::prompt::Task;
use qwen3guard::GenOptions;
use qwen3guard_eval::dataset::{task_name, Dataset, Format};
use qwen3guard_eval::publish::{read_sample_scores, write_report};
use qwen3guard_eval::run::{run as run_dataset, Guard, RunOptions, RunSummary};
use qwen3guard_eval::{score_file, Kind, ScoreReport};

use crate::args::ModelArgs;

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
    /// Run a checkpoint over a benchmark dataset, write its predictions, then score them.
    ///
    /// The checkpoint decides the output: Gen writes `guard_predict` lines, Stream writes
    /// per-token `pred_risk_levels` (the official formats, plus categories, probabilities and
    /// an `unsafe_score` per sample). Each line carries the sample's `id`; a run that finds
    /// the output already there skips the ids it holds, so an interrupted run is resumed by
    /// running the same command again. The dataset's format is recognised from its columns
    /// (--format names it explicitly); see docs/EVALUATION.md for the fields each reads.
    Run(RunArgs),
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

    /// Also write a report here: summary.md and SVG charts (strict vs loose, latency
    /// histogram, precision-recall curve when the file has per-sample scores).
    #[arg(long, value_name = "DIR", env = "QWEN3GUARD_EVAL_REPORT")]
    pub report: Option<PathBuf>,
}

/// Arguments of `qwen3guard eval run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// The dataset: .jsonl, .jsonl.gz, .json or .parquet (uncompressed or Snappy), as
    /// downloaded.
    #[arg(long, value_name = "FILE", env = "QWEN3GUARD_EVAL_DATASET")]
    dataset: PathBuf,

    /// Judge the user's prompt or the assistant's response.
    #[arg(long, value_enum, env = "QWEN3GUARD_EVAL_TASK")]
    task: TaskArg,

    /// Judge the assistant's reasoning too (Qwen3GuardTest `thinking` splits): Stream
    /// evaluates from inside the think block; without it only the final answer is judged.
    #[arg(
        long,
        env = "QWEN3GUARD_EVAL_THINKING",
        action = ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    thinking: bool,

    /// Predictions file to write, or to resume when it exists.
    #[arg(long, value_name = "PREDICTIONS.jsonl", env = "QWEN3GUARD_EVAL_OUT")]
    out: PathBuf,

    /// The dataset's layout, when detection from the columns is not wanted: qwen3guardtest,
    /// messages, toxicchat, wildguardtest, aegis2, beavertails, saferlhf, harmbench,
    /// openai-moderation, simplesafetytests, xstest.
    #[arg(long, value_name = "NAME", value_parser = parse_format, env = "QWEN3GUARD_EVAL_FORMAT")]
    format: Option<Format>,

    /// Also write a report here: summary.md and SVG charts.
    #[arg(long, value_name = "DIR", env = "QWEN3GUARD_EVAL_REPORT")]
    report: Option<PathBuf>,

    /// Only the first N samples of the dataset.
    #[arg(long, value_name = "N", env = "QWEN3GUARD_EVAL_LIMIT")]
    limit: Option<usize>,

    /// Gen: most tokens to generate per sample.
    #[arg(long, default_value_t = qwen3guard::gen::DEFAULT_MAX_NEW_TOKENS, env = "QWEN3GUARD_MAX_NEW_TOKENS")]
    max_new_tokens: usize,

    /// Leave out samples the model fails on (too long for the context, say) and list them,
    /// instead of stopping at the first.
    #[arg(
        long,
        env = "QWEN3GUARD_EVAL_SKIP_ERRORS",
        action = ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    skip_errors: bool,

    /// Print the scores as JSON instead of a table.
    #[arg(
        long,
        env = "QWEN3GUARD_EVAL_JSON",
        action = ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    json: bool,
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse()
        .map_err(|e: qwen3guard_eval::dataset::DatasetError| e.to_string())
}

/// The `--task` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    /// The last user message (the rest of the conversation is dropped).
    Prompt,
    /// The assistant's last message, which must end the conversation.
    Response,
}

impl From<TaskArg> for Task {
    fn from(task: TaskArg) -> Task {
        match task {
            TaskArg::Prompt => Task::Prompt,
            TaskArg::Response => Task::Response,
        }
    }
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
        EvalCommand::Run(args) => run_eval(args),
    }
}

fn score(args: &ScoreArgs) -> anyhow::Result<()> {
    let kind = Kind::from(args.kind);
    let report = score_predictions(kind, &args.input)?;
    print_scores(&report, args.json)?;
    if let Some(dir) = &args.report {
        let title = format!("{} ({kind})", file_name(&args.input));
        publish(dir, &title, &report, &args.input)?;
    }
    Ok(())
}

fn run_eval(args: &RunArgs) -> anyhow::Result<()> {
    let task = Task::from(args.task);
    let Some(model) = args.model.model.as_deref() else {
        anyhow::bail!("eval run needs --model (a Gen or Stream checkpoint directory or repo id)");
    };
    // The dataset is read first: a bad row fails before minutes of model loading.
    let dataset = Dataset::load(&args.dataset, args.format, task)
        .with_context(|| format!("reading dataset {}", args.dataset.display()))?;
    describe_dataset(&dataset);
    let checkpoint = args.model.checkpoint(model)?;
    let guard = Guard::load(&checkpoint, &args.model.load_options())?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let options = RunOptions {
        out: args.out.clone(),
        thinking: args.thinking,
        gen: GenOptions {
            max_new_tokens: args.max_new_tokens,
            ..GenOptions::default()
        },
        limit: args.limit,
        skip_errors: args.skip_errors,
        progress: true,
    };
    let summary = run_dataset(&guard, &dataset, &options)
        .with_context(|| format!("running {model} over {}", args.dataset.display()))?;
    describe_run(&summary, &args.out, args.thinking);
    let report = score_predictions(summary.kind, &args.out)?;
    print_scores(&report, args.json)?;
    if let Some(dir) = &args.report {
        let title = format!(
            "{} on {} ({} task)",
            file_name(Path::new(model)),
            file_name(&args.dataset),
            task_name(task)
        );
        publish(dir, &title, &report, &args.out)?;
    }
    Ok(())
}

fn describe_dataset(dataset: &Dataset) {
    let how = if dataset.detected {
        "detected from its columns"
    } else {
        "as given"
    };
    eprintln!(
        "dataset: {} rows, format {} ({how}), {} samples for the {} task",
        dataset.rows,
        dataset.format,
        dataset.samples.len(),
        task_name(dataset.task)
    );
    for (reason, count) in &dataset.skipped {
        let rows = if *count == 1 { "row" } else { "rows" };
        eprintln!("  skipped {count} {rows}: {reason}");
    }
}

fn describe_run(summary: &RunSummary, out: &Path, thinking: bool) {
    if summary.dropped_partial_line {
        eprintln!(
            "removed an incomplete last line (an interrupted run) from {}",
            out.display()
        );
    }
    eprintln!(
        "{}: {} predictions written, {} already there, {} samples in scope",
        out.display(),
        summary.written,
        summary.resumed,
        summary.samples
    );
    if !thinking && summary.with_reasoning > 0 {
        eprintln!(
            "note: {} samples carry reasoning (<think>); without --thinking only the final \
             answer is judged",
            summary.with_reasoning
        );
    }
    if !summary.failed.is_empty() {
        eprintln!("{} samples failed and were left out:", summary.failed.len());
        for (row, id, error) in &summary.failed {
            eprintln!("  {row} (id {id}): {error}");
        }
    }
}

fn score_predictions(kind: Kind, path: &Path) -> anyhow::Result<ScoreReport> {
    // Line-level errors name the line and field but not the file; add it here.
    score_file(kind, path)
        .with_context(|| format!("scoring {} as {kind} predictions", path.display()))
}

fn print_scores(report: &ScoreReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

fn publish(
    dir: &Path,
    title: &str,
    report: &ScoreReport,
    predictions: &Path,
) -> anyhow::Result<()> {
    let scores = read_sample_scores(predictions)
        .with_context(|| format!("reading scores from {}", predictions.display()))?;
    let files = write_report(dir, title, report, scores.as_deref())?;
    eprintln!("report: {} files in {}", files.len(), dir.display());
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
