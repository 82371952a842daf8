//! Reading a dataset file into rows (JSON objects), whatever its container.
//!
//! | extension | read as |
//! | --- | --- |
//! | `.jsonl`, `.ndjson` | one JSON object per line; blank lines are skipped |
//! | `.jsonl.gz` | the same, gzip-compressed (how OpenAI's moderation set is published) |
//! | `.json` | an array of objects, or an object whose values are arrays of objects (HarmBench's classifier validation set, keyed by behaviour); such groups are read in file order and each row gets the key as `_group` |
//! | `.parquet` | every row of every row group, each column a field; nested columns (a list of `{role, content}`) become JSON arrays and objects. Uncompressed or Snappy pages only (what Hugging Face datasets write) |
//!
//! CSV is not read: convert it once, for example with
//! `python -c "import pandas as pd; pd.read_csv('in.csv').to_json('out.jsonl', orient='records', lines=True)"`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use super::{DatasetError, Result, RowRef};

/// One row of a dataset file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// Where it is.
    pub at: RowRef,
    /// Its columns.
    pub fields: Map<String, Value>,
}

/// How to convert a CSV or an unsupported Parquet file, for error messages.
const CONVERT_HINT: &str = "convert it to JSONL, e.g. python -c \"import pandas as pd; \
     pd.read_parquet('in.parquet').to_json('out.jsonl', orient='records', lines=True)\"";

/// Reads every row of `path`, choosing the reader by extension.
pub fn read_rows(path: &Path) -> Result<Vec<RawRow>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let io = |source| DatasetError::Io {
        path: path.to_owned(),
        source,
    };
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        read_jsonl(BufReader::new(File::open(path).map_err(io)?))
    } else if name.ends_with(".jsonl.gz") {
        let file = File::open(path).map_err(io)?;
        read_jsonl(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else if name.ends_with(".json") {
        let mut text = String::new();
        File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(io)?;
        read_json(path, &text)
    } else if name.ends_with(".parquet") {
        read_parquet(path)
    } else {
        Err(DatasetError::File {
            path: path.to_owned(),
            message: "unknown dataset file type; expected .jsonl, .jsonl.gz, .json or .parquet \
                      (convert CSV with python -c \"import pandas as pd; \
                      pd.read_csv('in.csv').to_json('out.jsonl', orient='records', lines=True)\")"
                .into(),
        })
    }
}

/// Reads JSON objects, one per non-blank line.
pub fn read_jsonl(reader: impl BufRead) -> Result<Vec<RawRow>> {
    let mut rows = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let at = RowRef {
            index: rows.len(),
            line: Some(n + 1),
        };
        let line = line.map_err(|source| DatasetError::Json {
            at,
            source: serde_json::Error::io(source),
        })?;
        let text = line.trim_start_matches('\u{feff}');
        if text.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(text).map_err(|source| DatasetError::Json { at, source })?;
        rows.push(object(at, value)?);
    }
    Ok(rows)
}

/// Reads a JSON array of objects, or an object of arrays of objects.
fn read_json(path: &Path, text: &str) -> Result<Vec<RawRow>> {
    let whole = RowRef {
        index: 0,
        line: None,
    };
    let value: Value =
        serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|source| {
            DatasetError::File {
                path: path.to_owned(),
                message: format!("invalid JSON: {source}"),
            }
        })?;
    let shape_error = || DatasetError::File {
        path: path.to_owned(),
        message: "expected an array of rows, or an object mapping group names to arrays of \
                  rows (for one object per line, name the file .jsonl)"
            .into(),
    };
    let mut rows = Vec::new();
    match value {
        Value::Array(items) => {
            for item in items {
                let at = RowRef {
                    index: rows.len(),
                    ..whole
                };
                rows.push(object(at, item)?);
            }
        }
        Value::Object(groups) => {
            if !groups.values().all(Value::is_array) || groups.is_empty() {
                return Err(shape_error());
            }
            for (key, group) in groups {
                let Value::Array(items) = group else {
                    unreachable!("checked above")
                };
                for item in items {
                    let at = RowRef {
                        index: rows.len(),
                        ..whole
                    };
                    let mut row = object(at, item)?;
                    row.fields
                        .entry("_group")
                        .or_insert_with(|| Value::String(key.clone()));
                    rows.push(row);
                }
            }
        }
        _ => return Err(shape_error()),
    }
    Ok(rows)
}

/// Reads every row of a Parquet file through the record API.
fn read_parquet(path: &Path) -> Result<Vec<RawRow>> {
    use parquet::file::reader::SerializedFileReader;

    let file = File::open(path).map_err(|source| DatasetError::Io {
        path: path.to_owned(),
        source,
    })?;
    let parquet_error = |e: parquet::errors::ParquetError| DatasetError::File {
        path: path.to_owned(),
        message: format!(
            "cannot read as Parquet: {e} (this build reads uncompressed and Snappy-compressed \
             files; otherwise {CONVERT_HINT})"
        ),
    };
    let reader = SerializedFileReader::new(file).map_err(parquet_error)?;
    let mut rows = Vec::new();
    for row in reader {
        let at = RowRef {
            index: rows.len(),
            line: None,
        };
        let row = row.map_err(parquet_error)?;
        rows.push(object(at, row.to_json_value())?);
    }
    Ok(rows)
}

fn object(at: RowRef, value: Value) -> Result<RawRow> {
    match value {
        Value::Object(fields) => Ok(RawRow { at, fields }),
        _ => Err(DatasetError::NotAnObject { at }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_counts_rows_and_lines_apart() {
        let rows = read_jsonl("{\"a\": 1}\n\n{\"a\": 2}\n".as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1].at,
            RowRef {
                index: 1,
                line: Some(3)
            }
        );
        let err = read_jsonl("{\"a\": 1}\n[1]\n".as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "row 1 (line 2): expected a JSON object");
        let err = read_jsonl("{\"a\": 1}\n\n{oops\n".as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "row 1 (line 3): invalid JSON");
    }

    #[test]
    fn json_groups_are_flattened_with_their_key() {
        let rows = read_json(
            Path::new("x.json"),
            r#"{"b1": [{"g": 1}, {"g": 2}], "b2": [{"g": 3}]}"#,
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].fields["_group"], "b2");
        assert_eq!(rows[2].at.index, 2);
        let err = read_json(Path::new("x.json"), r#"{"a": 1}"#).unwrap_err();
        assert!(
            err.to_string().contains("expected an array of rows"),
            "{err}"
        );
    }

    #[test]
    fn unknown_extensions_suggest_a_conversion() {
        let err = read_rows(Path::new("data.csv")).unwrap_err();
        assert!(err.to_string().contains("read_csv"), "{err}");
    }
}
