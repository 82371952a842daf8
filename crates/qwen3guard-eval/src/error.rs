//! The one error type of the evaluation library.
//!
//! Every variant that comes from an input file names the 1-based line and, where one is at
//! fault, the JSON field, so a user can open the file and fix it without reading our code.
//! Variants that wrap another error expose it as `source()` and leave it out of their own
//! message, so printing the chain (`{:#}` with anyhow) shows each cause once.

use std::path::PathBuf;

/// Everything that can go wrong while reading or scoring predictions.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The predictions file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A line of a JSONL stream could not be read (an I/O error in the middle of the stream,
    /// or bytes that are not UTF-8).
    #[error("line {line}: cannot read")]
    ReadLine {
        /// 1-based line number.
        line: usize,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A line is not a JSON document.
    #[error("line {line}: invalid JSON")]
    Json {
        /// 1-based line number.
        line: usize,
        /// The parser's message (with the column).
        #[source]
        source: serde_json::Error,
    },

    /// A line is valid JSON but not an object.
    #[error("line {line}: expected a JSON object")]
    NotAnObject {
        /// 1-based line number.
        line: usize,
    },

    /// A field the format requires is absent (or `null`).
    #[error("line {line}: missing field `{field}`")]
    MissingField {
        /// 1-based line number.
        line: usize,
        /// The JSON field name.
        field: &'static str,
    },

    /// A field is present but holds something the format does not allow (wrong type, an
    /// unknown label, a negative position, an inverted span, ...).
    #[error("line {line}: field `{field}`: {message}")]
    InvalidField {
        /// 1-based line number.
        line: usize,
        /// The JSON field name; for list items, `name[index]`.
        field: String,
        /// What is wrong, with the offending value.
        message: String,
    },

    /// A per-sample score handed to a curve computation is NaN, which has no place in a
    /// threshold order.
    #[error("sample {index}: score is NaN")]
    NanScore {
        /// 0-based index of the sample in the input slice.
        index: usize,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// A short rendering of an offending JSON value for error messages (long values are cut
/// after 60 characters).
pub(crate) fn show(value: &serde_json::Value) -> String {
    let text = value.to_string();
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// A JSON value read as a token position, or the reason it is not one.
pub(crate) fn token_position(value: &serde_json::Value) -> std::result::Result<usize, String> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            format!(
                "expected a token position (an integer >= 0), got {}",
                show(value)
            )
        })
}
