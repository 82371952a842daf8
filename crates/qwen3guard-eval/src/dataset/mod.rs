//! Benchmark datasets as users download them, turned into conversations with a label.
//!
//! A dataset file is read row by row ([`rows`]: JSONL, JSONL.gz, JSON or Parquet), its
//! format is recognised from its columns or named explicitly ([`Format`]), and each row is
//! turned by that format's adapter ([`adapters`]) into zero, one or two [`Sample`]s: the
//! conversation to judge, the ground-truth label for the chosen [`Task`], and the unsafe
//! span where the dataset annotates one.
//!
//! Rows are counted from 0 in errors ("row 3 (line 4)"), the same numbers the run uses as
//! ids when a dataset has no id column. Every problem with a row names the row and the
//! field. Rows that a format leaves unlabelled for the task (a prompt-only WildGuardTest row
//! under `--task response`, for example) are skipped and counted, never guessed.

pub mod adapters;
pub mod rows;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use qwen3guard::prompt::Task;
use qwen3guard::{Conversation, Message, Role};
use serde_json::Value;

use crate::latency::Span;
use crate::risk::Severity;

pub use adapters::Format;
pub use rows::{read_rows, RawRow};

/// Where a row came from, for error messages: its 0-based index among the file's rows,
/// and its 1-based line for line-oriented files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    /// 0-based index among the file's rows (blank lines are not rows).
    pub index: usize,
    /// 1-based line number in a JSONL file.
    pub line: Option<usize>,
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "row {} (line {line})", self.index),
            None => write!(f, "row {}", self.index),
        }
    }
}

/// Everything that can go wrong while reading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file as a whole is unusable (unknown extension, not Parquet, wrong JSON shape).
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do about it.
        message: String,
    },
    /// A line of a JSONL file is not JSON.
    #[error("{at}: invalid JSON")]
    Json {
        /// The row.
        at: RowRef,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// A row is not a JSON object.
    #[error("{at}: expected a JSON object")]
    NotAnObject {
        /// The row.
        at: RowRef,
    },
    /// A column the format needs is absent from a row.
    #[error("{at}: missing field `{field}` (the {format} format needs it)")]
    MissingField {
        /// The row.
        at: RowRef,
        /// The column.
        field: String,
        /// The format being read.
        format: &'static str,
    },
    /// A column holds something the format does not allow.
    #[error("{at}: field `{field}`: {message}")]
    InvalidField {
        /// The row.
        at: RowRef,
        /// The column (with an index for list items: `message[2].role`).
        field: String,
        /// What is wrong, with the offending value.
        message: String,
    },
    /// The row's conversation cannot be judged for the task.
    #[error("{at}: {message}")]
    Conversation {
        /// The row.
        at: RowRef,
        /// Why.
        message: String,
    },
    /// Two rows share an id, so a resumed run could not tell them apart.
    #[error("{at}: duplicate id {id} (also used by {first})")]
    DuplicateId {
        /// The later row.
        at: RowRef,
        /// The earlier row.
        first: RowRef,
        /// The id.
        id: String,
    },
    /// `--format` names no known format.
    #[error("unknown dataset format {0:?} (expected one of: {list})", list = Format::names())]
    UnknownFormat(String),
    /// The columns match no known format.
    #[error(
        "{}: cannot tell the dataset format from its columns ({columns}); name it with \
         --format (one of: {list})",
        path.display(),
        list = Format::names()
    )]
    Undetected {
        /// The file.
        path: PathBuf,
        /// The columns seen.
        columns: String,
    },
    /// The format has no labels for the task.
    #[error("the {format} format has no {task} labels: {hint}")]
    TaskNotLabelled {
        /// The format.
        format: &'static str,
        /// `prompt` or `response`.
        task: &'static str,
        /// What the format does label.
        hint: &'static str,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;

/// The name of a task as the CLI spells it.
pub fn task_name(task: Task) -> &'static str {
    match task {
        Task::Prompt => "prompt",
        Task::Response => "response",
    }
}

/// Parses `prompt` or `response`.
pub fn parse_task(text: &str) -> Option<Task> {
    match text {
        "prompt" => Some(Task::Prompt),
        "response" => Some(Task::Response),
        _ => None,
    }
}

/// One thing to judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The dataset's id (a string or a number), or the row index when it has none; for
    /// rows that yield two samples, `"<row id>-<n>"`.
    pub id: Value,
    /// The row it came from.
    pub row: RowRef,
    /// The conversation, cut for the task: up to the last user message for prompts, ending
    /// with the assistant's message for responses.
    pub conversation: Conversation,
    /// Ground truth for the task.
    pub label: Severity,
    /// The annotated unsafe span (Qwen3GuardTest `_loc` splits).
    pub span: Option<Span>,
}

impl Sample {
    /// The id as a lookup key: strings as they are, numbers in JSON notation.
    pub fn key(&self) -> String {
        id_key(&self.id)
    }

    /// Whether any assistant message carries a `<think>` reasoning block.
    pub fn has_reasoning(&self) -> bool {
        self.conversation
            .messages()
            .iter()
            .any(|m| m.role == Role::Assistant && m.content.contains("</think>"))
    }
}

/// The lookup key of an id value (see [`Sample::key`]).
pub fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A dataset read for one task.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file read.
    pub path: PathBuf,
    /// Its format, detected or given.
    pub format: Format,
    /// Whether the format was detected from the columns.
    pub detected: bool,
    /// The task the samples are for.
    pub task: Task,
    /// The samples, in file order.
    pub samples: Vec<Sample>,
    /// Rows left out because the format does not label them for the task, by reason.
    pub skipped: BTreeMap<&'static str, usize>,
    /// Rows read.
    pub rows: usize,
}

impl Dataset {
    /// Reads `path`, detects its format unless `format` is given, and converts every row for
    /// `task`. Fails on the first row that cannot be converted.
    pub fn load(path: &Path, format: Option<Format>, task: Task) -> Result<Dataset> {
        let rows = read_rows(path)?;
        let (format, detected) = match format {
            Some(format) => (format, false),
            None => (detect(path, &rows)?, true),
        };
        Self::from_rows(path, &rows, format, detected, task)
    }

    /// Converts rows already read.
    pub fn from_rows(
        path: &Path,
        rows: &[RawRow],
        format: Format,
        detected: bool,
        task: Task,
    ) -> Result<Dataset> {
        format.check_task(task)?;
        let mut samples = Vec::with_capacity(rows.len());
        let mut skipped = BTreeMap::new();
        let mut seen: HashMap<String, RowRef> = HashMap::new();
        for row in rows {
            let drafts = match format.convert(row, task)? {
                adapters::Converted::Samples(drafts) => drafts,
                adapters::Converted::Skip(reason) => {
                    *skipped.entry(reason).or_insert(0) += 1;
                    continue;
                }
            };
            let several = drafts.len() > 1;
            for (n, draft) in drafts.into_iter().enumerate() {
                let base = draft.id.unwrap_or_else(|| Value::from(row.at.index));
                let id = if several {
                    Value::String(format!("{}-{n}", id_key(&base)))
                } else {
                    base
                };
                let conversation = for_task(row.at, draft.messages, task)?;
                let sample = Sample {
                    id,
                    row: row.at,
                    conversation,
                    label: draft.label,
                    span: draft.span,
                };
                if let Some(first) = seen.insert(sample.key(), row.at) {
                    return Err(DatasetError::DuplicateId {
                        at: row.at,
                        first,
                        id: sample.key(),
                    });
                }
                samples.push(sample);
            }
        }
        Ok(Dataset {
            path: path.to_owned(),
            format,
            detected,
            task,
            samples,
            skipped,
            rows: rows.len(),
        })
    }
}

/// Picks the format whose signature columns the file has (the union of all rows' columns,
/// so a column that is absent from some JSONL lines still counts).
pub fn detect(path: &Path, rows: &[RawRow]) -> Result<Format> {
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        for key in row.fields.keys() {
            if !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    Format::detect(&columns).ok_or_else(|| DatasetError::Undetected {
        path: path.to_owned(),
        columns: if columns.is_empty() {
            "none: the file has no rows".to_owned()
        } else {
            columns.join(", ")
        },
    })
}

/// Validates the conversation and cuts it for the task.
fn for_task(at: RowRef, messages: Vec<Message>, task: Task) -> Result<Conversation> {
    let conversation = Conversation::new(messages).map_err(|e| DatasetError::Conversation {
        at,
        message: e.to_string(),
    })?;
    match task {
        Task::Prompt => conversation
            .up_to_last_user()
            .ok_or_else(|| DatasetError::Conversation {
                at,
                message: "the conversation has no user message to judge".into(),
            }),
        Task::Response => match conversation.messages().last().map(|m| m.role) {
            Some(Role::Assistant)
                if conversation.messages().iter().any(|m| m.role == Role::User) =>
            {
                Ok(conversation)
            }
            Some(Role::Assistant) => Err(DatasetError::Conversation {
                at,
                message: "the conversation has no user message before the response".into(),
            }),
            _ => Err(DatasetError::Conversation {
                at,
                message: "the conversation does not end with an assistant message; \
                          --task response judges the assistant's last reply"
                    .into(),
            }),
        },
    }
}

impl FromStr for Format {
    type Err = DatasetError;

    fn from_str(s: &str) -> Result<Self> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| DatasetError::UnknownFormat(s.to_owned()))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
