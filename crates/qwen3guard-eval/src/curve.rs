//! Threshold sweeps over per-sample scores: precision-recall curves and average precision.
//!
//! Input is one `(score, labelled_unsafe)` pair per sample, where a higher score means "more
//! likely unsafe" (for example the Stream head's Unsafe probability, or Gen's probability of
//! the `Unsafe` token after `Safety:`). At threshold `t` a sample is flagged when
//! `score >= t`. One point is produced per *distinct* score, thresholds strictly decreasing,
//! so recall never decreases along the curve and the last point flags every sample.
//! No synthetic "(recall 0, precision 1)" point is added: every point is a threshold that
//! can actually be used.

use std::cmp::Ordering;

use crate::error::{EvalError, Result};
use crate::metrics::Confusion;

/// The classification obtained at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Samples with `score >= threshold` are flagged.
    pub threshold: f32,
    /// The counts at this threshold (precision, recall and F1 follow from them, with the
    /// crate's zero-denominator convention).
    pub counts: Confusion,
}

impl CurvePoint {
    /// Precision at this threshold.
    pub fn precision(&self) -> f64 {
        self.counts.precision()
    }

    /// Recall at this threshold.
    pub fn recall(&self) -> f64 {
        self.counts.recall()
    }

    /// F1 at this threshold.
    pub fn f1(&self) -> f64 {
        self.counts.f1()
    }
}

/// Sweeps the threshold over every distinct score, highest first.
///
/// Returns an empty curve for no samples. A NaN score is an error (it has no place in the
/// order); infinities are ordinary scores. `-0.0` and `0.0` are the same threshold.
pub fn threshold_sweep(samples: &[(f32, bool)]) -> Result<Vec<CurvePoint>> {
    if let Some(index) = samples.iter().position(|(score, _)| score.is_nan()) {
        return Err(EvalError::NanScore { index });
    }
    let positives = samples.iter().filter(|(_, unsafe_)| *unsafe_).count();
    let negatives = samples.len() - positives;

    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));

    let mut points = Vec::new();
    let (mut tp, mut fp) = (0, 0);
    let mut i = 0;
    while i < sorted.len() {
        let threshold = sorted[i].0;
        // All samples tied at this score are flagged together.
        while i < sorted.len() && sorted[i].0 == threshold {
            if sorted[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push(CurvePoint {
            threshold,
            counts: Confusion {
                true_positives: tp,
                false_positives: fp,
                false_negatives: positives - tp,
                true_negatives: negatives - fp,
            },
        });
    }
    Ok(points)
}

/// Average precision: the step-wise area under the precision-recall curve,
/// `sum_k (R_k - R_{k-1}) * P_k` over the sweep's points with `R_0 = 0`. 0.0 when there are
/// no points or no positives.
pub fn average_precision(points: &[CurvePoint]) -> f64 {
    let mut previous_recall = 0.0;
    let mut area = 0.0;
    for point in points {
        let recall = point.recall();
        area += (recall - previous_recall) * point.precision();
        previous_recall = recall;
    }
    area
}

/// The point with the highest F1 (the highest threshold among ties), or `None` for an empty
/// curve.
pub fn best_f1(points: &[CurvePoint]) -> Option<&CurvePoint> {
    points
        .iter()
        .fold(None, |best: Option<&CurvePoint>, p| match best {
            Some(b) if b.f1() >= p.f1() => Some(b),
            _ => Some(p),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: [(f32, bool); 6] = [
        (0.3, true),
        (0.8, false),
        (0.9, true),
        (0.1, false),
        (0.7, true),
        (0.7, false),
    ];

    fn summary(points: &[CurvePoint]) -> Vec<(f32, usize, usize)> {
        points
            .iter()
            .map(|p| {
                (
                    p.threshold,
                    p.counts.true_positives,
                    p.counts.false_positives,
                )
            })
            .collect()
    }

    #[test]
    fn known_small_example() {
        let points = threshold_sweep(&EXAMPLE).unwrap();
        assert_eq!(
            summary(&points),
            [
                (0.9, 1, 0),
                (0.8, 1, 1),
                (0.7, 2, 2),
                (0.3, 3, 2),
                (0.1, 3, 3)
            ]
        );
        let pr: Vec<(f64, f64)> = points.iter().map(|p| (p.precision(), p.recall())).collect();
        let expected = [
            (1.0, 1.0 / 3.0),
            (0.5, 1.0 / 3.0),
            (0.5, 2.0 / 3.0),
            (0.6, 1.0),
            (0.5, 1.0),
        ];
        for ((p, r), (ep, er)) in pr.iter().zip(expected) {
            assert!((p - ep).abs() < 1e-12 && (r - er).abs() < 1e-12, "{pr:?}");
        }
        // Counts stay consistent: every sample is in exactly one cell.
        assert!(points.iter().all(|p| p.counts.total() == EXAMPLE.len()));
        // AP = 1/3 * 1 + 0 * 0.5 + 1/3 * 0.5 + 1/3 * 0.6 + 0 * 0.5 = 0.7.
        assert!((average_precision(&points) - 0.7).abs() < 1e-12);
        // F1: 0.5, 0.4, 0.571.., 0.75, 0.666..: best at 0.3.
        assert_eq!(best_f1(&points).map(|p| p.threshold), Some(0.3));
    }

    #[test]
    fn thresholds_strictly_decrease_and_recall_never_does() {
        let samples: Vec<(f32, bool)> = (0..200)
            .map(|i| (((i * 37) % 23) as f32 / 23.0, i % 3 == 0))
            .collect();
        let points = threshold_sweep(&samples).unwrap();
        assert!(points.windows(2).all(|w| w[0].threshold > w[1].threshold));
        assert!(points.windows(2).all(|w| w[0].recall() <= w[1].recall()));
        let last = points.last().unwrap();
        assert_eq!(last.counts.flagged(), samples.len());
        assert_eq!(last.recall(), 1.0);
    }

    #[test]
    fn ties_and_signed_zero_form_one_threshold() {
        let points = threshold_sweep(&[(0.0, true), (-0.0, false), (0.0, false)]).unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].counts.flagged(), 3);
    }

    #[test]
    fn empty_and_degenerate_inputs() {
        assert!(threshold_sweep(&[]).unwrap().is_empty());
        assert_eq!(average_precision(&[]), 0.0);
        assert!(best_f1(&[]).is_none());
        // No positives: precision and recall 0 everywhere, AP 0.
        let points = threshold_sweep(&[(0.5, false), (0.2, false)]).unwrap();
        assert_eq!(average_precision(&points), 0.0);
        // Infinities are ordinary scores.
        let points = threshold_sweep(&[(f32::INFINITY, true), (f32::NEG_INFINITY, false)]).unwrap();
        assert_eq!(
            summary(&points),
            [(f32::INFINITY, 1, 0), (f32::NEG_INFINITY, 1, 1)]
        );
        assert_eq!(average_precision(&points), 1.0);
    }

    #[test]
    fn nan_is_rejected_with_its_index() {
        let err = threshold_sweep(&[(0.1, true), (f32::NAN, false)]).unwrap_err();
        assert_eq!(err.to_string(), "sample 1: score is NaN");
    }
}
