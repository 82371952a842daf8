//! Softmax over one row of attention scores, with a vectorised exponential.
//!
//! Attention over a few hundred cached positions takes tens of millions of exponentials
//! per forward pass; libm's scalar `expf` then costs as much as the score products. The
//! AVX-512 version below reduces `x` to `n ln2 + r` with `|r| <= ln2 / 2`, evaluates a
//! degree-6 polynomial for `e^r` (relative error about 1e-7, the rounding of f32) and
//! scales by `2^n` with `vscalefps`, which also underflows very negative inputs to 0.

/// Replaces `row` with `exp(row - max(row))` and returns `1 / sum` of the new values, the
/// factor that normalises it (applied later, to the weighted sum of values, so that the
/// row is scaled once per output instead of once per score).
pub fn exp_normalizer(row: &mut [f32]) -> f32 {
    if row.is_empty() {
        return 0.0;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: feature detected at run time; the slice bounds are checked inside.
            return 1.0 / unsafe { avx512::exp_shifted_sum(row, max) };
        }
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    1.0 / sum
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Taylor coefficients of `e^r`: 1/k! for k = 6 down to 0.
    const COEFFS: [f32; 7] = [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;

    /// `e^x` on 16 lanes, for `x <= 0` (scores minus their maximum).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp(x: __m512) -> __m512 {
        // Below -104 the result is 0 in f32; clamping keeps `n` in scalef's range.
        let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(COEFFS[0]);
        for &c in &COEFFS[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// `row[i] = e^(row[i] - max)`; returns the sum.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_shifted_sum(row: &mut [f32], max: f32) -> f32 {
        let shift = _mm512_set1_ps(max);
        let mut sum = _mm512_setzero_ps();
        let mut chunks = row.chunks_exact_mut(16);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            let e = exp(_mm512_sub_ps(_mm512_loadu_ps(p), shift));
            _mm512_storeu_ps(p, e);
            sum = _mm512_add_ps(sum, e);
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            // A masked load/store handles the last partial vector; masked-off lanes are 0.
            let mask: __mmask16 = (1u16 << tail.len()) - 1;
            let p = tail.as_mut_ptr();
            let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p), shift));
            let e = _mm512_maskz_mov_ps(mask, e);
            _mm512_mask_storeu_ps(p, mask, e);
            sum = _mm512_add_ps(sum, e);
        }
        _mm512_reduce_add_ps(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_scalar_softmax() {
        for len in [1, 5, 16, 17, 100] {
            let scores: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 1.7)
                .chain(std::iter::once(-1000.0))
                .collect();
            let mut ours = scores.clone();
            let inv = exp_normalizer(&mut ours);
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exact: Vec<f64> = scores.iter().map(|&s| ((s - max) as f64).exp()).collect();
            let total: f64 = exact.iter().sum();
            for (a, e) in ours.iter().zip(&exact) {
                let (a, e) = (*a as f64 * inv as f64, e / total);
                assert!((a - e).abs() <= 1e-6 * e.max(1e-30) + 1e-12, "{len}: {a} vs {e}");
            }
        }
    }
}
