//! Running a guard over a dataset and writing the official predictions format, resumably.
//!
//! [`run`] judges every [`Sample`] of a [`Dataset`] with a Gen or a Stream checkpoint
//! ([`Guard`]) and appends one JSON line per sample to the output, flushed as it goes. The
//! lines are the official formats ([`crate::predictions`]) plus what the run knows besides:
//!
//! | guard, task | fields |
//! | --- | --- |
//! | Gen | `id`, `label`, `guard_predict` (the generated text), `safety`, `categories`, `refusal`, `scores` (`Safe`/`Unsafe`/`Controversial` probabilities after `Safety:`), `unsafe_score`, `messages` (the conversation as judged) |
//! | Stream, response | `id`, `label`, `pred_risk_levels` (official indices, one per position from `split_idx_eval` to the end of the rendered chat), `split_idx_eval`, `unsafe_start_index`/`unsafe_end_index` (when the dataset has them), `pred_categories`, `pred_risk_prob` (the winning level's probability per position), `verdict`, `category`, `flagged_at` (the debounced verdict), `unsafe_score`, `messages` |
//! | Stream, prompt | `id`, `label`, `pred_risk_levels` (one entry: the query head's level at the `<\|im_end\|>` closing the last user turn), `pred_categories`, `pred_risk_prob`, `prompt_index` (that position), `risk_probs`, `category`, `unsafe_score`, `messages` |
//!
//! Stream prompt lines carry a single level, where the official script writes one per
//! position of the last user turn: the engine reads the query heads only where they are
//! trained (the closing `<|im_end|>`), and the official prompt metric reads only the last
//! entry, so the scores are the same.
//!
//! `unsafe_score` is the per-sample score behind the threshold sweeps (higher = more
//! likely unsafe, strict reading): Gen: P(Unsafe) + P(Controversial) after `Safety:`;
//! Stream prompts: the same sum at the user turn's end; Stream responses: the *debounced
//! pair minimum*, `max_i min(q[i-1], q[i])` over the evaluated positions with
//! `q = P(Unsafe) + P(Controversial)`. At a threshold `t` a response is flagged exactly when
//! two consecutive positions both reach `t`, which is the official two-in-a-row rule with
//! "risky" read as `q >= t` instead of the argmax. (The plain maximum would let a single
//! noisy token decide, which the debouncing exists to prevent.)
//!
//! **Thinking.** With `thinking`, the assistant's reasoning is judged along with its answer:
//! Gen reads the whole message, `<think>` block included; Stream evaluates from the first
//! token inside the think block (the `assistant` token + 4, the official `--thinking`
//! split). Without it only the final answer is judged: Gen reads the message with the
//! reasoning removed; Stream evaluates from the token after the `</think>` `\n\n` pair while
//! the reasoning stays in the rendered chat, as in the official script (so the `_loc`
//! spans, positions in the whole rendered chat, stay valid either way).
//!
//! **Resuming** ([`crate::resume`]). Before running, the existing output is read: the ids it holds are skipped.
//! A last line cut short by an interruption (no final newline) is removed first. Any other
//! unreadable line, a line without `id`, a line of another kind of predictions, or an id that
//! is not in the dataset stops the run with the line named, rather than mixing two runs.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use qwen3guard::prompt::Task;
use qwen3guard::{
    Checkpoint, Conversation, GenGuard, GenOptions, LoadOptions, Message, Role, Severity,
    StreamGuard, Variant,
};
use serde::Serialize;
use serde_json::Value;

use crate::dataset::{Dataset, RowRef, Sample};
use crate::predictions::{GenRecord, StreamPromptRecord, StreamResponseRecord};
use crate::resume::{self, ResumeError};
use crate::risk::SeverityProbs;
use crate::score::Kind;

/// A loaded checkpoint of either variant.
#[derive(Clone)]
pub enum Guard {
    /// Qwen3Guard-Gen.
    Gen(GenGuard),
    /// Qwen3Guard-Stream.
    Stream(StreamGuard),
}

impl Guard {
    /// Loads whichever variant the checkpoint is.
    pub fn load(checkpoint: &Checkpoint, options: &LoadOptions) -> qwen3guard::Result<Guard> {
        Ok(match checkpoint.variant() {
            Variant::Gen => Guard::Gen(GenGuard::load(checkpoint, options)?),
            Variant::Stream => Guard::Stream(StreamGuard::load(checkpoint, options)?),
        })
    }

    /// The predictions format this guard writes for `task`.
    pub fn kind(&self, task: Task) -> Kind {
        match (self, task) {
            (Guard::Gen(_), _) => Kind::Gen,
            (Guard::Stream(_), Task::Response) => Kind::StreamResponse,
            (Guard::Stream(_), Task::Prompt) => Kind::StreamPrompt,
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The predictions file, created or resumed.
    pub out: PathBuf,
    /// Judge the assistant's reasoning too (see the module doc).
    pub thinking: bool,
    /// Gen decoding settings.
    pub gen: GenOptions,
    /// Only the first `limit` samples of the dataset.
    pub limit: Option<usize>,
    /// Leave out (and report) samples the model fails on, instead of stopping.
    pub skip_errors: bool,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The predictions format written.
    pub kind: Kind,
    /// Samples in scope (the dataset's, cut by `limit`).
    pub samples: usize,
    /// Samples already in the output, skipped.
    pub resumed: usize,
    /// Samples judged and written by this run.
    pub written: usize,
    /// Whether a partial last line (an interrupted write) was removed from the output.
    pub dropped_partial_line: bool,
    /// Samples whose assistant messages carry a `<think>` block.
    pub with_reasoning: usize,
    /// Samples left out with `skip_errors`: row, id, error.
    pub failed: Vec<(RowRef, String, String)>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The output could not be read or written.
    #[error("cannot write {}", path.display())]
    Io {
        /// The predictions file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The existing output cannot be resumed.
    #[error("{}, line {line}: {message}", path.display())]
    Resume {
        /// The predictions file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The checkpoint lacks something the run needs.
    #[error(transparent)]
    Engine(Box<qwen3guard::Error>),
    /// The model failed on a sample.
    #[error("{at} (id {id})")]
    Sample {
        /// The dataset row.
        at: RowRef,
        /// The sample's id.
        id: String,
        /// The engine's error.
        #[source]
        source: Box<qwen3guard::Error>,
    },
}

impl From<qwen3guard::Error> for RunError {
    fn from(error: qwen3guard::Error) -> Self {
        RunError::Engine(Box::new(error))
    }
}

/// Runs `guard` over `dataset`, appending to `options.out`.
pub fn run(guard: &Guard, dataset: &Dataset, options: &RunOptions) -> Result<RunSummary, RunError> {
    let kind = guard.kind(dataset.task);
    let in_scope = &dataset.samples[..options
        .limit
        .unwrap_or(usize::MAX)
        .min(dataset.samples.len())];
    let known: HashSet<String> = dataset.samples.iter().map(Sample::key).collect();
    let (done, dropped_partial_line) = read_existing(&options.out, kind, &known)?;
    let io = |source| RunError::Io {
        path: options.out.clone(),
        source,
    };
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&options.out)
        .map_err(io)?;

    let resumed = in_scope.iter().filter(|s| done.contains(&s.key())).count();
    let bar = progress_bar(options.progress, in_scope.len(), resumed, "samples");
    let split = match guard {
        Guard::Stream(stream) => Some(SplitTokens::new(stream)?),
        Guard::Gen(_) => None,
    };
    let mut summary = RunSummary {
        kind,
        samples: in_scope.len(),
        resumed,
        written: 0,
        dropped_partial_line,
        with_reasoning: in_scope.iter().filter(|s| s.has_reasoning()).count(),
        failed: Vec::new(),
    };
    let todo: Vec<&Sample> = in_scope
        .iter()
        .filter(|s| !done.contains(&s.key()))
        .collect();
    for chunk in todo.chunks(BATCH) {
        let lines = predict(guard, split.as_ref(), chunk, dataset.task, options);
        for (sample, line) in chunk.iter().zip(lines) {
            let line = match line {
                Ok(line) => line,
                Err(source) if options.skip_errors => {
                    bar.println(format!(
                        "skipped {} (id {}): {source}",
                        sample.row,
                        sample.key()
                    ));
                    summary
                        .failed
                        .push((sample.row, sample.key(), source.to_string()));
                    bar.inc(1);
                    continue;
                }
                Err(source) => {
                    bar.abandon();
                    return Err(RunError::Sample {
                        at: sample.row,
                        id: sample.key(),
                        source: Box::new(source),
                    });
                }
            };
            // One write per line, flushed at once: an interruption leaves at most one
            // partial line, which the next run removes.
            out.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
            out.flush().map_err(io)?;
            summary.written += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// A progress bar on stderr over `len` items called `unit`, `done` of them already done (a
/// resumed run); hidden when not `enabled`.
pub fn progress_bar(enabled: bool, len: usize, done: usize, unit: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} {{pos}}/{{len}} {unit} {{wide_bar}} {{elapsed_precise}} (eta {{eta}})"
    )) {
        bar.set_style(style);
    }
    bar.set_position(done as u64);
    bar.reset_eta();
    bar
}

/// Samples judged together: Gen moderates them in shared forward passes
/// ([`GenGuard::moderate_batch`]; 1.4-1.7 times the throughput of one at a time for 4-8
/// requests on a 2-core machine), at the cost of losing at most this many samples' work to
/// an interruption.
const BATCH: usize = 8;

/// Judges `samples` and renders their output lines, in order.
fn predict(
    guard: &Guard,
    split: Option<&SplitTokens>,
    samples: &[&Sample],
    task: Task,
    options: &RunOptions,
) -> Vec<qwen3guard::Result<String>> {
    match (guard, task, split) {
        (Guard::Gen(gen), _, _) => gen_lines(gen, samples, options)
            .into_iter()
            .map(to_json)
            .collect(),
        (Guard::Stream(stream), Task::Response, Some(split)) => samples
            .iter()
            .map(|sample| {
                to_json(stream_response_line(
                    stream,
                    split,
                    sample,
                    options.thinking,
                ))
            })
            .collect(),
        (Guard::Stream(stream), _, _) => samples
            .iter()
            .map(|sample| to_json(stream_prompt_line(stream, sample)))
            .collect(),
    }
}

/// A prediction rendered as its JSON line.
fn to_json<T: Serialize>(line: qwen3guard::Result<T>) -> qwen3guard::Result<String> {
    serde_json::to_string(&line?)
        .map_err(|e| qwen3guard::Error::Internal(format!("cannot serialize the prediction: {e}")))
}

/// A Gen output line.
#[derive(Serialize)]
struct GenLine<'a> {
    id: &'a Value,
    #[serde(flatten)]
    record: GenRecord,
    safety: Option<&'static str>,
    categories: Vec<String>,
    refusal: Option<bool>,
    scores: SeverityProbs,
    unsafe_score: f32,
    messages: Vec<Message>,
}

fn gen_lines<'a>(
    gen: &GenGuard,
    samples: &[&'a Sample],
    options: &RunOptions,
) -> Vec<qwen3guard::Result<GenLine<'a>>> {
    // The conversation each sample is judged on (reasoning removed unless asked for).
    let judged: Vec<qwen3guard::Result<std::borrow::Cow<'a, Conversation>>> = samples
        .iter()
        .map(|sample| {
            if options.thinking || !sample.has_reasoning() {
                Ok(std::borrow::Cow::Borrowed(&sample.conversation))
            } else {
                without_reasoning(&sample.conversation).map(std::borrow::Cow::Owned)
            }
        })
        .collect();
    let requests: Vec<(&Conversation, GenOptions)> = judged
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .map(|c| (c.as_ref(), options.gen))
        .collect();
    let mut verdicts = gen.moderate_batch(&requests).into_iter();
    samples
        .iter()
        .zip(judged)
        .map(|(sample, conversation)| {
            let conversation = conversation?;
            let verdict = verdicts.next().unwrap_or_else(|| {
                Err(qwen3guard::Error::Internal(
                    "a batched request gave no result".into(),
                ))
            })?;
            Ok(GenLine {
                id: &sample.id,
                record: GenRecord {
                    label: sample.label,
                    guard_predict: verdict.generated_text,
                },
                safety: verdict.safety.map(Severity::as_str),
                categories: verdict.categories,
                refusal: verdict.refusal,
                unsafe_score: round4(verdict.scores.unsafe_ + verdict.scores.controversial),
                scores: verdict.scores,
                messages: conversation.messages().to_vec(),
            })
        })
        .collect()
}

/// The conversation with every assistant message's `<think>` block removed: what follows
/// the last `</think>`, leading newlines trimmed (as the Qwen3 template reads it).
pub fn without_reasoning(conversation: &Conversation) -> qwen3guard::Result<Conversation> {
    let messages = conversation
        .messages()
        .iter()
        .map(|m| match (m.role, m.content.rfind("</think>")) {
            (Role::Assistant, Some(close)) => Message::new(
                Role::Assistant,
                m.content[close + "</think>".len()..].trim_start_matches('\n'),
            ),
            _ => m.clone(),
        })
        .collect();
    Conversation::new(messages)
}

/// A Stream output line for a response.
#[derive(Serialize)]
struct StreamResponseLine<'a> {
    id: &'a Value,
    #[serde(flatten)]
    record: StreamResponseRecord,
    pred_categories: Vec<String>,
    pred_risk_prob: Vec<f32>,
    verdict: &'static str,
    category: Option<String>,
    flagged_at: Option<usize>,
    unsafe_score: f32,
    messages: &'a [Message],
}

/// The token ids that locate the official split index.
struct SplitTokens {
    im_start: u32,
    assistant: u32,
    think_close: Option<u32>,
}

impl SplitTokens {
    fn new(guard: &StreamGuard) -> qwen3guard::Result<Self> {
        let tokenizer = guard.prompter().tokenizer();
        let im_start = tokenizer.marker_id("<|im_start|>").ok_or_else(|| {
            qwen3guard::Error::Tokenizer("the tokenizer has no <|im_start|>".into())
        })?;
        let assistant = match tokenizer.encode_text("assistant")?.as_slice() {
            [id] => *id,
            _ => {
                return Err(qwen3guard::Error::Tokenizer(
                    "\"assistant\" is not a single token".into(),
                ))
            }
        };
        Ok(SplitTokens {
            im_start,
            assistant,
            think_close: tokenizer.marker_id("</think>"),
        })
    }

    /// The official split index of the assistant turn after `user_end`: with `thinking`,
    /// the `assistant` token + 4 (the first token inside the think block); otherwise the
    /// token after the `</think>` `\n\n` pair (or after `assistant\n` if the turn has no
    /// think block).
    fn split(&self, ids: &[u32], user_end: usize, thinking: bool) -> Option<usize> {
        let assistant = (user_end + 1..ids.len().saturating_sub(1))
            .find(|&i| ids[i] == self.im_start && ids[i + 1] == self.assistant)?
            + 1;
        let split = if thinking {
            assistant + 4
        } else {
            let turn_end = (assistant..ids.len())
                .find(|&i| ids[i] == self.im_start)
                .unwrap_or(ids.len());
            match (assistant..turn_end).find(|&i| Some(ids[i]) == self.think_close) {
                Some(close) => close + 2,
                None => assistant + 2,
            }
        };
        Some(split.min(ids.len()))
    }
}

fn stream_response_line<'a>(
    stream: &StreamGuard,
    split_tokens: &SplitTokens,
    sample: &'a Sample,
    thinking: bool,
) -> qwen3guard::Result<StreamResponseLine<'a>> {
    let mut exchange = stream.render_exchange(&sample.conversation)?;
    let split = split_tokens
        .split(exchange.ids(), exchange.user_end(), thinking)
        .ok_or_else(|| {
            qwen3guard::Error::Conversation("no assistant turn follows the last user turn".into())
        })?;
    exchange.set_response_start(split)?;
    let mut session = stream.open_exchange(&exchange)?;
    session.append(exchange.response_ids())?;
    let report = session.report();
    let tokens: Vec<_> = report.tokens.iter().filter(|t| t.index >= split).collect();
    let flags: Vec<f32> = tokens
        .iter()
        .map(|t| t.risk_probs.unsafe_ + t.risk_probs.controversial)
        .collect();
    let unsafe_score = flags
        .windows(2)
        .map(|w| w[0].min(w[1]))
        .fold(0.0f32, f32::max);
    let verdict = report.response.as_ref();
    Ok(StreamResponseLine {
        id: &sample.id,
        record: StreamResponseRecord {
            label: sample.label,
            pred_risk_levels: tokens.iter().map(|t| t.risk_level).collect(),
            split_idx_eval: split,
            span: sample.span,
        },
        pred_categories: tokens.iter().map(|t| t.category.clone()).collect(),
        pred_risk_prob: tokens
            .iter()
            .map(|t| round4(t.risk_probs.of(t.risk_level)))
            .collect(),
        verdict: verdict.map_or(Severity::Safe, |v| v.risk_level).as_str(),
        category: verdict.and_then(|v| v.category.clone()),
        flagged_at: verdict.and_then(|v| v.flagged_at),
        unsafe_score: round4(unsafe_score),
        messages: sample.conversation.messages(),
    })
}

/// A Stream output line for a prompt.
#[derive(Serialize)]
struct StreamPromptLine<'a> {
    id: &'a Value,
    #[serde(flatten)]
    record: StreamPromptRecord,
    pred_categories: [String; 1],
    pred_risk_prob: [f32; 1],
    prompt_index: usize,
    risk_probs: SeverityProbs,
    category: String,
    unsafe_score: f32,
    messages: &'a [Message],
}

fn stream_prompt_line<'a>(
    stream: &StreamGuard,
    sample: &'a Sample,
) -> qwen3guard::Result<StreamPromptLine<'a>> {
    let exchange = stream.render_exchange(&sample.conversation)?;
    let session = stream.open_exchange(&exchange)?;
    let p = session.prompt_verdict();
    Ok(StreamPromptLine {
        id: &sample.id,
        record: StreamPromptRecord {
            label: sample.label,
            pred_risk_levels: vec![p.risk_level],
        },
        pred_categories: [p.category.clone()],
        pred_risk_prob: [round4(p.risk_probs.of(p.risk_level))],
        prompt_index: p.token_index,
        risk_probs: p.risk_probs,
        category: p.category.clone(),
        unsafe_score: round4(p.risk_probs.unsafe_ + p.risk_probs.controversial),
        messages: sample.conversation.messages(),
    })
}

/// Four decimals keep the files small and are more than the metrics can tell apart.
fn round4(x: f32) -> f32 {
    (x * 10_000.0).round() / 10_000.0
}

/// The field that tells each kind of predictions apart.
fn kind_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Gen => "guard_predict",
        Kind::StreamResponse => "split_idx_eval",
        Kind::StreamPrompt => "prompt_index",
    }
}

/// Reads the ids already in `path` ([`crate::resume`]), refusing lines of another kind of
/// predictions or of another dataset. Returns the ids and whether a partial line was
/// removed.
fn read_existing(
    path: &Path,
    kind: Kind,
    known: &HashSet<String>,
) -> Result<(HashSet<String>, bool), RunError> {
    let field = kind_field(kind);
    let found = resume::existing(path, "eval run", |value, key| {
        if value.get(field).is_none() {
            return Err(format!(
                "has no `{field}`: these are not {kind} predictions (another model or --task?); \
                 choose another --out"
            ));
        }
        if !known.contains(key) {
            return Err(format!(
                "id {key} is not in the dataset; is --out the output of another dataset?"
            ));
        }
        Ok(())
    })
    .map_err(|e| match e {
        ResumeError::Io { path, source } => RunError::Io { path, source },
        ResumeError::Line {
            path,
            line,
            message,
        } => RunError::Resume {
            path,
            line,
            message,
        },
    })?;
    Ok((found.ids, found.dropped_partial_line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_is_removed_from_assistant_messages_only() {
        let conversation = Conversation::new(vec![
            Message::new(Role::User, "q </think> stays"),
            Message::new(Role::Assistant, "<think>\nplan\n</think>\n\nanswer"),
        ])
        .unwrap();
        let stripped = without_reasoning(&conversation).unwrap();
        assert_eq!(stripped.messages()[0].content, "q </think> stays");
        assert_eq!(stripped.messages()[1].content, "answer");
    }

    #[test]
    fn rounding_keeps_four_decimals() {
        assert_eq!(round4(0.123_456), 0.1235);
        assert_eq!(round4(1.0), 1.0);
    }
}
