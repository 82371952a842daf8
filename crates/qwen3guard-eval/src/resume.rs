//! Resumable JSON-lines outputs: what an interrupted run already wrote, so that running the
//! same command again does only the rest.
//!
//! Every line carries an `id`. [`existing`] removes a last line cut short by the
//! interruption (no final newline; each line is written and flushed whole, so at most one
//! can be partial), then reads the ids of the others. Any other unreadable line, a line
//! without an `id`, a repeated id, or a line the caller's check refuses stops with the line
//! named, rather than mixing the output of two runs. Both `eval run` and
//! `qwen3guard reward` resume this way.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::dataset::id_key;

/// What an existing output holds.
#[derive(Debug, Default)]
pub struct Existing {
    /// The ids of its complete lines.
    pub ids: HashSet<String>,
    /// Whether a partial last line was removed.
    pub dropped_partial_line: bool,
}

/// Why an existing output cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// It could not be read or truncated.
    #[error("cannot resume {}", path.display())]
    Io {
        /// The output.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not one this run wrote.
    #[error("{}, line {line}: {message}", path.display())]
    Line {
        /// The output.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Reads the ids already in `path` (none when it does not exist), after removing a
/// partial last line. `check` sees each line and its id key and may refuse it with a
/// reason; `writer` names the command that writes such files, for the messages.
pub fn existing(
    path: &Path,
    writer: &str,
    mut check: impl FnMut(&Value, &str) -> Result<(), String>,
) -> Result<Existing, ResumeError> {
    let io = |source| ResumeError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::default()),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let dropped_partial_line = complete < bytes.len();
    if dropped_partial_line {
        file.set_len(complete as u64).map_err(io)?;
        file.seek(SeekFrom::Start(complete as u64)).map_err(io)?;
    }
    let text = String::from_utf8_lossy(&bytes[..complete]);
    let mut ids = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let problem = |message: String| ResumeError::Line {
            path: path.to_owned(),
            line: n + 1,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            problem(format!(
                "not a JSON line ({e}); was it written by `{writer}`? Remove it or choose another --out"
            ))
        })?;
        let Some(id) = value.get("id").filter(|v| v.is_string() || v.is_number()) else {
            return Err(problem(format!(
                "has no `id`; it was not written by `{writer}`, so it cannot be resumed"
            )));
        };
        let key = id_key(id);
        check(&value, &key).map_err(problem)?;
        if !ids.insert(key.clone()) {
            return Err(problem(format!("id {key} appears twice")));
        }
    }
    Ok(Existing {
        ids,
        dropped_partial_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, content: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("qwen3guard-resume-{name}-{}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_partial_last_line_is_removed_and_complete_ids_are_kept() {
        let path = scratch("partial", "{\"id\": 1}\n{\"id\": \"b\"}\n{\"id\": 3, \"rew");
        let found = existing(&path, "test", |_, _| Ok(())).unwrap();
        assert!(found.dropped_partial_line);
        assert_eq!(found.ids, HashSet::from(["1".to_string(), "b".to_string()]));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\": 1}\n{\"id\": \"b\"}\n"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn foreign_or_repeated_lines_stop_with_the_line_named() {
        for (content, expected) in [
            ("{\"id\": 1}\nnot json\n", "line 2: not a JSON line"),
            ("{\"x\": 1}\n", "line 1: has no `id`"),
            ("{\"id\": 1}\n{\"id\": 1}\n", "line 2: id 1 appears twice"),
            ("{\"id\": 9}\n", "line 1: refused 9"),
        ] {
            let path = scratch("foreign", content);
            let err = existing(&path, "test", |_, key| match key {
                "9" => Err(format!("refused {key}")),
                _ => Ok(()),
            })
            .unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            std::fs::remove_file(path).unwrap();
        }
        let missing = std::env::temp_dir().join("qwen3guard-resume-none");
        assert!(existing(&missing, "test", |_, _| Ok(()))
            .unwrap()
            .ids
            .is_empty());
    }
}
