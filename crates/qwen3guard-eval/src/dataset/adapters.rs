//! One adapter per benchmark: which columns it reads and how they become
//! `{messages, label}` for a task.
//!
//! Each [`Format`] variant documents the columns it reads, as the dataset is published
//! (Hugging Face Hub or the authors' repository). Labels are mapped to `Safe` / `Unsafe`
//! (the datasets other than Qwen3GuardTest have no Controversial class). A column the
//! format needs and the row lacks is an error naming the row; a value the dataset itself
//! leaves empty for the task (no response, no response label) skips the row, counted by
//! reason.

use qwen3guard::prompt::Task;
use qwen3guard::{Message, Role};
use serde_json::Value;

use super::{task_name, DatasetError, RawRow, Result, RowRef};
use crate::error::{show, token_position};
use crate::latency::Span;
use crate::risk::Severity;

/// The dataset layouts `eval run` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Qwen3GuardTest (`Qwen/Qwen3GuardTest`, splits `thinking`, `thinking_loc`,
    /// `response_loc`), the official benchmark.
    ///
    /// Reads `message` (a list of `{role, content}`; a `reasoning_content` key, where
    /// present, is put back in front of the content as a `<think>` block), `label` (`Safe`,
    /// `Unsafe` or `Controversial`), optionally `unsafe_start_index` / `unsafe_end_index`
    /// (the `_loc` splits: the first unsafe sentence's token span in the whole rendered
    /// chat) and `id`. The published splits label responses; `--task prompt` takes `label`
    /// as the prompt's label, as the official script would.
    Qwen3GuardTest,
    /// This project's own plain layout, for any dataset converted by hand.
    ///
    /// Reads `messages` (a list of `{role, content}`), `label` (`Safe` / `Unsafe` /
    /// `Controversial`, any case) and optionally `id`, `unsafe_start_index`,
    /// `unsafe_end_index`. The label is the label of the message the task judges.
    Messages,
    /// ToxicChat (`lmsys/toxic-chat`, configs `toxicchat0124` / `toxicchat1123`, split
    /// `test`): user prompts from a public chatbot.
    ///
    /// Reads `conv_id` (the id), `user_input` (the prompt) and `toxicity` (1 = Unsafe,
    /// 0 = Safe). Prompts only: `model_output` carries no label.
    ToxicChat,
    /// WildGuardTest (`allenai/wildguardmix`, config `wildguardtest`, split `test`).
    ///
    /// Reads `prompt`, `response` (null on prompt-only rows), `prompt_harm_label` and
    /// `response_harm_label` (`harmful` = Unsafe, `unharmful` = Safe; null where not
    /// annotated) and `id` when present. Rows without the task's label, or without a
    /// response under `--task response`, are skipped.
    WildGuardTest,
    /// Aegis 2.0 (`nvidia/Aegis-AI-Content-Safety-Dataset-2.0`, split `test`).
    ///
    /// Reads `id`, `prompt`, `response` (empty or null on prompt-only rows), `prompt_label`
    /// and `response_label` (`safe` / `unsafe`). Rows whose prompt is `REDACTED` (texts the
    /// authors could not redistribute; rebuild them from the source first) and rows without
    /// the task's label are skipped.
    Aegis2,
    /// BeaverTails (`PKU-Alignment/BeaverTails`, splits `30k_test` / `330k_test`):
    /// question-answer pairs judged as a whole.
    ///
    /// Reads `prompt`, `response` and `is_safe` (`true` = Safe). Responses only.
    BeaverTails,
    /// PKU-SafeRLHF (`PKU-Alignment/PKU-SafeRLHF`, split `test`): two responses per prompt.
    ///
    /// Reads `prompt`, `response_0`, `response_1`, `is_response_0_safe`,
    /// `is_response_1_safe`; each row gives two samples, ids `<row>-0` and `<row>-1`.
    /// Responses only.
    SafeRlhf,
    /// HarmBench, both published shapes.
    ///
    /// Behaviours (prompts, every one harmful, so every label is Unsafe): the repository's
    /// `harmbench_behaviors_text_*.csv` converted to JSONL (`Behavior`, optional
    /// `ContextString`, `BehaviorID` as the id) or the Hub copy `walledai/HarmBench`
    /// (`prompt`, optional `context`). A context is put before the behaviour, separated by
    /// `---`, as HarmBench does.
    ///
    /// Classifier validation set (responses): the repository's
    /// `text_behaviors_val_set.json` (an object of behaviour id -> rows) with `test_case`
    /// (the prompt; `behavior` if absent), `generation` (the response) and `human_0`,
    /// `human_1`, `human_2` (1 = harmful): Unsafe when most annotators say 1.
    HarmBench,
    /// OpenAI Moderation evaluation set (`samples-1680.jsonl.gz` of
    /// `openai/moderation-api-release`, or `mmathys/openai-moderation-api-evaluation`).
    ///
    /// Reads `prompt` and the category flags `S`, `H`, `V`, `HR`, `SH`, `S3`, `H2`, `V2`
    /// (0/1; absent or null = not flagged): Unsafe when any flag is 1. Rows with no flag
    /// at all are skipped. Prompts only.
    OpenAiModeration,
    /// SimpleSafetyTests (`Bertievidgen/SimpleSafetyTests`): 100 clearly harmful prompts.
    ///
    /// Reads `prompts_final` and `id`; every label is Unsafe. Prompts only.
    SimpleSafetyTests,
    /// XSTest, both published shapes.
    ///
    /// Prompts (`xstest_prompts.csv` converted to JSONL, or a Hub copy such as
    /// `natolambert/xstest-v2-copy` split `prompts`): `prompt`, `label` (`safe` /
    /// `unsafe`), `type`, optional `id`.
    ///
    /// Responses (`allenai/xstest-response`, split `response_harmfulness`): `prompt`,
    /// `response`, `label` (`harmful` / `unharmful`), `prompt_type`. The
    /// `response_refusal` split labels refusals, not harm, and is rejected.
    XsTest,
}

/// A row converted, before ids are settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The dataset's id, if it has one.
    pub id: Option<Value>,
    /// The whole conversation (cut for the task later).
    pub messages: Vec<Message>,
    /// Ground truth for the task.
    pub label: Severity,
    /// The annotated unsafe span.
    pub span: Option<Span>,
}

/// What a row gives for a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Converted {
    /// One sample, or several (SafeRLHF).
    Samples(Vec<Draft>),
    /// Nothing: the dataset leaves the row unlabelled for the task; the reason is counted.
    Skip(&'static str),
}

const LEVELS: &[(&str, Severity)] = &[
    ("safe", Severity::Safe),
    ("unsafe", Severity::Unsafe),
    ("controversial", Severity::Controversial),
];
const HARM: &[(&str, Severity)] = &[("harmful", Severity::Unsafe), ("unharmful", Severity::Safe)];
const SAFE_UNSAFE: &[(&str, Severity)] = &[("safe", Severity::Safe), ("unsafe", Severity::Unsafe)];
const OPENAI_FLAGS: [&str; 8] = ["S", "H", "V", "HR", "SH", "S3", "H2", "V2"];

impl Format {
    /// Every format, in detection order (most specific signature first).
    pub const ALL: [Format; 11] = [
        Format::Qwen3GuardTest,
        Format::Messages,
        Format::ToxicChat,
        Format::WildGuardTest,
        Format::Aegis2,
        Format::SafeRlhf,
        Format::BeaverTails,
        Format::OpenAiModeration,
        Format::SimpleSafetyTests,
        Format::XsTest,
        Format::HarmBench,
    ];

    /// The `--format` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Format::Qwen3GuardTest => "qwen3guardtest",
            Format::Messages => "messages",
            Format::ToxicChat => "toxicchat",
            Format::WildGuardTest => "wildguardtest",
            Format::Aegis2 => "aegis2",
            Format::BeaverTails => "beavertails",
            Format::SafeRlhf => "saferlhf",
            Format::HarmBench => "harmbench",
            Format::OpenAiModeration => "openai-moderation",
            Format::SimpleSafetyTests => "simplesafetytests",
            Format::XsTest => "xstest",
        }
    }

    /// All names, comma-separated, for messages.
    pub fn names() -> String {
        Format::ALL.map(Format::name).join(", ")
    }

    /// The format whose signature columns are all in `columns`, trying the most specific
    /// signatures first.
    pub fn detect(columns: &[&str]) -> Option<Format> {
        let has = |c: &str| columns.contains(&c);
        let all = |cs: &[&str]| cs.iter().all(|c| has(c));
        let any = |cs: &[&str]| cs.iter().any(|c| has(c));
        Format::ALL.into_iter().find(|format| match format {
            Format::Qwen3GuardTest => all(&["message", "label"]),
            Format::Messages => all(&["messages", "label"]),
            Format::ToxicChat => all(&["user_input", "toxicity"]),
            Format::WildGuardTest => all(&["prompt", "prompt_harm_label"]),
            Format::Aegis2 => all(&["prompt", "prompt_label"]),
            Format::SafeRlhf => all(&["prompt", "response_0", "response_1", "is_response_0_safe"]),
            Format::BeaverTails => all(&["prompt", "response", "is_safe"]),
            Format::OpenAiModeration => has("prompt") && any(&OPENAI_FLAGS),
            Format::SimpleSafetyTests => has("prompts_final"),
            Format::XsTest => all(&["prompt", "label"]) && any(&["type", "prompt_type", "focus"]),
            Format::HarmBench => {
                all(&["generation", "human_0"])
                    || has("Behavior")
                    || (all(&["prompt", "category"]) && !has("label"))
            }
        })
    }

    /// Fails when the format never labels `task`.
    pub fn check_task(self, task: Task) -> Result<()> {
        let hint = match (self, task) {
            (Format::ToxicChat, Task::Response) => "ToxicChat labels user prompts only",
            (Format::OpenAiModeration, Task::Response) => {
                "the OpenAI moderation set labels single texts, read as prompts"
            }
            (Format::SimpleSafetyTests, Task::Response) => "SimpleSafetyTests has prompts only",
            (Format::BeaverTails, Task::Prompt) => {
                "BeaverTails labels question-answer pairs; use --task response"
            }
            (Format::SafeRlhf, Task::Prompt) => {
                "PKU-SafeRLHF labels responses; use --task response"
            }
            _ => return Ok(()),
        };
        Err(DatasetError::TaskNotLabelled {
            format: self.name(),
            task: task_name(task),
            hint,
        })
    }

    /// Converts one row for `task`.
    pub fn convert(self, raw: &RawRow, task: Task) -> Result<Converted> {
        let row = Row {
            raw,
            format: self.name(),
        };
        match self {
            Format::Qwen3GuardTest => chat(&row, "message", task),
            Format::Messages => chat(&row, "messages", task),
            Format::ToxicChat => toxicchat(&row),
            Format::WildGuardTest => wildguardtest(&row, task),
            Format::Aegis2 => aegis2(&row, task),
            Format::BeaverTails => beavertails(&row),
            Format::SafeRlhf => saferlhf(&row),
            Format::HarmBench => harmbench(&row, task),
            Format::OpenAiModeration => openai_moderation(&row),
            Format::SimpleSafetyTests => simplesafetytests(&row),
            Format::XsTest => xstest(&row, task),
        }
    }
}

/// Qwen3GuardTest and the plain layout: a chat list, a label, an optional span.
fn chat(row: &Row<'_>, field: &str, task: Task) -> Result<Converted> {
    let messages = row.messages(field)?;
    let label = row.word("label", LEVELS)?;
    let span = match task {
        Task::Response => row.span()?,
        Task::Prompt => None,
    };
    Ok(one(row.id("id"), messages, label, span))
}

fn toxicchat(row: &Row<'_>) -> Result<Converted> {
    let prompt = row.text("user_input")?;
    let label = if row.flag("toxicity")? {
        Severity::Unsafe
    } else {
        Severity::Safe
    };
    Ok(one(row.id("conv_id"), exchange(prompt, None), label, None))
}

fn wildguardtest(row: &Row<'_>, task: Task) -> Result<Converted> {
    let conversation = (row.text("prompt")?, row.optional_text("response")?);
    labelled_exchange(
        row,
        task,
        conversation,
        [
            ("prompt_harm_label", "no prompt_harm_label"),
            ("response_harm_label", "no response_harm_label"),
        ],
        HARM,
    )
}

fn aegis2(row: &Row<'_>, task: Task) -> Result<Converted> {
    let prompt = row.text("prompt")?;
    if prompt.trim() == "REDACTED" {
        return Ok(Converted::Skip(
            "prompt REDACTED (rebuild it from the source dataset)",
        ));
    }
    let response = row.optional_text("response")?.filter(|r| !r.is_empty());
    labelled_exchange(
        row,
        task,
        (prompt, response),
        [
            ("prompt_label", "no prompt_label"),
            ("response_label", "no response_label"),
        ],
        SAFE_UNSAFE,
    )
}

/// A prompt with an optional response, labelled for each task in a column of its own:
/// `columns` gives the prompt task's column and the reason counted when it is empty, then
/// the response task's. A response task skips rows without a response.
fn labelled_exchange(
    row: &Row<'_>,
    task: Task,
    (prompt, response): (String, Option<String>),
    columns: [(&str, &'static str); 2],
    words: &[(&str, Severity)],
) -> Result<Converted> {
    let (column, unlabelled) = match task {
        Task::Prompt => columns[0],
        Task::Response => columns[1],
    };
    if task == Task::Response && response.as_deref().is_none_or(str::is_empty) {
        return Ok(Converted::Skip("no response"));
    }
    let Some(label) = row.optional_word(column, words)? else {
        return Ok(Converted::Skip(unlabelled));
    };
    Ok(one(row.id("id"), exchange(prompt, response), label, None))
}

fn beavertails(row: &Row<'_>) -> Result<Converted> {
    let prompt = row.text("prompt")?;
    let response = row.text("response")?;
    let label = safe_flag(row.flag("is_safe")?);
    Ok(one(
        row.id("id"),
        exchange(prompt, Some(response)),
        label,
        None,
    ))
}

fn saferlhf(row: &Row<'_>) -> Result<Converted> {
    let prompt = row.text("prompt")?;
    let mut drafts = Vec::with_capacity(2);
    for (response, safe) in [
        ("response_0", "is_response_0_safe"),
        ("response_1", "is_response_1_safe"),
    ] {
        drafts.push(Draft {
            id: row.id("id"),
            messages: exchange(prompt.clone(), Some(row.text(response)?)),
            label: safe_flag(row.flag(safe)?),
            span: None,
        });
    }
    Ok(Converted::Samples(drafts))
}

fn harmbench(row: &Row<'_>, task: Task) -> Result<Converted> {
    if row.present("generation") {
        if task == Task::Prompt {
            return Err(row.conversation(
                "this is HarmBench's classifier validation set, which labels responses; \
                 use --task response",
            ));
        }
        let prompt = match row.optional_text("test_case")? {
            Some(prompt) => prompt,
            None => row.text("behavior")?,
        };
        let response = row.text("generation")?;
        let mut votes = Vec::new();
        for field in ["human_0", "human_1", "human_2"] {
            if let Some(vote) = row.optional_flag(field)? {
                votes.push(vote);
            }
        }
        if votes.is_empty() {
            return Err(row.missing("human_0"));
        }
        let harmful = 2 * votes.iter().filter(|&&v| v).count() > votes.len();
        let label = if harmful {
            Severity::Unsafe
        } else {
            Severity::Safe
        };
        return Ok(one(None, exchange(prompt, Some(response)), label, None));
    }
    if task == Task::Response {
        return Err(row.conversation(
            "this row is a HarmBench behaviour (a prompt without a response); use --task prompt",
        ));
    }
    let (behavior, context, id) = if row.present("Behavior") {
        (
            row.text("Behavior")?,
            row.optional_text("ContextString")?,
            row.id("BehaviorID"),
        )
    } else {
        (
            row.text("prompt")?,
            row.optional_text("context")?,
            row.id("id"),
        )
    };
    let prompt = match context.filter(|c| !c.trim().is_empty()) {
        Some(context) => format!("{context}\n\n---\n\n{behavior}"),
        None => behavior,
    };
    Ok(one(id, exchange(prompt, None), Severity::Unsafe, None))
}

fn openai_moderation(row: &Row<'_>) -> Result<Converted> {
    let prompt = row.text("prompt")?;
    let mut any_flag = false;
    let mut flagged = false;
    for field in OPENAI_FLAGS {
        if let Some(flag) = row.optional_flag(field)? {
            any_flag = true;
            flagged |= flag;
        }
    }
    if !any_flag {
        return Ok(Converted::Skip("no category flags"));
    }
    let label = if flagged {
        Severity::Unsafe
    } else {
        Severity::Safe
    };
    Ok(one(row.id("id"), exchange(prompt, None), label, None))
}

fn simplesafetytests(row: &Row<'_>) -> Result<Converted> {
    let prompt = row.text("prompts_final")?;
    Ok(one(
        row.id("id"),
        exchange(prompt, None),
        Severity::Unsafe,
        None,
    ))
}

fn xstest(row: &Row<'_>, task: Task) -> Result<Converted> {
    let prompt = row.text("prompt")?;
    let response = row.optional_text("response")?;
    let label_text = row.text("label")?.trim().to_ascii_lowercase();
    if matches!(label_text.as_str(), "refusal" | "compliance") {
        return Err(row.invalid(
            "label",
            format!(
                "{label_text:?} is a refusal label (the response_refusal split); only safety \
                 labels can be scored: use the response_harmfulness split"
            ),
        ));
    }
    match (&response, task) {
        (Some(_), Task::Prompt) => {
            return Err(row.conversation(
                "this XSTest row labels a response (harmful / unharmful); use --task response",
            ))
        }
        (None, Task::Response) => {
            return Err(row
                .conversation("this XSTest row is a prompt without a response; use --task prompt"))
        }
        _ => {}
    }
    let words = if response.is_some() {
        HARM
    } else {
        SAFE_UNSAFE
    };
    let label = row.word("label", words)?;
    Ok(one(row.id("id"), exchange(prompt, response), label, None))
}

fn one(
    id: Option<Value>,
    messages: Vec<Message>,
    label: Severity,
    span: Option<Span>,
) -> Converted {
    Converted::Samples(vec![Draft {
        id,
        messages,
        label,
        span,
    }])
}

fn exchange(prompt: String, response: Option<String>) -> Vec<Message> {
    let mut messages = vec![Message::new(Role::User, prompt)];
    if let Some(response) = response {
        messages.push(Message::new(Role::Assistant, response));
    }
    messages
}

fn safe_flag(safe: bool) -> Severity {
    if safe {
        Severity::Safe
    } else {
        Severity::Unsafe
    }
}

/// Typed access to one row's columns, with errors naming the row and the column.
struct Row<'a> {
    raw: &'a RawRow,
    format: &'static str,
}

impl Row<'_> {
    fn at(&self) -> RowRef {
        self.raw.at
    }

    /// The value, `None` when absent or null.
    fn get(&self, field: &str) -> Option<&Value> {
        self.raw.fields.get(field).filter(|v| !v.is_null())
    }

    fn present(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    fn missing(&self, field: &str) -> DatasetError {
        DatasetError::MissingField {
            at: self.at(),
            field: field.to_owned(),
            format: self.format,
        }
    }

    fn invalid(&self, field: &str, message: String) -> DatasetError {
        DatasetError::InvalidField {
            at: self.at(),
            field: field.to_owned(),
            message,
        }
    }

    fn conversation(&self, message: &str) -> DatasetError {
        DatasetError::Conversation {
            at: self.at(),
            message: message.to_owned(),
        }
    }

    fn require(&self, field: &str) -> Result<&Value> {
        self.get(field).ok_or_else(|| self.missing(field))
    }

    fn text(&self, field: &str) -> Result<String> {
        match self.require(field)? {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.invalid(field, format!("expected text, got {}", show(other)))),
        }
    }

    fn optional_text(&self, field: &str) -> Result<Option<String>> {
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.text(field).map(Some),
        }
    }

    /// A yes/no column: a boolean, 0 / 1, or the strings "true"/"false"/"0"/"1".
    fn flag(&self, field: &str) -> Result<bool> {
        let value = self.require(field)?;
        let flag = match value {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_f64() {
                Some(0.0) => Some(false),
                Some(1.0) => Some(true),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        };
        flag.ok_or_else(|| {
            self.invalid(
                field,
                format!("expected true/false or 1/0, got {}", show(value)),
            )
        })
    }

    fn optional_flag(&self, field: &str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.flag(field).map(Some),
        }
    }

    /// A label word, matched case-insensitively against `words`.
    fn word(&self, field: &str, words: &[(&str, Severity)]) -> Result<Severity> {
        self.optional_word(field, words)?
            .ok_or_else(|| self.missing(field))
    }

    fn optional_word(&self, field: &str, words: &[(&str, Severity)]) -> Result<Option<Severity>> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let expected = || {
            let names: Vec<String> = words.iter().map(|(w, _)| format!("{w:?}")).collect();
            format!("expected {}, got {}", names.join(" or "), show(value))
        };
        let Value::String(text) = value else {
            return Err(self.invalid(field, expected()));
        };
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        words
            .iter()
            .find(|(w, _)| w.eq_ignore_ascii_case(text))
            .map(|&(_, level)| Some(level))
            .ok_or_else(|| self.invalid(field, expected()))
    }

    /// The id column, when it holds a string or a number.
    fn id(&self, field: &str) -> Option<Value> {
        self.get(field)
            .filter(|v| v.is_string() || v.is_number())
            .cloned()
    }

    fn position(&self, field: &str) -> Result<Option<usize>> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        token_position(value)
            .map(Some)
            .map_err(|reason| self.invalid(field, reason))
    }

    /// `unsafe_start_index` and `unsafe_end_index`: both or neither.
    fn span(&self) -> Result<Option<Span>> {
        match (
            self.position("unsafe_start_index")?,
            self.position("unsafe_end_index")?,
        ) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.missing("unsafe_end_index")),
            (None, Some(_)) => Err(self.missing("unsafe_start_index")),
            (Some(start), Some(end)) if end < start => Err(self.invalid(
                "unsafe_end_index",
                format!("{end} is before unsafe_start_index {start}"),
            )),
            (Some(start), Some(end)) => Ok(Some(Span { start, end })),
        }
    }

    /// A chat: a list of `{role, content[, reasoning_content]}`.
    fn messages(&self, field: &str) -> Result<Vec<Message>> {
        let Value::Array(items) = self.require(field)? else {
            return Err(self.invalid(
                field,
                "expected a list of {role, content} messages".to_owned(),
            ));
        };
        let mut messages = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = |key: &str| format!("{field}[{i}].{key}");
            let Value::Object(map) = item else {
                return Err(self.invalid(
                    &format!("{field}[{i}]"),
                    format!("expected a {{role, content}} object, got {}", show(item)),
                ));
            };
            let role = match map.get("role") {
                Some(Value::String(role)) => match role.as_str() {
                    "system" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(self.invalid(
                            &at("role"),
                            format!("unknown role {other:?} (expected system, user or assistant)"),
                        ))
                    }
                },
                Some(other) => {
                    return Err(
                        self.invalid(&at("role"), format!("expected text, got {}", show(other)))
                    )
                }
                None => return Err(self.missing(&at("role"))),
            };
            let content = match map.get("content") {
                Some(Value::String(content)) => content.clone(),
                Some(Value::Null) | None => return Err(self.missing(&at("content"))),
                Some(other) => {
                    return Err(self.invalid(
                        &at("content"),
                        format!("expected text, got {}", show(other)),
                    ))
                }
            };
            let content = match map.get("reasoning_content") {
                Some(Value::String(reasoning))
                    if !reasoning.is_empty() && role == Role::Assistant =>
                {
                    format!("<think>\n{reasoning}\n</think>\n\n{content}")
                }
                _ => content,
            };
            messages.push(Message::new(role, content));
        }
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawRow {
        RawRow {
            at: RowRef {
                index: 7,
                line: Some(8),
            },
            fields: serde_json::from_str(json).unwrap(),
        }
    }

    fn convert(format: Format, json: &str, task: Task) -> Result<Converted> {
        format.convert(&raw(json), task)
    }

    fn draft(converted: Converted) -> Draft {
        match converted {
            Converted::Samples(mut drafts) if drafts.len() == 1 => drafts.remove(0),
            other => panic!("expected one sample, got {other:?}"),
        }
    }

    #[test]
    fn detection_follows_published_columns() {
        let cases: &[(&[&str], Option<Format>)] = &[
            (
                &["message", "label", "unsafe_start_index"],
                Some(Format::Qwen3GuardTest),
            ),
            (&["messages", "label"], Some(Format::Messages)),
            (
                &["conv_id", "user_input", "model_output", "toxicity"],
                Some(Format::ToxicChat),
            ),
            (
                &[
                    "prompt",
                    "response",
                    "prompt_harm_label",
                    "response_harm_label",
                ],
                Some(Format::WildGuardTest),
            ),
            (
                &["id", "prompt", "response", "prompt_label", "response_label"],
                Some(Format::Aegis2),
            ),
            (
                &["prompt", "response", "category", "is_safe"],
                Some(Format::BeaverTails),
            ),
            (
                &[
                    "prompt",
                    "response_0",
                    "response_1",
                    "is_response_0_safe",
                    "is_response_1_safe",
                ],
                Some(Format::SafeRlhf),
            ),
            (&["prompt", "S", "H", "V"], Some(Format::OpenAiModeration)),
            (
                &["id", "harm_area", "prompts_final"],
                Some(Format::SimpleSafetyTests),
            ),
            (&["id", "prompt", "type", "label"], Some(Format::XsTest)),
            (
                &["prompt", "response", "label", "prompt_type"],
                Some(Format::XsTest),
            ),
            (&["Behavior", "BehaviorID"], Some(Format::HarmBench)),
            (&["prompt", "category"], Some(Format::HarmBench)),
            (
                &["test_case", "generation", "human_0", "human_1", "human_2"],
                Some(Format::HarmBench),
            ),
            (&["text", "score"], None),
        ];
        for (columns, expected) in cases {
            assert_eq!(Format::detect(columns), *expected, "{columns:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>().unwrap(), format);
        }
        let err = "toxic-chat".parse::<Format>().unwrap_err().to_string();
        assert!(
            err.starts_with("unknown dataset format \"toxic-chat\""),
            "{err}"
        );
        assert!(err.contains("toxicchat"), "{err}");
    }

    #[test]
    fn reasoning_content_is_put_back_as_a_think_block() {
        let d = draft(
            convert(
                Format::Qwen3GuardTest,
                r#"{"message": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}], "label": "Safe"}"#,
                Task::Response,
            )
            .unwrap(),
        );
        assert_eq!(d.messages[1].content, "<think>\nr\n</think>\n\na");
    }

    #[test]
    fn wildguard_skips_what_it_does_not_label() {
        let prompt_only = r#"{"prompt": "p", "response": null, "prompt_harm_label": "harmful", "response_harm_label": null}"#;
        assert_eq!(
            convert(Format::WildGuardTest, prompt_only, Task::Response).unwrap(),
            Converted::Skip("no response")
        );
        let d = draft(convert(Format::WildGuardTest, prompt_only, Task::Prompt).unwrap());
        assert_eq!(d.label, Severity::Unsafe);
        let err = convert(
            Format::WildGuardTest,
            r#"{"prompt": "p", "prompt_harm_label": "maybe"}"#,
            Task::Prompt,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 7 (line 8): field `prompt_harm_label`: expected \"harmful\" or \"unharmful\", got \"maybe\""
        );
    }

    #[test]
    fn harmbench_majority_vote_and_context() {
        let d = draft(
            convert(
                Format::HarmBench,
                r#"{"test_case": "t", "generation": "g", "human_0": 1, "human_1": 0, "human_2": 1}"#,
                Task::Response,
            )
            .unwrap(),
        );
        assert_eq!(d.label, Severity::Unsafe);
        let d = draft(
            convert(
                Format::HarmBench,
                r#"{"test_case": "t", "generation": "g", "human_0": 0, "human_1": 0, "human_2": 1}"#,
                Task::Response,
            )
            .unwrap(),
        );
        assert_eq!(d.label, Severity::Safe);
        let d = draft(
            convert(
                Format::HarmBench,
                r#"{"Behavior": "b", "ContextString": "c", "BehaviorID": "x1"}"#,
                Task::Prompt,
            )
            .unwrap(),
        );
        assert_eq!(d.messages[0].content, "c\n\n---\n\nb");
        assert_eq!(d.id, Some(Value::from("x1")));
    }

    #[test]
    fn flags_accept_the_usual_spellings() {
        for (value, expected) in [
            ("1", true),
            ("0", false),
            ("true", true),
            ("\"1\"", true),
            ("false", false),
        ] {
            let d = draft(
                convert(
                    Format::ToxicChat,
                    &format!(r#"{{"user_input": "u", "toxicity": {value}}}"#),
                    Task::Prompt,
                )
                .unwrap(),
            );
            assert_eq!(d.label == Severity::Unsafe, expected, "{value}");
        }
        let err = convert(
            Format::ToxicChat,
            r#"{"user_input": "u", "toxicity": 2}"#,
            Task::Prompt,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("field `toxicity`: expected true/false or 1/0, got 2"),
            "{err}"
        );
    }
}
