//! Writing a report directory: `summary.md` and the SVG charts it links.
//!
//! The charts are [`Chart::for_report`] (strict vs loose precision / recall / F1, and the
//! latency histogram for Stream `_loc` files) plus, when every line of the predictions file
//! carries an `unsafe_score` (files written by `eval run` do), a precision-recall curve of
//! the threshold sweep over those scores, with a table of the sweep appended to the summary.
//! What `unsafe_score` is for each kind is described in [`crate::run`].

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::curve::{average_precision, best_f1, threshold_sweep, CurvePoint};
use crate::error::{EvalError, Result as EvalResult};
use crate::metrics::Confusion;
use crate::predictions;
use crate::report::{markdown_summary, Chart};
use crate::score::{Kind, ScoreReport};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file of the report could not be written.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The scores could not be swept.
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// Reads `(unsafe_score, labelled Unsafe)` from every line of a predictions file, or `None`
/// when some line has no `unsafe_score` (files from other tools).
pub fn read_sample_scores(path: &Path) -> EvalResult<Option<Vec<(f32, bool)>>> {
    sample_scores(predictions::open(path)?)
}

/// [`read_sample_scores`] on a reader.
pub fn sample_scores(reader: impl BufRead) -> EvalResult<Option<Vec<(f32, bool)>>> {
    let mut scores = Vec::new();
    for (index, text) in reader.lines().enumerate() {
        let line = index + 1;
        let text = text.map_err(|source| EvalError::ReadLine { line, source })?;
        if text.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(&text).map_err(|source| EvalError::Json { line, source })?;
        let Some(score) = value.get("unsafe_score").and_then(Value::as_f64) else {
            return Ok(None);
        };
        let labelled_unsafe = value.get("label").and_then(Value::as_str) == Some("Unsafe");
        scores.push((score as f32, labelled_unsafe));
    }
    Ok(Some(scores))
}

/// What the per-sample score of `kind` is, in one sentence.
pub fn score_meaning(kind: Kind) -> &'static str {
    match kind {
        Kind::Gen => {
            "P(Unsafe) + P(Controversial) of the label token after `Safety:` (strict reading)"
        }
        Kind::StreamResponse => {
            "the debounced pair minimum: the largest min(q[i-1], q[i]) over consecutive evaluated \
             positions, q = P(Unsafe) + P(Controversial) of the response head; flagged at t \
             means two positions in a row reach t, the official two-in-a-row rule"
        }
        Kind::StreamPrompt => {
            "P(Unsafe) + P(Controversial) of the query head at the `<|im_end|>` closing the user \
             turn"
        }
    }
}

/// Writes `summary.md`, `modes.svg`, `latency.svg` (Stream `_loc` only) and `pr-curve.svg`
/// (when `scores` are given) into `dir`, creating it. Returns the files written.
pub fn write_report(
    dir: &Path,
    title: &str,
    report: &ScoreReport,
    scores: Option<&[(f32, bool)]>,
) -> Result<Vec<PathBuf>, ReportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut charts = Chart::for_report(report);
    let sweep = match scores {
        Some(scores) if !scores.is_empty() => Some(threshold_sweep(scores)?),
        _ => None,
    };
    if let Some(points) = &sweep {
        charts.push(Chart::precision_recall(points));
    }
    let mut markdown = markdown_summary(title, report, &charts);
    markdown.push_str(&sweep_section(report.kind, scores, sweep.as_deref()));
    let mut written = Vec::new();
    for chart in &charts {
        let path = dir.join(&chart.file_name);
        std::fs::write(&path, &chart.svg).map_err(io(&path))?;
        written.push(path);
    }
    let path = dir.join("summary.md");
    std::fs::write(&path, markdown).map_err(io(&path))?;
    written.push(path);
    Ok(written)
}

/// The Markdown section on the threshold sweep.
fn sweep_section(
    kind: Kind,
    scores: Option<&[(f32, bool)]>,
    points: Option<&[CurvePoint]>,
) -> String {
    let mut md = String::from("\n## Threshold sweep\n\n");
    let (Some(scores), Some(points)) = (scores, points) else {
        md.push_str(
            "No sweep: the predictions file has no per-sample `unsafe_score` (files written by \
             `qwen3guard eval run` have one).\n",
        );
        return md;
    };
    md.push_str(&format!(
        "Per-sample score: {}. A sample is flagged when its score is at least the threshold.\n\n",
        score_meaning(kind)
    ));
    md.push_str(&format!(
        "Average precision: **{:.4}**.",
        average_precision(points)
    ));
    if let Some(best) = best_f1(points) {
        md.push_str(&format!(
            " Best F1 **{:.4}** at threshold {:.4} (precision {:.4}, recall {:.4}).",
            best.f1(),
            best.threshold,
            best.precision(),
            best.recall()
        ));
    }
    md.push_str("\n\n| threshold | flagged | precision | recall | F1 |\n| ---: | ---: | ---: | ---: | ---: |\n");
    for tenth in 1..=9 {
        let t = tenth as f32 / 10.0;
        let c = Confusion::from_pairs(scores.iter().map(|&(s, unsafe_)| (s >= t, unsafe_)));
        md.push_str(&format!(
            "| {t:.1} | {} | {:.4} | {:.4} | {:.4} |\n",
            c.flagged(),
            c.precision(),
            c.recall(),
            c.f1()
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::score_reader;

    #[test]
    fn scores_are_read_or_absent() {
        let text = "{\"label\": \"Unsafe\", \"unsafe_score\": 0.5}\n\n{\"label\": \"Safe\", \"unsafe_score\": 0.25}\n";
        assert_eq!(
            sample_scores(text.as_bytes()).unwrap(),
            Some(vec![(0.5, true), (0.25, false)])
        );
        let text = "{\"label\": \"Unsafe\", \"unsafe_score\": 0.5}\n{\"label\": \"Safe\"}\n";
        assert_eq!(sample_scores(text.as_bytes()).unwrap(), None);
        assert!(sample_scores("{oops".as_bytes()).is_err());
    }

    #[test]
    fn report_directory_has_summary_and_charts() {
        let dir = std::env::temp_dir().join(format!("qwen3guard-publish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let text = concat!(
            r#"{"label": "Unsafe", "guard_predict": "Safety: Unsafe", "unsafe_score": 0.9}"#,
            "\n",
            r#"{"label": "Safe", "guard_predict": "Safety: Safe", "unsafe_score": 0.2}"#,
            "\n",
        );
        let report = score_reader(Kind::Gen, text.as_bytes()).unwrap();
        let scores = sample_scores(text.as_bytes()).unwrap().unwrap();
        let files = write_report(&dir, "Gen test", &report, Some(&scores)).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["modes.svg", "pr-curve.svg", "summary.md"]);
        let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(md.contains("(pr-curve.svg)"), "{md}");
        assert!(md.contains("Average precision: **1.0000**"), "{md}");
        assert!(
            md.contains("| 0.5 | 1 | 1.0000 | 1.0000 | 1.0000 |"),
            "{md}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
