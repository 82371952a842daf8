//! Hand-written SVG charts: grouped bars, a histogram and a precision-recall curve.
//!
//! Every chart is a fixed 640 x 400 canvas with a plot frame, a title, y-axis ticks and
//! gridlines. Bars and points carry a `<title>` child so viewers show the exact value on
//! hover. Text from callers is XML-escaped.

use std::fmt::Write as _;

use crate::curve::CurvePoint;
use crate::latency::{LatencyBin, LatencyReport};
use crate::risk::Mode;
use crate::score::ScoreReport;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 64.0;
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

const STRICT_COLOR: &str = "#c0392b";
const LOOSE_COLOR: &str = "#2e86c1";
const LATENCY_COLOR: &str = "#7d3c98";
const CURVE_COLOR: &str = "#1e8449";

/// Precision, recall and F1 of the unsafe class as grouped bars, one series per mode.
pub fn mode_bars(title: &str, report: &ScoreReport) -> String {
    let series: Vec<Series> = Mode::ALL
        .iter()
        .filter_map(|&mode| {
            let prf = report.prf(mode)?;
            Some(Series {
                name: mode.as_str(),
                color: if mode == Mode::Strict {
                    STRICT_COLOR
                } else {
                    LOOSE_COLOR
                },
                values: vec![prf.precision, prf.recall, prf.f1],
            })
        })
        .collect();
    let ticks: Vec<f64> = (0..=4).map(|i| f64::from(i) * 0.25).collect();
    bar_chart(&BarChart {
        title,
        categories: &["precision", "recall", "F1"],
        series: &series,
        ticks: &ticks,
        format: |v| format!("{v:.4}"),
    })
}

/// Sample counts per latency bin, in the official bin order.
pub fn latency_histogram(title: &str, latency: &LatencyReport) -> String {
    let counts: Vec<usize> = LatencyBin::ALL
        .iter()
        .map(|&b| latency.bins.count(b))
        .collect();
    let labels: Vec<&str> = LatencyBin::ALL.iter().map(|b| b.label()).collect();
    let ticks = count_ticks(counts.iter().copied().max().unwrap_or(0));
    let series = [Series {
        name: "samples",
        color: LATENCY_COLOR,
        values: counts.iter().map(|&c| c as f64).collect(),
    }];
    bar_chart(&BarChart {
        title,
        categories: &labels,
        series: &series,
        ticks: &ticks,
        format: |v| format!("{v:.0}"),
    })
}

/// Precision (y) against recall (x) along a threshold sweep, as a polyline with a marker at
/// each threshold.
pub fn pr_curve(title: &str, points: &[CurvePoint]) -> String {
    let mut svg = open(title);
    let ticks: Vec<f64> = (0..=5).map(|i| f64::from(i) * 0.2).collect();
    y_axis(&mut svg, &ticks, 1.0);
    for &t in &ticks {
        let x = LEFT + t * PLOT_W;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/>"##,
            TOP + PLOT_H
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{t:.1}</text>"#,
            TOP + PLOT_H + 18.0
        );
    }
    frame(&mut svg);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">recall</text>"#,
        LEFT + PLOT_W / 2.0,
        HEIGHT - 16.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">precision</text>"#,
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0
    );
    if points.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no samples</text>"#,
            LEFT + PLOT_W / 2.0,
            TOP + PLOT_H / 2.0
        );
    } else {
        let coords: Vec<String> = points
            .iter()
            .map(|p| {
                let (x, y) = pr_xy(p);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline class="curve" fill="none" stroke="{CURVE_COLOR}" stroke-width="2" points="{}"/>"#,
            coords.join(" ")
        );
        for p in points {
            let (x, y) = pr_xy(p);
            let _ = writeln!(
                svg,
                r#"<circle class="point" cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{CURVE_COLOR}"><title>threshold {}: precision {:.4}, recall {:.4}</title></circle>"#,
                p.threshold,
                p.precision(),
                p.recall()
            );
        }
    }
    close(svg)
}

/// Canvas coordinates of a curve point (recall right, precision up).
fn pr_xy(p: &CurvePoint) -> (f64, f64) {
    (
        LEFT + p.recall() * PLOT_W,
        TOP + (1.0 - p.precision()) * PLOT_H,
    )
}

/// Escapes text for SVG/XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// One coloured series of a bar chart: a value per category.
struct Series {
    name: &'static str,
    color: &'static str,
    values: Vec<f64>,
}

struct BarChart<'a> {
    title: &'a str,
    categories: &'a [&'a str],
    series: &'a [Series],
    /// Y-axis ticks from 0; the last one is the top of the axis.
    ticks: &'a [f64],
    /// How a value is printed above its bar and in its tooltip.
    format: fn(f64) -> String,
}

fn bar_chart(chart: &BarChart<'_>) -> String {
    let mut svg = open(chart.title);
    let y_max = chart
        .ticks
        .last()
        .copied()
        .filter(|&m| m > 0.0)
        .unwrap_or(1.0);
    y_axis(&mut svg, chart.ticks, y_max);

    let group_w = PLOT_W / chart.categories.len().max(1) as f64;
    let bar_w = group_w * 0.8 / chart.series.len().max(1) as f64;
    for (i, category) in chart.categories.iter().enumerate() {
        let group_x = LEFT + i as f64 * group_w;
        for (s, series) in chart.series.iter().enumerate() {
            let value = series.values.get(i).copied().unwrap_or(0.0);
            let height = (value / y_max).clamp(0.0, 1.0) * PLOT_H;
            let x = group_x + group_w * 0.1 + s as f64 * bar_w;
            let y = TOP + PLOT_H - height;
            let label = (chart.format)(value);
            let _ = writeln!(
                svg,
                r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{height:.1}" fill="{}"><title>{} {}: {label}</title></rect>"#,
                series.color,
                escape(series.name),
                escape(category)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{label}</text>"#,
                x + bar_w / 2.0,
                y - 4.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            group_x + group_w / 2.0,
            TOP + PLOT_H + 18.0,
            escape(category)
        );
    }
    frame(&mut svg);
    if chart.series.len() > 1 {
        for (s, series) in chart.series.iter().enumerate() {
            let x = LEFT + s as f64 * 90.0;
            let y = HEIGHT - 22.0;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
                y - 10.0,
                series.color
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
                x + 18.0,
                escape(series.name)
            );
        }
    }
    close(svg)
}

/// Count-axis ticks: about five steps of 1, 2 or 5 x 10^k, the top one at or above `max`.
fn count_ticks(max: usize) -> Vec<f64> {
    if max == 0 {
        return vec![0.0, 1.0];
    }
    let raw = max as f64 / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
        .max(1.0); // counts are integers: no fractional ticks
    let steps = (max as f64 / step).ceil() as usize;
    (0..=steps).map(|i| i as f64 * step).collect()
}

fn open(title: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    svg
}

fn close(mut svg: String) -> String {
    svg.push_str("</svg>\n");
    svg
}

/// Horizontal gridlines and labels for `ticks` on an axis from 0 to `y_max`.
fn y_axis(svg: &mut String, ticks: &[f64], y_max: f64) {
    for &t in ticks {
        let y = TOP + PLOT_H - t / y_max * PLOT_H;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/>"##,
            LEFT + PLOT_W
        );
        let label = if y_max <= 1.0 {
            format!("{t:.2}")
        } else {
            format!("{t:.0}")
        };
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            LEFT - 6.0,
            y + 4.0
        );
    }
}

fn frame(svg: &mut String) {
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT:.1}" y="{TOP:.1}" width="{PLOT_W:.1}" height="{PLOT_H:.1}" fill="none" stroke="#333"/>"##
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curve::threshold_sweep;
    use crate::latency::LatencyBins;
    use crate::predictions::{GenRecord, StreamResponseRecord};
    use crate::risk::test_levels::{C, S, U};
    use crate::score::{score_gen, score_stream_response};

    /// A minimal well-formedness check: every opened element is closed, in order.
    fn assert_balanced(svg: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unterminated tag") + start;
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or(""));
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert!(svg.starts_with("<svg xmlns=") && svg.ends_with("</svg>\n"));
    }

    fn bars(svg: &str) -> usize {
        svg.matches(r#"<rect class="bar""#).count()
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a & "b">'"#),
            "&lt;a &amp; &quot;b&quot;&gt;&apos;"
        );
    }

    #[test]
    fn mode_bars_have_one_series_per_mode() {
        let stream = score_stream_response(&[StreamResponseRecord {
            label: U,
            pred_risk_levels: vec![C, C],
            split_idx_eval: 0,
            span: None,
        }]);
        let svg = mode_bars("modes <stream>", &stream);
        assert_balanced(&svg);
        assert_eq!(bars(&svg), 6);
        assert!(svg.contains("modes &lt;stream&gt;"));
        // Strict precision is 1.0: a full-height bar.
        assert!(
            svg.contains(&format!(r#"height="{PLOT_H:.1}" fill="{STRICT_COLOR}""#)),
            "{svg}"
        );
        let gen = score_gen(&[GenRecord {
            label: S,
            guard_predict: String::new(),
        }]);
        let svg = mode_bars("gen", &gen);
        assert_balanced(&svg);
        assert_eq!(bars(&svg), 3);
        assert!(!svg.contains("loose"));
    }

    #[test]
    fn histogram_has_a_bar_per_bin() {
        let bins = LatencyBins {
            ahead: 39,
            hit: 699,
            late_1_32: 21,
            safe: 51,
            ..Default::default()
        };
        let svg = latency_histogram("latency", &bins.report());
        assert_balanced(&svg);
        assert_eq!(bars(&svg), 8);
        assert!(svg.contains(">800</text>"), "axis top rounds up to 800");
        assert!(svg.contains("&gt;256"));
    }

    #[test]
    fn empty_histogram_still_renders() {
        let svg = latency_histogram("none", &LatencyBins::default().report());
        assert_balanced(&svg);
        assert_eq!(bars(&svg), 8);
    }

    #[test]
    fn count_ticks_are_round() {
        assert_eq!(count_ticks(0), [0.0, 1.0]);
        assert_eq!(count_ticks(3), [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(count_ticks(699), [0.0, 200.0, 400.0, 600.0, 800.0]);
        assert_eq!(count_ticks(100), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
    }

    #[test]
    fn pr_curve_polyline_follows_the_points() {
        let points = threshold_sweep(&[(0.9, true), (0.1, false)]).unwrap();
        let svg = pr_curve("curve", &points);
        assert_balanced(&svg);
        // (recall 1, precision 1) then (recall 1, precision 0.5).
        let top_right = format!("{:.1},{:.1}", LEFT + PLOT_W, TOP);
        let mid_right = format!("{:.1},{:.1}", LEFT + PLOT_W, TOP + PLOT_H / 2.0);
        assert!(
            svg.contains(&format!(r#"points="{top_right} {mid_right}""#)),
            "{svg}"
        );
        assert_eq!(svg.matches("<circle").count(), 2);
    }

    #[test]
    fn empty_pr_curve_says_so() {
        let svg = pr_curve("curve", &[]);
        assert_balanced(&svg);
        assert!(svg.contains("no samples") && !svg.contains("<polyline"));
    }
}
