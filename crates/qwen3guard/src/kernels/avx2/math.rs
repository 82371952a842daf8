//! AVX2 + FMA versions of [`crate::kernels::math`]: the same reduction and polynomial as
//! the AVX-512 exponential, with `2^n` built in the exponent bits (AVX2 has no
//! `vscalefps`), so inputs are clamped to where that stays a normal number and lanes
//! outside are set to 0 or infinity afterwards.

use std::arch::x86_64::*;

use crate::kernels::math::{COEFFS, LN2_HI, LN2_LO};

use crate::kernels::avx2::sum_lanes;

/// Below this `e^x` is under f32's smallest normal number; the kernel returns 0.
const LOWEST: f32 = -87.336_55;
/// Above this `e^x` overflows f32; the kernel returns infinity.
const HIGHEST: f32 = 88.722_83;

/// `e^x` on 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp(x: __m256) -> __m256 {
    // Clamped, `n` stays in [-126, 127], where `(n + 127) << 23` is 2^n.
    let clamped = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(LOWEST)),
        _mm256_set1_ps(88.3),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        clamped,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), clamped);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(COEFFS[0]);
    for &c in &COEFFS[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let two_n = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    ));
    let e = _mm256_mul_ps(p, two_n);
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOWEST));
    let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HIGHEST));
    let e = _mm256_andnot_ps(under, e);
    _mm256_blendv_ps(e, _mm256_set1_ps(f32::INFINITY), over)
}

/// `row[i] = e^((row[i] - max) * scale)`; returns the sum.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_shifted_sum(row: &mut [f32], max: f32, scale: f32) -> f32 {
    let (shift, factor) = (_mm256_set1_ps(max), _mm256_set1_ps(scale));
    let mut sum = _mm256_setzero_ps();
    let mut chunks = row.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let p = chunk.as_mut_ptr();
        let e = exp(_mm256_mul_ps(
            _mm256_sub_ps(_mm256_loadu_ps(p), shift),
            factor,
        ));
        _mm256_storeu_ps(p, e);
        sum = _mm256_add_ps(sum, e);
    }
    let mut total = sum_lanes(sum);
    for v in chunks.into_remainder() {
        // The tail through the same exponential, one lane used.
        let e = _mm256_cvtss_f32(exp(_mm256_set1_ps((*v - max) * scale)));
        *v = e;
        total += e;
    }
    total
}

/// `silu(g) * u`, 8 lanes at a time, the tail one lane at a time.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = out.len();
    assert!(gate.len() >= n && up.len() >= n);
    let one = _mm256_set1_ps(1.0);
    let silu = |g: __m256, u: __m256| {
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
        _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u)
    };
    let body = n / 8 * 8;
    for i in (0..body).step_by(8) {
        let v = silu(
            _mm256_loadu_ps(gate.as_ptr().add(i)),
            _mm256_loadu_ps(up.as_ptr().add(i)),
        );
        _mm256_storeu_ps(out.as_mut_ptr().add(i), v);
    }
    for i in body..n {
        out[i] = _mm256_cvtss_f32(silu(_mm256_set1_ps(gate[i]), _mm256_set1_ps(up[i])));
    }
}
