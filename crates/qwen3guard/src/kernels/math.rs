//! Elementwise math on f32 rows with a vectorised exponential: softmax numerators for
//! attention and the SiLU-gated product of the MLP.
//!
//! Attention over a few hundred cached positions takes tens of millions of exponentials
//! per forward pass, and the MLP one per intermediate feature and position; libm's scalar
//! `expf` then costs as much as the products around it. The AVX-512 version reduces
//! `x` to `n ln2 + r` with `|r| <= ln2 / 2`, evaluates a degree-6 polynomial for `e^r`
//! (relative error about 1e-7, the rounding of f32) and scales by `2^n` with `vscalefps`,
//! which also takes very negative inputs to 0 and very positive ones to infinity; the AVX2
//! version builds `2^n` in the exponent bits instead.

#[cfg(target_arch = "x86_64")]
use crate::kernels::{avx2, avx512};

/// Taylor coefficients of `e^r`: 1/k! for k = 6 down to 0; every vector exponential
/// evaluates this polynomial on its reduced argument.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const COEFFS: [f32; 7] = [
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];
/// ln 2 split in two, so that `x - n ln 2` loses no precision for large `n`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const LN2_HI: f32 = 0.693_145_75;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6;
use crate::kernels::{isa, Isa};

/// Replaces `row` with `exp(scale * (row - max(row)))` (the softmax numerators of
/// `scale * row`, for `scale > 0`) and returns `1 / sum` of the new values, the factor that
/// normalises it (applied later, to the weighted sum of values, so that the row is scaled
/// once per output instead of once per score).
pub fn exp_normalizer(row: &mut [f32], scale: f32) -> f32 {
    exp_normalizer_on(isa(), row, scale)
}

/// [`exp_normalizer`] on the kernels of `level` (at most what the processor has).
fn exp_normalizer_on(level: Isa, row: &mut [f32], scale: f32) -> f32 {
    if row.is_empty() {
        return 0.0;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `level` is at most the detected instruction set; the slice bounds are
        // checked inside.
        if level >= Isa::Avx512 {
            return 1.0 / unsafe { avx512::math::exp_shifted_sum(row, max, scale) };
        }
        if level >= Isa::Avx2 {
            return 1.0 / unsafe { avx2::math::exp_shifted_sum(row, max, scale) };
        }
    }
    let _ = level;
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = ((*v - max) * scale).exp();
        sum += *v;
    }
    1.0 / sum
}

/// `out[i] = silu(gate[i]) * up[i]`, with `silu(g) = g / (1 + e^-g)`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    silu_mul_on(isa(), gate, up, out);
}

/// [`silu_mul`] on the kernels of `level` (at most what the processor has).
fn silu_mul_on(level: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `level` is at most the detected instruction set; the slice bounds are
        // checked inside.
        if level >= Isa::Avx512 {
            unsafe { avx512::math::silu_mul(gate, up, out) };
            return;
        }
        if level >= Isa::Avx2 {
            unsafe { avx2::math::silu_mul(gate, up, out) };
            return;
        }
    }
    let _ = level;
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
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
        for level in Isa::supported() {
            let mut out = vec![0f32; gate.len()];
            silu_mul_on(level, &gate, &up, &mut out);
            for ((&o, &g), &u) in out.iter().zip(&gate).zip(&up) {
                let exact = g as f64 / (1.0 + (-g as f64).exp()) * u as f64;
                assert!(
                    (o as f64 - exact).abs() <= 1e-6 * exact.abs().max(1e-3),
                    "{level} {g}: {o} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn matches_the_scalar_softmax() {
        for len in [1, 5, 16, 17, 100] {
            let scores: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 1.7)
                .chain(std::iter::once(-1000.0))
                .collect();
            for level in Isa::supported() {
                let mut ours = scores.clone();
                let scale = 0.7;
                let inv = exp_normalizer_on(level, &mut ours, scale);
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
                        "{level} {len}: {a} vs {e}"
                    );
                }
            }
        }
    }
}
