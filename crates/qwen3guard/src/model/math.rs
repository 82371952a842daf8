//! Elementwise math on f32 rows with a vectorised exponential: softmax numerators for
//! attention and the SiLU-gated product of the MLP.
//!
//! Attention over a few hundred cached positions takes tens of millions of exponentials
//! per forward pass, and the MLP one per intermediate feature and position; libm's scalar
//! `expf` then costs as much as the products around it. The AVX-512 version below reduces
//! `x` to `n ln2 + r` with `|r| <= ln2 / 2`, evaluates a degree-6 polynomial for `e^r`
//! (relative error about 1e-7, the rounding of f32) and scales by `2^n` with `vscalefps`,
//! which also takes very negative inputs to 0 and very positive ones to infinity.

/// Replaces `row` with `exp(scale * (row - max(row)))` (the softmax numerators of
/// `scale * row`, for `scale > 0`) and returns `1 / sum` of the new values, the factor that
/// normalises it (applied later, to the weighted sum of values, so that the row is scaled
/// once per output instead of once per score).
pub fn exp_normalizer(row: &mut [f32], scale: f32) -> f32 {
    if row.is_empty() {
        return 0.0;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: feature detected at run time; the slice bounds are checked inside.
            return 1.0 / unsafe { avx512::exp_shifted_sum(row, max, scale) };
        }
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = ((*v - max) * scale).exp();
        sum += *v;
    }
    1.0 / sum
}

/// `out[i] = silu(gate[i]) * up[i]`, with `silu(g) = g / (1 + e^-g)`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: feature detected at run time; the slice bounds are checked inside.
            unsafe { avx512::silu_mul(gate, up, out) };
            return;
        }
    }
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
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

    /// `e^x` on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp(x: __m512) -> __m512 {
        // Outside [-104, 89] the result is 0 or infinity in f32; clamping keeps `n` in
        // scalef's range.
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
            _mm512_set1_ps(89.0),
        );
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

    /// `row[i] = e^((row[i] - max) * scale)`; returns the sum.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_shifted_sum(row: &mut [f32], max: f32, scale: f32) -> f32 {
        let (shift, scale) = (_mm512_set1_ps(max), _mm512_set1_ps(scale));
        let mut sum = _mm512_setzero_ps();
        let mut chunks = row.chunks_exact_mut(16);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            let e = exp(_mm512_mul_ps(
                _mm512_sub_ps(_mm512_loadu_ps(p), shift),
                scale,
            ));
            _mm512_storeu_ps(p, e);
            sum = _mm512_add_ps(sum, e);
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            // A masked load/store handles the last partial vector; masked-off lanes are 0.
            let mask: __mmask16 = (1u16 << tail.len()) - 1;
            let p = tail.as_mut_ptr();
            let e = exp(_mm512_mul_ps(
                _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p), shift),
                scale,
            ));
            let e = _mm512_maskz_mov_ps(mask, e);
            _mm512_mask_storeu_ps(p, mask, e);
            sum = _mm512_add_ps(sum, e);
        }
        _mm512_reduce_add_ps(sum)
    }

    /// `silu(g) * u`, 16 lanes at a time, the tail masked.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = out.len();
        assert!(gate.len() >= n && up.len() >= n);
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < n {
            let mask: __mmask16 = if n - i >= 16 {
                !0
            } else {
                (1u16 << (n - i)) - 1
            };
            let g = _mm512_maskz_loadu_ps(mask, gate.as_ptr().add(i));
            let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(i));
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask, _mm512_mul_ps(silu, u));
            i += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silu_mul_matches_the_definition() {
        let gate: Vec<f32> = (0..37)
            .map(|i| (i as f32 - 18.0) * 1.3)
            .chain([-200.0, 200.0])
            .collect();
        let up: Vec<f32> = (0..gate.len()).map(|i| 0.5 + i as f32 * 0.1).collect();
        let mut out = vec![0f32; gate.len()];
        silu_mul(&gate, &up, &mut out);
        for ((&o, &g), &u) in out.iter().zip(&gate).zip(&up) {
            let exact = g as f64 / (1.0 + (-g as f64).exp()) * u as f64;
            assert!(
                (o as f64 - exact).abs() <= 1e-6 * exact.abs().max(1e-3),
                "{g}: {o} vs {exact}"
            );
        }
    }

    #[test]
    fn matches_the_scalar_softmax() {
        for len in [1, 5, 16, 17, 100] {
            let scores: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 1.7)
                .chain(std::iter::once(-1000.0))
                .collect();
            let mut ours = scores.clone();
            let scale = 0.7;
            let inv = exp_normalizer(&mut ours, scale);
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exact: Vec<f64> = scores
                .iter()
                .map(|&s| ((s as f64 - max as f64) * scale as f64).exp())
                .collect();
            let total: f64 = exact.iter().sum();
            for (a, e) in ours.iter().zip(&exact) {
                let (a, e) = (*a as f64 * inv as f64, e / total);
                assert!(
                    (a - e).abs() <= 1e-6 * e.max(1e-30) + 1e-12,
                    "{len}: {a} vs {e}"
                );
            }
        }
    }
}
