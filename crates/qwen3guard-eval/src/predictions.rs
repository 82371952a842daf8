//! The three prediction-file formats of the official evaluation, and a JSONL reader whose
//! errors name the line and the field.
//!
//! Each line of a predictions file is one dataset sample (`{**data, **result}` in the official
//! scripts), so lines carry many fields; only the ones scoring needs are read, the rest are
//! ignored. Blank lines are skipped. A JSON `null` counts as an absent field.
//!
//! | format | fields read |
//! | --- | --- |
//! | Gen | `label`, `guard_predict` (the generated text) |
//! | Stream, responses | `label`, `pred_risk_levels`, `split_idx_eval`, and for the `_loc` splits `unsafe_start_index`, `unsafe_end_index` |
//! | Stream, prompts | `label`, `pred_risk_levels` (over the last user turn's content through its closing `<\|im_end\|>`) |
//!
//! `label` is one of the exact strings `Safe`, `Unsafe`, `Controversial`. Per-position
//! levels may be names or official indices (`0` Safe, `1` Unsafe, `2` Controversial); the
//! official script writes indices, and so do the `Serialize` impls here, so files written by
//! this crate can be fed back to the official script.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{show, token_position, EvalError, Result};
use crate::latency::Span;
use crate::risk::Severity;

/// One sample of a Gen predictions file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenRecord {
    /// Ground truth.
    pub label: Severity,
    /// The guard's generated text (`Safety: ...\nCategories: ...`).
    pub guard_predict: String,
}

/// One sample of a Stream predictions file over responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamResponseRecord {
    /// Ground truth.
    pub label: Severity,
    /// Per-position levels from `split_idx_eval` to the end of the rendered chat:
    /// `pred_risk_levels[i]` is the response head's verdict at absolute position
    /// `split_idx_eval + i`.
    #[serde(serialize_with = "as_official_indices")]
    pub pred_risk_levels: Vec<Severity>,
    /// Absolute position (in the whole rendered chat's token ids) of the first token of the
    /// assistant's own text, where the predictions start.
    pub split_idx_eval: usize,
    /// The annotated span of the first unsafe sentence (the `_loc` splits only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
}

/// One sample of a Stream predictions file over prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamPromptRecord {
    /// Ground truth.
    pub label: Severity,
    /// Per-position levels of the query head over the last user turn; the verdict is the
    /// last entry (the turn's closing `<|im_end|>`), so the list is never empty.
    #[serde(serialize_with = "as_official_indices")]
    pub pred_risk_levels: Vec<Severity>,
}

fn as_official_indices<S: Serializer>(levels: &[Severity], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(levels.iter().map(|l| l.official_index()))
}

/// Reads a Gen predictions file.
pub fn read_gen(reader: impl BufRead) -> Result<Vec<GenRecord>> {
    Ok(read_jsonl(reader, parse_gen)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Reads a Stream predictions file over prompts.
pub fn read_stream_prompt(reader: impl BufRead) -> Result<Vec<StreamPromptRecord>> {
    Ok(read_jsonl(reader, parse_stream_prompt)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Reads a Stream predictions file over responses.
///
/// A file either carries spans or not: once any line has `unsafe_start_index` /
/// `unsafe_end_index`, every `Unsafe`-labelled line must have them (the official latency
/// pass would stop with a `KeyError` there; silently dropping the sample would change N).
pub fn read_stream_response(reader: impl BufRead) -> Result<Vec<StreamResponseRecord>> {
    let records = read_jsonl(reader, parse_stream_response)?;
    if records.iter().any(|(_, r)| r.span.is_some()) {
        if let Some((line, _)) = records
            .iter()
            .find(|(_, r)| r.label == Severity::Unsafe && r.span.is_none())
        {
            return Err(EvalError::MissingField {
                line: *line,
                field: "unsafe_start_index",
            });
        }
    }
    Ok(records.into_iter().map(|(_, r)| r).collect())
}

/// Opens `path` for one of the `read_*` functions, turning the failure into an error that
/// names the file.
pub fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| EvalError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Reads JSON objects, one per non-blank line, each turned into a record by `parse`.
/// Returns the records with their 1-based line numbers.
fn read_jsonl<T>(
    reader: impl BufRead,
    parse: impl Fn(&Fields<'_>) -> Result<T>,
) -> Result<Vec<(usize, T)>> {
    let mut records = Vec::new();
    for (index, text) in reader.lines().enumerate() {
        let line = index + 1;
        let text = text.map_err(|source| EvalError::ReadLine { line, source })?;
        // A UTF-8 byte-order mark is not JSON, but editors on Windows like to add one.
        let text = if line == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            &text
        };
        if text.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(text).map_err(|source| EvalError::Json { line, source })?;
        let Value::Object(map) = &value else {
            return Err(EvalError::NotAnObject { line });
        };
        records.push((line, parse(&Fields { line, map })?));
    }
    Ok(records)
}

fn parse_gen(f: &Fields<'_>) -> Result<GenRecord> {
    Ok(GenRecord {
        label: f.label()?,
        guard_predict: f.string("guard_predict")?,
    })
}

fn parse_stream_prompt(f: &Fields<'_>) -> Result<StreamPromptRecord> {
    let label = f.label()?;
    let pred_risk_levels = f.levels()?;
    if pred_risk_levels.is_empty() {
        return Err(f.invalid(
            "pred_risk_levels",
            "is empty; a prompt's verdict is its last position's level".to_owned(),
        ));
    }
    Ok(StreamPromptRecord {
        label,
        pred_risk_levels,
    })
}

fn parse_stream_response(f: &Fields<'_>) -> Result<StreamResponseRecord> {
    let label = f.label()?;
    let pred_risk_levels = f.levels()?;
    let split_idx_eval = f.position("split_idx_eval")?;
    let start = f.optional_position("unsafe_start_index")?;
    let end = f.optional_position("unsafe_end_index")?;
    let span = match (start, end) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(EvalError::MissingField {
                line: f.line,
                field: "unsafe_end_index",
            })
        }
        (None, Some(_)) => {
            return Err(EvalError::MissingField {
                line: f.line,
                field: "unsafe_start_index",
            })
        }
        (Some(start), Some(end)) if end < start => {
            return Err(f.invalid(
                "unsafe_end_index",
                format!("{end} is before unsafe_start_index {start}"),
            ))
        }
        (Some(start), Some(end)) => Some(Span { start, end }),
    };
    Ok(StreamResponseRecord {
        label,
        pred_risk_levels,
        split_idx_eval,
        span,
    })
}

/// Typed access to the fields of one line, with errors that name the line and the field.
struct Fields<'a> {
    line: usize,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn get(&self, field: &'static str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn require(&self, field: &'static str) -> Result<&Value> {
        self.get(field).ok_or(EvalError::MissingField {
            line: self.line,
            field,
        })
    }

    fn invalid(&self, field: impl Into<String>, message: String) -> EvalError {
        EvalError::InvalidField {
            line: self.line,
            field: field.into(),
            message,
        }
    }

    /// `label`: a level name (the datasets never use indices for labels).
    fn label(&self) -> Result<Severity> {
        match self.require("label")? {
            Value::String(s) => s.parse().map_err(|e| self.invalid("label", format!("{e}"))),
            other => Err(self.invalid(
                "label",
                format!(
                    "expected \"Safe\", \"Unsafe\" or \"Controversial\", got {}",
                    show(other)
                ),
            )),
        }
    }

    fn string(&self, field: &'static str) -> Result<String> {
        match self.require(field)? {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.invalid(field, format!("expected a string, got {}", show(other)))),
        }
    }

    fn position(&self, field: &'static str) -> Result<usize> {
        let value = self.require(field)?;
        token_position(value).map_err(|reason| self.invalid(field, reason))
    }

    fn optional_position(&self, field: &'static str) -> Result<Option<usize>> {
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.position(field).map(Some),
        }
    }

    /// `pred_risk_levels`: a list of level names or official indices.
    fn levels(&self) -> Result<Vec<Severity>> {
        const FIELD: &str = "pred_risk_levels";
        let Value::Array(items) = self.require(FIELD)? else {
            return Err(self.invalid(FIELD, "expected a list of risk levels".to_owned()));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let level = match item {
                    Value::String(s) => s.parse().ok(),
                    Value::Number(n) => n.as_u64().and_then(Severity::from_official_index),
                    _ => None,
                };
                level.ok_or_else(|| {
                    self.invalid(
                        format!("{FIELD}[{i}]"),
                        format!(
                            "expected \"Safe\", \"Unsafe\", \"Controversial\" or 0, 1, 2, got {}",
                            show(item)
                        ),
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::risk::test_levels::{C, S, U};

    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn reads_gen_lines_ignoring_other_fields() {
        let text = concat!(
            r#"{"message": [], "label": "Unsafe", "guard_predict": "Safety: Unsafe\nCategories: Violent"}"#,
            "\n\n",
            r#"{"label": "Safe", "guard_predict": "Safety: Safe"}"#,
            "\n",
        );
        let records = read_gen(text.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].label, U);
        assert_eq!(records[1].guard_predict, "Safety: Safe");
    }

    #[test]
    fn levels_accept_names_and_indices() {
        let text = r#"{"label": "Unsafe", "pred_risk_levels": [0, "Unsafe", 2, "Safe"], "split_idx_eval": 9}"#;
        let records = read_stream_response(text.as_bytes()).unwrap();
        assert_eq!(records[0].pred_risk_levels, [S, U, C, S]);
        assert_eq!(records[0].split_idx_eval, 9);
        assert_eq!(records[0].span, None);
    }

    #[test]
    fn reads_spans() {
        let text = r#"{"label": "Unsafe", "pred_risk_levels": [], "split_idx_eval": 9, "unsafe_start_index": 12, "unsafe_end_index": 12}"#;
        let records = read_stream_response(text.as_bytes()).unwrap();
        assert_eq!(records[0].span, Some(Span { start: 12, end: 12 }));
    }

    #[test]
    fn malformed_json_names_the_line() {
        let text = "{\"label\": \"Safe\", \"guard_predict\": \"\"}\n{not json\n";
        assert!(err(read_gen(text.as_bytes())).starts_with("line 2: invalid JSON"));
    }

    #[test]
    fn non_object_line() {
        assert_eq!(
            err(read_gen("[1, 2]".as_bytes())),
            "line 1: expected a JSON object"
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let text = "\n{\"label\": \"Safe\"}";
        assert_eq!(
            err(read_gen(text.as_bytes())),
            "line 2: missing field `guard_predict`"
        );
        let text = r#"{"label": "Safe", "pred_risk_levels": [0]}"#;
        assert_eq!(
            err(read_stream_response(text.as_bytes())),
            "line 1: missing field `split_idx_eval`"
        );
        let text = r#"{"label": null, "pred_risk_levels": [0]}"#;
        assert_eq!(
            err(read_stream_prompt(text.as_bytes())),
            "line 1: missing field `label`"
        );
    }

    #[test]
    fn unknown_labels_are_rejected() {
        let text = r#"{"label": "unsafe", "guard_predict": ""}"#;
        let message = err(read_gen(text.as_bytes()));
        assert!(
            message.starts_with("line 1: field `label`: unknown risk level \"unsafe\""),
            "{message}"
        );
        let text = r#"{"label": 1, "guard_predict": ""}"#;
        assert!(err(read_gen(text.as_bytes())).starts_with("line 1: field `label`: expected"));
    }

    #[test]
    fn unknown_levels_name_the_index() {
        let text = r#"{"label": "Safe", "pred_risk_levels": [0, 1, 3]}"#;
        let message = err(read_stream_prompt(text.as_bytes()));
        assert!(
            message.starts_with("line 1: field `pred_risk_levels[2]`:"),
            "{message}"
        );
        assert!(message.ends_with("got 3"), "{message}");
        let text = r#"{"label": "Safe", "pred_risk_levels": [-1]}"#;
        assert!(err(read_stream_prompt(text.as_bytes())).contains("pred_risk_levels[0]"));
        let text = r#"{"label": "Safe", "pred_risk_levels": ["Harmful"]}"#;
        assert!(err(read_stream_prompt(text.as_bytes())).contains("pred_risk_levels[0]"));
        let text = r#"{"label": "Safe", "pred_risk_levels": "Safe"}"#;
        assert!(err(read_stream_prompt(text.as_bytes())).contains("expected a list"));
    }

    #[test]
    fn empty_prompt_predictions_are_an_error() {
        let text = r#"{"label": "Safe", "pred_risk_levels": []}"#;
        assert!(err(read_stream_prompt(text.as_bytes()))
            .starts_with("line 1: field `pred_risk_levels`: is empty"));
    }

    #[test]
    fn bad_positions_and_spans() {
        let base = r#""label": "Unsafe", "pred_risk_levels": [0]"#;
        let cases = [
            (
                format!(r#"{{{base}, "split_idx_eval": -3}}"#),
                "field `split_idx_eval`",
            ),
            (
                format!(r#"{{{base}, "split_idx_eval": 2.5}}"#),
                "field `split_idx_eval`",
            ),
            (
                format!(r#"{{{base}, "split_idx_eval": 2, "unsafe_start_index": 5}}"#),
                "missing field `unsafe_end_index`",
            ),
            (
                format!(
                    r#"{{{base}, "split_idx_eval": 2, "unsafe_start_index": 5, "unsafe_end_index": 4}}"#
                ),
                "field `unsafe_end_index`: 4 is before unsafe_start_index 5",
            ),
        ];
        for (text, expected) in cases {
            let message = err(read_stream_response(text.as_bytes()));
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn unsafe_line_without_span_in_a_loc_file() {
        let text = concat!(
            r#"{"label": "Unsafe", "pred_risk_levels": [], "split_idx_eval": 0, "unsafe_start_index": 1, "unsafe_end_index": 2}"#,
            "\n",
            r#"{"label": "Safe", "pred_risk_levels": [], "split_idx_eval": 0}"#,
            "\n",
            r#"{"label": "Unsafe", "pred_risk_levels": [], "split_idx_eval": 0}"#,
        );
        assert_eq!(
            err(read_stream_response(text.as_bytes())),
            "line 3: missing field `unsafe_start_index`"
        );
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(500);
        let text = format!(r#"{{"label": "Safe", "pred_risk_levels": ["{long}"]}}"#);
        let message = err(read_stream_prompt(text.as_bytes()));
        assert!(message.len() < 200 && message.ends_with("..."), "{message}");
    }

    #[test]
    fn invalid_utf8_is_a_line_error() {
        let bytes: &[u8] = b"{\"label\": \"Safe\", \"guard_predict\": \"\"}\n\xff\xfe\n";
        assert!(err(read_gen(bytes)).starts_with("line 2: cannot read"));
    }

    #[test]
    fn byte_order_mark_is_tolerated() {
        let text = "\u{feff}{\"label\": \"Safe\", \"guard_predict\": \"\"}";
        assert_eq!(read_gen(text.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn missing_file_names_the_path() {
        let message = err(open(Path::new("/nonexistent/predictions.jsonl")));
        assert!(
            message.starts_with("cannot read /nonexistent/predictions.jsonl"),
            "{message}"
        );
    }

    #[test]
    fn records_serialize_in_the_official_format() {
        let record = StreamResponseRecord {
            label: U,
            pred_risk_levels: vec![S, U, C],
            split_idx_eval: 4,
            span: Some(Span { start: 5, end: 6 }),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"label":"Unsafe","pred_risk_levels":[0,1,2],"split_idx_eval":4,"unsafe_start_index":5,"unsafe_end_index":6}"#
        );
        let record = StreamResponseRecord {
            span: None,
            ..record
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(
            text,
            r#"{"label":"Unsafe","pred_risk_levels":[0,1,2],"split_idx_eval":4}"#
        );
        assert_eq!(read_stream_response(text.as_bytes()).unwrap(), [record]);
    }
}
