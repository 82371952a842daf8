//! Human-facing reports: a Markdown summary and SVG charts of a [`ScoreReport`].
//!
//! Nothing here computes a metric; it only presents what [`crate::score`] and
//! [`crate::curve`] computed. The SVG is written by hand ([`svg`]) so the crate needs no
//! plotting dependency and the output is plain, diffable text.

pub mod svg;

use std::fmt::Write as _;

use crate::curve::{average_precision, CurvePoint};
use crate::latency::LatencyBin;
use crate::risk::Mode;
use crate::score::{Kind, ScoreReport};

/// One rendered chart, with the file name reports link it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// Suggested file name, relative to the Markdown file (`modes.svg`, ...).
    pub file_name: String,
    /// Short description, used as the image's alt text.
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

impl Chart {
    /// Precision, recall and F1 bars, strict beside loose (strict only for Gen).
    pub fn modes(report: &ScoreReport) -> Chart {
        let title = "Unsafe-class precision, recall and F1 by mode".to_owned();
        Chart {
            file_name: "modes.svg".into(),
            svg: svg::mode_bars(&title, report),
            title,
        }
    }

    /// Latency-bin histogram; `None` when the report has no latency.
    pub fn latency(report: &ScoreReport) -> Option<Chart> {
        let latency = report.latency.as_ref()?;
        let title = format!(
            "Detection latency ({} unsafe samples)",
            latency.bins.total()
        );
        Some(Chart {
            file_name: "latency.svg".into(),
            svg: svg::latency_histogram(&title, latency),
            title,
        })
    }

    /// Precision-recall curve of a threshold sweep.
    pub fn precision_recall(points: &[CurvePoint]) -> Chart {
        let title = format!(
            "Precision-recall curve (AP {:.4})",
            average_precision(points)
        );
        Chart {
            file_name: "pr-curve.svg".into(),
            svg: svg::pr_curve(&title, points),
            title,
        }
    }

    /// The charts every report has: mode bars, and the latency histogram when there is one.
    pub fn for_report(report: &ScoreReport) -> Vec<Chart> {
        std::iter::once(Chart::modes(report))
            .chain(Chart::latency(report))
            .collect()
    }
}

/// A Markdown summary of `report`: the modes table, the latency table when present, and an
/// image link for each of `charts` (write each chart's `svg` next to the Markdown file under
/// its `file_name`).
pub fn markdown_summary(title: &str, report: &ScoreReport, charts: &[Chart]) -> String {
    let mut md = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let c = report.strict;
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(
        md,
        "{}: {} samples, {} labelled Unsafe. Scores are for the Unsafe class.\n",
        kind_name(report.kind),
        c.total(),
        c.positives()
    );
    md.push_str("| mode | F1 | precision | recall | TP | FP | FN | TN |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for mode in Mode::ALL {
        if let Some(c) = report.counts(mode) {
            let _ = writeln!(
                md,
                "| {} | {:.4} | {:.4} | {:.4} | {} | {} | {} | {} |",
                mode,
                c.f1(),
                c.precision(),
                c.recall(),
                c.true_positives,
                c.false_positives,
                c.false_negatives,
                c.true_negatives
            );
        }
    }
    md.push('\n');
    md.push_str(match report.kind {
        Kind::Gen => "Gen output `Safety: Controversial` counts as Unsafe (the official rule).\n",
        _ => "Strict counts Controversial as Unsafe, loose counts it as Safe (the paper's meaning).\n",
    });

    if let Some(latency) = &report.latency {
        let n = latency.bins.total();
        let _ = writeln!(md, "\n## Detection latency\n");
        let _ = writeln!(
            md,
            "{n} Unsafe samples with an annotated span. `d` is the absolute detection position; \
             late bins count `d - end`.\n"
        );
        md.push_str("| bin | samples | share |\n| --- | ---: | ---: |\n");
        for bin in LatencyBin::ALL {
            let count = latency.bins.count(bin);
            let share = if n == 0 { 0.0 } else { count as f64 / n as f64 };
            let _ = writeln!(
                md,
                "| {} | {} | {:.2}% |",
                bin.label(),
                count,
                100.0 * share
            );
        }
        let _ = writeln!(
            md,
            "\nExact hit rate: **{:.4}**. First-128-tokens stop rate: **{:.4}**.",
            latency.exact_hit_rate, latency.first_128_rate
        );
    }

    if !charts.is_empty() {
        md.push_str("\n## Charts\n\n");
        for chart in charts {
            let _ = writeln!(md, "![{}]({})\n", chart.title, chart.file_name);
        }
    }
    md
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Gen => "Qwen3Guard-Gen",
        Kind::StreamResponse => "Qwen3Guard-Stream on responses",
        Kind::StreamPrompt => "Qwen3Guard-Stream on prompts",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::Span;
    use crate::predictions::{GenRecord, StreamResponseRecord};
    use crate::risk::test_levels::{S, U};
    use crate::score::{score_gen, score_stream_response};

    fn loc_report() -> ScoreReport {
        score_stream_response(&[
            StreamResponseRecord {
                label: U,
                pred_risk_levels: vec![U, U],
                split_idx_eval: 0,
                span: Some(Span { start: 1, end: 1 }),
            },
            StreamResponseRecord {
                label: U,
                pred_risk_levels: vec![S],
                split_idx_eval: 0,
                span: Some(Span { start: 0, end: 0 }),
            },
        ])
    }

    #[test]
    fn markdown_has_both_modes_latency_and_links() {
        let report = loc_report();
        let charts = Chart::for_report(&report);
        assert_eq!(charts.len(), 2);
        let md = markdown_summary("Stream-4B on response_loc", &report, &charts);
        assert!(md.starts_with("# Stream-4B on response_loc\n"));
        assert!(
            md.contains("| strict | 0.6667 | 1.0000 | 0.5000 | 1 | 0 | 1 | 0 |"),
            "{md}"
        );
        assert!(md.contains("| loose |"));
        assert!(md.contains("| Hit | 1 | 50.00% |"), "{md}");
        assert!(md.contains("| Safe | 1 | 50.00% |"), "{md}");
        assert!(md.contains("Exact hit rate: **0.5000**"));
        assert!(
            md.contains("![Detection latency (2 unsafe samples)](latency.svg)"),
            "{md}"
        );
    }

    #[test]
    fn gen_markdown_has_no_loose_row_and_no_latency() {
        let report = score_gen(&[GenRecord {
            label: U,
            guard_predict: "Safety: Unsafe".into(),
        }]);
        let md = markdown_summary("Gen", &report, &Chart::for_report(&report));
        assert!(!md.contains("| loose |"));
        assert!(!md.contains("Detection latency"));
        assert!(md.contains("(modes.svg)"));
    }
}
